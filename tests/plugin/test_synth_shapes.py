"""The generator's other shapes, image sizes and beam counts (``generate(classes=, image_size=, beams=)``)."""

import dataclasses
import filecmp
import hashlib

import numpy as np
import pytest
from PIL import Image

from cilp_plugin import cli
from cilp_plugin.data import layout, synth

NEW_SHAPES = ("cylinder", "cone", "torus", "pyramid")
#: lit from the sensor's side: every object shows a lit face to the camera
FRONT_LIT = dataclasses.replace(synth.SceneConfig(), light="front")


def tree_files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def same_files(a, b, files):
    return all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)


def test_the_default_look_keeps_its_bytes(tmp_path):
    # hashes of files written by the generator before it had other shapes and sizes (commit c84af34)
    root = synth.generate(tmp_path / "default", 3, seed=5)
    for name, sha256 in (
            ("cubes/rgb/0001.png", "3345cbd61d9e74f0adf81eb6a33ae8a2bc4793674f2a3e539446cdbe51e41bf7"),
            ("spheres/lidar/0002.npy", "4bce3afbe6f94a2e832325691da13c52aa32e10a6754c07c606d193d33f8afcf"),
            ("cubes/azimuth.npy", "53858e5e381351cfa57e4d4cd49fbf3655e7b36c0db028ac763a5525cb51a04b")):
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == sha256, name
    assert sorted(p.name for p in root.iterdir()) == ["cubes", "spheres"]


@pytest.mark.parametrize("shape", NEW_SHAPES)
def test_each_new_shape_is_seen_by_the_camera_and_the_lidar(shape):
    index = list(synth.SHAPES.values()).index(shape)
    rngs = [np.random.default_rng([7, index, i]) for i in range(8)]
    rgba, depth = synth.render_batch(rngs, shape, FRONT_LIT, synth.BEAM_ANGLES, synth.BEAM_ANGLES)
    returns = depth < layout.NO_RETURN
    assert returns.sum((1, 2)).min() >= 20  # at ~17 m, every object covers a patch of beams
    near, far = FRONT_LIT.distance
    assert near - 2 * FRONT_LIT.size[1] < depth[returns].min() and depth[returns].max() < far + 2 * FRONT_LIT.size[1]
    assert (rgba[..., :3].max(-1) > 30).sum((1, 2)).min() >= 10  # lit pixels in every image (a torus edge-on: few)
    assert (depth[~returns] == layout.NO_RETURN).all()


def hit(shape, rays, rotation):
    """Distances along ``rays`` to a ``shape`` of size 1 at (0, 10, 0), light from the sensor's side."""
    t, cosine = synth.HITS[shape](np.asarray(rays, np.float32), np.array([[0, 10, 0]], np.float32),
                                  np.array([1], np.float32), np.asarray(rotation, np.float32)[None],
                                  np.array([[0, -1, 0]], np.float32), synth.SceneConfig())
    return t[0], cosine[0]


AHEAD = [[0, 1, 0]]
#: a rotation that turns the shape's axis (its local z) to +y, away from the sensor
FACING = [[1, 0, 0], [0, 0, 1], [0, -1, 0]]


@pytest.mark.parametrize("shape, rays, rotation, distance, cosine", [
    ("cylinder", AHEAD, np.eye(3), 9.0, 1.0),  # its side, radius 1
    ("cylinder", AHEAD, FACING, 9.0, 1.0),  # its cap, 1 from the centre
    ("cone", AHEAD, np.eye(3), 9.5, 2 / np.sqrt(5)),  # radius 1/2 half-way up, the slant 1 in 2
    ("cone", AHEAD, FACING, 9.0, 1.0),  # its base
    ("pyramid", AHEAD, np.eye(3), 9.5, 2 / np.sqrt(5)),  # as the cone: the face's plane touches it
    ("torus", AHEAD, np.eye(3), 9.0, 1.0),  # the outer rim, ring 0.7 + tube 0.3
    ("torus", AHEAD, FACING, np.inf, 0.0),  # through the hole
    ("torus", [[0.07, 1, 0]], FACING, None, None),  # onto the tube
])
def test_each_shape_is_hit_where_its_geometry_says(shape, rays, rotation, distance, cosine):
    rays = np.asarray(rays, np.float64)
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    t, shade = hit(shape, rays, rotation)
    if distance is None:  # on the tube's circle (z = 0): 0.3 from (0.7, 10), on the sensor's side
        x, y, _ = t[0] * rays[0]
        assert (x - 0.7) ** 2 + (y - 10) ** 2 == pytest.approx(0.09, abs=1e-6) and y < 10
        assert 0.9 < shade[0] < 1
        return
    assert t[0] == pytest.approx(distance, abs=1e-5)
    assert shade[0] == pytest.approx(cosine, abs=1e-5)


def test_files_have_the_requested_classes_sizes_and_beams(tmp_path):
    root = synth.generate(tmp_path / "d", 3, seed=2, classes=("torus", "cone", "pyramid", "cylinder"),
                          image_size=(24, 40), beams=(16, 32))
    assert sorted(p.name for p in root.iterdir()) == ["cones", "cylinders", "pyramids", "tori"]
    for folder in ("cones", "cylinders", "pyramids", "tori"):
        for stem in ("0000", "0001", "0002"):
            with Image.open(root / folder / "rgb" / f"{stem}.png") as image:
                assert image.size == (40, 24) and image.mode == "RGBA"
            assert np.load(root / folder / "lidar" / f"{stem}.npy").shape == (16, 32)
        azimuth, zenith = np.load(root / folder / "azimuth.npy"), np.load(root / folder / "zenith.npy")
        assert azimuth.dtype == zenith.dtype == np.float32 and azimuth.shape == (16,) and zenith.shape == (32,)
        np.testing.assert_allclose(np.rad2deg(azimuth), -16 + 2.0 * np.arange(16), atol=1e-5)
        np.testing.assert_allclose(np.rad2deg(zenith), -16 + 1.0 * np.arange(32), atol=1e-5)


def test_other_sizes_keep_the_fields_of_view():
    rngs = [np.random.default_rng([3, 0, i]) for i in range(4)]
    _, coarse = synth.render_batch(rngs, "cube", FRONT_LIT, synth.beam_angles(32), synth.beam_angles(32))
    rngs = [np.random.default_rng([3, 0, i]) for i in range(4)]
    _, fine = synth.render_batch(rngs, "cube", FRONT_LIT, synth.BEAM_ANGLES, synth.BEAM_ANGLES)
    # the same scenes: every second beam of 64 is a beam of 32 (noise aside)
    both = (coarse < layout.NO_RETURN) & (fine[:, ::2, ::2] < layout.NO_RETURN)
    assert both.sum() > 50 and np.abs(coarse - fine[:, ::2, ::2])[both].max() < 0.1


def test_a_new_class_set_is_deterministic_and_a_larger_one_starts_with_it(tmp_path):
    shapes = ("cylinder", "torus", "cube")
    a = synth.generate(tmp_path / "a", 3, seed=4, classes=shapes, image_size=(16, 16), beams=(16, 16))
    b = synth.generate(tmp_path / "b", 3, seed=4, classes=shapes, image_size=(16, 16), beams=(16, 16), workers=1)
    large = synth.generate(tmp_path / "large", 5, seed=4, classes=shapes, image_size=(16, 16), beams=(16, 16))
    files = tree_files(a)
    assert files == tree_files(b) and len(files) == 3 * (2 * 3 + 2) and same_files(a, b, files)
    assert same_files(a, large, files)  # its first 3 pairs per class, and its angles
    # a shape's scenes do not depend on the other classes: cubes as in the default set
    default = synth.generate(tmp_path / "default", 3, seed=4)
    mixed = synth.generate(tmp_path / "mixed", 3, seed=4, classes=("torus", "cube"))
    assert same_files(default, mixed, [f for f in tree_files(default) if f.parts[0] == "cubes"])
    assert not filecmp.cmp(a / "tori/rgb/0000.png", a / "cylinders/rgb/0000.png", shallow=False)


def test_quirks_fit_a_new_class_set_of_another_size(tmp_path):
    root = synth.generate(tmp_path / "q", 4, seed=4, classes=("pyramid",), image_size=(12, 20), quirks=1)
    blank = [p for p in (root / "pyramids" / "rgb").glob("*.png") if not np.asarray(Image.open(p))[..., :3].any()]
    assert len(blank) == 1 and np.asarray(Image.open(blank[0])).shape == (12, 20, 4)


@pytest.mark.parametrize("flags, message", [
    (["--classes", "cube,blob"], "classes: unknown shape 'blob'; expected some of cube, sphere, cylinder, cone"),
    (["--classes", "cone,cone"], "classes: 'cone' is given twice"),
    (["--classes", ""], "classes: expected at least one of cube, sphere"),
    (["--image-size", "4", "64"], "image_size: expected two whole numbers from 8 to 2048, got (4, 64)"),
    (["--beams", "64", "7"], "beams: expected two whole numbers from 8 to 2048, got (64, 7)"),
])
def test_cli_refuses_bad_classes_and_sizes_before_writing(tmp_path, capsys, flags, message):
    assert cli.main(["generate", str(tmp_path / "d"), "--n-per-class", "2", *flags]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_generates_other_classes_and_sizes(tmp_path, capsys):
    dest = tmp_path / "d"
    assert cli.main(["generate", str(dest), "--n-per-class", "2", "--classes", "sphere,torus,cone",
                     "--image-size", "16", "24", "--beams", "12", "20"]) == 0
    assert "wrote 6 pairs" in capsys.readouterr().out
    assert sorted(p.name for p in dest.iterdir()) == ["cones", "spheres", "tori"]
    assert np.load(dest / "tori" / "lidar" / "0001.npy").shape == (12, 20)


def test_validate_reports_one_class_folder_without_a_traceback(tmp_path, capsys):
    assert cli.main(["generate", str(tmp_path / "d"), "--n-per-class", "2", "--classes", "torus"]) == 0
    capsys.readouterr()
    assert cli.main(["validate", str(tmp_path / "d")]) == 2
    out = capsys.readouterr().out
    assert "NOT usable" in out and "spheres: folder missing" in out  # one class folder: the original two expected


def test_validate_reads_the_sizes_generated(tmp_path, capsys):
    flags = ["--image-size", "32", "48", "--beams", "16", "24"]
    assert cli.main(["generate", str(tmp_path / "d"), "--n-per-class", "2", *flags]) == 0
    capsys.readouterr()
    assert cli.main(["validate", str(tmp_path / "d")]) == 0
    assert "images 32 x 48 (rows x columns), range images 16 x 24 (azimuth x zenith beams)" in capsys.readouterr().out
