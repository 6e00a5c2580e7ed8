"""Splits: protocol, reproducibility, JSON in and out, tags on every slice."""

import json
import random
import uuid

import pytest

from cilp_plugin.dataset import ingest, splits, views


@pytest.fixture(scope="module")
def dataset(tiny_data):
    result = ingest.ingest(tiny_data, f"splits-{uuid.uuid4().hex[:8]}")
    yield result.dataset
    result.dataset.delete()


def reference_protocol(n_per_class, seed=42, subset=0.3, train=0.8):
    """The published reference code, verbatim in spirit."""
    ids = [f"cube_{i:04d}" for i in range(n_per_class)] + [f"sphere_{i:04d}" for i in range(n_per_class)]
    random.seed(seed)
    random.shuffle(ids)
    ids = ids[: int(len(ids) * subset)]
    random.seed(seed)
    random.shuffle(ids)
    cut = int(len(ids) * train)
    return ids[:cut], ids[cut:]


def test_unstratified_split_reproduces_the_reference_protocol():
    ids = [f"sphere_{i:04d}" for i in range(9999)] + [f"cube_{i:04d}" for i in range(9999)]
    split = splits.make_split(ids, val=0.2, subset=0.3, seed=42, stratify=False)
    train, val = reference_protocol(9999)
    assert (len(split.train), len(split.val)) == (4799, 1200)
    assert split.train == train and split.val == val


def test_stratified_split_keeps_class_balance_and_is_seeded():
    ids = [f"cube_{i:04d}" for i in range(100)] + [f"sphere_{i:04d}" for i in range(300)]
    split = splits.make_split(ids, val=0.2, test=0.1, seed=7)
    for name, expected in (("train", 0.7), ("val", 0.2), ("test", 0.1)):
        members = getattr(split, name)
        assert len(members) == pytest.approx(400 * expected, abs=2)
        assert sum(m.startswith("cube") for m in members) == pytest.approx(100 * expected, abs=1)
    assert split.assignments() == splits.make_split(ids, val=0.2, test=0.1, seed=7).assignments()
    assert split.assignments() != splits.make_split(ids, val=0.2, test=0.1, seed=8).assignments()


@pytest.mark.parametrize("kwargs, message", [
    (dict(val=1.2), "val: expected a fraction"),
    (dict(val=0.6, test=0.5), r"val \+ test"),
    (dict(subset=0), "subset"),
    (dict(test=-0.1), "test: expected a fraction"),
])
def test_bad_fractions_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        splits.make_split(["cube_0000", "sphere_0000"], **kwargs)


def test_tags_land_on_every_slice_and_no_pair_crosses_splits(dataset):
    result = splits.create_splits(dataset, val=0.25, subset=0.5, seed=3)
    flat = views.all_slices(dataset)
    by_pair = {}
    for pid, tags in zip(flat.values("pair_id"), flat.values("tags")):
        by_pair.setdefault(pid, set()).add(tuple(sorted(tags)))
    assert all(len(t) == 1 for t in by_pair.values()), "a pair's slices carry different tags"
    tagged = {pid: t.pop() for pid, t in by_pair.items()}
    assert sum(t == ("train",) for t in tagged.values()) == len(result.split.train) == 6
    assert sum(t == ("val",) for t in tagged.values()) == len(result.split.val) == 2
    assert sum(t == () for t in tagged.values()) == 8  # outside the subset: no split tag
    assert flat.count_sample_tags() == {"train": 18, "val": 6}


def test_resplitting_keeps_other_tags(dataset):
    views.all_slices(dataset).tag_samples("reviewed")
    splits.create_splits(dataset, val=0.5, seed=1)
    counts = views.all_slices(dataset).count_sample_tags()
    assert counts["reviewed"] == 48 and counts["train"] + counts["val"] == 48


def test_json_round_trip_and_reference_import(dataset, tmp_path):
    first = splits.create_splits(dataset, val=0.25, seed=11, to_json=tmp_path / "split.json")
    saved = json.loads((tmp_path / "split.json").read_text())
    assert set(saved) == {"train", "val", "seed", "subset_percentage"} and saved["seed"] == 11

    splits.create_splits(dataset, val=0.5, seed=99)  # something else in between
    again = splits.create_splits(dataset, from_json=tmp_path / "split.json")
    assert again.missing == []
    current = splits.read_split(dataset)
    assert sorted(current.train) == sorted(first.split.train) and sorted(current.val) == sorted(first.split.val)

    reference = {"train": ["cube_0000", "sphere_0004", "cube_9999"], "val": ["sphere_0001"],
                 "seed": 42, "subset_percentage": 0.3}
    (tmp_path / "reference.json").write_text(json.dumps(reference))
    imported = splits.create_splits(dataset, from_json=tmp_path / "reference.json")
    assert imported.missing == ["cube_9999"]
    assert "1 ids not in the dataset: cube_9999" in imported.summary()
    assert views.all_slices(dataset).count_sample_tags()["train"] == 6


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a readable split file"),
    ('{"train": "cube_0001"}', "'train' and 'val' lists"),
    ('{"train": ["cube_0001"], "val": [3]}', "'val' must be a list of pair ids"),
    ('{"train": ["cube_0001"], "val": ["cube_0001"]}', "in both 'train' and 'val'"),
])
def test_bad_split_files_are_named(tmp_path, content, message):
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        splits.Split.from_json(tmp_path / "bad.json")


def test_a_new_split_is_written_in_one_database_update(dataset):
    """One update over all samples: an interrupted re-split leaves the old split or the new one
    (tagging split by split, an interruption could leave pairs with no split at all)."""
    import fiftyone as fo

    db = fo.core.odm.get_db_conn()
    db.system.profile.drop()
    db.command({"profile": 2})
    try:
        splits.create_splits(dataset, val=0.5, seed=11)
    finally:
        db.command({"profile": 0})
    writes = [op for op in db.system.profile.find({"ns": f"{db.name}.{dataset._sample_collection_name}"})
              if op["op"] in ("update", "insert", "remove") or "$merge" in str(op.get("command"))]
    db.system.profile.drop()
    assert len(writes) == 1, [op["op"] for op in writes]
    assert splits.read_split(dataset).counts() == {"train": 8, "val": 8, "test": 0}


# --------------------------------------------------------------------------- leaving tagged pairs out


@pytest.fixture(scope="module")
def quirky(quirky_data):
    """``quirky_data`` ingested: 4 pairs tagged blank_rgb, 4 others duplicate."""
    result = ingest.ingest(quirky_data, f"quirky-splits-{uuid.uuid4().hex[:8]}")
    yield result
    result.dataset.delete()


def split_tags(dataset) -> dict[str, set[str]]:
    """Pair id -> the split tags its slices carry."""
    by_pair = {}
    for pid, tags in zip(*views.all_slices(dataset).values(["pair_id", "tags"])):
        by_pair.setdefault(pid, set()).update(set(tags) & set(splits.SPLITS))
    return by_pair


def test_excluded_tags_leave_their_pairs_out_of_the_split(quirky, capsys):
    from cilp_plugin import cli

    dataset, quirks = quirky.dataset, quirky.quirks
    left_out = set(quirks["blank_rgb"]) | set(quirks["duplicate"])
    assert len(left_out) == 8
    splits.create_splits(dataset, val=0.25, seed=0)  # every pair in a split first
    assert all(len(tags) == 1 for tags in split_tags(dataset).values())

    result = splits.create_splits(dataset, val=0.25, seed=0, exclude_tags=["blank_rgb", "duplicate"])

    kept = sorted(set(splits.pair_ids(dataset)) - left_out)
    assert result.split.assignments() == splits.make_split(kept, val=0.25, seed=0).assignments()
    assert {pid for pid, tags in split_tags(dataset).items() if tags} == set(kept)  # the others lost theirs
    assert views.all_slices(dataset).count_sample_tags() == {"train": 18, "val": 6, "blank_rgb": 12, "duplicate": 12}
    assert result.excluded == {"blank_rgb": sorted(quirks["blank_rgb"]), "duplicate": sorted(quirks["duplicate"])}
    assert f"left out 8 pairs tagged blank_rgb (4: {', '.join(sorted(quirks['blank_rgb']))}), duplicate (4: " \
        in result.summary()
    assert dataset.info["split"]["exclude_tags"] == ["blank_rgb", "duplicate"]

    assert cli.main(["split", dataset.name, "--val", "0.25", "--exclude-tags", "duplicate"]) == 0
    assert "split: 8 train, 4 val pairs" in capsys.readouterr().out  # 6 a class: int(4.5) train
    assert {pid for pid, tags in split_tags(dataset).items() if not tags} == set(quirks["duplicate"])


def test_an_imported_split_loses_the_excluded_pairs(quirky, tmp_path):
    dataset, quirks = quirky.dataset, quirky.quirks
    every_pair = sorted(splits.pair_ids(dataset))
    splits.Split(train=every_pair[:12], val=every_pair[12:], seed=1).to_json(tmp_path / "all.json")

    result = splits.create_splits(dataset, from_json=tmp_path / "all.json", exclude_tags="blank_rgb")

    assert set(result.split.assignments()) == set(every_pair) - set(quirks["blank_rgb"])
    assert {pid for pid, tags in split_tags(dataset).items() if not tags} == set(quirks["blank_rgb"])


@pytest.mark.parametrize("exclude_tags, message", [
    (["duplicate", "val"], "exclude_tags: 'val' is a split tag"),
    ([""], "exclude_tags: expected tag names"),
    (["everything"], "the split is empty once the 16 pairs tagged everything are left out"),
])
def test_bad_exclusions_are_named_and_change_nothing(quirky, exclude_tags, message):
    dataset = quirky.dataset
    views.all_slices(dataset).tag_samples("everything")
    splits.create_splits(dataset, val=0.5, seed=2)
    before = split_tags(dataset)
    try:
        with pytest.raises(ValueError, match=message):
            splits.create_splits(dataset, val=0.25, seed=0, exclude_tags=exclude_tags)
    finally:
        views.all_slices(dataset).untag_samples("everything")
    assert split_tags(dataset) == before
