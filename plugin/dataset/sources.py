"""Where data comes from: a local folder, a download URL, or the synthetic generator.

``load_dataset`` turns any of them into a validated folder and ingests it: the one
function behind the ``load_rgb_lidar_dataset`` operator and ``cilp ingest``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ..data import layout, synth
from ..data.download import download
from . import ingest

SOURCES = ("folder", "url", "synthetic")


def default_data_dir() -> Path:
    import fiftyone as fo

    return Path(fo.config.default_dataset_dir) / "cilp"


def resolve_folder(
    source: str, *, path: str | None = None, url: str | None = None, dest: str | None = None,
    n_per_class: int = 1000, seed: int = 42, overwrite: bool = False,
    classes: Sequence[str] = synth.DEFAULT_CLASSES, image_size: int = layout.SIZE, beams: int = layout.SIZE,
    say: Callable[[str], None] = lambda message: None,
) -> Path:
    """A folder in the DLI layout for ``source``, downloading or generating it when needed (for
    ``synthetic``: the generator's ``classes``, e.g. ``cube, sphere, cylinder``, square images of
    ``image_size`` pixels and range images of ``beams`` x ``beams``)."""
    if source == "folder":
        if not path:
            raise ValueError("path: a data folder is required when source is 'folder'")
        return Path(path).expanduser()
    if source == "url":
        if not url:
            raise ValueError("url: a download URL is required when source is 'url'")
        target = Path(dest).expanduser() if dest else default_data_dir() / "download"
        download(url, target, force=overwrite, quiet=True, progress=say)
        return target
    if source == "synthetic":
        classes = synth.check_classes(classes)
        sides = {"image_size": synth.check_sides("image_size", (image_size, image_size)),
                 "beams": synth.check_sides("beams", (beams, beams))}
        shapes = "" if classes == synth.DEFAULT_CLASSES else "-".join(classes) + "-"
        sizes = "" if image_size == beams == layout.SIZE else f"{image_size}px-{beams}beams-"
        target = (Path(dest).expanduser() if dest
                  else default_data_dir() / f"synthetic-{shapes}{sizes}{n_per_class}-seed{seed}")
        if target.exists() and not overwrite and layout.scan(target, validate=False).usable:
            say(f"reusing the synthetic data in {target}")
            return target
        say(f"generating {len(classes) * n_per_class} pairs into {target}")
        return synth.generate(target, n_per_class, seed, force=overwrite, classes=classes, **sides)
    raise ValueError(f"source: expected one of {', '.join(SOURCES)}, got {source!r}")


def load_dataset(
    source: str = "synthetic", *, name: str = ingest.DEFAULT_NAME, path: str | None = None,
    url: str | None = None, dest: str | None = None, n_per_class: int = 1000, seed: int = 42,
    overwrite: bool = False, classes: Sequence[str] = synth.DEFAULT_CLASSES, image_size: int = layout.SIZE,
    beams: int = layout.SIZE, progress: ingest.Progress | None = None,
) -> ingest.IngestResult:
    """Resolve ``source`` to a folder and ingest it into the grouped dataset ``name``."""
    say = progress or (lambda fraction, label: None)
    folder = resolve_folder(source, path=path, url=url, dest=dest, n_per_class=n_per_class, seed=seed,
                            overwrite=overwrite, classes=classes, image_size=image_size, beams=beams,
                            say=lambda message: say(0.0, message))
    return ingest.ingest(folder, name, progress=progress)
