"""The results table of finished runs, as in the reference: Markdown, CSV and curves.

Every figure comes from the run folders (the manifest's best epoch and
``metrics.csv``), never from globals, so a report can be rebuilt at any time.
A stage built from parent runs adds a row for its model before training (for
``rgb2lidar``: the chain with only the projector trained, before fine-tuning).
The val loss is each objective's (BCE, CILP's symmetric cross-entropy, the
projector's MSE); top-1 / top-5 are RGB -> LiDAR retrieval over the val split.

    from mm_models.report import write_report
    write_report(["runs/late", "runs/intermediate_add"], "runs/report")
"""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

from .checkpoint import CURVES, METRICS, atomic_write, read_manifest
from .stages import spec_of

#: the table's columns, in order
COLUMNS = ("run", "model", "val loss", "accuracy %", "top-1 %", "top-5 %", "params", "s/epoch", "samples/s",
           "memory MB", "best epoch", "epochs", "preset", "device", "precision")


def _percent(metrics: dict, key: str) -> float | None:
    return 100 * metrics[key] if key in metrics else None


def _scores(metrics: dict) -> dict:
    return {"val loss": metrics["val/loss"], "accuracy %": _percent(metrics, "val/accuracy"),
            "top-1 %": _percent(metrics, "val/rgb2lidar_top1"), "top-5 %": _percent(metrics, "val/rgb2lidar_top5")}


def run_rows(run_dir: Path | str) -> list[dict]:
    """The run's row (metrics at the best epoch, timing and memory over all epochs) and, for a
    stage built from parents, the row of its model before training."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    best = manifest.get("best")
    if not best:
        raise ValueError(f"{run_dir}: the run has no finished epoch yet")
    with open(run_dir / METRICS, newline="") as handle:
        history = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]
    label = spec_of(manifest, run_dir).describe()
    row = {
        "run": run_dir.name,
        "model": label,
        **_scores(best),
        "params": manifest["params"],
        "s/epoch": statistics.mean(row["epoch_seconds"] for row in history),
        "samples/s": statistics.mean(row["samples_per_s"] for row in history),
        "memory MB": max(row["peak_memory_mb"] for row in history),
        "best epoch": int(best["epoch"]),
        "epochs": len(history),
        "preset": manifest.get("train", {}).get("preset") or manifest.get("shipped", {}).get("preset", ""),
        "device": manifest.get("device", ""),
        "precision": manifest.get("precision", ""),
        "history": history,
    }
    if not manifest.get("initial"):
        return [row]
    before = {**{c: None for c in COLUMNS}, "run": f"{run_dir.name} (before training)",
              "model": f"{label}, as built from its parents", **_scores(manifest["initial"]),
              "params": manifest["params"], **{c: row[c] for c in ("preset", "device", "precision")}}
    return [before, row]


def run_row(run_dir: Path | str) -> dict:
    """The run's own row (see :func:`run_rows`)."""
    return run_rows(run_dir)[-1]


def _format(column: str, value) -> str:
    if value is None:
        return ""
    if column == "val loss":
        return f"{value:.5f}"
    if column == "params":
        return f"{value:,}"
    if column in ("accuracy %", "top-1 %", "top-5 %", "s/epoch", "memory MB"):
        return f"{value:.2f}"
    if column == "samples/s":
        return f"{value:,.0f}"
    return str(value)


def to_markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_format(c, row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def plot_runs(path: Path, rows: list[dict]) -> None:
    """Validation loss and accuracy per epoch of every run, in one PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4), layout="constrained")
    FigureCanvasAgg(figure)
    loss, accuracy = figure.subplots(1, 2)
    for row in rows:
        if "history" not in row:
            continue  # a before-training row
        epochs = [r["epoch"] for r in row["history"]]
        loss.plot(epochs, [r["val/loss"] for r in row["history"]], marker=".", label=row["run"])
        if "val/accuracy" in row["history"][0]:
            accuracy.plot(epochs, [100 * r["val/accuracy"] for r in row["history"]], marker=".", label=row["run"])
        else:
            accuracy.plot([], [])  # keep the runs' colours the same in both panels
    loss.set_yscale("log")
    for axes, title in ((loss, "validation loss (each run's objective)"), (accuracy, "validation accuracy %")):
        axes.set_xlabel("epoch")
        axes.set_title(title)
        axes.grid(alpha=0.3)
    accuracy.legend(fontsize="small")
    atomic_write(path, lambda temp: figure.savefig(temp, format="png", dpi=100))


def write_report(run_dirs: list[Path | str], out_dir: Path | str) -> tuple[str, Path]:
    """Write ``report.md``, ``report.csv`` and ``curves.png`` to ``out_dir``; return the Markdown."""
    if not run_dirs:
        raise ValueError("no runs to report")
    rows = [row for run_dir in run_dirs for row in run_rows(run_dir)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(rows)
    atomic_write(out_dir / "report.md", lambda temp: Path(temp).write_text(markdown))
    atomic_write(out_dir / "report.csv", lambda temp: Path(temp).write_text(to_csv(rows)))
    plot_runs(out_dir / CURVES, rows)
    return markdown, out_dir
