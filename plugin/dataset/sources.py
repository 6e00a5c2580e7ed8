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
    classes: Sequence[str] = synth.DEFAULT_CLASSES, say: Callable[[str], None] = lambda message: None,
) -> Path:
    """A folder in the DLI layout for ``source``, downloading or generating it when needed (the
    generator's ``classes``, e.g. ``cube, sphere, cylinder``, for ``synthetic``)."""
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
        shapes = "" if classes == synth.DEFAULT_CLASSES else "-".join(classes) + "-"
        target = Path(dest).expanduser() if dest else default_data_dir() / f"synthetic-{shapes}{n_per_class}-seed{seed}"
        if target.exists() and not overwrite and layout.scan(target, validate=False).usable:
            say(f"reusing the synthetic data in {target}")
            return target
        say(f"generating {len(classes) * n_per_class} pairs into {target}")
        return synth.generate(target, n_per_class, seed, force=overwrite, classes=classes)
    raise ValueError(f"source: expected one of {', '.join(SOURCES)}, got {source!r}")


def load_dataset(
    source: str = "synthetic", *, name: str = ingest.DEFAULT_NAME, path: str | None = None,
    url: str | None = None, dest: str | None = None, n_per_class: int = 1000, seed: int = 42,
    overwrite: bool = False, classes: Sequence[str] = synth.DEFAULT_CLASSES,
    progress: ingest.Progress | None = None,
) -> ingest.IngestResult:
    """Resolve ``source`` to a folder and ingest it into the grouped dataset ``name``."""
    say = progress or (lambda fraction, label: None)
    folder = resolve_folder(source, path=path, url=url, dest=dest, n_per_class=n_per_class, seed=seed,
                            overwrite=overwrite, classes=classes, say=lambda message: say(0.0, message))
    return ingest.ingest(folder, name, progress=progress)
