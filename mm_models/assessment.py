"""The assessment's own LiDAR classifier, ``lidar_cnn.pt``, as a model of this library.

NVIDIA hands out ``lidar_cnn.pt`` next to the data: the assessment's ``Classifier(in_ch=1)``
(``assessment_utils.py``) trained on the original renders, a plain state dict. It reads the
LiDAR ``.npy`` as stored, ``(N, 1, 64, 64)`` raw radial range in metres with no-return beams at
their stored value (>= 50); its one logit > 0 means sphere; its ``get_embs`` is the flattened
``200 x 4 x 4`` map, the official pipeline's projector target. Here it is the LiDAR-only
classifier :data:`ASSESSMENT_LIDAR` (fed the range of our XYZA inputs by ``RangeOfXYZA``), so
the locked CILP tower, the projector and the RGB -> LiDAR classifier take it as their ``lidar``
parent like a trained one. :func:`import_run` writes it as a finished run folder.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .data import PairTensors
from .engine import TrainResult, evaluate, package_version
from .factory import ModelConfig, build_model
from .fusion import FusionClassifier
from .inference import infer
from .losses import Classification
from .stages import ModelSpec
from .tracking import NullTracker, write_metrics_csv

#: ``Classifier(in_ch=1)``: the reference conv stack on the raw range, head 3200 -> 100 -> 1
ASSESSMENT_LIDAR = ModelConfig(family="lidar", lidar_input="range", mask_no_return=False, head_hidden=(100,))
#: the file's layer names -> this library's (its ReLU / MaxPool / Flatten layers hold no weights)
LAYERS = {"embedder.0": "encoders.lidar.blocks.0.0", "embedder.3": "encoders.lidar.blocks.1.0",
          "embedder.6": "encoders.lidar.blocks.2.0", "embedder.9": "encoders.lidar.blocks.3.0",
          "classifier.0": "head.0", "classifier.2": "head.2"}


def _ours(key: str) -> str:
    layer, _, tensor = key.rpartition(".")
    return f"{LAYERS[layer]}.{tensor}"


def load_lidar_cnn(path: Path | str) -> FusionClassifier:
    """``lidar_cnn.pt`` as :data:`ASSESSMENT_LIDAR` (eval mode), read with ``weights_only=True``;
    a file whose keys or shapes differ is refused with what differs."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: not found (the assessment's lidar_cnn.pt)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickles of objects, truncated files, other formats alike
        raise ValueError(f"{path}: not a PyTorch state dict that loads with weights_only=True ({exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (the assessment's Classifier(in_ch=1))")
    model = build_model(ASSESSMENT_LIDAR)
    ours = model.state_dict()
    expected = {f"{layer}.{t}": tuple(ours[f"{name}.{t}"].shape) for layer, name in LAYERS.items()
                for t in ("weight", "bias")}
    got = {key: tuple(value.shape) for key, value in state.items()}
    problems = [f"missing {k} {list(v)}" for k, v in expected.items() if k not in got]
    problems += [f"unexpected {k} {list(v)}" for k, v in got.items() if k not in expected]
    problems += [f"{k} has shape {list(got[k])}, expected {list(v)}" for k, v in expected.items()
                 if k in got and got[k] != v]
    if problems:
        raise ValueError(f"{path}: not the assessment's Classifier(in_ch=1): {'; '.join(problems)}")
    model.load_state_dict({**ours, **{_ours(k): v.float() for k, v in state.items()}})
    return model.eval()


def import_run(path: Path | str, val_data: PairTensors, run_dir: Path | str, *, data_fingerprint: str = "",
               device: torch.device | str = "cpu", batch_size: int = 256) -> TrainResult:
    """Write ``lidar_cnn.pt`` as a finished run in ``run_dir``: its weights, a manifest recording the
    file's SHA-256 and path, and its metrics on ``val_data`` (the run's "best", as after training)."""
    path, run_dir = Path(path).resolve(), Path(run_dir).resolve()
    model = load_lidar_cnn(path)
    spec, objective = ModelSpec.of(ASSESSMENT_LIDAR), Classification()
    device = torch.device(device)
    metrics = evaluate(model.to(device), objective, val_data, batch_size=batch_size, device=device, precision="fp32")
    best = {"epoch": 0, **{f"val/{k}": v for k, v in metrics.items()}}
    params = sum(p.numel() for p in model.parameters())
    manifest = {
        "format": "mm_models.run/2", "kind": spec.kind, "spec": spec.to_dict(), "model": spec.config.to_dict(),
        "objective": type(objective).__name__, "select": objective.select,
        "imported": {"from": str(path), "sha256": ckpt.file_sha256(path),
                     "what": "the assessment's pretrained LiDAR classifier (lidar_cnn.pt)"},
        "train": {"epochs": 0, "batch_size": batch_size, "preset": "imported"},
        "data_fingerprint": data_fingerprint, "train_size": 0, "val_size": len(val_data),
        "params": params, "trainable_params": params, "input_statistics": [], "device": str(device),
        "precision": "fp32", "package_version": package_version(), "torch_version": torch.__version__,
        "status": "running", "epochs_completed": 0, "best": best,
    }
    if any(not math.isfinite(v) for v in metrics.values()):
        raise ValueError(f"{path}: its predictions on the val pairs are not finite ({metrics})")
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt.write_json(run_dir / ckpt.MANIFEST, manifest)
    write_metrics_csv(run_dir / ckpt.METRICS, [best])
    outputs = infer(model, val_data, batch_size=batch_size, device=device, precision="fp32")
    manifest["pictures"] = objective.pictures(outputs, val_data, run_dir, NullTracker(), 0)
    manifest["status"] = "finished"
    ckpt.save_best_weights(model, run_dir, manifest, ckpt.WEIGHTS)
    return TrainResult(run_dir, model, manifest, [best])
