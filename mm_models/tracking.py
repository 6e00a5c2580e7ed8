"""Where a run's numbers go: ``metrics.csv``, ``curves.png`` and, optionally, wandb.

wandb is imported only when tracking is on. It runs offline (files under the run
folder, uploadable later with ``wandb sync``) unless ``WANDB_API_KEY`` is set or
``WANDB_MODE`` says otherwise.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from .checkpoint import atomic_write

#: metrics.csv columns, in order
METRIC_COLUMNS = (
    "epoch",
    *(f"{split}/{name}" for split in ("train", "val") for name in ("loss", "accuracy", "precision", "recall", "f1")),
    "lr", "params", "epoch_seconds", "samples_per_s", "peak_memory_mb",
)


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write(path, lambda temp: Path(temp).write_text(buffer.getvalue()))


def plot_curves(path: Path, history: list[dict], title: str = "") -> None:
    """Loss, accuracy and learning rate per epoch, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(12, 3.8))
    FigureCanvasAgg(figure)
    loss, accuracy, lr = figure.subplots(1, 3)
    for split in ("train", "val"):
        loss.plot(epochs, [row[f"{split}/loss"] for row in history], marker=".", label=split)
        accuracy.plot(epochs, [row[f"{split}/accuracy"] for row in history], marker=".", label=split)
    lr.plot(epochs, [row["lr"] for row in history], marker=".")
    loss.set_yscale("log")
    for axes, name in ((loss, "BCE loss"), (accuracy, "accuracy"), (lr, "learning rate (epoch end)")):
        axes.set_xlabel("epoch")
        axes.set_title(name)
        axes.grid(alpha=0.3)
    loss.legend()
    accuracy.legend()
    if title:
        figure.suptitle(title)
    figure.subplots_adjust(left=0.06, right=0.98, bottom=0.14, top=0.82, wspace=0.3)
    atomic_write(path, lambda temp: figure.savefig(temp, format="png", dpi=100))


def require_wandb() -> None:
    """Fail early (before anything is written) when tracking is on but wandb is missing."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise ValueError("wandb: tracking is on but the wandb package is not installed") from None


class NullTracker:
    """Tracking off: every call is a no-op."""

    def log_epoch(self, row: dict) -> None: ...
    def log_predictions(self, rows: list[dict]) -> None: ...
    def log_checkpoint(self, name: str, files: list[Path]) -> None: ...
    def finish(self, exit_code: int = 0) -> None: ...


class WandbTracker:
    """One wandb run per training run, its files in ``run_dir/wandb``."""

    def __init__(self, run_dir: Path, name: str, config: dict, project: str):
        import wandb

        self.wandb = wandb
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        self.run = wandb.init(project=project, name=name, config=config, dir=str(run_dir),
                              mode=mode, reinit="create_new")
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")

    def log_epoch(self, row: dict) -> None:
        self.run.log(dict(row))

    def log_predictions(self, rows: list[dict]) -> None:
        """A table of sample predictions: rows with image (HxWx4 uint8), label, prediction, p_sphere."""
        if not rows:
            return
        columns = ["index", "image", "label", "prediction", "p_sphere", "correct"]
        table = self.wandb.Table(columns=columns)
        for row in rows:
            table.add_data(row["index"], self.wandb.Image(row["image"][..., :3]), row["label"],
                           row["prediction"], row["p_sphere"], row["label"] == row["prediction"])
        self.run.log({"val/predictions": table})

    def log_checkpoint(self, name: str, files: list[Path]) -> None:
        artifact = self.wandb.Artifact(name, type="model")
        for path in files:
            artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


def make_tracker(enabled: bool, run_dir: Path, name: str, config: dict, project: str):
    return WandbTracker(run_dir, name, config, project) if enabled else NullTracker()
