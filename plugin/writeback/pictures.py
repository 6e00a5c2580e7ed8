"""What was written back into a dataset, as pictures for a report.

    from cilp_plugin.writeback.pictures import write_pictures
    write_pictures(dataset, "runs/report")  # confusion.png, embedding_maps.png

One panel per classification evaluation (its confusion matrix) and per embedding
map (its 2-D points, coloured by ground truth), read from the dataset's stored
evaluation and brain results, so the pictures match what the App shows; each
applied CILP run adds its joint map of both modalities, as the runs panel draws it
(:func:`joint_map_traces`: the same colours and names, as plotly traces).
"""

from __future__ import annotations

from pathlib import Path

import fiftyone as fo
import numpy as np

from ..data import layout
from ..dataset.colours import CLASS_COLOURS, OTHER_COLOURS, class_colours  # noqa: F401 - also this module's names
from ..dataset.views import dataset_classes
from . import cilp

CONFUSION_PNG = "confusion.png"
MAPS_PNG = "embedding_maps.png"
#: the modality a slice's embedding comes from, for map legends
SLICE_NAMES = {"rgb": "RGB", "depth": "LiDAR", "lidar": "LiDAR"}


def write_pictures(dataset: fo.Dataset, out_dir: Path | str) -> dict[str, list[str]]:
    """Write the pictures there is something for; returns each file's panels (eval / brain keys)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    evaluations = [key for key in dataset.list_evaluations()
                   if dataset.get_evaluation_info(key).config.type == "classification"]
    maps = [(key, _points(dataset, key)) for key in dataset.list_brain_runs()
            if dataset.get_brain_info(key).config.type == "visualization"]
    for run in cilp.applied_runs(dataset):
        joint = cilp.joint_map(dataset, run)
        maps.append((f"{run} joint map", (joint.points, joint.labels, joint.modalities)))
    written = {}
    if evaluations:
        _save(out_dir / CONFUSION_PNG, [(key, _confusion(dataset, key)) for key in evaluations], _draw_confusion)
        written[CONFUSION_PNG] = evaluations
    if maps:
        _save(out_dir / MAPS_PNG, maps, _draw_points)
        written[MAPS_PNG] = [key for key, _ in maps]
    return written


def _confusion(dataset: fo.Dataset, eval_key: str) -> tuple[list[str], np.ndarray]:
    """The dataset's classes and the counts, rows = ground truth, columns = prediction, in that order."""
    classes = dataset_classes(dataset)
    return classes, dataset.load_evaluation_results(eval_key).confusion_matrix(classes=classes)


def _points(dataset: fo.Dataset, brain_key: str) -> tuple[np.ndarray, list[str], list[str]]:
    """The map's 2-D points, the ground-truth label and the slice of each."""
    results = dataset.load_brain_results(brain_key)
    samples = dataset.load_brain_view(brain_key).select(results.sample_ids, ordered=True)
    labels, slices = samples.values(["ground_truth.label", "group.name"])
    return np.asarray(results.points), labels, slices


def _draw_confusion(axes, key: str, confusion: tuple[list[str], np.ndarray]) -> None:
    classes, counts = confusion
    axes.imshow(counts, cmap="Blues", vmin=0)
    for (row, column), count in np.ndenumerate(counts):
        colour = "white" if count > counts.max() / 2 else "black"
        axes.text(column, row, str(count), ha="center", va="center", color=colour,
                  fontsize=12 if len(classes) <= 4 else 8)
    ticks = range(len(classes))
    axes.set_xticks(ticks, classes)
    axes.set_yticks(ticks, classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("ground truth")
    accuracy = np.trace(counts) / max(1, counts.sum())
    axes.set_title(f"{key}\naccuracy {100 * accuracy:.2f}% ({counts.sum()} pairs)", fontsize="medium")


def _draw_points(axes, key: str, data: tuple[np.ndarray, list[str], list[str]]) -> None:
    """Points coloured by ground truth; on a map of both modalities (CILP's joint map) each
    modality has its own marker, so aligned pairs show as overlapping markers."""
    points, labels, slices = data
    labels, slices = np.asarray(labels), np.asarray(slices)
    names = sorted(set(slices), key=["rgb", "depth", "lidar"].index)
    for name, marker in zip(names, "o+x"):
        for label, colour in class_colours(sorted(set(labels) - {None}, key=layout.class_order)).items():
            chosen = (labels == label) & (slices == name)
            axes.scatter(points[chosen, 0], points[chosen, 1], s=8 if marker == "o" else 14, c=colour,
                         marker=marker, alpha=0.6, linewidths=0.8,
                         label=label if len(names) == 1 else f"{label}, {SLICE_NAMES.get(name, name)}")
    axes.set_xticks([])
    axes.set_yticks([])
    what = "pairs" if len(names) == 1 else f"samples of {' + '.join(names)}"
    axes.set_title(f"{key} ({len(points)} {what})", fontsize="medium")
    axes.legend(fontsize="small", markerscale=2)


def _save(path: Path, panels: list[tuple[str, object]], draw) -> None:
    """One row of square panels, written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from mm_models.checkpoint import atomic_write

    figure = Figure(figsize=(3.6 * len(panels), 3.8), layout="constrained")
    FigureCanvasAgg(figure)
    for axes, (key, data) in zip(np.atleast_1d(figure.subplots(1, len(panels))), panels):
        draw(axes, key, data)
    atomic_write(path, lambda temp: figure.savefig(temp, format="png", dpi=100))


#: marker of each modality on the joint map (its colours and names are the report's: above)
MODALITY_MARKERS = {"rgb": "circle", "lidar": "x"}


def joint_map_traces(dataset: fo.Dataset, run: str, linked: list[str] = ()) -> list[dict]:
    """Plotly traces of the CILP run's joint map: one per class and modality (colour = class,
    marker = modality, point ids = pair ids), and a line from each ``linked`` pair's RGB point
    to its LiDAR point."""
    joint = cilp.joint_map(dataset, run)
    labels, modalities = np.asarray(joint.labels), np.asarray(joint.modalities)
    pair_ids = np.asarray(joint.pair_ids)
    colours = class_colours(sorted(set(joint.labels), key=layout.class_order))
    traces = []
    for modality, marker in MODALITY_MARKERS.items():
        for label in sorted(set(joint.labels)):
            chosen = (labels == label) & (modalities == modality)
            traces.append({
                "type": "scattergl", "mode": "markers", "name": f"{label}, {SLICE_NAMES[modality]}",
                "x": joint.points[chosen, 0].tolist(), "y": joint.points[chosen, 1].tolist(),
                "ids": pair_ids[chosen].tolist(), "text": pair_ids[chosen].tolist(),
                "hovertemplate": "%{text}<extra>%{fullData.name}</extra>",
                "marker": {"symbol": marker, "size": 6, "color": colours.get(label), "opacity": 0.7},
            })
    wanted = set(linked)
    if wanted:
        where = {(pid, modality): point for pid, modality, point in zip(pair_ids, modalities, joint.points)}
        x, y = [], []
        for pid in sorted(wanted & set(joint.pair_ids)):
            for modality in ("rgb", "lidar", None):
                point = where.get((pid, modality), (None, None))
                x.append(None if point[0] is None else float(point[0]))
                y.append(None if point[1] is None else float(point[1]))
        traces.append({"type": "scatter", "mode": "lines", "name": "selected pairs", "x": x, "y": y,
                       "hoverinfo": "skip", "line": {"color": "black", "width": 1}})
    return traces
