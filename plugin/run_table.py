"""What the App's runs panel shows: a dataset's training runs, its scheduled operations, a run's curves.

    training_runs(dataset)        # one row per run recorded on the dataset (FiftyOne's run registry)
    scheduled_operations(dataset) # one row per delegated operation on the dataset, newest first
    run_curves(run_dir)           # train and val loss per epoch, as plotly traces, from metrics.csv
"""

from __future__ import annotations

import csv
from pathlib import Path

import fiftyone as fo

from .training import recorded_runs

#: the validation metric shown for each kind of run, besides the loss
HEADLINE = {"classifier": "val/accuracy", "cilp": "val/rgb2lidar_top1", "rgb2lidar": "val/accuracy"}


def _percent(value) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def training_runs(dataset: fo.Dataset) -> list[dict]:
    """Name, kind, epochs, best epoch and metrics, device, precision and data placement of each run."""
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
            "status": manifest.get("status", "?"),
            "epochs": f"{manifest.get('epochs_completed', 0)}/{(manifest.get('train') or {}).get('epochs', '?')}",
            "best_epoch": best.get("epoch"),
            "val_loss": None if best.get("val/loss") is None else round(best["val/loss"], 4),
            "val_metric": f"{headline.split('/')[1]} {_percent(best.get(headline))}" if headline in best else "",
            "device": manifest.get("device", "?"),
            "precision": manifest.get("precision", "?"),
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
