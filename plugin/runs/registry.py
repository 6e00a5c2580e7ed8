"""The runs recorded on a dataset, and the shipped checkpoints: find, record, list, load.

A run is one folder ``<runs dir>/<dataset slug>/<run name>`` (runs dir: ``CILP_RUNS_DIR``,
default ``<FiftyOne dataset dir>/cilp/runs``, never the working directory), so datasets never
share a run. Finished runs are recorded in FiftyOne's run registry of the dataset
(``dataset.list_runs()``, method ``cilp_train``), beside its evaluations and brain runs, where
operators and ``apply`` find them (:func:`find_run`, :func:`loaded_run`). Training them is
:mod:`cilp_plugin.runs.training`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import fiftyone as fo

#: the checkpoints shipped with the project (``scripts/ship_checkpoints.py`` writes them)
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "checkpoints"
#: the ``method`` of the runs this plugin records in a dataset's run registry
RUN_METHOD = "cilp_train"


def default_runs_dir() -> Path:
    if os.environ.get("CILP_RUNS_DIR"):
        return Path(os.environ["CILP_RUNS_DIR"]).expanduser()
    return Path(fo.config.default_dataset_dir) / "cilp" / "runs"


def dataset_runs_dir(dataset: fo.Dataset, runs_dir: Path | str | None = None) -> Path:
    """The folder of ``dataset``'s runs."""
    return (Path(runs_dir) if runs_dir else default_runs_dir()).expanduser().resolve() / dataset.slug


def check_run_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name or ""):
        raise ValueError(f"run name: expected letters, digits and underscores (it names a field), got {name!r}")
    return name


def check_own_run_name(dataset: fo.Dataset, name: str) -> None:
    """Refuse a run name that another tool's run in the dataset's registry already has."""
    if name in dataset.list_runs() and dataset.get_run_info(name).config.method != RUN_METHOD:
        raise ValueError(f"run name: '{name}' names a run of another tool in dataset '{dataset.name}'; "
                         f"choose another name")


def record_run(dataset: fo.Dataset, name: str, run_dir: Path, manifest: dict) -> None:
    """Record the finished run ``name`` in the dataset's run registry (replacing its namesake)."""
    best = manifest.get("best") or {}
    config = dataset.init_run(method=RUN_METHOD, run_dir=str(run_dir), kind=manifest.get("kind"),
                              spec=manifest.get("spec"), best={k: v for k, v in best.items() if "/" in k},
                              best_epoch=best.get("epoch"), device=manifest.get("device"),
                              precision=manifest.get("precision"))
    dataset.register_run(name, config, overwrite=True)


def recorded_runs(dataset: fo.Dataset) -> dict[str, Path]:
    """Run name -> folder of the runs recorded on ``dataset``."""
    return {key: Path(dataset.get_run_info(key).config.run_dir) for key in dataset.list_runs(method=RUN_METHOD)}


def find_run(dataset: fo.Dataset, run: str | Path) -> Path:
    """A run folder from a run name recorded on the dataset, or a path."""
    recorded = recorded_runs(dataset)
    if str(run) in recorded:
        return recorded[str(run)]
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


def loaded_run(dataset: fo.Dataset, run):
    """``run`` (a run name recorded on the dataset, a run folder, or a run loaded already) as an
    ``mm_models.LoadedRun``: its checkpoint checked and its model rebuilt, once."""
    from mm_models import LoadedRun, load_run  # torch: only where a model is loaded

    return run if isinstance(run, LoadedRun) else load_run(find_run(dataset, run))
