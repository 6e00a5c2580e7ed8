"""A CILP run back into the dataset, and cross-modal search over what it wrote.

``apply_cilp(dataset, "cilp")`` writes, for a run named ``cilp``:

======================  =====================================================================
``cilp_embedding``      each slice its own modality's unit vector: the RGB embedding on ``rgb``,
                        the LiDAR embedding on ``lidar`` and ``depth``
``cilp_pair_similarity`` every slice: cosine of the pair's own RGB and LiDAR embeddings (sort
                        ascending: the least aligned pairs first)
``cilp_pair_rank``      every slice: rank of the pair's LiDAR among all LiDAR embeddings for its
                        RGB (1 = its own LiDAR is the nearest; sort descending: the pairs whose
                        own LiDAR ranks worst first, misregistered or mislabelled)
``cilp_rgb_map``        brain run: 2-D map of the rgb slice (App: Embeddings panel on ``rgb``)
``cilp_lidar_map``      brain run: 2-D map of the depth slice, which carries the LiDAR embedding
                        (the Embeddings panel plots images; on ``depth`` it shows the LiDAR side)
``cilp_joint_map``      brain run: one map of the rgb and depth slices together: both modalities
                        in the shared space; aligned pairs land on each other
``cilp_image_search``   similarity index of the rgb slice (sklearn, cosine)
``cilp_pointcloud_search`` similarity index of the lidar slice (point clouds)
======================  =====================================================================

The two similarity fields get database indexes: the App's grid offers only indexed fields
in "Sort by". The indexes' names sort the rgb one first: FiftyOne 1.22's similarity search
lists every index of the dataset, whatever the slice shown, and preselects the first by
name (or the last one used), and a query of one slice fails in another slice's index.

Everything is written under temporary names and swapped in at the end
(:class:`~cilp_plugin.staging.StagedWrite`): a failed re-apply keeps the previous results.
:func:`find_cross_modal_matches` turns selected samples of one modality into the
other modality's nearest samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import fiftyone as fo
import numpy as np

from . import arrays
from .splits import all_slices, with_tags
from .staging import StagedWrite, check_replaceable
from .training import check_run_name, find_run

#: the CILP encoder whose embedding each slice carries
SLICE_MODALITY = {"rgb": "rgb", "depth": "lidar", "lidar": "lidar"}
#: where each modality's similarity index lives, and the slice a query of the other modality searches
INDEX_SLICE = {"rgb": "rgb", "lidar": "lidar"}
OTHER = {"rgb": "lidar", "lidar": "rgb"}


@dataclass
class CILPApplyResult:
    run: str
    pairs: int
    fields: list[str]
    brain_keys: list[str]
    retrieval: dict[str, float] = field(default_factory=dict)  # top-1 / top-5 over the written pairs

    def summary(self) -> str:
        shown = ", ".join(f"{k} {100 * v:.1f}%" for k, v in self.retrieval.items())
        return (f"wrote {', '.join(self.fields)} for {self.pairs} pairs and brain runs "
                f"{', '.join(self.brain_keys)}; retrieval over these pairs: {shown}")


def names(base: str) -> dict[str, str]:
    """Every field and brain key :func:`apply_cilp` writes for the run named ``base``."""
    return {
        "embedding": f"{base}_embedding", "pair_similarity": f"{base}_pair_similarity",
        "pair_rank": f"{base}_pair_rank", "rgb_map": f"{base}_rgb_map", "lidar_map": f"{base}_lidar_map",
        "joint_map": f"{base}_joint_map", "rgb_sim": f"{base}_image_search",
        "lidar_sim": f"{base}_pointcloud_search",
    }


#: the similarity indexes' names before they were ordered for the App (deleted by a re-apply)
FORMER_INDEXES = ("{base}_rgb_sim", "{base}_lidar_sim")
#: the fields the App's grid can sort by once indexed
SORTABLE = ("pair_similarity", "pair_rank")


def apply_cilp(
    dataset: fo.Dataset, run: str = "cilp", *, tags: str | list[str] | None = None,
    embedding_map: str | None = "pca", batch_size: int = 256, device: str = "auto", progress=None,
) -> CILPApplyResult:
    """Embed every pair (or those with ``tags``) with a CILP run and write the results back."""
    import torch

    from mm_models import load_run, outputs_of
    from mm_models.losses import true_pair_ranks

    from .writeback import check_embedding_map, map_options, quiet_maps

    say = progress or (lambda fraction, label: None)
    embedding_map = check_embedding_map(embedding_map) or "pca"
    run_dir = find_run(dataset, run)
    loaded = load_run(run_dir)
    if loaded.spec.kind != "cilp":
        raise ValueError(f"run '{run}': a {loaded.spec.kind} run, not a cilp run")
    base = check_run_name(run_dir.name)
    keys = names(base)
    for name in (keys["embedding"], keys["pair_similarity"], keys["pair_rank"]):
        check_replaceable(dataset, name)  # only what an earlier apply wrote may be replaced

    say(0.05, f"loading pairs for {base}")
    data = arrays.from_dataset(dataset, tags)
    if len(data) < 3:
        raise ValueError(f"{base}: a map and a ranking need at least 3 pairs, got {len(data)}")
    say(0.15, f"embedding {len(data)} pairs with {base}")
    out = outputs_of(loaded, data.tensors(), batch_size=batch_size, device=device,
                     progress=lambda f, label: say(0.15 + 0.45 * f, label))
    features = {"rgb": out["rgb_features"], "lidar": out["lidar_features"]}
    pair_similarity = (features["rgb"] * features["lidar"]).sum(1)
    ranks = true_pair_ranks(torch.from_numpy(features["rgb"]), torch.from_numpy(features["lidar"])).numpy()
    row_of = {pid: i for i, pid in enumerate(data.pair_ids)}

    def rows(view) -> np.ndarray:
        return np.array([row_of[pid] for pid in view.values("pair_id")])

    with StagedWrite(dataset) as staged:
        say(0.65, f"writing {keys['embedding']}, {keys['pair_similarity']}, {keys['pair_rank']}")
        for slice_name, modality in SLICE_MODALITY.items():
            view = with_tags(dataset.select_group_slices(slice_name), tags)
            index = rows(view)
            view.set_values(staged.field(keys["embedding"]), list(features[modality][index]))
            view.set_values(staged.field(keys["pair_similarity"]), pair_similarity[index].tolist())
            view.set_values(staged.field(keys["pair_rank"]), ranks[index].tolist())
        say(0.75, "similarity indexes")
        import fiftyone.brain as fob

        for modality, slice_name in INDEX_SLICE.items():
            view = with_tags(dataset.select_group_slices(slice_name), tags)
            fob.compute_similarity(view, embeddings=features[modality][rows(view)], metric="cosine",
                                   backend="sklearn", brain_key=staged.brain_key(keys[f"{modality}_sim"]),
                                   progress=False)
        say(0.85, f"embedding maps ({embedding_map})")
        for key, slices in ((keys["rgb_map"], ["rgb"]), (keys["lidar_map"], ["depth"]),
                            (keys["joint_map"], ["rgb", "depth"])):
            view = with_tags(dataset.select_group_slices(slices), tags)
            vectors = np.stack([features[SLICE_MODALITY[s]][row_of[p]]
                                for s, p in zip(*view.values(["group.name", "pair_id"]))])
            with quiet_maps():
                fob.compute_visualization(view, embeddings=vectors, method=embedding_map,
                                          brain_key=staged.brain_key(key), seed=0, progress=False,
                                          **map_options(embedding_map, *vectors.shape))
    for key in (name.format(base=base) for name in FORMER_INDEXES):
        if key in dataset.list_brain_runs():
            dataset.delete_brain_run(key)
    for key in SORTABLE:
        dataset.create_index(keys[key])
    say(1.0, f"{base} written")
    retrieval = {f"rgb2lidar_top{k}": float((ranks <= k).mean()) for k in (1, 5)}
    return CILPApplyResult(base, len(data), [keys["embedding"], keys["pair_similarity"], keys["pair_rank"]],
                           [keys[k] for k in ("rgb_map", "lidar_map", "joint_map", "rgb_sim", "lidar_sim")],
                           retrieval)


def find_cross_modal_matches(dataset: fo.Dataset, sample_ids: list[str], *, k: int = 5, run: str = "cilp"):
    """The other modality's ``k`` samples nearest to the selected samples, as a view.

    Selected RGB samples search the lidar slice; selected LiDAR (or depth) samples
    search the rgb slice. Several selected samples search with the mean of their
    embeddings. Raises ``ValueError`` naming what is missing (a selection, an
    embedding, an index).
    """
    if not sample_ids:
        raise ValueError("selection: select one or more samples of one slice (rgb, depth or lidar) first")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k: expected a positive integer, got {k!r}")
    keys = names(check_run_name(run))
    if not dataset.has_sample_field(keys["embedding"]):
        raise ValueError(f"selection: no sample of dataset '{dataset.name}' has a '{keys['embedding']}' field: "
                         f"apply the '{run}' run first (cilp apply {dataset.name} {run})")
    selected = all_slices(dataset).select(sample_ids)
    slices, vectors, pair_ids = selected.values(["group.name", keys["embedding"], "pair_id"])
    if len(slices) != len(set(sample_ids)):
        raise ValueError(f"selection: {len(set(sample_ids)) - len(slices)} of the selected ids are not samples "
                         f"of dataset '{dataset.name}'")
    modalities = {SLICE_MODALITY[s] for s in slices}
    if len(modalities) != 1:
        raise ValueError("selection: select samples of one modality (rgb, or lidar / depth), not both")
    missing = [pid for pid, v in zip(pair_ids, vectors) if v is None]
    if missing:
        raise ValueError(f"selection: {len(missing)} selected samples have no '{keys['embedding']}' "
                         f"(e.g. {missing[0]}): apply the '{run}' run to them first")
    modality = modalities.pop()
    target = OTHER[modality]
    brain_key = keys[f"{target}_sim"]
    if brain_key not in dataset.list_brain_runs():
        raise ValueError(f"run '{run}': no similarity index '{brain_key}' on dataset '{dataset.name}': "
                         f"apply the '{run}' run first")
    searched = dataset.select_group_slices(INDEX_SLICE[target])
    sizes = {len(v) for v in vectors}
    indexed = searched.exists(keys["embedding"]).first()[keys["embedding"]]
    if sizes != {len(indexed)}:
        raise ValueError(f"selection: the selected embeddings are {'/'.join(map(str, sorted(sizes)))}-d, the "
                         f"'{brain_key}' index holds {len(indexed)}-d ones: re-apply the '{run}' run")
    query = np.mean(np.stack(vectors), axis=0)
    query = query / max(np.linalg.norm(query), 1e-12)
    return searched.sort_by_similarity(query, k=k, brain_key=brain_key)
