"""``cilp import-pointclouds``: images and point clouds from elsewhere, projected into the layout."""

import json
import shutil

import numpy as np
import open3d as o3d
import pytest
from PIL import Image

from cilp_plugin import cli
from cilp_plugin.data import layout, synth
from cilp_plugin.data.pointclouds import Beams, find_sources, import_pointclouds, project

COURSE = Beams.from_values([-16, 15.5, 64], [-16, 15.5, 64])
STEP = np.deg2rad(0.5)


def write_cloud(path, points):
    """``points`` (M, 3) as a .pcd or .ply (open3d) or a KITTI .bin (float32 x, y, z, intensity)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".bin":
        np.hstack([points, np.ones((len(points), 1))]).astype("<f4").tofile(path)
    else:
        cloud = o3d.geometry.PointCloud()
        cloud.points = o3d.utility.Vector3dVector(np.asarray(points, np.float64))
        assert o3d.io.write_point_cloud(str(path), cloud)
    return path


def write_image(path, size=(20, 30), colour=(200, 40, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def point(azimuth_deg, zenith_deg, distance):
    """A point on the beam of these angles, as ``depth_to_xyza`` places it."""
    return layout.depth_to_xyza(np.array([[distance]], np.float32), np.deg2rad([azimuth_deg]),
                                np.deg2rad([zenith_deg]))[:3, 0, 0].astype(np.float64)


def sphere(distance, n=6000, seed=0):
    """``n`` points at ``distance`` around the sensor, in every direction."""
    directions = np.random.default_rng(seed).normal(size=(n, 3))
    return distance * directions / np.linalg.norm(directions, axis=1, keepdims=True)


def in_view(distance, n=20000, seed=0):
    """``n`` points at ``distance``, in directions a little wider than the course's beams."""
    azimuth, zenith = np.deg2rad(np.random.default_rng(seed).uniform(-17, 17, (2, n)))
    return distance * np.stack([-np.sin(azimuth) * np.cos(zenith), np.cos(azimuth) * np.cos(zenith),
                                -np.sin(zenith)], -1)


def test_a_point_lands_on_its_beam_and_the_nearest_return_wins():
    points = np.array([point(5.2, -3.1, 12.0), point(5.1, -3.0, 20.0),  # one beam: 42, 26 (rounded)
                       point(-16.2, 15.7, 7.0),  # just inside the first azimuth and last zenith beams
                       point(-16.3, 0.0, 9.0), point(0.0, 15.8, 9.0)])  # beyond half a step: no beam
    depth = project(points, COURSE)
    assert depth.shape == (64, 64) and depth.dtype == np.float32
    assert depth[42, 26] == pytest.approx(12.0) and depth[0, 63] == pytest.approx(7.0)
    assert (depth < layout.NO_RETURN).sum() == 2


@pytest.mark.parametrize("suffix", [".pcd", ".ply", ".bin"])
def test_each_cloud_format_imports_and_depth_to_xyza_gives_the_points_back(tmp_path, suffix):
    points = np.vstack([sphere(10.0, 2000), in_view(10.0)])
    write_cloud(tmp_path / "src" / "balls" / f"0001{suffix}", points)
    write_image(tmp_path / "src" / "balls" / "0001.jpg")
    report = import_pointclouds(tmp_path / "src", tmp_path / "dest", COURSE)
    assert report.imported == {"balls": 1} and report.refused == []

    class_dir = tmp_path / "dest" / "balls"
    depth = layout.read_depth(class_dir / "lidar" / "0001.npy")
    azimuth, zenith = layout.read_angles(class_dir)
    assert azimuth == pytest.approx(synth.BEAM_ANGLES) and zenith == pytest.approx(synth.BEAM_ANGLES)
    hits = depth < layout.NO_RETURN
    assert hits.mean() > 0.95 and depth[hits] == pytest.approx(10.0, abs=1e-5)
    xyz = layout.depth_to_xyza(depth, azimuth, zenith)[:3].reshape(3, -1).T[hits.ravel()]
    # every point within the beams is within a beam spacing of its beam's return
    seen = [p for p in points[::7] if (project(p[None], COURSE) < layout.NO_RETURN).any()]
    nearest = np.min(np.linalg.norm(np.asarray(seen)[:, None] - xyz[None], axis=-1), axis=1)
    assert len(seen) > 50 and nearest.max() <= 10.0 * STEP
    rgb = np.asarray(Image.open(class_dir / "rgb" / "0001.png"))
    assert rgb.shape == (30, 20, 4) and (rgb[..., 3] == 255).all()


def test_a_labels_file_pairs_files_across_folders(tmp_path):
    src = tmp_path / "kitti"
    for stem in ("000001", "000002", "000003"):
        write_image(src / "image_2" / f"{stem}.png")
        write_cloud(src / "velodyne" / f"{stem}.bin", sphere(8.0, 500))
    labels = tmp_path / "labels.csv"
    labels.write_text("stem,label\n000001,cube\n000002,torus\n000003,cube\n")
    report = import_pointclouds(src, tmp_path / "dest", COURSE, labels=labels)
    assert report.imported == {"cubes": 2, "tori": 1} and report.refused == []
    assert sorted(p.name for p in (tmp_path / "dest" / "cubes" / "lidar").iterdir()) == ["000001.npy", "000003.npy"]
    # the layout reads the cubes it wrote
    assert [p.stem for p in layout.scan_class(tmp_path / "dest", "cubes").pairs] == ["000001", "000003"]


def test_bad_files_are_refused_one_by_one_with_the_reason(tmp_path, capsys):
    src = tmp_path / "src"
    write_image(src / "cubes" / "good.png")
    write_cloud(src / "cubes" / "good.pcd", sphere(9.0, 800))
    write_image(src / "cubes" / "garbled.png")
    (src / "cubes" / "garbled.pcd").write_text("this is not a point cloud\n")
    write_image(src / "cubes" / "short.png")
    (src / "cubes" / "short.bin").write_bytes(b"\0" * 10)
    write_image(src / "cubes" / "behind.png")
    write_cloud(src / "cubes" / "behind.ply", sphere(9.0, 300) * [1, 0, 1] - [0, 5, 0])  # all at y = -5
    write_image(src / "cubes" / "lonely.png")
    write_cloud(src / "cubes" / "orphan.bin", sphere(9.0, 50))
    write_cloud(src / "cubes" / "broken-image.bin", sphere(9.0, 800))
    (src / "cubes" / "broken-image.png").write_bytes(b"\x89PNG not really")
    write_image(src / "loose.png")
    write_image(src / "cones" / "c.png")
    write_cloud(src / "cones" / "c.bin", sphere(9.0, 800))

    code = cli.main(["import-pointclouds", str(src), str(tmp_path / "dest"), "--classes", "cubes",
                     "--beams", "-16", "15.5", "64", "-16", "15.5", "64"])
    out = capsys.readouterr().out
    assert code == 0 and "imported 1 pairs into" in out and "(cubes 1)" in out and "refused 9 files:" in out
    for name, reason in (
            ("cubes/garbled.pcd", "no point read (an unreadable, corrupt or empty point cloud)"),
            ("cubes/short.bin", "not a KITTI .bin point cloud: 10 bytes"),
            ("cubes/behind.ply", "none of its 300 points is within the beams (azimuth -16 to 15.5 degrees"),
            ("cubes/lonely.png", "an image without a point cloud"),
            ("cubes/orphan.bin", "a point cloud without an image"),
            ("cubes/broken-image.png", "unreadable image"),
            ("loose.png", "not in a class folder"),
            ("cones/c.png", "unknown label 'cones' (expected one of cubes)"),
            ("cones/c.bin", "unknown label 'cones'")):
        assert f"{src / name}: {reason}" in out, name
    assert "300 behind the sensor (y <= 0)" in out
    assert sorted(p.name for p in (tmp_path / "dest" / "cubes" / "lidar").iterdir()) == ["good.npy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "src"]  # no staging folder left


def test_labels_file_problems_are_named(tmp_path):
    src = tmp_path / "src"
    for stem in ("a", "b"):
        write_image(src / f"{stem}.png")
        write_cloud(src / f"{stem}.bin", sphere(9.0, 800))
    labels = tmp_path / "labels.csv"
    labels.write_text("a,cube\nghost,sphere\n")
    sources, refused = find_sources(src, labels)
    assert [(s.folder, s.stem) for s in sources] == [("cubes", "a")]
    reasons = {str(bad.path): bad.reason for bad in refused}
    assert reasons[str(src / "b.png")] == reasons[str(src / "b.bin")] == f"no label in {labels}"
    assert "'ghost' (label 'sphere'): no image or point cloud of that stem" in reasons[str(labels)]
    assert find_sources(src, labels, classes=["cubes"])[0] == sources  # a label or its folder: one class
    labels.write_text("a,../up\nb,torus\n")
    sources, refused = find_sources(src, labels, classes=["cube", "sphere"])
    assert sources == [] and {bad.reason for bad in refused} == {
        "label '../up' cannot name a class folder (letters, digits, '_', '.', '-')",
        "unknown label 'torus' (expected one of cube, sphere)"}
    labels.write_text("a,cube\na,sphere\n")
    with pytest.raises(ValueError, match="line 2: 'a' is labelled 'cube' and 'sphere'"):
        find_sources(src, labels)
    labels.write_text("a,cube,extra\n")
    with pytest.raises(ValueError, match="line 1: expected two columns stem,label"):
        find_sources(src, labels)


def test_nothing_importable_writes_nothing_and_fails(tmp_path, capsys):
    src = tmp_path / "src"
    write_image(src / "cubes" / "a.png")
    write_cloud(src / "cubes" / "a.bin", sphere(9.0, 200) - [0, 30, 0])  # behind the sensor
    args = ["import-pointclouds", str(src), str(tmp_path / "dest"), "--beams", "-16", "15.5", "64", "-16", "15.5", "64"]
    assert cli.main(args) == 2
    assert "nothing importable" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    # an existing DEST is refused, and kept when --overwrite finds nothing to import
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "keep.txt").write_text("mine")
    assert cli.main(args) == 2 and "already exists (use --overwrite" in capsys.readouterr().err
    assert cli.main([*args, "--overwrite"]) == 2
    assert (tmp_path / "dest" / "keep.txt").read_text() == "mine"
    write_cloud(src / "cubes" / "a.bin", sphere(9.0, 800))
    assert cli.main([*args, "--overwrite"]) == 0
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["cubes"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "src"]


def test_a_generated_set_survives_the_round_trip_through_point_clouds(tmp_path):
    data = synth.generate(tmp_path / "data", 4, seed=3)
    src = tmp_path / "clouds"
    for pair in layout.scan(data).pairs:
        azimuth, zenith = layout.read_angles(pair.folder)
        xyza = layout.depth_to_xyza(layout.read_depth(pair.lidar_path), azimuth, zenith)
        points = xyza[:3].reshape(3, -1).T[xyza[3].ravel() > 0]
        suffix = {"cube": ".pcd", "sphere": ".bin"}[pair.label]
        write_cloud(src / pair.folder.name / f"{pair.stem}{suffix}", points)
        shutil.copyfile(pair.rgb_path, src / pair.folder.name / f"{pair.stem}.png")
    preset = tmp_path / "course.json"
    preset.write_text(json.dumps({"azimuth": [-16, 15.5, 64], "zenith": [-16, 15.5, 64]}))
    assert cli.main(["import-pointclouds", str(src), str(tmp_path / "back"), "--beams-file", str(preset)]) == 0

    back = layout.scan(tmp_path / "back")
    assert back.usable and [p.pair_id for p in back.pairs] == [p.pair_id for p in layout.scan(data).pairs]
    for pair in back.pairs:
        original = data / pair.folder.name
        assert (layout.read_rgb(pair.rgb_path) == layout.read_rgb(original / "rgb" / f"{pair.stem}.png")).all()
        expected, got = layout.read_depth(original / "lidar" / f"{pair.stem}.npy"), layout.read_depth(pair.lidar_path)
        np.testing.assert_allclose(got, expected, rtol=1e-5)
    for name in ("azimuth.npy", "zenith.npy"):
        assert (np.load(tmp_path / "back" / "cubes" / name) == np.load(data / "cubes" / name)).all()


def test_workers_give_the_same_files(tmp_path):
    for stem in range(6):
        write_image(tmp_path / "src" / "cubes" / f"{stem}.png")
        write_cloud(tmp_path / "src" / "cubes" / f"{stem}.bin", sphere(9.0, 400, seed=stem))
    one = import_pointclouds(tmp_path / "src", tmp_path / "one", COURSE, workers=1)
    two = import_pointclouds(tmp_path / "src", tmp_path / "two", COURSE, workers=2)
    assert one.imported == two.imported == {"cubes": 6}
    for path in sorted((tmp_path / "one").rglob("*.*")):
        assert path.read_bytes() == (tmp_path / "two" / path.relative_to(tmp_path / "one")).read_bytes()


@pytest.mark.parametrize("azimuth, zenith, message", [
    ([-16, 15.5, 1], [-16, 15.5, 64], "azimuth: expected a whole number of beams >= 2, got 1"),
    ([-16, 15.5, 64], [10, -10, 64], "zenith: expected degrees -90 <= min < max <= 90, got 10.0 and -10.0"),
    ([-200, 15.5, 64], [-16, 15.5, 64], "azimuth: expected degrees -180 <= min < max <= 180"),
    ([-16, 15.5, 6.5], [-16, 15.5, 64], "azimuth: expected a whole number of beams >= 2, got 6.5"),
    ([-16, 15.5], [-16, 15.5, 64], "azimuth: expected [min, max, n]"),
    (["x", 15.5, 64], [-16, 15.5, 64], "azimuth: expected min and max in degrees"),
])
def test_bad_beams_are_refused_naming_the_axis(azimuth, zenith, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        Beams.from_values(azimuth, zenith)


def test_cli_refuses_a_bad_preset_naming_the_file(tmp_path, capsys):
    preset = tmp_path / "lidar.json"
    preset.write_text(json.dumps({"azimuth": [-16, 15.5, 64]}))
    (tmp_path / "src").mkdir()
    command = ["import-pointclouds", str(tmp_path / "src"), str(tmp_path / "d")]
    assert cli.main([*command, "--beams-file", str(preset)]) == 2
    assert f'{preset}: expected {{"azimuth": [min, max, n], "zenith": [min, max, n]}}' in capsys.readouterr().err
    preset.write_text(json.dumps({"azimuth": [-16, 15.5, 64], "zenith": [-16, 15.5, 0]}))
    assert cli.main([*command, "--beams-file", str(preset)]) == 2
    assert f"{preset}: zenith: expected a whole number of beams >= 2, got 0" in capsys.readouterr().err
    assert cli.main([*command, "--beams", "-16", "15.5", "sixty", "-16", "15.5", "64"]) == 2
    assert "azimuth: expected a whole number of beams >= 2, got 'sixty'" in capsys.readouterr().err
