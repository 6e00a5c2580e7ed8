"""PairTensors: validation, batches on the device, seeded order; fingerprint."""

import numpy as np
import pytest
import torch

from mm_models import PairTensors, fingerprint


def arrays(n=10, size=8):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (n, size, size, 4), dtype=np.uint8)
    xyza = rng.normal(size=(n, 4, size, size)).astype(np.float32)
    return rgb, xyza, np.arange(n) % 2


def test_batch_converts_uint8_to_float_channels_last():
    rgb, xyza, labels = arrays()
    data = PairTensors.from_numpy(rgb, xyza, labels).to("cpu")
    assert data.rgb.dtype == torch.uint8  # stays uint8 until a batch is taken
    inputs, targets = data.batch(torch.tensor([3, 1]))
    assert inputs["rgb"].shape == (2, 4, 8, 8) and inputs["rgb"].dtype == torch.float32
    assert inputs["rgb"].is_contiguous(memory_format=torch.channels_last)
    assert inputs["lidar"].is_contiguous(memory_format=torch.channels_last)
    expected = torch.from_numpy(rgb[[3, 1]]).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(inputs["rgb"], expected)
    torch.testing.assert_close(inputs["lidar"], torch.from_numpy(xyza[[3, 1]]))
    assert targets.tolist() == [1.0, 1.0]


def test_shuffled_batches_cover_every_row_once_in_a_seeded_order():
    rgb, xyza, labels = arrays(10)
    data = PairTensors.from_numpy(rgb, xyza, labels)

    def order(seed):
        rows = []
        for inputs, _ in data.batches(4, shuffle=True, seed=seed):
            # recover each row's index from its (unique) lidar values
            rows += [int(np.argmin(np.abs(xyza[:, 0, 0, 0] - v))) for v in inputs["lidar"][:, 0, 0, 0].tolist()]
        return rows

    assert sorted(order(1)) == list(range(10))
    assert order(1) == order(1) and order(1) != order(2)
    assert [len(t) for _, t in data.batches(4)] == [4, 4, 2]


@pytest.mark.parametrize("change, message", [
    (lambda r, x, y: (r.astype(np.float32), x, y), "rgb: expected uint8"),
    (lambda r, x, y: (r, x[:, :3], y), "lidar: expected"),
    (lambda r, x, y: (r, x[:5], y), "same pairs"),
    (lambda r, x, y: (r, x, y - 1), "labels: expected 0"),  # indices of any class count, never negative
    (lambda r, x, y: (r, x, y[:3]), "labels: expected shape"),
])
def test_bad_arrays_are_rejected(change, message):
    with pytest.raises(ValueError, match=message):
        PairTensors.from_numpy(*change(*arrays()))


def test_fingerprint_depends_on_content():
    rgb, xyza, labels = arrays()
    assert fingerprint(rgb, xyza, labels) == fingerprint(rgb.copy(), xyza.copy(), labels.copy())
    changed = xyza.copy()
    changed[0, 0, 0, 0] += 1
    assert fingerprint(rgb, changed, labels) != fingerprint(rgb, xyza, labels)


def test_save_and_load_tensors_round_trip(tmp_path):
    from mm_testdata import load_tensors, save_tensors

    rgb, xyza, labels = arrays()
    data = PairTensors.from_numpy(rgb, xyza, labels).to("cpu")  # lidar channels_last
    save_tensors(data, tmp_path / "cache.safetensors", {"fingerprint": fingerprint(rgb, xyza, labels)})
    loaded = load_tensors(tmp_path / "cache.safetensors")
    assert torch.equal(loaded.rgb, data.rgb) and torch.equal(loaded.lidar, data.lidar)
    assert torch.equal(loaded.labels, data.labels)
    assert [p.name for p in tmp_path.iterdir()] == ["cache.safetensors"]
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="bad.safetensors: not a readable"):
        load_tensors(tmp_path / "bad.safetensors")
