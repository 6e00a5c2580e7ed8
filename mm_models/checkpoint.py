"""Run folders, checkpoints and atomic writes. Nothing here unpickles arbitrary objects.

A run folder holds::

    manifest.json      model spec (kind, config, parent runs), train config, best-epoch metrics,
                       data fingerprint, versions, the checkpoint's SHA-256
    model.safetensors  best weights, every part of the model (the spec is also in its metadata);
                       while a run trains, model-epochN.safetensors (the manifest names which)
    last.pt            resume state: last weights, optimizer, counters, metric history
                       (tensors and plain values only; read with ``weights_only=True``)
    metrics.csv        one row per epoch
    curves.png         training curves
    wandb/             the wandb run, when tracking was on

Every file is written to a temporary file beside it and moved into place with
``os.replace``, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
STATE = "last.pt"
METRICS = "metrics.csv"
CURVES = "curves.png"


class CheckpointError(ValueError):
    """A checkpoint or manifest is missing, corrupt or of another architecture; names the file."""


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(temp_path)`` and move the result onto ``path`` only if it succeeded.

    The file is as readable as its folder, not private like a temporary file (0600):
    run folders are shared with the App server and delegated executors. Only its
    owner may write it, even in a folder anyone may write.
    """
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        write(str(temp))
        os.chmod(temp, stat.S_IMODE(path.parent.stat().st_mode) & 0o644)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_json(path: Path, data: dict) -> None:
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(path, lambda temp: Path(temp).write_text(text))


def read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unwrap(model: nn.Module) -> nn.Module:
    """The module itself, under a ``torch.compile`` wrapper if there is one."""
    return getattr(model, "_orig_mod", model)


def save_best_weights(model: nn.Module | None, run_dir: Path, manifest: dict, name: str) -> None:
    """Write ``model``'s weights as ``name`` in ``run_dir`` (``None``: link the manifest's current
    checkpoint under that name), point the manifest at them, then delete the file it named before.

    Each checkpoint has a name of its own, so at every instant the manifest names a
    complete file whose SHA-256 it records: a crash in between leaves at most an
    unnamed file behind, never a manifest that calls intact weights corrupt.
    """
    run_dir = Path(run_dir)
    if model is not None:
        save_weights(model, run_dir / name, manifest.get("spec"))
    elif manifest.get("checkpoint") != name:
        (run_dir / name).unlink(missing_ok=True)
        os.link(run_dir / weights_name(manifest, run_dir), run_dir / name)
    manifest.update(checkpoint=name, checkpoint_sha256=file_sha256(run_dir / name))
    write_json(run_dir / MANIFEST, manifest)
    for stale in run_dir.glob("model-epoch*.safetensors"):  # the previous best, and any a crash left
        if stale.name != name:
            stale.unlink(missing_ok=True)


def save_weights(model: nn.Module, path: Path, spec: dict | None = None, *, small: bool = False) -> None:
    """The model's weights as safetensors (with ``small``, :func:`compact`: for shipping)."""
    tensors = {k: v.detach().contiguous() for k, v in unwrap(model).state_dict().items()}
    if small:
        tensors = compact(tensors)
    metadata = {"spec": json.dumps(spec)} if spec else None
    atomic_write(path, lambda temp: save_file(tensors, temp, metadata=metadata))


#: weight tensors of at least this many values are shipped in 8 bits (:func:`compact`)
INT8_MIN_VALUES = 65_536
INT8_SCALE = ".int8_scale"


def compact(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights made small for shipping: each large weight tensor as int8 with one float32 scale
    per output row (symmetric, ``weight = int8 * scale``), other floats as float16."""
    small = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point() and tensor.ndim >= 2 and tensor.numel() >= INT8_MIN_VALUES:
            rows = tensor.float().flatten(1)
            scale = rows.abs().amax(1).clamp_min(1e-12) / 127
            small[name] = (rows / scale[:, None]).round().to(torch.int8).reshape(tensor.shape).contiguous()
            small[name + INT8_SCALE] = scale
        elif tensor.is_floating_point() and (tensor.numel() == 0 or tensor.abs().max() < 60_000):  # float16's range
            small[name] = tensor.half().contiguous()
        else:
            small[name] = tensor.contiguous()
    return small


def expand(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float32 weights from :func:`compact`'s (unchanged for weights that were not compacted)."""
    full = {}
    for name, tensor in tensors.items():
        if name.endswith(INT8_SCALE):
            continue
        scale = tensors.get(name + INT8_SCALE)
        if scale is not None:
            tensor = (tensor.float().flatten(1) * scale[:, None]).reshape(tensor.shape)
        full[name] = tensor.float() if tensor.is_floating_point() else tensor
    return full


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """Load safetensors weights (full or :func:`compact`) into ``model``; a mismatch or a bad file
    names the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        tensors = expand(load_file(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt or not a safetensors checkpoint ({exc})") from None
    check_compatible(unwrap(model), tensors, path)
    unwrap(model).load_state_dict(tensors)
    return model


def check_compatible(model: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Raise :class:`CheckpointError` unless ``tensors`` has exactly the model's names and shapes."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected == found:
        return
    problems = []
    missing, unexpected = sorted(expected.keys() - found), sorted(found.keys() - expected)
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    resized = [k for k in expected.keys() & found if expected[k] != found[k]]
    if resized:
        k = sorted(resized)[0]
        problems.append(f"{len(resized)} of another shape (e.g. {k}: {found[k]} vs {expected[k]})")
    raise CheckpointError(f"{path}: weights of another architecture: {'; '.join(problems)} tensors")


def save_state(path: Path, state: dict) -> None:
    """Resume state (tensors, numbers, strings, lists, dicts) via ``torch.save``."""
    atomic_write(path, lambda temp: torch.save(state, temp))


def load_state(path: Path, device: torch.device | str = "cpu") -> dict:
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: resume state not found") from None
    except Exception as exc:  # the unpickler raises many types for corrupt data
        raise CheckpointError(f"{path}: corrupt resume state ({type(exc).__name__}: {exc})") from None


def read_manifest(run_dir: Path) -> dict:
    path = Path(run_dir) / MANIFEST
    manifest = read_json(path)
    if "model" not in manifest and "spec" not in manifest:
        raise CheckpointError(f"{path}: not a run manifest (no 'spec' entry)")
    return manifest


def weights_name(manifest: dict, run_dir: Path) -> str:
    """The checkpoint file a manifest names: a plain file name inside the run folder."""
    name = manifest.get("checkpoint", WEIGHTS)
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise CheckpointError(f"{Path(run_dir) / MANIFEST}: checkpoint {name!r} is not a file name in the run folder")
    return name
