"""Class folders: any number, labels from the folders (cubes -> cube), a stable order; the arrays
and the split of N classes. No training here (tests/plugin/test_classes_pipeline.py trains)."""

import shutil

import numpy as np
import pytest

from cilp_plugin.data import layout, synth
from cilp_plugin.dataset import arrays
from cilp_plugin.dataset.splits import label_of, make_split


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """4 pairs each of torus, cube, cylinder, sphere (generated in that order)."""
    return synth.generate(tmp_path_factory.mktemp("shapes") / "data", 4, seed=2,
                          classes=["torus", "cube", "cylinder", "sphere"])


def copy_class(root, folder, new_name):
    shutil.copytree(root / folder, root / new_name)


def test_classes_come_from_the_folders_known_shapes_first(shapes, tmp_path):
    data = shutil.copytree(shapes, tmp_path / "data")
    copy_class(data, "cubes", "mugs")
    copy_class(data, "spheres", "coffee_cups")
    (data / "notes").mkdir()  # no rgb/ nor lidar/: not a class
    assert layout.class_folders(data) == {"cubes": "cube", "spheres": "sphere", "cylinders": "cylinder",
                                          "tori": "torus", "coffee_cups": "coffee_cups", "mugs": "mugs"}
    report = layout.scan(data).require_usable()
    assert report.labels == ("cube", "sphere", "cylinder", "torus", "coffee_cups", "mugs")
    assert [p.pair_id for p in report.pairs][:5] == [f"cube_000{i}" for i in range(4)] + ["sphere_0000"]
    assert layout.count_candidate_pairs(data) == 6 * 4
    assert layout.find_data_roots(tmp_path) == [data]


def test_two_class_data_reads_as_before(tiny_data):
    assert layout.class_folders(tiny_data) == layout.CLASS_FOLDERS
    assert layout.scan(tiny_data).labels == layout.LABELS


def test_a_single_class_folder_is_reported_with_the_missing_originals(shapes, tmp_path):
    (tmp_path / "data").mkdir()
    copy_class(shapes, "tori", tmp_path / "data" / "tori")
    report = layout.scan(tmp_path / "data")
    assert report.labels == ("cube", "sphere", "torus") and not report.usable
    assert "spheres: folder missing" in report.classes["spheres"].error


def test_two_folders_of_one_label_are_refused(shapes, tmp_path):
    data = shutil.copytree(shapes, tmp_path / "data")
    copy_class(data, "cubes", "cube")
    with pytest.raises(layout.FormatError, match=r"class folders cube/ and cubes/ both hold label 'cube'"):
        layout.scan(data)


def test_arrays_of_a_folder_index_its_classes(shapes):
    loaded = arrays.from_folder(shapes)
    assert loaded.classes == ("cube", "sphere", "cylinder", "torus")
    assert np.bincount(loaded.labels).tolist() == [4, 4, 4, 4]
    assert [loaded.classes[i] for i in loaded.labels[::4]] == list(loaded.classes)
    with pytest.raises(ValueError, match="unknown labels \\['torus'\\]: expected cube / sphere / cylinder"):
        arrays.load_pairs(loaded.pair_ids, ["torus"] * len(loaded), [], [], classes=("cube", "sphere", "cylinder"))


def test_the_split_keeps_every_class_and_reads_labels_with_underscores():
    ids = [f"{label}_{i:04d}" for label in ("coffee_cups", "cube", "sphere", "cylinder") for i in range(10)]
    assert label_of("coffee_cups_0001", ["coffee", "coffee_cups"]) == "coffee_cups"
    assert label_of("cube_0001") == "cube"
    split = make_split(ids, val=0.2, seed=0, classes=["cube", "sphere", "cylinder", "coffee_cups"])
    val_labels = [label_of(p, ["coffee_cups"]) for p in split.val]
    assert sorted(val_labels) == sorted(["coffee_cups", "cube", "sphere", "cylinder"] * 2)
    two = [f"{label}_{i:04d}" for label in ("sphere", "cube") for i in range(10)]
    assert make_split(two, seed=0).val == make_split(list(reversed(two)), seed=0).val


def test_a_download_installs_every_class_folder(shapes, tmp_path):
    from cilp_plugin.data.download import install_class_folders, locate_data_root

    archive = shutil.copytree(shapes, tmp_path / "extracted" / "data" / "shapes")
    root = locate_data_root(tmp_path / "extracted")
    assert root == archive
    dest = tmp_path / "dest"
    install_class_folders(root, dest, tmp_path / "trash", list(layout.scan(root).classes))
    assert sorted(p.name for p in dest.iterdir()) == ["cubes", "cylinders", "spheres", "tori"]
