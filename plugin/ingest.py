"""A data folder -> a persistent grouped FiftyOne dataset, one group per RGB/LiDAR pair.

Slices: ``rgb`` (the PNG), ``depth`` (a colour-mapped range picture) and ``lidar``
(a ``.pcd`` point cloud with a bird's-eye thumbnail). Every slice carries
``ground_truth``, ``pair_id``, ``range_path`` (the raw range image, which models
read) and the LiDAR statistics. Derived files live in a
cache folder beside the data; the raw data is never modified.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import fiftyone as fo
import fiftyone.utils.utils3d as fou3d

from . import derived
from . import format as fmt

DEFAULT_NAME = "cilp-assessment"
SLICES = ("rgb", "depth", "lidar")
ADD_BATCH = 250  # groups per database write
Progress = Callable[[float, str], None]


@dataclass
class IngestResult:
    dataset: fo.Dataset
    added: list[str] = field(default_factory=list)  # pair ids added by this run
    existing: int = 0  # pairs already in the dataset, left alone
    vanished: list[str] = field(default_factory=list)  # pair ids whose files are gone
    scan: fmt.ScanReport | None = None
    replaced: str | None = None  # what a rebuild replaced: "<data root> (<n> groups)"

    def summary(self) -> str:
        lines = [f"dataset '{self.dataset.name}': {len(self.added)} pairs added, "
                 f"{self.existing} already present, {len(self.dataset)} groups in all"]
        if self.replaced:
            lines.insert(0, f"rebuilt dataset '{self.dataset.name}': it replaces the one built from {self.replaced}")
        if self.vanished:
            lines.append(f"  {len(self.vanished)} pairs whose files vanished: {', '.join(self.vanished[:10])}"
                         + (" ..." if len(self.vanished) > 10 else ""))
        bad = sum(len(c.bad_files) for c in self.scan.classes.values()) if self.scan else 0
        unpaired = sum(len(c.unpaired) for c in self.scan.classes.values()) if self.scan else 0
        if bad or unpaired:
            lines.append(f"  skipped {bad} bad and {unpaired} unpaired files (see `cilp validate`)")
        return "\n".join(lines)


def default_cache_dir(root: Path) -> Path:
    return root.parent / f"{root.name}.cache"


def ingest(
    root: Path | str,
    name: str = DEFAULT_NAME,
    *,
    cache_dir: Path | str | None = None,
    workers: int | None = None,
    rebuild: bool = False,
    progress: Progress | None = None,
) -> IngestResult:
    """Add every valid pair under ``root`` that the dataset ``name`` lacks.

    A new dataset is deleted again if anything fails; an existing one loses the
    samples this run added. Pairs in the dataset whose files vanished are
    reported, not deleted. With ``rebuild`` a dataset ``name`` that exists (of any
    folder) is replaced by a new one, built under another name and swapped in once
    complete.
    """
    if rebuild and fo.dataset_exists(name):
        old = fo.load_dataset(name)
        replaced = f"{old.info.get('data_root', 'an unknown folder')} ({len(old)} groups)"
        result = ingest(root, f"{name}.rebuild-{uuid.uuid4().hex[:8]}", cache_dir=cache_dir, workers=workers,
                        progress=progress)
        old.delete()
        result.dataset.name = name
        result.replaced = replaced
        return result
    root = Path(root).resolve()
    say = progress or (lambda fraction, label: None)
    say(0.0, f"scanning {root}")
    report = fmt.scan(root).require_usable()
    cache = Path(cache_dir).resolve() if cache_dir else default_cache_dir(root)

    created = not fo.dataset_exists(name)
    dataset = _open_dataset(name, root)
    result = IngestResult(dataset=dataset, scan=report)
    known = {}
    if "rgb" in dataset.group_slices:
        rgb_slice = dataset.select_group_slices("rgb")
        known = dict(zip(rgb_slice.values("pair_id"), rgb_slice.values("filepath")))
    result.existing = len(known)
    result.vanished = sorted(pid for pid, path in known.items() if not Path(path).exists())
    todo = [pair for pair in report.pairs if pair.pair_id not in known]

    # derived files are made in worker processes while this one adds finished groups
    made = _derive_all(todo, report, cache, workers)
    try:
        for start in range(0, len(todo), ADD_BATCH):
            batch = todo[start:start + ADD_BATCH]
            samples = [s for pair in batch for s in _group_samples(pair, next(made))]
            # built here with the declared schema: skip FiftyOne's per-sample checks
            dataset.add_samples(samples, progress=False, validate=False, expand_schema=False)
            result.added += [pair.pair_id for pair in batch]
            say(len(result.added) / len(todo), f"added {len(result.added)}/{len(todo)} groups to '{name}'")
    except BaseException:
        if created:
            fo.delete_dataset(name)
        elif todo:
            dataset.delete_samples(dataset.select_group_slices(_allow_mixed=True).match(
                fo.ViewField("pair_id").is_in([pair.pair_id for pair in todo])))
        raise
    finally:
        made.close()
    say(1.0, f"'{name}' holds {len(dataset)} pairs")
    return result


def _open_dataset(name: str, root: Path) -> fo.Dataset:
    if fo.dataset_exists(name):
        dataset = fo.load_dataset(name)
        source = dataset.info.get("data_root")
        if source and Path(source) != root:
            raise ValueError(f"dataset '{name}' was built from {source}, not {root}: "
                             f"choose another name to ingest a different folder")
        if dataset.media_type != "group" or not set(dataset.group_slices) <= set(SLICES):
            raise ValueError(f"dataset '{name}' exists and is not a {'/'.join(SLICES)} grouped dataset")
        return dataset
    dataset = fo.Dataset(name, persistent=True)
    dataset.add_group_field("group", default="rgb")
    dataset.info = {"data_root": str(root), "classes": list(fmt.LABELS), "created_by": "cilp-multimodal"}
    dataset.default_classes = list(fmt.LABELS)
    dataset.save()
    _declare_fields(dataset)
    return dataset


def _declare_fields(dataset: fo.Dataset) -> None:
    for name, media_type in zip(SLICES, ("image", "image", "point-cloud")):
        dataset.add_group_slice(name, media_type)
    fields = fo.core.fields
    dataset.add_sample_field("pair_id", fields.StringField, description="reference id, e.g. cube_0001")
    dataset.add_sample_field("range_path", fields.StringField, description="the raw LiDAR range image (.npy)")
    dataset.add_sample_field("ground_truth", fields.EmbeddedDocumentField, embedded_doc_type=fo.Classification)
    dataset.add_sample_field("lidar_returns", fields.IntField, description="valid LiDAR returns")
    dataset.add_sample_field("lidar_min_range", fields.FloatField, description="metres")
    dataset.add_sample_field("lidar_mean_range", fields.FloatField, description="metres")
    dataset.add_sample_field("orthographic_projection_metadata", fields.EmbeddedDocumentField,
                             embedded_doc_type=fou3d.OrthographicProjectionMetadata)


def _derive_one(args) -> derived.DerivedFiles:
    return derived.derive(*args)


def _derive_all(pairs, report, cache: Path, workers: int | None) -> Iterator[derived.DerivedFiles]:
    """The derived files of each pair, in order, made by up to ``workers`` processes."""
    derived.make_cache_dirs(cache)
    jobs = [(pair, *report.angles(pair.label), cache) for pair in pairs]
    workers = workers or min(2, len(jobs) // 200 + 1)  # a pool pays off from a few hundred pairs
    if workers == 1:
        yield from map(_derive_one, jobs)
        return
    with ProcessPoolExecutor(workers) as pool:
        yield from pool.map(_derive_one, jobs, chunksize=32)


def _group_samples(pair: fmt.Pair, made: derived.DerivedFiles) -> list[fo.Sample]:
    group = fo.Group()
    common = dict(
        pair_id=pair.pair_id,
        range_path=str(pair.lidar_path),
        ground_truth=fo.Classification(label=pair.label),
        lidar_returns=made.returns,
        lidar_min_range=made.min_range,
        lidar_mean_range=made.mean_range,
    )
    lidar = fo.Sample(filepath=str(made.pcd), group=group.element("lidar"), **common)
    lidar["orthographic_projection_metadata"] = fou3d.OrthographicProjectionMetadata(
        filepath=str(made.thumbnail),
        min_bound=list(made.projection.min_bound),
        max_bound=list(made.projection.max_bound),
        normal=[0.0, 0.0, 1.0],
        width=made.projection.size,
        height=made.projection.size,
    )
    return [
        fo.Sample(filepath=str(pair.rgb_path), group=group.element("rgb"), **common),
        fo.Sample(filepath=str(made.depth_png), group=group.element("depth"), **common),
        lidar,
    ]
