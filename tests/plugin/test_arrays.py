"""Dataset or folder -> training arrays, and the content-keyed cache."""

import numpy as np
import pytest

from cilp_plugin.data import layout
from cilp_plugin.dataset import arrays


@pytest.fixture(scope="module")
def dataset(split_dataset):
    return split_dataset


def test_dataset_and_folder_give_the_same_arrays(dataset, tiny_data, tmp_path):
    val = arrays.from_dataset(dataset, "val", cache_dir=tmp_path)
    raw = arrays.from_folder(tiny_data, pair_ids=val.pair_ids)
    order = [raw.pair_ids.index(pid) for pid in val.pair_ids]
    np.testing.assert_array_equal(val.rgb, raw.rgb[order])
    np.testing.assert_array_equal(val.lidar, raw.lidar[order])
    assert val.rgb.shape == (4, 64, 64, 4) and val.rgb.dtype == np.uint8
    assert val.lidar.shape == (4, 4, 64, 64) and val.lidar.dtype == np.float32
    assert [layout.LABELS[i] for i in val.labels] == [pid.split("_")[0] for pid in val.pair_ids]


def test_cache_is_reused_and_keyed_by_content(data_copy, tmp_path):
    first = arrays.from_folder(data_copy, cache_dir=tmp_path)
    cached = [p for p in (tmp_path / "tensors").iterdir() if p.is_dir()]
    assert [p.name for p in cached] == [first.fingerprint] and first.source == cached[0]
    assert sorted(p.name for p in cached[0].iterdir()) == ["index.json", "labels.npy", "lidar.npy", "rgb.npy"]
    assert isinstance(first.lidar, np.memmap)  # read from the cache as needed, not loaded

    again = arrays.from_folder(data_copy, cache_dir=tmp_path)
    assert again.fingerprint == first.fingerprint
    np.testing.assert_array_equal(again.lidar, first.lidar)

    depth = layout.read_depth(data_copy / "cubes" / "lidar" / "0000.npy")
    np.save(data_copy / "cubes" / "lidar" / "0000.npy", depth + 1)
    changed = arrays.from_folder(data_copy, cache_dir=tmp_path)
    assert changed.fingerprint != first.fingerprint
    assert not np.array_equal(changed.lidar[0], first.lidar[0])


def test_cache_is_written_in_chunks_and_a_damaged_one_decoded_again(data_copy, tmp_path, monkeypatch):
    monkeypatch.setattr(arrays, "CHUNK", 3)
    whole = arrays.from_folder(data_copy)  # no cache: decoded into memory
    chunked = arrays.from_folder(data_copy, cache_dir=tmp_path)
    assert whole.source is None and not isinstance(whole.lidar, np.memmap)
    np.testing.assert_array_equal(chunked.rgb, whole.rgb)
    np.testing.assert_array_equal(chunked.lidar, whole.lidar)
    np.testing.assert_array_equal(np.load(chunked.source / "labels.npy"), whole.labels)

    with open(chunked.source / "lidar.npy", "r+b") as damaged:
        damaged.truncate(1000)
    again = arrays.from_folder(data_copy, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.lidar, whole.lidar)
    tensors = again.tensors()
    assert tensors.mapped and np.array_equal(tensors.labels.numpy(), whole.labels)


def test_empty_split_is_a_clear_error(dataset):
    with pytest.raises(ValueError, match="no pairs tagged 'test'"):
        arrays.from_dataset(dataset, "test")
