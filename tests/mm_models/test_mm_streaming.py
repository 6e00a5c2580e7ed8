"""Data larger than memory: arrays folders, streamed batches, the automatic placement.

Streamed data must give exactly what resident data gives for the same seed: the
same batches (rows and values) and the same trained weights.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from mm_testdata import TINY
from safetensors.torch import load_file

from mm_models import TrainConfig, inference, reading, train
from mm_models import arrays as mm_arrays
from mm_models import data as mm_data
from mm_models import placement as mm_placement
from mm_models.arrays import ArraysWriter, open_arrays
from mm_models.data import PairTensors, StreamedPairs
from mm_models.placement import place, placement

FAST = dict(batch_size=8, lr=3e-3, warmup_epochs=0.0, device="cpu", precision="fp32")


def write_folder(folder: Path, data: PairTensors, chunk: int = 5) -> Path:
    """``data`` as an arrays folder, written ``chunk`` rows at a time."""
    n = len(data)
    with ArraysWriter(folder, {"rgb": (tuple(data.rgb.shape), np.uint8), "lidar": (tuple(data.lidar.shape), np.float32),
                               "labels": ((n,), np.int64)}, {"fingerprint": "test"}) as out:
        for start in range(0, n, chunk):
            rows = slice(start, start + chunk)
            out.write(start, rgb=data.rgb[rows].numpy(), lidar=data.lidar[rows].numpy(),
                      labels=data.labels[rows].numpy().astype(np.int64))
    return folder


@pytest.fixture
def folders(small_split, tmp_path):
    """small_split's train and val pairs as arrays folders."""
    train_data, val_data = small_split
    return write_folder(tmp_path / "train", train_data), write_folder(tmp_path / "val", val_data, chunk=7)


# --------------------------------------------------------------------------- arrays folders


def test_arrays_folder_round_trips_memory_mapped(small_split, folders):
    train_data, _ = small_split
    arrays, index = open_arrays(folders[0])
    assert index["format"] == mm_arrays.ARRAYS_FORMAT and index["fingerprint"] == "test"
    assert index["count"] == len(train_data) and index["arrays"]["rgb"]["dtype"] == "|u1"
    assert all(isinstance(a, np.memmap) for a in arrays.values())
    for name in ("rgb", "lidar"):  # plain .npy files: np.load reads them without this package
        np.testing.assert_array_equal(np.load(folders[0] / f"{name}.npy", allow_pickle=False),
                                      getattr(train_data, name).numpy())
    opened = PairTensors.open(folders[0])
    assert opened.mapped and torch.equal(opened.rgb, train_data.rgb) and torch.equal(opened.labels, train_data.labels)
    resident = opened.to("cpu")  # copied into memory, no longer mapped
    assert not resident.mapped and torch.equal(resident.lidar, train_data.lidar)
    assert resident.lidar.is_contiguous(memory_format=torch.channels_last)


def test_a_failed_write_leaves_nothing_and_a_folder_without_index_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match="decoding failed"):
        with ArraysWriter(tmp_path / "a", {"x": ((4, 2), np.float32)}) as out:
            out.write(0, x=np.ones((2, 2)))
            raise RuntimeError("decoding failed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="do not fit"):
        with ArraysWriter(tmp_path / "b", {"x": ((4, 2), np.float32)}) as out:
            out.write(3, x=np.ones((2, 2)))
    (tmp_path / "c").mkdir()
    np.save(tmp_path / "c" / "rgb.npy", np.zeros((2, 8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match="not a complete arrays folder"):
        open_arrays(tmp_path / "c")


def test_an_array_that_disagrees_with_the_index_is_refused(small_split, folders):
    np.save(folders[0] / "labels.npy", np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="labels.npy: <i8 \\[3\\], the index says"):
        open_arrays(folders[0])


# --------------------------------------------------------------------------- the same batches


@pytest.mark.parametrize("readers", [1, 3], ids=["one-reader", "three-readers"])
@pytest.mark.parametrize("prefetch", [True, False], ids=["prefetch", "no-prefetch"])
def test_streamed_batches_are_the_resident_ones(small_split, folders, prefetch, readers, monkeypatch):
    monkeypatch.setattr(reading, "READ_THREADS", readers)
    monkeypatch.setattr(reading, "ROWS_PER_READER", 2)  # a batch of 5 read by 2 threads, of 7 by 3
    resident = small_split[0].to("cpu")
    streamed = PairTensors.open(folders[0]).streamed("cpu", prefetch=prefetch)
    assert isinstance(streamed, StreamedPairs) and streamed.mapped and len(streamed) == len(resident)
    for options in (dict(shuffle=True, seed=3), dict(shuffle=True, seed=4, drop_last=True), dict()):
        rows = list(resident.batch_rows(5, **options))
        assert [r if isinstance(r, slice) else r.tolist() for r in streamed.batch_rows(5, **options)] == \
            [r if isinstance(r, slice) else r.tolist() for r in rows]
        for (got, got_labels), (expected, expected_labels) in zip(streamed.batches(5, **options),
                                                                  resident.batches(5, **options), strict=True):
            for key in ("rgb", "lidar"):
                assert torch.equal(got[key], expected[key]) and got[key].stride() == expected[key].stride()
            assert torch.equal(got_labels, expected_labels)
    backwards = torch.arange(30, 23, -1)
    assert torch.equal(streamed.batch(backwards)[0]["rgb"], resident.batch(backwards)[0]["rgb"])
    # rows asked for out of turn (not the ones read ahead) are read then
    rows = torch.tensor([7, 2, 2, 30])
    assert torch.equal(streamed.batch(rows)[0]["lidar"], resident.batch(rows)[0]["lidar"])
    part = streamed.subset(slice(4, 13))
    assert isinstance(part, StreamedPairs) and torch.equal(part.batch(slice(0, 9))[0]["rgb"],
                                                           resident.batch(slice(4, 13))[0]["rgb"])
    assert torch.equal(part.batch(torch.tensor([8, 0, 3]))[0]["lidar"],
                       resident.batch(torch.tensor([12, 4, 7]))[0]["lidar"])
    assert torch.equal(streamed.batch(slice(1, 20, 3))[0]["rgb"], resident.batch(slice(1, 20, 3))[0]["rgb"])
    assert streamed.batch(torch.tensor([], dtype=torch.long))[0]["lidar"].shape == (0, 4, 64, 64)  # an empty share


def test_streaming_reads_the_files_and_maps_nothing(small_split, folders, monkeypatch):
    released, reads = [], []
    monkeypatch.setattr(mm_data, "_DROP_BYTES", 1)
    monkeypatch.setattr(reading, "release", lambda mapped: released.append(len(mapped)))
    read_rows = reading.read_rows
    monkeypatch.setattr(reading, "read_rows", lambda span, *rest: reads.append(span[0]) or read_rows(span, *rest))
    streamed = PairTensors.open(folders[0]).streamed("cpu")
    assert sum(1 for _ in streamed.batches(9, shuffle=True)) == 4
    assert sum(1 for _ in streamed.subset(slice(3, 30)).batches(9)) == 3  # a part of the file: its own offsets
    assert {Path(path).name for path in reads} == {"rgb.npy", "lidar.npy"} and released == []
    # read through the maps (the standardizers' pass), their pages are given back as it goes
    assert sum(1 for _ in PairTensors.open(folders[0]).batches(9)) == 4 and set(released) == {2}
    # in-memory data streams from memory
    reads.clear()
    assert sum(1 for _ in small_split[0].streamed("cpu").batches(9, shuffle=True)) == 4 and reads == []


@pytest.mark.slow
def test_streamed_training_ends_with_the_resident_weights(small_split, folders, tmp_path):
    results = {}
    for mode in ("resident", "streamed"):
        train_data, val_data = (PairTensors.open(folder) for folder in folders)
        results[mode] = train(TINY, TrainConfig(epochs=2, data=mode, augment="rgb-affine", **FAST),
                              train_data, val_data, tmp_path / mode)
        assert results[mode].manifest["data"]["mode"] == mode
        assert json.loads((tmp_path / mode / "manifest.json").read_text())["data"]["mode"] == mode
    weights = [load_file(tmp_path / mode / "model.safetensors") for mode in ("resident", "streamed")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    drop = ("epoch_seconds", "samples_per_s", "peak_memory_mb")
    assert [{k: v for k, v in row.items() if k not in drop} for row in results["streamed"].history] == \
        [{k: v for k, v in row.items() if k not in drop} for row in results["resident"].history]
    # and in-memory data, resident as always, trains the same
    in_memory = train(TINY, TrainConfig(epochs=2, augment="rgb-affine", **FAST), *small_split, tmp_path / "memory")
    assert in_memory.manifest["data"]["mode"] == "resident"
    assert in_memory.history[-1]["val/loss"] == results["streamed"].history[-1]["val/loss"]


# --------------------------------------------------------------------------- the automatic choice


def test_auto_keeps_in_memory_data_resident_and_streams_what_exceeds_the_budget(small_split, folders, monkeypatch):
    mapped = [PairTensors.open(folder) for folder in folders]
    mode, note = placement("auto", "cpu", *small_split)
    assert mode == "resident" and "already in memory" in note
    mode, note = placement("auto", "cpu", *mapped)
    assert mode == "resident" and "fit the budget" in note and "of RAM available" in note

    monkeypatch.setattr(mm_placement, "resident_budget", lambda device: (1000, "50% of 2.0 kB of RAM available"))
    mode, note = placement("auto", "cpu", *mapped)
    total = sum(d.nbytes for d in mapped)
    assert mode == "streamed", note
    assert f"= {total / 1e6:.1f} MB of pairs exceed the budget of 0.0 MB (50% of 2.0 kB" in note
    assert "memory-mapped files" in note and "--data resident" in note
    assert isinstance(place(mapped[0], "cpu"), StreamedPairs)
    assert placement("resident", "cpu", *mapped)[0] == "resident"
    assert not isinstance(place(mapped[0], "cpu", "resident"), StreamedPairs)
    with pytest.raises(ValueError, match="data"):
        placement("disk", "cpu", *mapped)


def test_training_says_when_it_streams_and_records_it(small_split, folders, tmp_path, monkeypatch):
    monkeypatch.setattr(mm_placement, "resident_budget", lambda device: (1000, "a tiny budget"))
    labels = []
    result = train(TINY, TrainConfig(epochs=1, **FAST), *(PairTensors.open(f) for f in folders), tmp_path / "run",
                   progress=lambda fraction, label: labels.append(label))
    assert result.manifest["data"]["mode"] == "streamed" and "a tiny budget" in result.manifest["data"]["note"]
    assert labels[0].startswith("data streamed from their memory-mapped files to cpu")


def test_train_config_and_cli_take_the_data_mode():
    assert TrainConfig().data == "auto" and TrainConfig.from_dict(TrainConfig(data="streamed").to_dict()).data == \
        "streamed"
    with pytest.raises(ValueError, match="data"):
        TrainConfig(data="disk")
    from cilp_plugin import cli

    parser = cli.build_parser()
    assert parser.parse_args(["train", "ds", "--data", "streamed"]).data == "streamed"
    assert parser.parse_args(["train-cilp", "ds"]).data == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "ds", "--data", "disk"])


def test_predictions_of_mapped_data_match_in_memory_data(small_split, folders, tmp_path, monkeypatch):
    run = train(TINY, TrainConfig(epochs=1, **FAST), *small_split, tmp_path / "run")
    expected = inference.outputs_of(run, small_split[1], device="cpu", batch_size=5)
    monkeypatch.setattr(mm_placement, "resident_budget", lambda device: (0, "no room"))
    got = inference.outputs_of(run, PairTensors.open(folders[1]), device="cpu", batch_size=5)
    assert got.keys() == expected.keys() and all(np.array_equal(got[k], expected[k]) for k in got)


# --------------------------------------------------------------------------- torchrun

WORKER = """
import sys
from pathlib import Path
import torch
from safetensors.torch import save_file
sys.path.insert(0, {tests!r})
from mm_models import PairTensors, TrainConfig, distributed, train
from mm_testdata import TINY

folders, out = Path(sys.argv[1]), Path(sys.argv[2])
for mode in ("resident", "streamed"):
    config = TrainConfig(epochs=2, batch_size=7, precision="fp32", device="cpu", data=mode)
    result = train(TINY, config, PairTensors.open(folders / "train"), PairTensors.open(folders / "val"), out / mode)
    save_file({{k: v.contiguous() for k, v in result.model.state_dict().items()}},
              out / f"{{mode}}-rank{{distributed.rank()}}.safetensors")
"""


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch has no torch.distributed")
def test_two_processes_stream_their_shares_as_they_take_them_resident(folders, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER.format(tests=str(Path(__file__).parent))))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script), str(folders[0].parent), str(tmp_path / "out")],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    weights = {(mode, rank): load_file(tmp_path / "out" / f"{mode}-rank{rank}.safetensors")
               for mode in ("resident", "streamed") for rank in (0, 1)}
    expected = weights["resident", 0]
    for key, got in weights.items():
        assert all(torch.equal(got[k], expected[k]) for k in expected), key
    manifest = json.loads((tmp_path / "out" / "streamed" / "manifest.json").read_text())
    assert manifest["data"]["mode"] == "streamed" and manifest["processes"] == 2


# --------------------------------------------------------------------------- CUDA (benchmarks/gpu_check.sh)


@pytest.mark.parametrize("prefetch", [True, False], ids=["prefetch", "no-prefetch"])
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_streamed_batches_on_cuda_are_the_resident_ones(small_split, folders, prefetch):
    resident = small_split[0].to("cuda")
    streamed = PairTensors.open(folders[0]).streamed("cuda", prefetch=prefetch)
    assert streamed.device.type == "cuda" and streamed.labels.is_cuda and not streamed.rgb.is_cuda
    for options in (dict(shuffle=True, seed=3), dict(shuffle=True, seed=4, drop_last=True), dict()):
        for (got, got_labels), (expected, expected_labels) in zip(streamed.batches(5, **options),
                                                                  resident.batches(5, **options), strict=True):
            for key in ("rgb", "lidar"):
                assert got[key].is_cuda and torch.equal(got[key], expected[key])
                assert got[key].stride() == expected[key].stride()
            assert torch.equal(got_labels, expected_labels)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_streamed_training_on_cuda_follows_the_resident_run(small_split, folders, tmp_path):
    runs = {}
    for mode in ("resident", "streamed"):
        config = TrainConfig(epochs=3, data=mode, **{**FAST, "device": "cuda"})
        runs[mode] = train(TINY, config, *(PairTensors.open(f) for f in folders), tmp_path / mode)
        assert runs[mode].manifest["data"]["mode"] == mode and runs[mode].manifest["device"].startswith("cuda")
    # the same batches in the same order (the test above): the same run but for the kernels cuDNN's autotuner
    # picks anew in each run (TF32 convolutions): on an H200, val losses 1.03e-4 apart after 3 epochs
    for got, expected in zip(runs["streamed"].history, runs["resident"].history, strict=True):
        assert got["train/loss"] == pytest.approx(expected["train/loss"], rel=1e-3)
        assert got["val/loss"] == pytest.approx(expected["val/loss"], rel=1e-3)
    mode, note = placement("auto", "cuda", *small_split)
    assert mode == "resident" and "free on cuda" in note
