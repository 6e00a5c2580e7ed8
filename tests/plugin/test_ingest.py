"""Folder -> grouped dataset: group integrity, derived files, idempotence, atomic failure."""

import uuid

import fiftyone as fo
import numpy as np
import open3d as o3d
import pytest
from PIL import Image

from cilp_plugin import derived, ingest
from cilp_plugin import format as fmt


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
    assert {pid for (pid, _, _), in groups.values()} == {p.pair_id for p in fmt.scan(data_copy).pairs}
    assert all(pid.split("_")[0] == label for (pid, label, _), in groups.values())


def test_slices_point_at_real_files(dataset, data_copy):
    sample = dataset.select_group_slices("lidar").match(fo.ViewField("pair_id") == "sphere_0003").first()
    cloud = o3d.io.read_point_cloud(sample.filepath)
    points = np.asarray(cloud.points)
    assert len(points) == sample.lidar_returns > 0 and cloud.has_colors()
    depth = fmt.read_depth(data_copy / "spheres" / "lidar" / "0003.npy")
    valid = depth[depth < fmt.NO_RETURN]
    assert sample.lidar_min_range == pytest.approx(valid.min(), rel=1e-5)
    assert sample.lidar_mean_range == pytest.approx(valid.mean(), rel=1e-5)
    np.testing.assert_allclose(np.linalg.norm(points, axis=1).min(), valid.min(), rtol=1e-4)

    thumbnail = Image.open(sample.orthographic_projection_metadata.filepath)
    assert thumbnail.size == (derived.THUMBNAIL_SIZE,) * 2
    assert np.asarray(thumbnail)[..., :3].any(), "the bird's-eye thumbnail is empty"

    depth_png = dataset.select_group_slices("depth").match(fo.ViewField("pair_id") == "sphere_0003").first()
    picture = np.asarray(Image.open(depth_png.filepath))
    hits = (picture[..., :3] > 0).any(-1)
    assert hits.sum() == (depth < fmt.NO_RETURN).sum()  # no-return pixels, and only those, are black
    assert str(data_copy) not in depth_png.filepath.replace(f"{data_copy}.cache", "")


def test_reingest_adds_only_new_pairs_and_reports_vanished(dataset, data_copy):
    name = dataset.name
    again = ingest.ingest(data_copy, name)
    assert again.added == [] and again.existing == 16 and len(dataset) == 16

    fmt.write_pair(data_copy / "cubes", "0100", np.zeros((64, 64, 4), np.uint8), np.full((64, 64), 10, np.float32))
    (data_copy / "spheres" / "rgb" / "0001.png").unlink()
    third = ingest.ingest(data_copy, name)
    assert third.added == ["cube_0100"]
    assert third.vanished == ["sphere_0001"]
    assert len(fo.load_dataset(name)) == 17
    assert "1 pairs whose files vanished" in third.summary()


def test_failed_ingest_leaves_no_dataset(data_copy):
    name = unique()

    def fail_midway(fraction, label):
        if label.startswith("added"):  # after the first groups reached the database
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        ingest.ingest(data_copy, name, progress=fail_midway)
    assert not fo.dataset_exists(name)


def test_failed_reingest_removes_only_what_it_added(dataset, data_copy, monkeypatch):
    fmt.write_pair(data_copy / "cubes", "0100", np.zeros((64, 64, 4), np.uint8), np.full((64, 64), 10, np.float32))
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
    with pytest.raises(fmt.FormatError, match="folder missing"):
        ingest.ingest(tmp_path / "empty", unique())
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
