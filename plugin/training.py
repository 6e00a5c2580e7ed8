"""Train ``mm_models`` on a dataset's split tags; runs are recorded on the dataset.

One run = one folder under the runs directory (``CILP_RUNS_DIR``, default
``<FiftyOne dataset dir>/cilp/runs``, never the working directory), named after
the model unless a name is given. ``dataset.info["cilp_runs"]`` maps run names to
their folders, so operators and ``apply_model`` can find them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import fiftyone as fo

from . import arrays


#: the checkpoints shipped with the project (``scripts/ship_checkpoints.py`` writes them)
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "checkpoints"


def default_runs_dir() -> Path:
    if os.environ.get("CILP_RUNS_DIR"):
        return Path(os.environ["CILP_RUNS_DIR"]).expanduser()
    return Path(fo.config.default_dataset_dir) / "cilp" / "runs"


def check_run_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name or ""):
        raise ValueError(f"run name: expected letters, digits and underscores (it names a field), got {name!r}")
    return name


def train_on_dataset(
    dataset: fo.Dataset, model, train_config, *, train_tag: str = "train", val_tag: str = "val",
    runs_dir: Path | str | None = None, name: str | None = None, overwrite: bool = False,
    resume: bool = False, progress=None,
):
    """Train ``model`` (a ``ModelConfig`` or a ``ModelSpec``) on the pairs tagged
    ``train_tag``, select the checkpoint on ``val_tag``.

    Returns the engine's ``TrainResult``. Everything is validated (splits non-empty,
    configs, run folder) before anything is written.
    """
    from mm_models import train
    from mm_models.stages import default_run_name

    name = check_run_name(name or default_run_name(model))
    say = progress or (lambda fraction, label: None)
    say(0.0, f"{name}: loading the '{train_tag}' and '{val_tag}' pairs")
    train_arrays = arrays.from_dataset(dataset, train_tag)
    val_arrays = arrays.from_dataset(dataset, val_tag)
    overlap = set(train_arrays.pair_ids) & set(val_arrays.pair_ids)
    if overlap:
        raise ValueError(f"{len(overlap)} pairs are tagged both '{train_tag}' and '{val_tag}', "
                         f"e.g. {sorted(overlap)[0]}")
    run_dir = (Path(runs_dir) if runs_dir else default_runs_dir()).expanduser().resolve() / name
    if run_dir.exists() and overwrite and not resume:
        shutil.rmtree(run_dir)
    result = train(
        model, train_config, train_arrays.tensors(), val_arrays.tensors(), run_dir,
        data_fingerprint=f"{train_arrays.fingerprint}/{val_arrays.fingerprint}", resume=resume,
        progress=lambda fraction, label: say(fraction, f"{name}: {label}"),
    )
    runs = dict(dataset.info.get("cilp_runs", {}))
    runs[name] = str(run_dir)
    dataset.info["cilp_runs"] = runs
    dataset.save()
    return result


def find_run(dataset: fo.Dataset, run: str | Path) -> Path:
    """A run folder from a run name recorded on the dataset, or a path."""
    recorded = dataset.info.get("cilp_runs", {})
    if str(run) in recorded:
        return Path(recorded[str(run)])
    path = Path(run).expanduser()
    if path.is_dir():
        return path.resolve()
    known = ", ".join(sorted(recorded)) or "none yet"
    raise ValueError(f"run {str(run)!r}: not a run folder, nor a run of dataset '{dataset.name}' ({known})")


def shipped_checkpoints_dir() -> Path:
    return Path(os.environ.get("CILP_CHECKPOINTS_DIR") or SHIPPED_DIR).expanduser()


def shipped_checkpoints(kinds: tuple[str, ...] | None = None) -> list[str]:
    """The names of the shipped checkpoints (``intermediate_add``, ``cilp``, ...), only those of
    ``kinds`` (model kinds: ``classifier``, ``cilp``, ...) when given."""
    folder = shipped_checkpoints_dir()
    manifests = sorted(folder.glob("*/manifest.json")) if folder.is_dir() else []
    return [path.parent.name for path in manifests
            if kinds is None or json.loads(path.read_text()).get("kind") in kinds]


def shipped_checkpoint(name: str) -> Path:
    """The folder of the shipped checkpoint ``name``."""
    names = shipped_checkpoints()
    if name not in names:
        raise ValueError(f"checkpoint {name!r}: not a shipped checkpoint; expected one of "
                         f"{', '.join(names) or f'those in {shipped_checkpoints_dir()} (none there)'}")
    return shipped_checkpoints_dir() / name
