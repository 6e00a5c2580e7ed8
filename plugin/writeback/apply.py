"""Write back whatever a run gives, whatever its kind: the one entry of ``cilp apply`` and the
``apply_model`` operator.

The run is found and loaded once (its checkpoint checked, its model rebuilt) and handed
to the writer of its kind: a classifier's (fusion, lidar, rgb2lidar) predictions go
through :func:`~cilp_plugin.writeback.classifier.apply_model`, a CILP run's embeddings
through :func:`~cilp_plugin.writeback.cilp.apply_cilp`.
"""

from __future__ import annotations

from pathlib import Path

import fiftyone as fo

from ..runs.registry import loaded_run
from .cilp import apply_cilp
from .classifier import apply_model
from .maps import check_embedding_map

#: the kinds of run that write something back (a projector is only a part of rgb2lidar)
APPLICABLE_KINDS = ("classifier", "cilp", "rgb2lidar")


def apply_run(dataset: fo.Dataset, run: str | Path, **options):
    """Write back whatever a run of any kind gives: a classifier's (fusion, lidar, rgb2lidar)
    predictions with :func:`~cilp_plugin.writeback.classifier.apply_model`, a CILP run's
    embeddings with :func:`~cilp_plugin.writeback.cilp.apply_cilp`. The options are theirs."""
    if "embedding_map" in options:  # a wrong method is refused before the run is loaded
        check_embedding_map(options["embedding_map"])
    loaded = loaded_run(dataset, run)
    kind = loaded.spec.kind
    if kind == "cilp":
        unused = sorted(k for k in ("field", "eval_tag") if options.pop(k, None) not in (None, "val"))
        if unused:
            raise ValueError(f"{', '.join(unused)}: not used by a cilp run (its names follow the run's)")
        return apply_cilp(dataset, loaded, **options)
    if kind == "projector":
        raise ValueError(f"run '{run}': a projector run has nothing to write back on its own; "
                         f"apply the rgb2lidar run built from it")
    return apply_model(dataset, loaded, **options)
