"""Views of a grouped dataset that every layer reads through, and where a data folder's caches live.

A pair is one group with three slices (rgb, depth, lidar); the split and quirk tags sit on
every slice. No FiftyOne import here: these take a dataset or view and call its methods,
so the arrays of a raw folder (:mod:`cilp_plugin.dataset.arrays`) load without FiftyOne.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import fiftyone as fo


def dataset_classes(dataset: fo.Dataset) -> list[str]:
    """The dataset's class labels in label-index order, as its ingest recorded them (its
    ``default_classes``; cube, sphere for a dataset that recorded none)."""
    from ..data.layout import LABELS

    return list(dataset.default_classes or dataset.info.get("classes") or LABELS)


def dataset_sizes(dataset: fo.Dataset) -> dict[str, tuple[int, int]]:
    """``image_size`` (rows, columns) and ``beams`` (azimuth, zenith) of the dataset's pairs, as its ingest
    recorded them (the original's 64 x 64 for a dataset that recorded none)."""
    from ..data.layout import SIZE

    return {key: tuple(dataset.info.get(key) or (SIZE, SIZE)) for key in ("image_size", "beams")}


def all_slices(dataset: fo.Dataset):
    """A flat view of every sample of every slice."""
    return dataset.select_group_slices(_allow_mixed=True)


def with_tags(view, tags: str | list[str] | None):
    """The samples of ``view`` with any of ``tags``; all of them when no tag is given."""
    return view.match_tags(tags) if tags else view


def default_cache_dir(root: Path) -> Path:
    """The folder of the caches (decoded arrays, derived files) of the data folder ``root``, beside it."""
    return root.parent / f"{root.name}.cache"
