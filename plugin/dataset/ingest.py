"""A data folder -> a persistent grouped FiftyOne dataset, one group per RGB/LiDAR pair.

Slices: ``rgb`` (the PNG), ``depth`` (a colour-mapped range picture) and ``lidar``
(a ``.pcd`` point cloud with a bird's-eye thumbnail). Every slice carries
``ground_truth``, ``pair_id``, ``range_path`` (the raw range image, which models
read), ``source_key`` (size and modification time of the pair's files),
``content_hash`` (a digest of each file) and the LiDAR statistics. Every slice of a
pair with an all-black RGB image is tagged ``blank_rgb``, of a pair byte-identical to
an earlier one ``duplicate`` (:mod:`cilp_plugin.data.layout`'s quirks; ingest sets and clears these
two tags). Derived files live in a cache folder beside the data; the raw data is
never modified.

Ingesting into an existing dataset brings it in line with the folder (see :func:`ingest`);
every change is a bulk write (``add_samples`` of whole batches, ``set_values``,
``delete_samples`` of a list), never a save per sample.
"""

from __future__ import annotations

import os
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path

import fiftyone as fo
import fiftyone.utils.utils3d as fou3d

from ..data import derived, layout
from ..data.workers import process_pool
from .colours import colour_by_class
from .owners import describe_owner, owner, owner_state
from .views import default_cache_dir

DEFAULT_NAME = "cilp-assessment"
SLICES = ("rgb", "depth", "lidar")
ADD_BATCH = int(os.environ.get("CILP_INGEST_BATCH") or 250)  # groups per database write
Progress = Callable[[float, str], None]
_REBUILD = re.compile(r"\.rebuild-[0-9a-f]{8}$")


@dataclass
class IngestResult:
    dataset: fo.Dataset
    added: list[str] = field(default_factory=list)  # pair ids added by this run (new or repaired)
    existing: int = 0  # complete pairs already in the dataset (changed ones included)
    vanished: list[str] = field(default_factory=list)  # pair ids removed: a file of theirs is gone
    invalid: list[str] = field(default_factory=list)  # pair ids removed: a file of theirs is now bad
    changed: list[str] = field(default_factory=list)  # pair ids whose files changed: re-derived, fields updated
    repaired: list[str] = field(default_factory=list)  # pair ids whose groups were incomplete or doubled (a
    # killed ingest): their samples were replaced by one complete group (also in ``added``)
    unkeyed: int = 0  # of ``changed``: pairs an older version ingested without a source key
    quirks: dict[str, list[str]] = field(default_factory=dict)  # quirk tag -> the pairs tagged with it
    leftovers: list[str] = field(default_factory=list)  # datasets removed: rebuilds of this name that were killed
    scan: layout.ScanReport | None = None
    replaced: str | None = None  # what a rebuild replaced: "<data root> (<n> groups)"

    def summary(self) -> str:
        lines = [f"dataset '{self.dataset.name}': {len(self.added)} pairs added, "
                 f"{self.existing} already present, {len(self.dataset)} groups in all"]
        if self.scan:
            lines.append(f"  classes {', '.join(self.scan.labels)}; {self.scan.size_line()}")
        if self.replaced:
            lines.insert(0, f"rebuilt dataset '{self.dataset.name}': it replaces the one built from {self.replaced}")
        for pair_ids, what in (
                (self.vanished, "pairs whose files vanished, removed from the dataset"),
                (self.invalid, "pairs whose files are no longer valid (see `cilp validate`), removed from the dataset"),
                (self.changed, "pairs whose files changed" + (f" (or, {self.unkeyed} of them, ingested before "
                               f"file keys were recorded)" if self.unkeyed else "")
                 + ": depth, point cloud and thumbnail regenerated, fields updated"),
                (self.repaired, "pairs left incomplete by an interrupted ingest, added again as whole groups")):
            if pair_ids:
                lines.append(f"  {len(pair_ids)} {what}: {_some(pair_ids)}")
        if self.leftovers:
            lines.append(f"  removed {len(self.leftovers)} unfinished rebuilds of '{self.dataset.name}' "
                         f"(a killed `--rebuild`): {', '.join(self.leftovers)}")
        bad = sum(len(c.bad_files) for c in self.scan.classes.values()) if self.scan else 0
        unpaired = sum(len(c.unpaired) for c in self.scan.classes.values()) if self.scan else 0
        if bad or unpaired:
            lines.append(f"  skipped {bad} bad and {unpaired} unpaired files (see `cilp validate`)")
        if self.scan:
            lines += self.scan.quirk_lines()
        return "\n".join(lines)


def _some(pair_ids: list[str], shown: int = 10) -> str:
    return ", ".join(pair_ids[:shown]) + (" ..." if len(pair_ids) > shown else "")


def source_key(pair: layout.Pair) -> str:
    """Size and modification time of the pair's two files: a change to either changes the key."""
    parts = []
    for path in (pair.rgb_path, pair.lidar_path):
        stat = os.stat(path)
        parts.append(f"{stat.st_size}:{stat.st_mtime_ns}")
    return "/".join(parts)


def ingest(
    root: Path | str,
    name: str = DEFAULT_NAME,
    *,
    cache_dir: Path | str | None = None,
    workers: int | None = None,
    rebuild: bool = False,
    progress: Progress | None = None,
) -> IngestResult:
    """Bring the dataset ``name`` in line with the folder ``root``.

    New pairs are added; pairs whose files changed (size or modification time) get
    their derived files made again and their fields updated; pairs whose files
    vanished (or became invalid) are removed; groups an interrupted ingest left
    incomplete or doubled are replaced by one whole group. A new dataset is deleted
    again if anything fails; an existing one loses the samples this run added.
    With ``rebuild`` a dataset ``name`` that exists (of any folder) is replaced by a
    new one, built under another name and swapped in once complete. Unfinished
    rebuilds of ``name`` whose process is gone (``kill -9``) are removed first.
    """
    if _REBUILD.search(name):
        raise ValueError(f"dataset name '{name}': names ending in '.rebuild-<hex>' are kept for --rebuild")
    leftovers = remove_rebuild_leftovers(name)
    if rebuild and fo.dataset_exists(name):
        old = fo.load_dataset(name)
        replaced = f"{old.info.get('data_root', 'an unknown folder')} ({len(old)} groups)"
        result = _ingest(root, f"{name}.rebuild-{uuid.uuid4().hex[:8]}", cache_dir, workers, progress,
                         building=True)
        old.delete()
        result.dataset.name = name
        info = result.dataset.info
        info.pop("building", None)
        result.dataset.save()
        result.replaced = replaced
    else:
        result = _ingest(root, name, cache_dir, workers, progress)
    result.leftovers = leftovers
    return result


def remove_rebuild_leftovers(name: str) -> list[str]:
    """Delete the datasets ``<name>.rebuild-<hex>`` whose building process is gone; returns what was removed.

    A rebuild records its process on its dataset; one still running (a rebuild at the
    same time) or on another host is left alone. One without a record (killed before
    it wrote one) is removed when it is more than a minute old.
    """
    removed = []
    for candidate in fo.list_datasets():
        if not (candidate.startswith(f"{name}.rebuild-") and _REBUILD.fullmatch(candidate[len(name):])):
            continue
        try:
            dataset = fo.load_dataset(candidate)
        except Exception:  # killed before its document was whole
            import fiftyone.core.odm as foo

            foo.delete_dataset(candidate)
            removed.append(f"{candidate} (unreadable)")
            continue
        record = dataset.info.get("building")
        if record is None:
            created = dataset.created_at
            if created is None or (datetime.now(timezone.utc).replace(tzinfo=None) - created).total_seconds() < 60:
                continue
        elif owner_state(record) != "gone":
            continue
        groups = len(dataset)
        dataset.delete()
        removed.append(f"{candidate} ({groups} groups, by {describe_owner(record)})")
    return removed


def _ingest(root, name: str, cache_dir, workers, progress, *, building: bool = False) -> IngestResult:
    root = Path(root).resolve()
    say = progress or (lambda fraction, label: None)
    say(0.0, f"scanning {root}")
    report = layout.scan(root, validate=False).require_usable()
    cache = Path(cache_dir).resolve() if cache_dir else default_cache_dir(root)

    created = not fo.dataset_exists(name)
    dataset = None if created else _open_dataset(name, root, building=building)
    keys = {pair.pair_id: source_key(pair) for pair in report.pairs}
    held = _pairs_held(dataset) if dataset is not None else {}
    complete = {pid for pid, entry in held.items()  # one group holding every slice once
                if len(entry["groups"]) == 1 and next(iter(entry["groups"].values())) == set(SLICES)
                and len(entry["ids"]) == len(SLICES)}
    # the files of pairs read when they were ingested and unchanged since (same key) are not read again:
    # their contents are what was recorded then (the digests; all-black: the tag)
    unchanged = {pid for pid in complete if held[pid]["key"] is not None and held[pid]["key"] == keys.get(pid)
                 and held[pid]["content"] is not None}
    say(0.0, f"checking the files of {len(keys) - len(unchanged)} new or changed pairs")
    layout.validate_pairs(report, skip=unchanged).require_usable()  # before a new dataset exists
    report.contents.update({
        pid: layout.Contents(held[pid]["content"], blank_rgb=layout.BLANK_RGB in held[pid]["rgb_quirks"])
        for pid in unchanged})
    dataset = dataset if dataset is not None else _open_dataset(name, root, building=building)
    _record_classes_and_sizes(dataset, report)
    result = IngestResult(dataset=dataset, scan=report, quirks=report.quirks())
    tags_of: dict[str, list[str]] = {}
    for tag, pair_ids in result.quirks.items():
        for pid in pair_ids:
            tags_of.setdefault(pid, []).append(tag)
    valid = {pair.pair_id: pair for pair in report.pairs}
    broken = sorted(set(held) - complete)
    gone = sorted(pid for pid in held if pid not in valid)
    result.vanished = [pid for pid in gone if not all(Path(p).exists() for p in held[pid]["paths"] if p)]
    result.invalid = [pid for pid in gone if pid not in result.vanished]
    result.repaired = [pid for pid in broken if pid in valid]
    result.changed = sorted(pid for pid in complete if pid in valid and held[pid]["key"] != keys[pid])
    result.unkeyed = sum(held[pid]["key"] is None for pid in result.changed)
    result.existing = len([pid for pid in complete if pid in valid])
    todo = [pair for pair in report.pairs if pair.pair_id not in complete]

    # the parts of interrupted groups go first, so that their pairs come back whole and once
    if result.repaired:
        dataset.delete_samples([sid for pid in result.repaired for sid in held[pid]["ids"]])
    # derived files are made in worker processes while this one adds finished groups
    made = _derive_all(todo, report, cache, workers)
    try:
        for start in range(0, len(todo), ADD_BATCH):
            batch = todo[start:start + ADD_BATCH]
            samples = [s for pair in batch for s in _group_samples(
                pair, next(made), keys[pair.pair_id], report.contents[pair.pair_id], tags_of.get(pair.pair_id, []))]
            # built here with the declared schema: skip FiftyOne's per-sample checks. One insert per batch
            # (batcher=False): a process killed meanwhile leaves whole groups, where FiftyOne's default
            # batcher, which starts with a few samples per insert, left parts of groups
            dataset.add_samples(samples, progress=False, validate=False, expand_schema=False, batcher=False)
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

    # before the changed pairs get their new keys and the unhashed ones their digests: a run cut short
    # leaves them to be read again
    _set_quirk_tags(dataset, {pid: held[pid] for pid in complete if pid in valid}, result.quirks)
    unhashed = [pid for pid in complete if pid in valid and pid not in unchanged and pid not in result.changed]
    if unhashed:  # ingested by an older version, unchanged since
        _record_content_hashes(dataset, unhashed, report)
    if result.changed:
        say(1.0, f"re-deriving {len(result.changed)} changed pairs")
        _update_changed(dataset, [valid[pid] for pid in result.changed], keys, report, cache, workers)
    removed = result.vanished + result.invalid
    if removed:
        dataset.delete_samples([sid for pid in removed for sid in held[pid]["ids"]])
    say(1.0, f"'{name}' holds {len(dataset)} pairs")
    return result


def _update_changed(dataset: fo.Dataset, pairs: list[layout.Pair], keys: dict[str, str], report, cache: Path,
                    workers: int | None) -> None:
    """Make the derived files of changed pairs again (same paths) and update their fields, one bulk
    write per field. The key goes last: a run cut short leaves the old key, so the next ingest redoes them.
    """
    made = dict(zip([pair.pair_id for pair in pairs], _derive_all(pairs, report, cache, workers)))
    view = dataset.select_group_slices(_allow_mixed=True).match(fo.ViewField("pair_id").is_in(list(made)))
    rows = list(zip(*view.values(["id", "pair_id", "group.name"])))
    columns = {
        "lidar_returns": lambda m: m.returns,
        "lidar_min_range": lambda m: m.min_range,
        "lidar_mean_range": lambda m: m.mean_range,
        "metadata": lambda m: None,  # FiftyOne computes it again when asked
    }
    for column, value_of in columns.items():
        view.set_values(column, {sid: value_of(made[pid]) for sid, pid, _ in rows}, key_field="id")
    view.set_values("orthographic_projection_metadata",
                    {sid: _projection_metadata(made[pid]) for sid, pid, slice_name in rows if slice_name == "lidar"},
                    key_field="id")
    view.set_values("content_hash", {sid: report.contents[pid].digest for sid, pid, _ in rows}, key_field="id")
    view.set_values("source_key", {sid: keys[pid] for sid, pid, _ in rows}, key_field="id")


def _record_content_hashes(dataset: fo.Dataset, pair_ids: list[str], report: layout.ScanReport) -> None:
    """Write the digests the scan found for ``pair_ids`` on every slice of theirs, in one bulk write."""
    view = dataset.select_group_slices(_allow_mixed=True).match(fo.ViewField("pair_id").is_in(pair_ids))
    view.set_values("content_hash", {sid: report.contents[pid].digest for sid, pid in zip(*view.values(
        ["id", "pair_id"]))}, key_field="id")


def _set_quirk_tags(dataset: fo.Dataset, kept: dict[str, dict], quirks: dict[str, list[str]]) -> None:
    """Every slice of the pairs ``quirks[tag]`` names gets ``tag``; the other slices lose it. Of the
    pairs ``kept`` (:func:`_pairs_held`, before this run added its groups, which carry their tags):
    one bulk update per tag and direction, of the samples that change only (none when nothing did)."""
    samples = dataset.select_group_slices(_allow_mixed=True)
    for tag, pair_ids in quirks.items():
        named = set(pair_ids)
        to_tag = [sid for pid in named & kept.keys() for sid in kept[pid]["ids"]
                  if tag not in kept[pid]["quirks"].get(sid, ())]
        to_untag = [sid for pid, entry in kept.items() if pid not in named
                    for sid, tags in entry["quirks"].items() if tag in tags]
        if to_tag:
            samples.select(to_tag).tag_samples(tag)
        if to_untag:
            samples.select(to_untag).untag_samples(tag)


def _pairs_held(dataset: fo.Dataset) -> dict[str, dict]:
    """What ``dataset`` holds, pair by pair: sample ids, slices by group, file key, file paths, the
    rgb slice's content hash, and the quirk tags of the samples that carry any (of the rgb slice's
    apart). Three reads: every sample; the rgb slice; the quirk-tagged samples (reading every
    sample's digest and tags would take 2.4 times as long as the first alone, at 60,000 samples)."""
    samples = dataset.select_group_slices(_allow_mixed=True)
    held: dict[str, dict] = {}
    for sid, pid, gid, slice_name, key, path, range_path in zip(*samples.values(
            ["id", "pair_id", "group.id", "group.name", "source_key", "filepath", "range_path"])):
        entry = held.setdefault(pid, {"ids": [], "groups": {}, "key": key, "paths": set(), "content": None,
                                      "quirks": {}, "rgb_quirks": set()})
        entry["ids"].append(sid)
        entry["groups"].setdefault(gid, set()).add(slice_name)
        entry["paths"].add(range_path)
        if slice_name == "rgb":
            entry["paths"].add(path)
    for pid, content in zip(*dataset.select_group_slices("rgb").values(["pair_id", "content_hash"])):
        held[pid]["content"] = content
    tagged = samples.match(fo.ViewField("tags").contains(list(layout.QUIRK_TAGS), all=False))
    for sid, pid, slice_name, tags in zip(*tagged.values(["id", "pair_id", "group.name", "tags"])):
        quirks = held[pid]["quirks"][sid] = set(tags) & set(layout.QUIRK_TAGS)
        if slice_name == "rgb":
            held[pid]["rgb_quirks"] = quirks
    return held


def _open_dataset(name: str, root: Path, *, building: bool = False) -> fo.Dataset:
    if fo.dataset_exists(name):
        dataset = fo.load_dataset(name)
        source = dataset.info.get("data_root")
        if source and Path(source) != root:
            raise ValueError(f"dataset '{name}' was built from {source}, not {root}: "
                             f"choose another name to ingest a different folder")
        if dataset.media_type not in ("group", None) or not set(dataset.group_slices or ()) <= set(SLICES):
            raise ValueError(f"dataset '{name}' exists and is not a {'/'.join(SLICES)} grouped dataset")
        if dataset.media_type is None or not source:  # an ingest killed while it created the dataset
            _create_schema(dataset, root)
        _declare_fields(dataset)  # what a dataset of an older version lacks (source_key)
        return dataset
    dataset = fo.Dataset(name, persistent=True)
    _create_schema(dataset, root, building=building)
    _declare_fields(dataset)
    return dataset


def _create_schema(dataset: fo.Dataset, root: Path, *, building: bool = False) -> None:
    if dataset.media_type is None:
        dataset.add_group_field("group", default="rgb")
    dataset.info = {**dataset.info, "data_root": str(root),
                    "created_by": "cilp-multimodal", **({"building": owner()} if building else {})}
    dataset.save()


def _record_classes_and_sizes(dataset: fo.Dataset, report: layout.ScanReport) -> None:
    """The data folder's class labels, in label-index order (``info["classes"]`` and ``default_classes``),
    and its sizes (``info["image_size"]``, ``info["beams"]``): what training, write-back and evaluation read.
    The App colours each class of ``ground_truth``."""
    dataset.info = {**dataset.info, "classes": list(report.labels),
                    "image_size": list(report.image_size), "beams": list(report.beams)}
    dataset.default_classes = list(report.labels)
    colour_by_class(dataset, ["ground_truth"], list(report.labels))  # saves the dataset


def _declare_fields(dataset: fo.Dataset) -> None:
    """Declare the slices and fields (those missing only: it also completes older datasets)."""
    for name, media_type in zip(SLICES, ("image", "image", "point-cloud")):
        dataset.add_group_slice(name, media_type)
    fields = fo.core.fields
    declared = dataset.get_field_schema()
    for name, kind, options in (
            ("pair_id", fields.StringField, {"description": "reference id, e.g. cube_0001"}),
            ("range_path", fields.StringField, {"description": "the raw LiDAR range image (.npy)"}),
            ("source_key", fields.StringField,
             {"description": "size:mtime of the RGB and LiDAR files when derived (re-ingest compares it)"}),
            ("content_hash", fields.StringField,
             {"description": "BLAKE2b-128 of the RGB and LiDAR files (rgb/lidar): duplicate pairs share it"}),
            ("ground_truth", fields.EmbeddedDocumentField, {"embedded_doc_type": fo.Classification}),
            ("lidar_returns", fields.IntField, {"description": "valid LiDAR returns"}),
            ("lidar_min_range", fields.FloatField, {"description": "metres"}),
            ("lidar_mean_range", fields.FloatField, {"description": "metres"}),
            ("orthographic_projection_metadata", fields.EmbeddedDocumentField,
             {"embedded_doc_type": fou3d.OrthographicProjectionMetadata})):
        if name not in declared:
            dataset.add_sample_field(name, kind, **options)


#: pairs a worker derives per task; pairs in flight at most: a few database batches' worth (memory flat in N)
DERIVE_CHUNK = 32
DERIVE_AHEAD = 2 * ADD_BATCH


def _derive_all(pairs, report, cache: Path, workers: int | None) -> Iterator[derived.DerivedFiles]:
    """The derived files of each pair, in order, made by up to ``workers`` processes.

    Work is handed out as the results are taken, never more than ``DERIVE_AHEAD`` pairs
    ahead: ``Executor.map`` would queue every pair at once and keep every result until
    it is taken, memory that grows with the number of pairs. The workers are forks of
    this process (its pages shared until written), not started from a fork server or
    spawned: those run the caller's main script again in each worker, and a script that
    ingests without an ``if __name__ == "__main__":`` guard would ingest again there.
    """
    derived.make_cache_dirs(cache)
    jobs = ((pair, *report.angles(pair.label), cache) for pair in pairs)
    workers = workers or min(2, len(pairs) // 200 + 1)  # a pool pays off from a few hundred pairs
    if workers == 1:
        yield from (derived.derive(*job) for job in jobs)
        return
    with process_pool(workers) as pool:
        pending: deque = deque()
        while True:
            while len(pending) * DERIVE_CHUNK < max(DERIVE_AHEAD, 2 * workers * DERIVE_CHUNK):
                chunk = list(islice(jobs, DERIVE_CHUNK))
                if not chunk:
                    break
                pending.append(pool.submit(derived.derive_many, chunk))
            if not pending:
                return
            yield from pending.popleft().result()


def _projection_metadata(made: derived.DerivedFiles) -> fou3d.OrthographicProjectionMetadata:
    return fou3d.OrthographicProjectionMetadata(
        filepath=str(made.thumbnail),
        min_bound=list(made.projection.min_bound),
        max_bound=list(made.projection.max_bound),
        normal=[0.0, 0.0, 1.0],
        width=made.projection.size,
        height=made.projection.size,
    )


def _group_samples(pair: layout.Pair, made: derived.DerivedFiles, key: str, contents: layout.Contents,
                   tags: list[str]) -> list[fo.Sample]:
    group = fo.Group()
    common = dict(
        pair_id=pair.pair_id,
        range_path=str(pair.lidar_path),
        source_key=key,
        content_hash=contents.digest,
        ground_truth=fo.Classification(label=pair.label),
        lidar_returns=made.returns,
        lidar_min_range=made.min_range,
        lidar_mean_range=made.mean_range,
    )
    lidar = fo.Sample(filepath=str(made.pcd), group=group.element("lidar"), tags=list(tags), **common)
    lidar["orthographic_projection_metadata"] = _projection_metadata(made)
    return [
        fo.Sample(filepath=str(pair.rgb_path), group=group.element("rgb"), tags=list(tags), **common),
        fo.Sample(filepath=str(made.depth_png), group=group.element("depth"), tags=list(tags), **common),
        lidar,
    ]
