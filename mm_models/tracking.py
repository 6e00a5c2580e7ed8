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


def metric_columns(history: list[dict]) -> list[str]:
    """Every key of every row, in order of first appearance: whatever the objective reported."""
    return list(dict.fromkeys(key for row in history for key in row))


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=metric_columns(history), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write(path, lambda temp: Path(temp).write_text(buffer.getvalue()))


def plot_curves(path: Path, history: list[dict], title: str = "", metrics: tuple[str, ...] = ("accuracy",)) -> None:
    """Loss, each of ``metrics`` and the learning rate per epoch, train and val, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in history]
    metrics = tuple(m for m in metrics if f"val/{m}" in history[0])
    figure = Figure(figsize=(4 * (len(metrics) + 2), 3.8))
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, len(metrics) + 2)
    for axes, name in zip(panels[:-1], ("loss", *metrics)):
        for split in ("train", "val"):
            values = [row.get(f"{split}/{name}") for row in history]
            if any(v is not None for v in values):
                axes.plot(epochs, values, marker=".", label=split)
        axes.set_title(name)
        axes.legend()
    panels[0].set_yscale("log")
    panels[-1].plot(epochs, [row["lr"] for row in history], marker=".")
    panels[-1].set_title("learning rate (epoch end)")
    for axes in panels:
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
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
    def log_images(self, images: dict[str, Path]) -> None: ...
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
        """A table of sample predictions (:func:`mm_models.losses.prediction_rows`): rows with image
        (HxWx4 uint8), label and prediction (class names), and ``p_<second class>`` (two classes) or
        ``confidence`` (more)."""
        if not rows:
            return
        score = next(key for key in rows[0] if key.startswith("p_") or key == "confidence")
        columns = ["index", "image", "label", "prediction", score, "correct"]
        table = self.wandb.Table(columns=columns)
        for row in rows:
            table.add_data(row["index"], self.wandb.Image(row["image"][..., :3]), row["label"],
                           row["prediction"], row[score], row["label"] == row["prediction"])
        self.run.log({"val/predictions": table})

    def log_images(self, images: dict[str, Path]) -> None:
        """PNG files under their keys (e.g. ``val/similarity``)."""
        self.run.log({key: self.wandb.Image(str(path)) for key, path in images.items()})

    def log_checkpoint(self, name: str, files: list[Path]) -> None:
        artifact = self.wandb.Artifact(name, type="model")
        for path in files:
            artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


def make_tracker(enabled: bool, run_dir: Path, name: str, config: dict, project: str):
    return WandbTracker(run_dir, name, config, project) if enabled else NullTracker()
