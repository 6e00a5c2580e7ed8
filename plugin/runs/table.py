"""What the App's runs panel shows: a dataset's training runs, its scheduled operations, a run's curves.

    training_runs(dataset)        # one row per run recorded on the dataset (FiftyOne's run registry)
    scheduled_operations(dataset) # one row per delegated operation on the dataset, newest first
    run_curves(run_dir)           # train and val loss per epoch, as plotly traces, from metrics.csv
    run_config(run_dir)           # what a run trained: its model and training settings, as markdown
    train_further(dataset, run)   # the operator and form values that train a run further

A CILP run's joint map, as plotly traces, is :func:`cilp_plugin.writeback.pictures.joint_map_traces`.
"""

from __future__ import annotations

import csv
from pathlib import Path

import fiftyone as fo

from .classes import run_classes
from .registry import recorded_runs

#: the validation metric shown for each kind of run, besides the loss
HEADLINE = {"classifier": "val/accuracy", "cilp": "val/rgb2lidar_top1", "rgb2lidar": "val/accuracy"}


def _percent(value) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _classes_cell(manifest: dict) -> str:
    try:
        classes = run_classes(manifest)
    except (KeyError, ValueError):
        return "?"
    return ", ".join(classes) if classes else ""


def training_runs(dataset: fo.Dataset) -> list[dict]:
    """Name, kind, classes (a classifier's), epochs, best epoch and metrics, device, precision, preset and
    data placement of each run."""
    from mm_models.checkpoint import read_manifest

    rows = []
    for name, folder in sorted(recorded_runs(dataset).items()):
        try:
            manifest = read_manifest(folder)
        except (OSError, ValueError) as exc:
            rows.append({"run": name, "kind": "?", "status": f"unreadable: {exc}", "folder": str(folder)})
            continue
        best = manifest.get("best") or {}
        headline = HEADLINE.get(manifest.get("kind"))
        rows.append({
            "run": name,
            "kind": manifest.get("kind", "?"),
            "classes": _classes_cell(manifest),
            "status": manifest.get("status", "?"),
            "epochs": f"{manifest.get('epochs_completed', 0)}/{(manifest.get('train') or {}).get('epochs', '?')}",
            "best_epoch": best.get("epoch"),
            "val_loss": None if best.get("val/loss") is None else round(best["val/loss"], 4),
            "val_metric": f"{headline.split('/')[1]} {_percent(best.get(headline))}" if headline in best else "",
            "device": manifest.get("device", "?"),
            "precision": manifest.get("precision", "?"),
            "preset": (manifest.get("train") or {}).get("preset") or "",
            "data": (manifest.get("data") or {}).get("mode", "?"),
            "folder": str(folder),
        })
    return rows


def scheduled_operations(dataset: fo.Dataset) -> list[dict]:
    """The delegated operations of ``dataset`` (queued, running, completed, failed), newest first,
    with the progress a running one last reported."""
    from fiftyone.operators.delegated import DelegatedOperationService

    rows = []
    for op in DelegatedOperationService().list_operations(dataset_name=dataset.name):
        status = getattr(op, "status", None)
        rows.append({
            "operation": op.operator.rsplit("/", 1)[-1],
            "state": getattr(op.run_state, "value", op.run_state),
            "progress": _percent(getattr(status, "progress", None)) if status else "",
            "label": (getattr(status, "label", None) or "") if status else "",
            "queued": op.queued_at.strftime("%Y-%m-%d %H:%M:%S") if op.queued_at else "",
            "id": str(op.id),
            "error": ((op.result.error or "") if op.result else "")[:200],
        })
    return sorted(rows, key=lambda row: row["queued"], reverse=True)


def run_curves(run_dir: Path | str, prefix: str = "", dash: str = "solid") -> list[dict]:
    """Plotly line traces of the run's train and val loss per epoch (empty before its first epoch),
    named ``prefix`` + the metric."""
    from mm_models.checkpoint import METRICS

    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    epochs = [int(row["epoch"]) for row in rows]
    return [{"x": epochs, "y": [float(row[key]) for row in rows], "name": prefix + key, "type": "scatter",
             "mode": "lines+markers", "line": {"dash": dash}}
            for key in ("train/loss", "val/loss") if rows and key in rows[0]]


#: the training settings a run's config shows (the rest are the engine's defaults)
SHOWN_TRAIN = ("preset", "epochs", "batch_size", "lr", "weight_decay", "augment", "device", "precision", "data",
               "seed")


def run_config(run_dir: Path | str) -> str:
    """The run's model (kind and config, parents by run name) and its main training settings, as one
    markdown line (``kind classifier · family late · ...``)."""
    from mm_models.checkpoint import read_manifest

    manifest = read_manifest(run_dir)
    spec = manifest.get("spec") or {}
    train = manifest.get("train") or {}
    rows = [("kind", spec.get("kind", "?"))]
    rows += [(key, value) for key, value in (spec.get("config") or {}).items()]
    rows += [(f"parent {role}", Path(parent.get("run", "?")).name)
             for role, parent in (spec.get("parents") or {}).items()]
    rows += [(key, train[key]) for key in SHOWN_TRAIN if key in train]
    return " · ".join(f"{key} `{value}`" for key, value in rows)


#: the ``train_cilp`` stage that trains each kind of run (classifiers train with ``train_fusion``)
PIPELINE_STAGES = {"cilp": "cilp", "projector": "projector", "rgb2lidar": "rgb2lidar"}


def train_further(dataset: fo.Dataset, run: str) -> tuple[str, dict]:
    """The operator (``train_fusion`` or ``train_cilp``) and the form values that train ``run``
    further: the same model and name, ``resume`` ticked, twice the epochs it has."""
    from mm_models.checkpoint import read_manifest

    manifest = read_manifest(recorded_runs(dataset)[run])
    spec = manifest.get("spec") or {}
    config = spec.get("config") or {}
    epochs = 2 * max(1, manifest.get("epochs_completed") or 1)
    stage = PIPELINE_STAGES.get(spec.get("kind"))
    if stage:
        params = {f"stage_{name}": name == stage for name in ("lidar", "cilp", "projector", "rgb2lidar")}
        return "train_cilp", {**params, "run_prefix": run[: -len(stage)], "epochs": epochs, "resume": True}
    if spec.get("kind") != "classifier":
        raise ValueError(f"run '{run}': a {spec.get('kind')} run cannot be trained further from the App")
    return "train_fusion", {"family": config.get("family"), "fusion": config.get("fusion"),
                            "downsample": config.get("downsample"), "name": run, "epochs": epochs, "resume": True}
