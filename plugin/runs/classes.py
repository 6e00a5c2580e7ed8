"""The classes a dataset holds and those a run tells apart (and the sizes its inputs have), as the forms
and the runs panel say them.

    classes_notice(["cube", "sphere", "cylinder"])  # '3 classes: cube, sphere, cylinder — a softmax head of 3 logits'
    sizes_notice(dataset_sizes(dataset))            # 'inputs: images 96 x 96, range images 64 x 32 (...)'
    run_classes(manifest)                           # ('cube', 'sphere'); None for a run that classifies nothing
    class_mismatch(dataset, "late", run_dir)        # why the run's classes are not the dataset's, or None
"""

from __future__ import annotations

from pathlib import Path

import fiftyone as fo

from ..dataset.views import dataset_classes


def head_of(count: int) -> str:
    """The classifier head that tells ``count`` classes apart."""
    return "one logit (BCE)" if count == 2 else f"a softmax head of {count} logits"


def classes_notice(classes: list[str] | tuple[str, ...]) -> str:
    """``3 classes: cube, sphere, cylinder — a softmax head of 3 logits``."""
    return f"{len(classes)} classes: {', '.join(classes)} — {head_of(len(classes))}"


def sizes_notice(sizes: dict[str, tuple[int, int]]) -> str:
    """``inputs: images 96 x 96, range images 64 x 32 (azimuth x zenith beams)``: what the models are sized to."""
    (rows, columns), (azimuth, zenith) = sizes["image_size"], sizes["beams"]
    return f"inputs: images {rows} x {columns}, range images {azimuth} x {zenith} (azimuth x zenith beams)"


def run_classes(manifest: dict) -> tuple[str, ...] | None:
    """The classes the model of a run (its ``manifest``) tells apart, by name in label-index order (a run
    that recorded no names: cube, sphere for two classes, else the indices); None for a model that
    classifies nothing."""
    from mm_models.engine import check_class_names
    from mm_models.stages import ModelSpec

    return check_class_names(ModelSpec.from_dict(manifest["spec"]), manifest.get("class_names"))


def class_mismatch(dataset: fo.Dataset, name: str, run_dir: Path | str) -> str | None:
    """Why the classes of the run ``name`` (folder ``run_dir``) are not the dataset's, or None when they
    are (or the run classifies nothing, or its manifest cannot be read: loading it says why)."""
    from mm_models.checkpoint import read_manifest

    try:
        found = run_classes(read_manifest(Path(run_dir)))
    except (OSError, ValueError, KeyError):
        return None
    classes = dataset_classes(dataset)
    if found is None or list(found) == classes:
        return None
    text = f"run '{name}' tells {len(found)} classes apart ({', '.join(found)}); this dataset has {len(classes)}"
    if len(found) != len(classes):
        return f"{text}: a model of another class count is refused"
    return f"{text} ({', '.join(classes)}): its classes take the dataset's names, in this order"
