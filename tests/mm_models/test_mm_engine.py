"""The training engine on tiny models: run folder, checkpoints, resume, errors."""

import csv
import json
import os
import stat

import numpy as np
import pytest
import torch
from mm_testdata import TINY
from safetensors.torch import load_file

from mm_models import (
    CheckpointError,
    ModelConfig,
    PairTensors,
    TrainConfig,
    build_model,
    engine,
    load_run,
    load_weights,
    predict,
    train,
)
from mm_models import checkpoint as ckpt
from mm_models.choices import PRESET_MODELS
from mm_models.engine import lr_at
from mm_models.inference import inference_batch_size
from mm_models.presets import resolve_preset, train_config

FAST = dict(batch_size=8, precision="fp32", device="cpu")


def files_of(folder):
    """name -> bytes of every file under folder (to prove nothing changed)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def read_csv(path):
    with open(path) as file:
        return list(csv.DictReader(file))


def test_auto_picks_the_devices_preset_and_never_the_demos():
    assert resolve_preset("auto", "cpu") == "cpu" and resolve_preset("auto", "cuda") == "gpu"
    assert train_config("fusion", "demo").preset == "demo"
    for model in PRESET_MODELS:  # the demo's preset is a shorter cpu one, never a longer one
        assert train_config(model, "demo").epochs <= train_config(model, "cpu").epochs


def test_predictions_are_the_same_at_any_batch_size(small_split):
    model = build_model(TINY)
    data = small_split[1]
    assert inference_batch_size(torch.device("cpu")) == 32 and inference_batch_size(torch.device("cuda")) == 256
    by_device = predict(model, data, device="cpu")
    in_small_batches = predict(model, data, device="cpu", batch_size=5)
    assert len(data) > 5
    np.testing.assert_allclose(by_device.logits, in_small_batches.logits, rtol=1e-5, atol=1e-6)


def test_lr_warms_up_then_decays_to_the_floor():
    lrs = [lr_at(step, 100, 10, 1.0, 0.01) for step in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:]))  # strictly decreasing after warm-up
    assert lrs[-1] == pytest.approx(0.01)


def test_run_folder_holds_checkpoint_manifest_metrics_and_curves(small_split, tmp_path):
    train_data, val_data = small_split
    calls = []
    result = train(TINY, TrainConfig(epochs=3, **FAST), train_data, val_data, tmp_path / "run",
                   data_fingerprint="abc123", progress=lambda fraction, label: calls.append((fraction, label)))
    calls = [(fraction, label) for fraction, label in calls if not engine.is_batch_update(label)]  # epoch ends
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["curves.png", "last.pt", "manifest.json",
                                                     "metrics.csv", "model.safetensors"]
    assert [f for f, _ in calls] == pytest.approx([1 / 3, 2 / 3, 1.0]) and "epoch 3/3" in calls[-1][1]
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in run.iterdir()}
    assert set(modes.values()) == {0o644 & ~umask}, f"files readable by all, not 0600: {modes}"

    rows = read_csv(run / "metrics.csv")
    classification = [f"{split}/{name}" for split in ("train", "val")
                      for name in ("loss", "accuracy", "precision", "recall", "f1")]
    assert list(rows[0]) == ["epoch", *classification, "lr", "params", "epoch_seconds", "samples_per_s",
                             "peak_memory_mb"]
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert all(float(r["samples_per_s"]) > 0 and float(r["peak_memory_mb"]) > 0 for r in rows)
    assert int(rows[0]["params"]) == sum(p.numel() for p in build_model(TINY).parameters())
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[0] > lrs[1] > lrs[2]  # the schedule is stepped

    manifest = json.loads((run / "manifest.json").read_text())
    best = min(result.history, key=lambda row: row["val/loss"])
    assert manifest["status"] == "finished" and manifest["epochs_completed"] == 3
    assert manifest["best"]["epoch"] == best["epoch"] and manifest["best"]["val/loss"] == best["val/loss"]
    assert ModelConfig.from_dict(manifest["model"]) == TINY
    assert TrainConfig.from_dict(manifest["train"]) == TrainConfig(epochs=3, **FAST)
    assert manifest["data_fingerprint"] == "abc123" and manifest["package_version"]
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the returned model holds the best weights, which are what the checkpoint holds
    saved = load_file(run / "model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in result.model.state_dict().items())


def test_reloaded_checkpoint_gives_identical_predictions(small_split, tmp_path):
    train_data, val_data = small_split
    result = train(TINY, TrainConfig(epochs=2, **FAST), train_data, val_data, tmp_path / "run")
    before = predict(result.model, val_data)
    after = predict(str(tmp_path / "run"), val_data)
    assert np.array_equal(before.logits, after.logits)
    assert np.array_equal(before.embeddings, after.embeddings)
    assert before.embeddings.shape == (len(val_data), 128)
    np.testing.assert_allclose(after.probabilities, 1 / (1 + np.exp(-after.logits)), rtol=1e-5)
    assert set(after.label_names) <= {"cube", "sphere"}
    # not vacuous: another initialisation predicts something else
    torch.manual_seed(123)
    assert not np.array_equal(predict(build_model(TINY), val_data).logits, after.logits)


def test_resume_continues_after_the_last_finished_epoch(small_split, tmp_path):
    train_data, val_data = small_split
    run = tmp_path / "run"
    train(TINY, TrainConfig(epochs=2, **FAST), train_data, val_data, run)
    first = read_csv(run / "metrics.csv")
    labels = []
    train(TINY, TrainConfig(epochs=4, **FAST), train_data, val_data, run, resume=True,
          progress=lambda fraction, label: engine.is_batch_update(label) or labels.append(label))
    assert [label.split(":")[0] for label in labels] == ["epoch 3/4", "epoch 4/4"]
    rows = read_csv(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"] and rows[:2] == first
    assert json.loads((run / "manifest.json").read_text())["epochs_completed"] == 4


def test_interrupted_then_resumed_equals_uninterrupted(small_split, tmp_path):
    train_data, val_data = small_split
    config = TrainConfig(epochs=3, **FAST)
    train(TINY, config, train_data, val_data, tmp_path / "straight")

    def crash_after_epoch_2(fraction, label):  # epoch 2's end (not one of its batches: a slow machine reports them)
        if label.startswith("epoch 2/") and "val loss" in label:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TINY, config, train_data, val_data, tmp_path / "resumed", progress=crash_after_epoch_2)
    crashed = tmp_path / "resumed"
    manifest = json.loads((crashed / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["epochs_completed"] == 2
    assert not [p for p in crashed.iterdir() if p.name.endswith(".tmp")]  # no half-written file
    assert ckpt.file_sha256(crashed / manifest["checkpoint"]) == manifest["checkpoint_sha256"]  # whole
    with pytest.raises(CheckpointError, match=r"the run failed \(KeyboardInterrupt.*--resume"):
        load_run(crashed)

    train(TINY, config, train_data, val_data, crashed, resume=True)
    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    resumed = torch.load(crashed / "last.pt", weights_only=True)
    assert resumed["epoch"] == straight["epoch"] == 3 and resumed["step"] == straight["step"]
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name


KILL_AFTER_WEIGHTS = """
import os, sys
from mm_models import TrainConfig, checkpoint, losses, train
from mm_testdata import TINY, read_arrays, split
from cilp_plugin.data import synth

save, saved = checkpoint.save_weights, []
def save_then_die(model, path, *args, **kwargs):  # killed between the second best weights and the manifest
    save(model, path, *args, **kwargs)
    saved.append(path.name)
    if len(saved) == 2:
        os._exit(9)
checkpoint.save_weights = save_then_die
losses.Objective.better = lambda self, value, best: True  # every epoch a new best
train_data, val_data = split(read_arrays(synth.generate(sys.argv[1] + "/data", 24, seed=7)), 0.25)
config = TrainConfig(epochs=3, batch_size=8, precision="fp32", device="cpu")
train(TINY, config, train_data, val_data, sys.argv[1] + "/run")
"""


def test_a_run_killed_between_weights_and_manifest_still_loads_and_resumes(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    done = subprocess.run([sys.executable, "-c", KILL_AFTER_WEIGHTS, str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 9, done.stderr
    run = tmp_path / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "running" and len(list(run.glob("model-epoch*.safetensors"))) == 2
    with pytest.warns(UserWarning, match="status 'running', not finished.*epoch 1 of 3"):
        loaded = load_run(run)  # the manifest names the epoch-1 weights, intact: not "corrupt"
    assert loaded.manifest["checkpoint"] == "model-epoch1.safetensors"
    train_data, val_data = split_of(run)
    result = train(TINY, TrainConfig(epochs=3, **FAST), train_data, val_data, run, resume=True)
    assert result.manifest["status"] == "finished" and result.manifest["checkpoint"] == "model.safetensors"
    assert sorted(p.name for p in run.glob("model*")) == ["model.safetensors"]  # the stray epoch file is gone
    load_run(run)


def split_of(run):
    """The arrays the subprocess of KILL_AFTER_WEIGHTS trained on."""
    from mm_testdata import read_arrays, split

    return split(read_arrays(run.parent / "data"), 0.25)


def test_files_in_a_world_writable_folder_are_not_world_writable(small_split, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    train(TINY, TrainConfig(epochs=1, **FAST), *small_split, shared / "run")
    (shared / "run").chmod(0o777)
    ckpt.write_json(shared / "run" / "extra.json", {})
    writable = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in (shared / "run").iterdir()
                if p.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH)}
    assert not writable


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    model = build_model(TINY)
    path = tmp_path / "model.safetensors"
    ckpt.save_weights(model, path)
    good = path.read_bytes()

    def half_write(tensors, filename, metadata=None):
        open(filename, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", half_write)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_weights(model, path)
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_early_stopping_stops_after_patience_epochs(small_split, tmp_path, monkeypatch):
    losses = iter([0.5, 0.4, 0.45, 0.46, 0.3, 0.2])
    metrics = dict(accuracy=0.5, precision=0.5, recall=0.5, f1=0.5)
    monkeypatch.setattr(engine, "evaluate", lambda *args, **kwargs: {"loss": next(losses), **metrics})
    result = train(TINY, TrainConfig(epochs=6, patience=2, **FAST), *small_split, tmp_path / "run")
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    assert result.best["epoch"] == 2 and result.manifest["stopped_early"]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, field", [
    (dict(epochs=-1), "epochs"), (dict(epochs=0), "epochs"), (dict(lr=-0.1), "lr"),
    (dict(batch_size=0), "batch_size"), (dict(device="tpu"), "device"), (dict(precision="fp8"), "precision"),
    (dict(patience=-2), "patience"), (dict(min_lr_ratio=2.0), "min_lr_ratio"),
    (dict(eval_batch_size=0), "eval_batch_size"), (dict(compile="fast"), "compile"),
])
def test_bad_train_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}: "):
        TrainConfig(**kwargs)


def test_unknown_family_raises_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="family: unknown value 'mid'"):
        train(ModelConfig(family="mid"), TrainConfig(), None, None, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("which", ["train", "val"])
def test_empty_split_raises_and_writes_nothing(small_split, tmp_path, which):
    train_data, val_data = small_split
    empty = train_data.subset(slice(0, 0))
    args = (empty, val_data) if which == "train" else (train_data, empty)
    with pytest.raises(ValueError, match=f"{which}_data: the split is empty"):
        train(TINY, TrainConfig(epochs=1, **FAST), *args, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_unlabelled_or_mis_sized_data_is_rejected(small_split, tmp_path):
    train_data, val_data = small_split
    with pytest.raises(ValueError, match="labels are required"):
        train(TINY, TrainConfig(**FAST), PairTensors(train_data.rgb, train_data.lidar), val_data, tmp_path / "a")
    mis_sized = {"rgb": (dict(image_size=16), r"grids are \(64, 64\), the model expects image_size \(16, 16\)"),
                 "lidar": (dict(beams=(64, 32)), r"grids are \(64, 64\), the model expects beams \(64, 32\)")}
    for modality, (sizes, message) in mis_sized.items():
        with pytest.raises(ValueError, match=rf"train_data.{modality}: {message}"):
            train(ModelConfig(widths=(4, 8), **sizes), TrainConfig(**FAST), train_data, val_data, tmp_path / modality)
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(small_split, tmp_path):
    with pytest.raises(ValueError, match="device: 'cuda' requested"):
        train(TINY, TrainConfig(device="cuda"), *small_split, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.fixture
def finished_run(small_split, tmp_path):
    train(TINY, TrainConfig(epochs=1, **FAST), *small_split, tmp_path / "run")
    return tmp_path / "run"


def test_existing_run_without_resume_is_refused(finished_run, small_split):
    before = files_of(finished_run)
    with pytest.raises(ValueError, match="already holds files"):
        train(TINY, TrainConfig(epochs=2, **FAST), *small_split, finished_run)
    assert files_of(finished_run) == before


def test_checkpoint_of_another_architecture_is_named(finished_run, small_split):
    weights = finished_run / "model.safetensors"
    with pytest.raises(CheckpointError, match=rf"{weights}: weights of another architecture"):
        load_weights(build_model(ModelConfig(family="late", widths=(4, 8, 8, 8))), weights)
    with pytest.raises(CheckpointError, match="another shape"):
        load_weights(build_model(ModelConfig(family="intermediate", fusion="concat", widths=(4, 8, 8, 8))), weights)
    before = files_of(finished_run)
    other = ModelConfig(family="late", widths=(4, 8, 8, 8))
    with pytest.raises(CheckpointError, match=rf"{finished_run / 'manifest.json'}: .*another model config"):
        train(other, TrainConfig(epochs=2, **FAST), *small_split, finished_run, resume=True)
    assert files_of(finished_run) == before


def test_truncated_checkpoint_is_named(finished_run):
    weights = finished_run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=rf"{weights}: corrupt"):
        load_run(finished_run)
    with pytest.raises(CheckpointError, match=rf"{weights}: corrupt"):
        load_weights(build_model(TINY), weights)


def test_flipped_byte_in_checkpoint_is_caught_by_its_checksum(finished_run):
    weights = finished_run / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # inside the tensor data: the header still parses
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{weights}: corrupt checkpoint \(its SHA-256"):
        load_run(finished_run)


def test_corrupt_resume_state_and_manifest_are_named(finished_run, small_split):
    state = finished_run / "last.pt"
    state.write_bytes(b"not a checkpoint")
    before = files_of(finished_run)
    with pytest.raises(CheckpointError, match=rf"{state}: corrupt resume state"):
        train(TINY, TrainConfig(epochs=2, **FAST), *small_split, finished_run, resume=True)
    assert files_of(finished_run) == before
    manifest = finished_run / "manifest.json"
    manifest.write_text("{ truncated")
    with pytest.raises(CheckpointError, match=rf"{manifest}: corrupt JSON"):
        load_run(finished_run)


def test_resume_state_is_never_unpickled_as_arbitrary_objects(finished_run, small_split):
    state = finished_run / "last.pt"
    torch.save({"model": {}, "evil": os.getcwd}, state)  # a pickled function
    with pytest.raises(CheckpointError, match="corrupt resume state"):
        train(TINY, TrainConfig(epochs=2, **FAST), *small_split, finished_run, resume=True)


def test_peak_memory_counts_from_the_last_reset():
    cpu = torch.device("cpu")
    from mm_models.metrics import peak_memory_mb, reset_peak_memory

    reset_peak_memory(cpu)
    baseline = peak_memory_mb(cpu)
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    grown = peak_memory_mb(cpu)
    del block
    reset_peak_memory(cpu)
    assert grown - baseline >= 60 and peak_memory_mb(cpu) < grown - 50


def test_progress_reports_batches_within_an_epoch(small_split, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "REPORT_SECONDS", 0.0)
    calls = []
    train(TINY, TrainConfig(epochs=2, **FAST), *small_split, tmp_path / "run",
          progress=lambda fraction, label: calls.append((fraction, label)))
    batches = [label for _, label in calls if engine.is_batch_update(label)]
    epochs = [label for _, label in calls if not engine.is_batch_update(label)]
    assert batches[0].startswith("epoch 1/2: batch 1/5, loss ") and batches[-1].startswith("epoch 2/2: batch 5/5")
    assert [label.split(":")[0] for label in epochs] == ["epoch 1/2", "epoch 2/2"] and "accuracy" in epochs[-1]
    fractions = [fraction for fraction, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_bf16_asked_on_a_cpu_that_emulates_it_warns_of_the_cost():
    import warnings

    import torch

    from mm_models.inference import cpu_has_bf16, resolve_precision

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
        assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    slow = [str(w.message) for w in caught if "emulates it" in str(w.message)]
    assert len(slow) == (0 if cpu_has_bf16() else 1), slow
