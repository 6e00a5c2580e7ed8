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
``cilp_rgb_map``        brain run: 2-D map of the pairs by their RGB embedding
``cilp_lidar_map``      brain run: 2-D map of the pairs by their LiDAR embedding
``cilp_search``         similarity index of every slice, each sample with its own modality's
                        embedding (sklearn, cosine)
======================  =====================================================================

Both maps hold the rgb slice's samples: FiftyOne 1.22's Embeddings panel colours and
selects a map's points through the dataset's default slice (rgb) whatever slice is shown,
so a map of depth or lidar samples would stay grey. One index holds all three slices:
the App's similarity search looks its query up in the whole index and searches the slice
shown, so every slice finds its own modality's neighbours and no choice of index fails.
The map of both modalities in one space is :func:`joint_map` (the runs panel draws it).

Everything is written under temporary names and swapped in at the end
(:class:`~cilp_plugin.writeback.staging.StagedWrite`): a failed re-apply keeps the previous results.
:func:`find_cross_modal_matches` turns selected samples of one modality into the
other modality's nearest samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import fiftyone as fo
import numpy as np

from ..dataset import arrays
from ..dataset.views import all_slices, with_tags
from ..runs.registry import check_run_name, loaded_run
from .maps import check_embedding_map, map_options, quiet_maps
from .staging import StagedWrite, check_replaceable

#: the CILP encoder whose embedding each slice carries
SLICE_MODALITY = {"rgb": "rgb", "depth": "lidar", "lidar": "lidar"}
#: the slice a query of the other modality searches
SEARCHED_SLICE = {"rgb": "rgb", "lidar": "lidar"}
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
        "search": f"{base}_search",
    }


#: brain runs that earlier versions wrote (per-slice indexes, a two-slice map): deleted by a re-apply
FORMER_BRAIN_RUNS = ("{base}_rgb_sim", "{base}_lidar_sim", "{base}_image_search", "{base}_pointcloud_search",
                     "{base}_joint_map")
#: the fields the App's grid can sort by once indexed
SORTABLE = ("pair_similarity", "pair_rank")


def apply_cilp(
    dataset: fo.Dataset, run: str = "cilp", *, tags: str | list[str] | None = None,
    embedding_map: str | None = "pca", batch_size: int | None = None, device: str = "auto", progress=None,
) -> CILPApplyResult:
    """Embed every pair (or those with ``tags``) with a CILP run and write the results back.

    ``run``: a run name recorded on the dataset, a run folder, or a run loaded already
    (:func:`cilp_plugin.runs.registry.loaded_run`)."""
    import torch  # torch: only where a model runs

    from mm_models import outputs_of
    from mm_models.losses import true_pair_ranks

    say = progress or (lambda fraction, label: None)
    embedding_map = check_embedding_map(embedding_map) or "pca"
    loaded = loaded_run(dataset, run)
    run_dir = loaded.path
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
        say(0.75, "similarity index")
        import fiftyone.brain as fob

        every_slice = with_tags(all_slices(dataset), tags)
        vectors = np.stack([features[SLICE_MODALITY[s]][row_of[p]]
                            for s, p in zip(*every_slice.values(["group.name", "pair_id"]))])
        fob.compute_similarity(every_slice, embeddings=vectors, metric="cosine", backend="sklearn",
                               brain_key=staged.brain_key(keys["search"]), progress=False)
        say(0.85, f"embedding maps ({embedding_map})")
        pairs = with_tags(dataset.select_group_slices("rgb"), tags)
        for modality in ("rgb", "lidar"):
            vectors = features[modality][rows(pairs)]
            with quiet_maps():
                fob.compute_visualization(pairs, embeddings=vectors, method=embedding_map,
                                          brain_key=staged.brain_key(keys[f"{modality}_map"]), seed=0,
                                          progress=False, **map_options(embedding_map, *vectors.shape))
    for key in (name.format(base=base) for name in FORMER_BRAIN_RUNS):
        if key in dataset.list_brain_runs():
            dataset.delete_brain_run(key)
    for key in SORTABLE:
        dataset.create_index(keys[key])
    say(1.0, f"{base} written")
    retrieval = {f"rgb2lidar_top{k}": float((ranks <= k).mean()) for k in (1, 5)}
    return CILPApplyResult(base, len(data), [keys["embedding"], keys["pair_similarity"], keys["pair_rank"]],
                           [keys[k] for k in ("rgb_map", "lidar_map", "search")],
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
    target = OTHER[modalities.pop()]
    brain_key = keys["search"]
    if brain_key not in dataset.list_brain_runs():
        raise ValueError(f"run '{run}': no similarity index '{brain_key}' on dataset '{dataset.name}': "
                         f"apply the '{run}' run first")
    searched = dataset.select_group_slices(SEARCHED_SLICE[target])
    sizes = {len(v) for v in vectors}
    indexed = searched.exists(keys["embedding"]).first()[keys["embedding"]]
    if sizes != {len(indexed)}:
        raise ValueError(f"selection: the selected embeddings are {'/'.join(map(str, sorted(sizes)))}-d, the "
                         f"'{brain_key}' index holds {len(indexed)}-d ones: re-apply the '{run}' run")
    query = np.mean(np.stack(vectors), axis=0)
    query = query / max(np.linalg.norm(query), 1e-12)
    return searched.sort_by_similarity(query, k=k, brain_key=brain_key)


@dataclass
class JointMap:
    """Both modalities of every applied pair in one 2-D map: row ``i`` is ``pair_ids[i]``'s
    ``modalities[i]`` embedding at ``points[i]``."""

    points: np.ndarray
    pair_ids: list[str]
    labels: list[str]
    modalities: list[str]


def joint_map(dataset: fo.Dataset, run: str = "cilp") -> JointMap:
    """The RGB and LiDAR embeddings that applying ``run`` wrote, projected together onto their
    first two principal components: in the shared space an aligned pair's two points coincide."""
    key = names(check_run_name(run))["embedding"]
    if not dataset.has_sample_field(key):
        raise ValueError(f"run '{run}': dataset '{dataset.name}' has no '{key}' field: apply the '{run}' run first")
    pair_ids, labels, rgb = dataset.select_group_slices("rgb").exists(key).values(
        ["pair_id", "ground_truth.label", key])
    lidar = dict(zip(*dataset.select_group_slices("lidar").exists(key).values(["pair_id", key])))
    pairs = [i for i, pid in enumerate(pair_ids) if pid in lidar]
    if len(pairs) < 2:
        raise ValueError(f"run '{run}': a joint map needs 2 applied pairs, dataset '{dataset.name}' has {len(pairs)}")
    vectors = np.array([rgb[i] for i in pairs] + [lidar[pair_ids[i]] for i in pairs])
    centred = vectors - vectors.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    chosen_pairs, chosen_labels = [pair_ids[i] for i in pairs], [labels[i] for i in pairs]
    return JointMap(centred @ axes[:2].T, 2 * chosen_pairs, 2 * chosen_labels,
                    ["rgb"] * len(pairs) + ["lidar"] * len(pairs))


def applied_runs(dataset: fo.Dataset) -> list[str]:
    """The CILP runs applied to ``dataset`` (those with a similarity index), by name."""
    suffix = names("")["search"]
    return sorted(key[: -len(suffix)] for key in dataset.list_brain_runs(type="similarity")
                  if key.endswith(suffix) and dataset.has_sample_field(names(key[: -len(suffix)])["embedding"]))
