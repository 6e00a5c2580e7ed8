"""Folder -> grouped dataset: group integrity, derived files, idempotence, atomic failure."""

import subprocess
import sys
import uuid

import fiftyone as fo
import numpy as np
import open3d as o3d
import pytest
from PIL import Image

from cilp_plugin.data import derived, layout
from cilp_plugin.dataset import ingest, views


def unique(prefix="cilp"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def dataset(data_copy):
    result = ingest.ingest(data_copy, unique())
    yield result.dataset
    if not result.dataset.deleted:  # a rebuild deletes it
        result.dataset.delete()


def test_every_pair_is_one_complete_group(dataset, data_copy):
    assert dataset.media_type == "group" and dataset.default_group_slice == "rgb"
    assert dataset.group_media_types == {"rgb": "image", "depth": "image", "lidar": "point-cloud"}
    assert len(dataset) == 16
    flat = dataset.select_group_slices(_allow_mixed=True)
    assert len(flat) == 48
    groups = {}
    for group, pid, label, returns in zip(flat.values("group.id"), flat.values("pair_id"),
                                          flat.values("ground_truth.label"), flat.values("lidar_returns")):
        groups.setdefault(group, set()).add((pid, label, returns))
    assert len(groups) == 16
    assert all(len(members) == 1 for members in groups.values()), "slices of a group disagree"
    assert {pid for (pid, _, _), in groups.values()} == {p.pair_id for p in layout.scan(data_copy).pairs}
    assert all(pid.split("_")[0] == label for (pid, label, _), in groups.values())


def test_slices_point_at_real_files(dataset, data_copy):
    sample = dataset.select_group_slices("lidar").match(fo.ViewField("pair_id") == "sphere_0003").first()
    cloud = o3d.io.read_point_cloud(sample.filepath)
    points = np.asarray(cloud.points)
    assert len(points) == sample.lidar_returns > 0 and cloud.has_colors()
    depth = layout.read_depth(data_copy / "spheres" / "lidar" / "0003.npy")
    valid = depth[depth < layout.NO_RETURN]
    assert sample.lidar_min_range == pytest.approx(valid.min(), rel=1e-5)
    assert sample.lidar_mean_range == pytest.approx(valid.mean(), rel=1e-5)
    np.testing.assert_allclose(np.linalg.norm(points, axis=1).min(), valid.min(), rtol=1e-4)

    thumbnail = Image.open(sample.orthographic_projection_metadata.filepath)
    assert thumbnail.size == (derived.THUMBNAIL_SIZE,) * 2
    assert np.asarray(thumbnail)[..., :3].any(), "the bird's-eye thumbnail is empty"

    depth_png = dataset.select_group_slices("depth").match(fo.ViewField("pair_id") == "sphere_0003").first()
    picture = np.asarray(Image.open(depth_png.filepath))
    hits = (picture[..., :3] > 0).any(-1)
    assert hits.sum() == (depth < layout.NO_RETURN).sum()  # no-return pixels, and only those, are black
    assert str(data_copy) not in depth_png.filepath.replace(f"{data_copy}.cache", "")


def test_reingest_adds_new_pairs_and_removes_vanished_ones(dataset, data_copy, capsys, monkeypatch):
    read = []  # the pairs whose files a re-ingest reads to check them: only new or changed ones
    check = layout._validate_pair
    monkeypatch.setattr(layout, "_validate_pair",
                        lambda pair, **sizes: read.append(pair.pair_id) or check(pair, **sizes))
    name = dataset.name
    again = ingest.ingest(data_copy, name)
    assert again.added == [] and again.existing == 16 and len(dataset) == 16
    assert again.changed == again.vanished == again.repaired == [] and read == []

    layout.write_pair(data_copy / "cubes", "0100", np.zeros((64, 64, 4), np.uint8), np.full((64, 64), 10, np.float32))
    (data_copy / "spheres" / "rgb" / "0001.png").unlink()
    (data_copy / "cubes" / "lidar" / "0002.npy").unlink()
    (data_copy / "cubes" / "rgb" / "0003.png").write_bytes(b"not a png")
    third = ingest.ingest(data_copy, name)
    assert sorted(read) == ["cube_0003", "cube_0100"]
    assert third.added == ["cube_0100"]
    assert third.vanished == ["cube_0002", "sphere_0001"]
    assert third.invalid == ["cube_0003"]
    assert len(fo.load_dataset(name)) == 14  # 16 + 1 - 3, every slice of each removed pair gone
    assert sorted(dataset.distinct("pair_id")) == sorted(p.pair_id for p in layout.scan(data_copy).pairs)
    assert len(dataset.select_group_slices(_allow_mixed=True)) == 42
    summary = third.summary()
    assert "2 pairs whose files vanished, removed from the dataset: cube_0002, sphere_0001" in summary
    assert "1 pairs whose files are no longer valid" in summary and "cube_0003" in summary

    from cilp_plugin import cli  # the same report from the command
    assert cli.main(["ingest", str(data_copy), "--name", name]) == 0
    out = capsys.readouterr().out
    assert "0 pairs added, 14 already present, 14 groups in all" in out
    assert ("classes cube, sphere; images 64 x 64 (rows x columns), range images 64 x 64 (azimuth x zenith beams)"
            in out)


def test_a_scan_without_any_return_ingests_with_an_empty_point_cloud(data_copy):
    path = data_copy / "spheres" / "lidar" / "0002.npy"
    np.save(path, np.full((64, 64), layout.NO_RETURN, np.float32))  # the object left the LiDAR's view
    dataset = ingest.ingest(data_copy, f"empty-{uuid.uuid4().hex[:8]}").dataset
    try:
        sample = dataset.select_group_slices("lidar").match(fo.ViewField("pair_id") == "sphere_0002").first()
        assert sample.lidar_returns == 0
        assert b"\nPOINTS 0\nDATA binary\n" in open(sample.filepath, "rb").read()
        assert dataset.select_group_slices("lidar").count() == 16
    finally:
        dataset.delete()


def test_reingest_regenerates_the_derived_files_of_changed_pairs(dataset, data_copy):
    lidar = dataset.select_group_slices("lidar")
    before = dict(zip(*lidar.values(["pair_id", "lidar_returns"])))
    sample = lidar.match(fo.ViewField("pair_id") == "cube_0004").first()
    pcd, thumbnail = sample.filepath, sample.orthographic_projection_metadata.filepath
    thumbnail_bytes = open(thumbnail, "rb").read()

    path = data_copy / "cubes" / "lidar" / "0004.npy"
    depth = layout.read_depth(path)
    columns = np.flatnonzero((depth < layout.NO_RETURN).any(0))
    depth[:, (columns.min() + columns.max()) // 2 + 1:] = layout.NO_RETURN  # half the object now sees nothing
    np.save(path, depth)
    result = ingest.ingest(data_copy, dataset.name)
    assert result.changed == ["cube_0004"] and result.added == [] and result.existing == 16
    assert "1 pairs whose files changed: depth, point cloud and thumbnail regenerated" in result.summary()

    returns = int((depth < layout.NO_RETURN).sum())
    assert 0 < returns < before["cube_0004"]
    flat = dataset.select_group_slices(_allow_mixed=True).match(fo.ViewField("pair_id") == "cube_0004")
    assert flat.values("lidar_returns") == [returns] * 3  # every slice of the pair
    assert len(np.asarray(o3d.io.read_point_cloud(pcd).points)) == returns  # the App's point cloud
    assert open(thumbnail, "rb").read() != thumbnail_bytes
    picture = np.asarray(Image.open(dataset.select_group_slices("depth").match(
        fo.ViewField("pair_id") == "cube_0004").first().filepath))
    assert (picture[..., :3] > 0).any(-1).sum() == returns
    assert set(flat.values("source_key")) == {ingest.source_key(
        next(p for p in layout.scan(data_copy).pairs if p.pair_id == "cube_0004"))}
    others = {pid: n for pid, n in zip(*lidar.values(["pair_id", "lidar_returns"])) if pid != "cube_0004"}
    assert others == {pid: n for pid, n in before.items() if pid != "cube_0004"}

    assert ingest.ingest(data_copy, dataset.name).changed == []  # nothing changed since

    dataset.select_group_slices(_allow_mixed=True).set_values("source_key", [None] * 48)  # an older version's
    older = ingest.ingest(data_copy, dataset.name)
    assert len(older.changed) == 16 and older.unkeyed == 16
    assert "(or, 16 of them, ingested before file keys were recorded)" in older.summary()


def test_reingest_completes_groups_an_interrupted_ingest_left(dataset, data_copy):
    """What a kill -9 between (or inside) the database writes of a batch leaves: groups lacking slices, and a
    pair whose slices went in twice (a part of a group, then the whole group again)."""
    flat = dataset.select_group_slices(_allow_mixed=True)
    by_pair = {}
    for sid, pid, slice_name in zip(*flat.values(["id", "pair_id", "group.name"])):
        by_pair.setdefault(pid, {})[slice_name] = sid
    dataset.delete_samples([by_pair["cube_0001"]["depth"], by_pair["cube_0001"]["lidar"],
                            by_pair["sphere_0002"]["rgb"]])
    dataset.delete_samples([by_pair["sphere_0005"]["rgb"]])  # only depth + lidar left of this one...
    report = layout.scan(data_copy)
    pair = next(p for p in report.pairs if p.pair_id == "sphere_0005")
    made = derived.derive(pair, *layout.read_angles(data_copy / "spheres"), views.default_cache_dir(data_copy))
    dataset.add_samples(ingest._group_samples(pair, made, ingest.source_key(pair), report.contents[pair.pair_id],
                                              [])[1:])  # ...and a second part

    result = ingest.ingest(data_copy, dataset.name)
    assert result.repaired == ["cube_0001", "sphere_0002", "sphere_0005"]
    assert sorted(result.added) == result.repaired and result.existing == 13
    assert "3 pairs left incomplete by an interrupted ingest, added again as whole groups" in result.summary()
    assert_whole_groups(dataset, 16)


def assert_whole_groups(dataset, pairs: int) -> None:
    """Every pair is one group holding each slice once; no sample without its group."""
    flat = dataset.select_group_slices(_allow_mixed=True)
    groups = {}
    for gid, pid, slice_name in zip(*flat.values(["group.id", "pair_id", "group.name"])):
        groups.setdefault(pid, []).append((gid, slice_name))
    assert len(groups) == pairs == len(dataset) and len(flat) == 3 * pairs
    for pid, members in groups.items():
        assert len({gid for gid, _ in members}) == 1, f"{pid} spans several groups"
        assert sorted(s for _, s in members) == sorted(ingest.SLICES), f"{pid}: slices {members}"


def test_missing_files_are_named_when_training_reads_them(dataset, data_copy):
    from cilp_plugin.dataset import arrays

    (data_copy / "spheres" / "lidar" / "0006.npy").unlink()
    with pytest.raises(FileNotFoundError) as error:
        arrays.from_dataset(dataset)
    message = str(error.value)
    assert f"dataset '{dataset.name}': 1 files of 1 pairs are missing (sphere_0006: " in message
    assert str(data_copy / "spheres" / "lidar" / "0006.npy") in message
    assert f"cilp ingest {data_copy.resolve()} --name {dataset.name}" in message
    assert error.value.missing == [("sphere_0006", str((data_copy / "spheres" / "lidar" / "0006.npy").resolve()))]


def test_unfinished_rebuilds_of_the_name_are_removed(dataset, data_copy):
    import os
    import socket
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    leftovers = {
        f"{dataset.name}.rebuild-0000dead": {"host": host, "pid": dead.pid, "started": 0.0},  # killed
        f"{dataset.name}.rebuild-0000a11e": {"host": host, "pid": os.getpid(),  # still building
                                             "started": __import__("psutil").Process().create_time()},
        f"{dataset.name}.rebuild-00000e1e": {"host": "another-host", "pid": 1, "started": 0.0},  # unknown
        f"{dataset.name}-other.rebuild-0000dead": {"host": host, "pid": dead.pid, "started": 0.0},  # another name
    }
    for leftover, owner in leftovers.items():
        made = fo.Dataset(leftover, persistent=True)
        made.info = {"building": owner}
        made.save()
    result = ingest.ingest(data_copy, dataset.name)
    assert result.leftovers == [f"{dataset.name}.rebuild-0000dead (0 groups, by pid {dead.pid} on {host})"]
    assert f"removed 1 unfinished rebuilds of '{dataset.name}' (a killed `--rebuild`)" in result.summary()
    assert sorted(n for n in fo.list_datasets() if ".rebuild-" in n) == sorted(list(leftovers)[1:])
    for leftover in list(leftovers)[1:]:
        fo.delete_dataset(leftover)
    with pytest.raises(ValueError, match="kept for --rebuild"):
        ingest.ingest(data_copy, f"{dataset.name}.rebuild-12345678")


def test_failed_ingest_leaves_no_dataset(data_copy):
    name = unique()

    def fail_midway(fraction, label):
        if label.startswith("added"):  # after the first groups reached the database
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        ingest.ingest(data_copy, name, progress=fail_midway)
    assert not fo.dataset_exists(name)


def test_failed_reingest_removes_only_what_it_added(dataset, data_copy, monkeypatch):
    layout.write_pair(data_copy / "cubes", "0100", np.zeros((64, 64, 4), np.uint8), np.full((64, 64), 10, np.float32))
    real_add = fo.Dataset.add_samples

    def add_then_fail(self, samples, **kwargs):
        real_add(self, samples, **kwargs)
        raise RuntimeError("database went away")

    monkeypatch.setattr(fo.Dataset, "add_samples", add_then_fail)
    with pytest.raises(RuntimeError, match="went away"):
        ingest.ingest(data_copy, dataset.name)
    assert len(dataset.select_group_slices(_allow_mixed=True)) == 48
    assert "cube_0100" not in dataset.select_group_slices("rgb").values("pair_id")


def test_unusable_folder_and_foreign_dataset_are_refused(tmp_path, dataset, data_copy, tiny_data):
    (tmp_path / "empty" / "cubes").mkdir(parents=True)
    with pytest.raises(layout.FormatError, match="folder missing"):
        ingest.ingest(tmp_path / "empty", unique())
    for png in (data_copy / "cubes" / "rgb").glob("*.png"):  # pairs by name, but none readable
        png.write_bytes(b"not a png")
    name = unique()
    with pytest.raises(layout.FormatError, match="no usable RGB/LiDAR pair"):
        ingest.ingest(data_copy, name)
    assert not fo.dataset_exists(name)
    with pytest.raises(ValueError, match="was built from"):
        ingest.ingest(tiny_data, dataset.name)


def test_rebuild_replaces_a_dataset_of_another_folder_once_the_new_one_is_complete(dataset, data_copy, tiny_data,
                                                                                  monkeypatch):
    name = dataset.name  # built from data_copy; tiny_data is another folder (as another clone's is)
    monkeypatch.setattr(ingest, "ADD_BATCH", 4)
    with pytest.raises(KeyboardInterrupt):  # a rebuild that fails keeps the old dataset as it was
        ingest.ingest(tiny_data, name, rebuild=True, progress=interrupt_after(2))
    assert fo.load_dataset(name).info["data_root"] == str(data_copy.resolve())
    assert not [n for n in fo.list_datasets() if n.startswith(f"{name}.rebuild")]

    result = ingest.ingest(tiny_data, name, rebuild=True)
    assert result.summary().startswith(
        f"rebuilt dataset '{name}': it replaces the one built from {data_copy.resolve()} (16 groups)\n")
    rebuilt = fo.load_dataset(name)
    assert rebuilt.info["data_root"] == str(tiny_data.resolve()) and len(rebuilt) == 16
    assert not [n for n in fo.list_datasets() if n.startswith(f"{name}.rebuild")]
    rebuilt.delete()


def interrupt_after(calls: int):
    seen = []

    def progress(fraction, label):
        seen.append(label)
        if len(seen) > calls:
            raise KeyboardInterrupt

    return progress


def test_a_script_without_a_main_guard_ingests_with_worker_processes(tmp_path):
    """The most natural two-line script: the derived files are made by worker processes (200+ new pairs),
    which must not run the script again (a fork server or spawn would: a second ingest of the same name)."""
    from cilp_plugin.data import synth

    root = synth.generate(tmp_path / "data", n_per_class=110, seed=2)
    name = unique("no-guard")
    script = tmp_path / "ingest_it.py"
    script.write_text("from cilp_plugin.dataset.ingest import ingest\n"
                      f"print('added', len(ingest({str(root)!r}, {name!r}).added))\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.count("added") == 1 and "added 220" in done.stdout, done.stdout
    assert_whole_groups(fo.load_dataset(name), 220)


# --------------------------------------------------------------------------- the original's quirks


@pytest.fixture
def quirky(quirky_data, tmp_path):
    """A writable copy of ``quirky_data`` (2 of each quirk per class) and its dataset."""
    import shutil

    root = shutil.copytree(quirky_data, tmp_path / "quirky")
    result = ingest.ingest(root, unique("quirky"))
    yield root, result
    result.dataset.delete()


def quirk_tags(dataset) -> dict[str, list[str]]:
    """Quirk tag -> the pairs whose every slice carries it; fails when the slices of a pair disagree."""
    by_pair = {}
    for pid, slice_name, tags in zip(*dataset.select_group_slices(_allow_mixed=True).values(
            ["pair_id", "group.name", "tags"])):
        by_pair.setdefault(pid, {})[slice_name] = sorted(set(tags) & set(layout.QUIRK_TAGS))
    for pid, slices in by_pair.items():
        assert len(slices) == 3 and len({tuple(tags) for tags in slices.values()}) == 1, f"{pid}: {slices}"
    return {tag: sorted(pid for pid, slices in by_pair.items() if tag in slices["rgb"]) for tag in layout.QUIRK_TAGS}


def read_pairs(monkeypatch) -> list[str]:
    """The pair ids whose files the next ingests read, as they read them."""
    read = []
    check = layout._validate_pair
    monkeypatch.setattr(layout, "_validate_pair",
                        lambda pair, **sizes: read.append(pair.pair_id) or check(pair, **sizes))
    return read


def test_ingest_tags_every_slice_of_the_quirky_pairs(quirky, capsys, monkeypatch):
    root, result = quirky
    report = layout.scan(root)
    blank, duplicates = report.blank_rgb(), report.duplicates()
    assert len(blank) == len(duplicates) == 4 and len(result.dataset) == 16

    assert quirk_tags(result.dataset) == {"blank_rgb": sorted(blank), "duplicate": sorted(duplicates)}
    assert result.quirks == {"blank_rgb": blank, "duplicate": list(duplicates)}
    flat = result.dataset.select_group_slices(_allow_mixed=True)
    assert dict(zip(*flat.values(["pair_id", "content_hash"]))) == {
        pid: contents.digest for pid, contents in report.contents.items()}
    summary = result.summary()
    assert f"4 pairs with an all-black RGB image (tag blank_rgb): {', '.join(blank)}" in summary
    assert "4 pairs byte-identical to an earlier pair (tag duplicate): " in summary
    assert "skipped 0 bad and 4 unpaired files" in summary and "4 unpaired copies named 'NNNN (n)'" in summary

    read = read_pairs(monkeypatch)  # the command again: nothing read, the same tags and report
    from cilp_plugin import cli
    assert cli.main(["ingest", str(root), "--name", result.dataset.name]) == 0
    assert read == [] and f"(tag blank_rgb): {', '.join(blank)}" in capsys.readouterr().out
    assert quirk_tags(result.dataset) == {"blank_rgb": sorted(blank), "duplicate": sorted(duplicates)}


def test_reingest_brings_the_quirk_tags_in_line_with_the_folder(quirky, monkeypatch):
    root, result = quirky
    dataset = result.dataset
    before = quirk_tags(dataset)
    fixed = before["blank_rgb"][0]  # its image becomes a real one
    label, stem = fixed.split("_")
    image = np.random.default_rng(0).integers(0, 40, (64, 64, 4), np.uint8)
    image[..., 3] = 255
    (root / f"{label}s" / "rgb" / f"{stem}.png").write_bytes(layout.encode_png(image))
    duplicate, original = next(iter(result.scan.duplicates().items()))  # its original goes: it is the first now
    label, stem = original.split("_")
    (root / f"{label}s" / "rgb" / f"{stem}.png").unlink()
    (root / f"{label}s" / "lidar" / f"{stem}.npy").unlink()
    unique_pair = next(p for p in layout.scan(root).pairs if not any(p.pair_id in ids for ids in before.values()))
    layout.write_pair(unique_pair.folder, "0100", layout.read_rgb(unique_pair.rgb_path),
                   layout.read_depth(unique_pair.lidar_path))  # re-encoded, byte-identical: a new duplicate
    new = f"{unique_pair.label}_0100"
    kept_duplicate = next(pid for pid in before["duplicate"] if pid != duplicate)
    dataset.select_group_slices("lidar").match(fo.ViewField("pair_id") == kept_duplicate).untag_samples(
        "duplicate")  # a slice that lost its tag gets it back
    read = read_pairs(monkeypatch)

    again = ingest.ingest(root, dataset.name)

    assert sorted(read) == sorted([fixed, new])  # unchanged pairs keep their recorded digests and tags
    assert again.vanished == [original] and again.added == [new] and again.changed == [fixed]
    assert quirk_tags(dataset) == {
        "blank_rgb": [pid for pid in before["blank_rgb"] if pid != fixed],
        "duplicate": sorted({*before["duplicate"], new} - {duplicate})}
    assert again.quirks["duplicate"] == [pid for pid in layout.scan(root).duplicates()]


def test_a_dataset_without_content_hashes_is_read_again_once(quirky, monkeypatch):
    root, result = quirky
    dataset = result.dataset
    flat = dataset.select_group_slices(_allow_mixed=True)
    expected = quirk_tags(dataset)
    flat.set_values("content_hash", [None] * len(flat))  # what an older version ingested
    flat.untag_samples(list(layout.QUIRK_TAGS))
    read = read_pairs(monkeypatch)

    ingest.ingest(root, dataset.name)
    assert len(read) == 16 and quirk_tags(dataset) == expected
    ingest.ingest(root, dataset.name)
    assert len(read) == 16  # the second time, nothing


def test_a_reingest_that_changes_nothing_writes_no_sample(quirky):
    """The quirk tags are brought in line by updates of the samples that change only: none here."""
    root, result = quirky
    db = fo.core.odm.get_db_conn()
    db.system.profile.drop()
    db.command({"profile": 2})
    try:
        ingest.ingest(root, result.dataset.name)
    finally:
        db.command({"profile": 0})
    collection = f"{db.name}.{result.dataset._sample_collection_name}"
    writes = [op for op in db.system.profile.find({"ns": collection})
              if op["op"] in ("update", "insert", "remove") or "$merge" in str(op.get("command"))]
    db.system.profile.drop()
    assert writes == []
