"""The results table of finished runs, as in the reference: Markdown, CSV and curves.

Every figure comes from the run folders (the manifest's best-val-loss epoch and
``metrics.csv``), never from globals, so a report can be rebuilt at any time:

    from mm_models.report import write_report
    write_report(["runs/late", "runs/intermediate_add"], "runs/report")
"""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

from .checkpoint import CURVES, METRICS, atomic_write, read_manifest

#: the table's columns, in order
COLUMNS = ("run", "model", "val loss", "accuracy %", "params", "s/epoch", "samples/s", "memory MB",
           "best epoch", "epochs", "device")


def _model_label(model: dict) -> str:
    family = model["family"]
    fusion = f" {model['fusion']}" if family in ("early", "intermediate") else ""
    return f"{family}{fusion}, {model['downsample']}"


def run_row(run_dir: Path | str) -> dict:
    """One table row: metrics at the best epoch, timing and memory over all epochs."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    best = manifest.get("best")
    if not best:
        raise ValueError(f"{run_dir}: the run has no finished epoch yet")
    with open(run_dir / METRICS, newline="") as handle:
        history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    return {
        "run": run_dir.name,
        "model": _model_label(manifest["model"]),
        "val loss": best["val/loss"],
        "accuracy %": 100 * best["val/accuracy"],
        "params": manifest["params"],
        "s/epoch": statistics.mean(row["epoch_seconds"] for row in history),
        "samples/s": statistics.mean(row["samples_per_s"] for row in history),
        "memory MB": max(row["peak_memory_mb"] for row in history),
        "best epoch": int(best["epoch"]),
        "epochs": len(history),
        "device": manifest.get("device", ""),
        "history": history,
    }


def _format(column: str, value) -> str:
    if column == "val loss":
        return f"{value:.5f}"
    if column == "params":
        return f"{value:,}"
    if column in ("accuracy %", "s/epoch", "memory MB"):
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
        epochs = [r["epoch"] for r in row["history"]]
        loss.plot(epochs, [r["val/loss"] for r in row["history"]], marker=".", label=row["run"])
        accuracy.plot(epochs, [100 * r["val/accuracy"] for r in row["history"]], marker=".", label=row["run"])
    loss.set_yscale("log")
    for axes, title in ((loss, "validation loss (BCE)"), (accuracy, "validation accuracy %")):
        axes.set_xlabel("epoch")
        axes.set_title(title)
        axes.grid(alpha=0.3)
    accuracy.legend(fontsize="small")
    atomic_write(path, lambda temp: figure.savefig(temp, format="png", dpi=100))


def write_report(run_dirs: list[Path | str], out_dir: Path | str) -> tuple[str, Path]:
    """Write ``report.md``, ``report.csv`` and ``curves.png`` to ``out_dir``; return the Markdown."""
    if not run_dirs:
        raise ValueError("no runs to report")
    rows = [run_row(run_dir) for run_dir in run_dirs]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(rows)
    atomic_write(out_dir / "report.md", lambda temp: Path(temp).write_text(markdown))
    atomic_write(out_dir / "report.csv", lambda temp: Path(temp).write_text(to_csv(rows)))
    plot_runs(out_dir / CURVES, rows)
    return markdown, out_dir
