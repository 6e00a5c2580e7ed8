"""The on-disk contract: pairing, reading, and a named error for every malformed file."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from cilp_plugin import cli
from cilp_plugin.data import layout, synth


def scan_problems(root):
    report = layout.scan(root)
    return report, {b.path.name: b.reason for c in report.classes.values() for b in c.bad_files}


def test_scan_pairs_by_stem_and_reports_unpaired(data_copy):
    (data_copy / "cubes" / "rgb" / "0003.png").unlink()
    (data_copy / "spheres" / "lidar" / "0005.npy").unlink()
    (data_copy / "spheres" / "notes.txt").write_text("ignored")
    (data_copy / "spheres" / "extra_folder").mkdir()

    report = layout.scan(data_copy)

    cubes, spheres = report.classes["cubes"], report.classes["spheres"]
    assert (len(cubes.pairs), len(spheres.pairs)) == (7, 7)
    assert [p.name for p in cubes.unpaired] == ["0003.npy"]
    assert [p.name for p in spheres.unpaired] == ["0005.png"]
    assert report.usable
    assert cubes.pairs[0].pair_id == "cube_0000"
    assert {p.pair_id for p in spheres.pairs} >= {"sphere_0007"}


def test_readers_normalise_modes_and_dtypes(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    for mode, image in {"RGB": Image.fromarray(rgb), "L": Image.fromarray(rgb[..., 0]),
                        "P": Image.fromarray(rgb).convert("P")}.items():
        image.save(tmp_path / f"{mode}.png")
        out = layout.read_rgb(tmp_path / f"{mode}.png")
        assert out.shape == (64, 64, 4) and out.dtype == np.uint8, mode
        assert (out[..., 3] == 255).all()
    np.save(tmp_path / "d.npy", np.full((64, 64), 12.5, np.float64))
    depth = layout.read_depth(tmp_path / "d.npy")
    assert depth.dtype == np.float32 and depth[0, 0] == 12.5


def test_png_writer_round_trips_through_pil(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (64, 64, 4), np.uint8)
    (tmp_path / "x.png").write_bytes(layout.encode_png(rgba))
    np.testing.assert_array_equal(layout.read_rgb(tmp_path / "x.png"), rgba)


def corrupt_png(path):
    path.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")


def truncated_png(path):
    path.write_bytes(path.read_bytes()[:60])


def small_png(path):
    Image.new("RGBA", (32, 48)).save(path)


def corrupt_npy(path):
    path.write_bytes(b"garbage that is not an npy file")


def truncated_npy(path):
    path.write_bytes(path.read_bytes()[:200])


def wrong_depth_shape(path):
    np.save(path, np.zeros((64, 32), np.float32))


def non_finite_depth(path):
    depth = np.full((64, 64), 10.0, np.float32)
    depth[3, 4] = np.nan
    np.save(path, depth)


def object_npy(path):
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)


@pytest.mark.parametrize("damage, folder, suffix, expected", [
    (corrupt_png, "rgb", "png", "corrupt or truncated PNG"),
    (truncated_png, "rgb", "png", "corrupt or truncated PNG"),
    (small_png, "rgb", "png", "expected an image of 64 x 64 pixels (rows x columns, as the data's other images), "
                              "found 48 x 32"),
    (corrupt_npy, "lidar", "npy", "corrupt or truncated .npy"),
    (truncated_npy, "lidar", "npy", "corrupt or truncated .npy"),
    (wrong_depth_shape, "lidar", "npy", "expected a depth array of shape (64, 64) (azimuth x zenith beams, as the "
                                        "angle files), found shape (64, 32)"),
    (non_finite_depth, "lidar", "npy", "1 non-finite values"),
    (object_npy, "lidar", "npy", "corrupt or truncated .npy"),
])
def test_bad_file_is_skipped_and_reported_with_its_reason(data_copy, damage, folder, suffix, expected):
    damage(data_copy / "cubes" / folder / f"0002.{suffix}")

    report, problems = scan_problems(data_copy)

    assert expected in problems[f"0002.{suffix}"]
    assert "cube_0002" not in {p.pair_id for p in report.pairs}
    assert len(report.classes["cubes"].pairs) == 7 and report.usable
    read, size = (layout.read_rgb, report.image_size) if folder == "rgb" else (layout.read_depth, report.beams)
    with pytest.raises(layout.FormatError, match=f"0002.{suffix}"):
        read(data_copy / "cubes" / folder / f"0002.{suffix}", size)


@pytest.mark.parametrize("values, expected", [
    (None, "azimuth.npy: missing"),
    (np.zeros(63, np.float32), "zenith.npy: 63 x 64 beams (azimuth x zenith), cubes/ has 64 x 64: expected one beam "
                               "layout for the whole data folder"),
    (np.zeros((8, 8), np.float32), "expected a vector of angles, found an array of shape (8, 8)"),
    (np.full(64, np.inf, np.float32), "angles must be finite"),
])
def test_bad_angles_make_the_class_unusable(data_copy, values, expected):
    path = data_copy / "spheres" / "azimuth.npy"
    path.unlink()
    if values is not None:
        np.save(path, values)

    report = layout.scan(data_copy)

    assert not report.usable
    assert expected in report.classes["spheres"].error
    with pytest.raises(layout.FormatError, match="spheres/azimuth.npy"):
        report.require_usable()


def test_the_data_declares_its_sizes_and_a_file_of_another_is_bad(tmp_path, capsys):
    root = synth.generate(tmp_path / "wide", 3, seed=1, image_size=(24, 40), beams=(16, 32))
    report = layout.scan(root)
    assert (report.image_size, report.beams) == ((24, 40), (16, 32)) and report.usable
    assert layout.read_rgb(report.pairs[0].rgb_path).shape == (24, 40, 4)
    assert cli.main(["validate", str(root)]) == 0
    assert "images 24 x 40 (rows x columns), range images 16 x 32 (azimuth x zenith beams)" in capsys.readouterr().out

    Image.new("RGBA", (24, 40)).save(root / "cubes" / "rgb" / "0001.png")  # rows and columns swapped
    np.save(root / "spheres" / "lidar" / "0002.npy", np.zeros((32, 16), np.float32))
    report, problems = scan_problems(root)
    assert "expected an image of 24 x 40 pixels" in problems["0001.png"]
    assert "expected a depth array of shape (16, 32)" in problems["0002.npy"]
    assert len(report.pairs) == 4 and report.to_dict()["image_size"] == [24, 40]


def test_missing_class_folder_is_named(data_copy):
    import shutil
    shutil.rmtree(data_copy / "cubes" / "lidar")
    report = layout.scan(data_copy)
    assert not report.usable
    assert "cubes/lidar: folder missing" in report.classes["cubes"].error


def test_missing_root_raises(tmp_path):
    with pytest.raises(layout.FormatError, match="does not exist"):
        layout.scan(tmp_path / "nowhere")


def test_cli_validate_json_and_exit_status(data_copy, capsys):
    corrupt_png(data_copy / "spheres" / "rgb" / "0001.png")
    (data_copy / "spheres" / "lidar" / "0004.npy").unlink()

    assert cli.main(["validate", str(data_copy), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    spheres = report["classes"]["spheres"]
    assert spheres["pairs"] == 6
    assert [b["path"].endswith("0001.png") for b in spheres["bad_files"]] == [True]
    assert spheres["unpaired"][0].endswith("0004.png")

    for stem in range(8):
        (data_copy / "cubes" / "lidar" / f"{stem:04d}.npy").unlink()
    assert cli.main(["validate", str(data_copy)]) == 2
    assert "cubes: 0 pairs, 8 unpaired" in capsys.readouterr().out


def test_depth_to_xyza_matches_the_course_formula():
    rng = np.random.default_rng(0)
    az, ze = rng.uniform(-0.3, 0.3, 64), rng.uniform(-0.3, 0.3, 64)
    depth = rng.uniform(1, 60, (64, 64)).astype(np.float32)
    xyza = layout.depth_to_xyza(depth, az, ze)
    i, j = 5, 40
    d = depth[i, j]
    expected = [d * np.sin(-az[i]) * np.cos(-ze[j]), d * np.cos(-az[i]) * np.cos(-ze[j]), d * np.sin(-ze[j])]
    np.testing.assert_allclose(xyza[:3, i, j], expected, rtol=1e-4)
    assert xyza[3, i, j] == float(d < 50)


def test_validation_in_worker_processes_reports_the_same(data_copy):
    corrupt_png(data_copy / "cubes" / "rgb" / "0001.png")
    non_finite_depth(data_copy / "spheres" / "lidar" / "0004.npy")
    (data_copy / "spheres" / "rgb" / "0006.png").unlink()
    counted = []

    serial, parallel = layout.scan(data_copy, workers=1), layout.scan(data_copy, workers=2, progress=counted.append)

    for folder in layout.CLASS_FOLDERS:
        one, two = serial.classes[folder], parallel.classes[folder]
        assert one.pairs == two.pairs and one.bad_files == two.bad_files and one.unpaired == two.unpaired
    assert {b.path.name for c in parallel.classes.values() for b in c.bad_files} == {"0001.png", "0004.npy"}
    assert len(parallel.pairs) == 13 and len(counted) == 15  # progress: every pair read, bad ones included


# --------------------------------------------------------------------------- the original's quirks


def expected_quirks(root):
    """The quirks of ``root`` found by a reading of their own: images through PIL, pairs byte by byte."""
    pairs = layout.scan(root, validate=False).pairs
    blank = [p.pair_id for p in pairs if not np.asarray(Image.open(p.rgb_path).convert("RGB")).any()]
    duplicates = {}
    for k, pair in enumerate(pairs):
        original = next((earlier for earlier in pairs[:k] if earlier.pair_id not in duplicates
                         and pair.rgb_path.read_bytes() == earlier.rgb_path.read_bytes()
                         and pair.lidar_path.read_bytes() == earlier.lidar_path.read_bytes()), None)
        if original is not None:
            duplicates[pair.pair_id] = original.pair_id
    return blank, duplicates


def test_scan_reports_the_quirks_of_published_copies(quirky_data, capsys):
    report = layout.scan(quirky_data)

    blank, duplicates = expected_quirks(quirky_data)
    assert report.blank_rgb() == blank and len(blank) == 4  # 2 per class
    assert report.duplicates() == duplicates and len(duplicates) == 4
    assert all(dup.split("_")[0] == orig.split("_")[0] and dup > orig for dup, orig in duplicates.items())
    assert report.quirks() == {"blank_rgb": blank, "duplicate": list(duplicates)}
    assert not set(blank) & set(duplicates)
    # the all-black images are byte-identical to each other, their LiDAR files are not: blank, not duplicates
    assert len({(quirky_data / f"{p.split('_')[0]}s" / "rgb" / f"{p.split('_')[1]}.png").read_bytes()
                for p in blank}) == 1
    for c in report.classes.values():
        assert len(c.pairs) == 8 and len(c.bad_files) == 0
        assert [copy.path for copy in c.copies] == c.unpaired and len(c.unpaired) == 2
        assert all(copy.identical and copy.original == copy.path.with_name(copy.path.name.replace(" (1)", ""))
                   for copy in c.copies)

    assert cli.main(["validate", str(quirky_data)]) == 0
    text = capsys.readouterr().out
    assert f"4 pairs with an all-black RGB image (tag blank_rgb): {', '.join(blank)}" in text
    some_duplicate, its_original = next(iter(duplicates.items()))
    assert "4 pairs byte-identical to an earlier pair (tag duplicate): " in text
    assert f"{some_duplicate} (= {its_original})" in text
    assert "4 unpaired copies named 'NNNN (n)', 4 byte-identical to their original: " in text
    copy = report.classes["cubes"].copies[0]
    assert f"unpaired: {copy.path} (a copy of {copy.original.name}, byte-identical)" in text

    assert cli.main(["validate", str(quirky_data), "--json"]) == 0
    as_json = json.loads(capsys.readouterr().out)
    assert as_json["blank_rgb"] == blank and as_json["duplicates"] == duplicates and as_json["checked_pairs"] == 16
    assert [c["identical"] for c in as_json["classes"]["spheres"]["copies"]] == [True, True]


def test_default_generated_data_has_no_quirks(tiny_data):
    report = layout.scan(tiny_data)
    assert report.blank_rgb() == [] and report.duplicates() == {} and report.copies == []
    assert expected_quirks(tiny_data) == ([], {})
    assert "quirks: none (no all-black RGB image, no duplicate pair, no 'NNNN (n)' copy)" in report.format_text()
    assert "quirks" not in layout.scan(tiny_data, validate=False).format_text()  # not read: nothing claimed


def test_blank_means_every_rgb_value_zero_whatever_the_alpha(data_copy):
    def write(stem, rgba, mode="RGBA"):
        image = Image.fromarray(rgba if mode == "RGBA" else rgba[..., 0], mode)
        image.save(data_copy / "cubes" / "rgb" / f"{stem}.png")

    clear = np.zeros((64, 64, 4), np.uint8)  # black and transparent
    write("0001", clear)
    write("0002", clear, mode="L")  # a grey-level black image
    one_dim_pixel = clear.copy()
    one_dim_pixel[40, 7] = (0, 1, 0, 255)
    write("0003", one_dim_pixel)
    assert layout.scan(data_copy).blank_rgb() == ["cube_0001", "cube_0002"]


def test_duplicates_need_both_files_identical_and_copies_are_named(data_copy, capsys):
    cubes, spheres = data_copy / "cubes", data_copy / "spheres"
    for kind, suffix in (("rgb", "png"), ("lidar", "npy")):  # a cube pair again among the spheres
        shutil.copyfile(cubes / kind / f"0002.{suffix}", spheres / kind / f"0005.{suffix}")
        shutil.copyfile(cubes / kind / f"0004.{suffix}", cubes / kind / f"0004 (1).{suffix}")  # a paired copy
    shutil.copyfile(cubes / "lidar" / "0006.npy", cubes / "lidar" / "0007.npy")  # the LiDAR alone: no duplicate
    shutil.copyfile(cubes / "rgb" / "0006.png", cubes / "rgb" / "0001.png")  # the RGB alone: neither
    np.save(cubes / "lidar" / "0003 (2).npy", np.full((64, 64), 20.0, np.float32))  # a copy that differs
    (cubes / "rgb" / "0009 (1).png").write_bytes(b"a copy without an original")  # no 0009.png: not a copy

    report = layout.scan(data_copy)

    assert report.duplicates() == {"cube_0004 (1)": "cube_0004", "sphere_0005": "cube_0002"}
    assert [(c.path.name, c.original.name, c.identical) for c in report.classes["cubes"].copies] == [
        ("0003 (2).npy", "0003.npy", False)]
    assert [p.name for p in report.classes["cubes"].unpaired] == ["0003 (2).npy", "0009 (1).png"]
    assert "(a copy of 0003.npy, with other contents)" in report.format_text()
    assert "1 unpaired copies named 'NNNN (n)', 0 byte-identical to their original: cubes/lidar/0003 (2).npy" \
        in report.format_text()


def test_the_digests_are_of_the_bytes_read(data_copy):
    import hashlib

    report = layout.scan(data_copy)
    pair = report.pairs[3]
    digest = "/".join(hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
                      for path in (pair.rgb_path, pair.lidar_path))
    assert report.contents[pair.pair_id] == layout.Contents(digest, blank_rgb=False)
    assert len({c.digest for c in report.contents.values()}) == 16
    skipped = layout.validate_pairs(layout.scan(data_copy, validate=False), skip={pair.pair_id})
    assert pair.pair_id not in skipped.contents and len(skipped.contents) == 15
