"""Embedding maps: which ``compute_visualization`` methods run here, and options that suit small sets.

Both kinds of apply lay their embeddings out in 2-D for the App's Embeddings panel
(:mod:`cilp_plugin.writeback.classifier`, :mod:`cilp_plugin.writeback.cilp`) through these.
"""

from __future__ import annotations

import importlib.util
import logging
from contextlib import contextmanager

#: ``compute_visualization`` methods offered for the embedding map
EMBEDDING_MAPS = ("pca", "tsne", "umap")


def check_embedding_map(method: str | None) -> str | None:
    """``method`` if ``compute_visualization`` can run it here ('none' and None mean no map)."""
    if method in (None, "none"):
        return None
    if method not in EMBEDDING_MAPS:
        raise ValueError(f"embedding_map: unknown method {method!r}; expected one of {', '.join(EMBEDDING_MAPS)}, none")
    if method == "umap" and importlib.util.find_spec("umap") is None:
        raise ValueError("embedding_map: 'umap' needs the umap-learn package (pip install umap-learn); "
                         "'pca' and 'tsne' work without it")
    return method


@contextmanager
def quiet_maps():
    """``compute_visualization`` logs "Generating visualization..." at INFO for every map: silenced
    here (an apply reports its own progress)."""
    logger = logging.getLogger("fiftyone.brain.visualization")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def map_options(method: str, count: int, dim: int) -> dict:
    """``compute_visualization`` options that suit ``count`` embeddings of size ``dim``.

    FiftyOne's defaults assume large sets: t-SNE first reduces to 50 PCA dimensions
    (an error below 50) with perplexity 30, UMAP uses 15 neighbours; both fail on
    fewer points. Here they shrink with the data.
    """
    if method == "tsne":
        return {"pca_dims": 50 if dim > 50 else None, "perplexity": min(30.0, (count - 1) / 3), "verbose": False}
    if method == "umap":
        return {"num_neighbors": min(15, count - 1), "verbose": False}
    return {}
