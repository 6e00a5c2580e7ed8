"""Train/val/test splits of pairs, as tags on every slice of a group.

The reference protocol (published with the DLI results): pair ids ordered cubes
then spheres (then any other class, in the layout's class order) by stem; ``random.seed(seed)``, shuffle, keep the first
``subset`` fraction; seed again, shuffle, and cut. ``stratify=False`` reproduces
it exactly; ``stratify=True`` (the default) applies it to each class, so every
split keeps the class balance. The JSON form is the reference's:
``{"train": [...], "val": [...], "seed": 42, "subset_percentage": 0.3}``
(plus ``"test"`` when there is one). The protocol itself (``make_split``) needs no
FiftyOne, so scripts that train without a dataset cut the same splits. Pairs with an
excluded tag (such as ingest's ``blank_rgb`` and ``duplicate``) are left out before
the protocol runs, and out of an imported split.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..data import layout
from .views import all_slices, dataset_classes

if TYPE_CHECKING:
    import fiftyone as fo

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    train: list[str]
    val: list[str]
    test: list[str] = field(default_factory=list)
    seed: int | None = None
    subset_percentage: float = 1.0

    def assignments(self) -> dict[str, str]:
        return {pid: name for name in SPLITS for pid in getattr(self, name)}

    def counts(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in SPLITS}

    def without(self, pair_ids: Iterable[str]) -> Split:
        """This split less ``pair_ids``."""
        left_out = set(pair_ids)
        kept = {name: [pid for pid in getattr(self, name) if pid not in left_out] for name in SPLITS}
        return Split(**kept, seed=self.seed, subset_percentage=self.subset_percentage)

    def to_json(self, path: Path | str) -> Path:
        data = {"train": self.train, "val": self.val}
        if self.test:
            data["test"] = self.test
        data.update(seed=self.seed, subset_percentage=self.subset_percentage)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1))
        return path

    @classmethod
    def from_json(cls, path: Path | str) -> Split:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a readable split file ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("train"), list) \
                or not isinstance(data.get("val"), list):
            raise ValueError(f"{path}: expected a JSON object with 'train' and 'val' lists of pair ids")
        lists = {name: data.get(name, []) for name in SPLITS}
        for name, ids in lists.items():
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ValueError(f"{path}: '{name}' must be a list of pair ids such as 'cube_0001'")
        seen = {}
        for name, ids in lists.items():
            for pid in ids:
                if pid in seen:
                    raise ValueError(f"{path}: pair '{pid}' is in both '{seen[pid]}' and '{name}'")
                seen[pid] = name
        return cls(**lists, seed=data.get("seed"), subset_percentage=data.get("subset_percentage", 1.0))


def _check_fraction(name: str, value: float, allow_one: bool = False) -> None:
    if not (0 <= value <= 1 if allow_one else 0 <= value < 1):
        raise ValueError(f"{name}: expected a fraction in [0, {'1]' if allow_one else '1)'}, got {value}")


def label_of(pair_id: str, classes: Iterable[str] = ()) -> str:
    """The class label a pair id ``<label>_<stem>`` starts with: the longest of ``classes`` that it
    starts with (a label may hold ``_``), else what comes before its first ``_``."""
    known = [c for c in classes if pair_id.startswith(f"{c}_")]
    return max(known, key=len) if known else pair_id.partition("_")[0]


def _reference_order(pair_ids: list[str], classes: Iterable[str] = ()) -> list[str]:
    """Class by class (cubes, spheres, then the layout's class order), each by stem: the order the
    reference shuffled."""
    classes = tuple(classes)

    def key(pid):
        label = label_of(pid, classes)
        return (*layout.class_order(label), pid[len(label) + 1:])
    return sorted(pair_ids, key=key)


def _cut(ids: list[str], val: float, test: float, subset: float, seed: int) -> tuple[list, list, list]:
    ids = list(ids)
    random.seed(seed)
    random.shuffle(ids)
    ids = ids[: int(len(ids) * subset + 1e-9)]
    random.seed(seed)
    random.shuffle(ids)
    n_train = int(len(ids) * (1 - val - test) + 1e-9)
    n_test = int(len(ids) * test + 1e-9)
    return ids[:n_train], ids[n_train:len(ids) - n_test], ids[len(ids) - n_test:]


def make_split(pair_ids: list[str], val: float = 0.2, test: float = 0.0, subset: float = 1.0,
               seed: int = 42, stratify: bool = True, classes: Iterable[str] = ()) -> Split:
    """Assign pair ids to train/val/test by the reference protocol; ``classes``: the class labels
    (needed only where a label holds ``_``)."""
    _check_fraction("val", val)
    _check_fraction("test", test)
    _check_fraction("subset", subset, allow_one=True)
    if val + test >= 1:
        raise ValueError(f"val + test: expected less than 1, got {val + test}")
    if subset <= 0:
        raise ValueError(f"subset: expected a fraction in (0, 1], got {subset}")
    classes = tuple(classes)
    ordered = _reference_order(pair_ids, classes)
    labels = [label_of(p, classes) for p in ordered]
    groups = [[p for p, of in zip(ordered, labels) if of == label]
              for label in dict.fromkeys(labels)] if stratify else [ordered]
    split = Split([], [], [], seed=seed, subset_percentage=subset)
    for ids in groups:
        train, val_ids, test_ids = _cut(ids, val, test, subset, seed)
        split.train += train
        split.val += val_ids
        split.test += test_ids
    return split


# --------------------------------------------------------------------------- datasets


@dataclass
class SplitResult:
    split: Split
    missing: list[str]  # ids the split names that the dataset lacks
    excluded: dict[str, list[str]] = field(default_factory=dict)  # excluded tag -> the pairs left out for it

    def summary(self) -> str:
        counts = ", ".join(f"{n} {name}" for name, n in self.split.counts().items() if n)
        text = f"split: {counts} pairs (seed {self.split.seed}, subset {self.split.subset_percentage})"
        if self.excluded:
            left_out = {pid for ids in self.excluded.values() for pid in ids}
            text += f"\n  left out {len(left_out)} pairs tagged " + ", ".join(
                f"{tag} ({len(ids)}{': ' + _some(ids) if ids else ''})" for tag, ids in self.excluded.items())
        if self.missing:
            text += f"\n  {len(self.missing)} ids not in the dataset: {_some(self.missing)}"
        return text


def _some(pair_ids: list[str], shown: int = 10) -> str:
    return ", ".join(pair_ids[:shown]) + (" ..." if len(pair_ids) > shown else "")


def pair_ids(dataset: fo.Dataset) -> list[str]:
    return all_slices(dataset).distinct("pair_id")


def check_exclude_tags(tags: str | Iterable[str] | None) -> list[str]:
    """``tags`` as a list (one tag may come as a string); a split tag or an empty one raises ``ValueError``."""
    tags = [tags] if isinstance(tags, str) else list(tags or [])
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip():
            raise ValueError(f"exclude_tags: expected tag names such as 'blank_rgb', got {tag!r}")
        if tag in SPLITS:
            raise ValueError(f"exclude_tags: '{tag}' is a split tag, which a split rewrites; "
                             f"exclude tags such as 'blank_rgb' or 'duplicate'")
    return list(dict.fromkeys(tags))


def tagged_pairs(dataset: fo.Dataset, tags: list[str]) -> dict[str, list[str]]:
    """Each tag -> the pairs with it on any slice, sorted."""
    return {tag: sorted(all_slices(dataset).match_tags(tag).distinct("pair_id")) for tag in tags}


def apply_split(dataset: fo.Dataset, split: Split) -> SplitResult:
    """Tag every slice of every group with its split; samples outside it lose their split tag.

    One update, run by the database over every sample of the dataset (FiftyOne's own
    ``tag_samples`` / ``set_values`` send one per split or per batch), rewrites the
    tags and keeps the others: an interruption leaves the old split or the new one.
    """
    from fiftyone import ViewField as F

    pair_id = F("pair_id")
    new_tag = F().literal([])
    for name in reversed(SPLITS):
        members = getattr(split, name)
        if members:
            new_tag = pair_id.is_in(members).if_else([name], new_tag)
    tags = F("tags").filter(~F().is_in(list(SPLITS))).extend(new_tag)
    dataset._sample_collection.update_many({}, [{"$set": {"tags": tags.to_mongo(), "last_modified_at": "$$NOW"}}])
    dataset.reload()
    present = set(all_slices(dataset).distinct("pair_id"))
    return SplitResult(split, missing=sorted(pid for pid in split.assignments() if pid not in present))


def create_splits(
    dataset: fo.Dataset, *, val: float = 0.2, test: float = 0.0, subset: float = 1.0, seed: int = 42,
    stratify: bool = True, from_json: Path | str | None = None, to_json: Path | str | None = None,
    exclude_tags: str | Iterable[str] | None = None,
) -> SplitResult:
    """Make (or import, with ``from_json``) a split, tag the dataset, optionally export it.

    Pairs with any of ``exclude_tags`` (on any slice) are left out: the protocol runs on the others,
    an imported split loses them, and they carry no split tag afterwards."""
    tags = check_exclude_tags(exclude_tags)
    excluded = tagged_pairs(dataset, tags)
    left_out = {pid for ids in excluded.values() for pid in ids}
    if from_json:
        split = Split.from_json(from_json).without(left_out)
    else:
        split = make_split([pid for pid in pair_ids(dataset) if pid not in left_out],
                           val=val, test=test, subset=subset, seed=seed, stratify=stratify,
                           classes=dataset_classes(dataset))
    if not split.train and not split.val and not split.test:
        raise ValueError(f"the split is empty once the {len(left_out)} pairs tagged {' or '.join(tags)} are left out"
                         if left_out else "the split is empty: the dataset has no pairs (ingest data first)")
    result = apply_split(dataset, split)
    result.excluded = excluded
    if to_json:
        split.to_json(to_json)
    dataset.info["split"] = {"seed": split.seed, "subset_percentage": split.subset_percentage,
                             **split.counts(), "exclude_tags": tags}
    dataset.save()
    return result


def read_split(dataset: fo.Dataset) -> Split:
    """The split currently tagged on the dataset (from its rgb slice)."""
    view = dataset.select_group_slices("rgb")
    by_tag = {name: sorted(view.match_tags(name).values("pair_id")) for name in SPLITS}
    info = dataset.info.get("split", {})
    return Split(**by_tag, seed=info.get("seed"), subset_percentage=info.get("subset_percentage", 1.0))
