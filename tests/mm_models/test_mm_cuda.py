"""The CUDA path: bf16 autocast, compile, resume across devices, the same predictions as the CPU.

Skipped where no GPU is present; ``benchmarks/gpu_check.sh`` runs them (``-m cuda``)
with the GPU benchmark.
"""

import dataclasses

import numpy as np
import pytest
import torch
from mm_testdata import TINY, read_arrays, split

from cilp_plugin.data import synth
from mm_models import ModelConfig, TrainConfig, load_run, predict, train
from mm_models.stages import PIPELINE, pipeline_parents, pipeline_spec

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

EASY = dataclasses.replace(synth.LEGACY, distance=(6.0, 8.0), size=(1.0, 1.4), brightness=0.8, offset=0.2)
ADD = ModelConfig(family="intermediate", fusion="add")


@pytest.fixture(scope="module")
def easy_split(tmp_path_factory):
    root = synth.generate(tmp_path_factory.mktemp("data") / "easy", 300, seed=5, config=EASY)
    return split(read_arrays(root), 0.2)  # 480 train / 120 val pairs


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_bf16_training_on_cuda_learns(easy_split, tmp_path, compile):
    result = train(ADD, TrainConfig(epochs=6, batch_size=16, device="cuda", precision="bf16", compile=compile),
                   *easy_split, tmp_path / "run")
    assert result.manifest["device"].startswith("cuda") and result.manifest["precision"] == "bf16"
    assert result.best["val/accuracy"] >= 0.95, [row["val/accuracy"] for row in result.history]
    assert all(row["peak_memory_mb"] > 0 for row in result.history)  # GPU memory, measured
    # the saved weights are the plain module's (no compile wrapper in the names) and load on the CPU
    accuracy = (predict(load_run(tmp_path / "run"), easy_split[1], device="cpu").labels
                == easy_split[1].labels.numpy()).mean()
    assert accuracy == pytest.approx(result.best["val/accuracy"], abs=0.02)


def train_in_stages(devices: dict[int, str], run, data):
    """Train to each number of epochs in turn on its device, resuming the run each time."""
    for epochs, device in devices.items():
        result = train(TINY, TrainConfig(epochs=epochs, batch_size=16, device=device, precision="fp32"),
                       *data, run, resume=run.exists())
        assert result.manifest["device"].startswith(device)
    return result


def test_resume_moves_between_cpu_and_cuda(easy_split, tmp_path):
    moved = train_in_stages({2: "cpu", 4: "cuda", 5: "cpu"}, tmp_path / "moved", easy_split)
    assert [row["epoch"] for row in moved.history] == [1, 2, 3, 4, 5]
    assert moved.manifest["status"] == "finished"

    stayed = train_in_stages({2: "cpu", 4: "cpu", 5: "cpu"}, tmp_path / "stayed", easy_split)
    losses = [row["train/loss"] for row in moved.history]
    expected = [row["train/loss"] for row in stayed.history]
    # the CPU epochs before the move match exactly; those after it (another summation order) closely
    assert losses[:2] == pytest.approx(expected[:2], rel=1e-6)
    assert losses == pytest.approx(expected, abs=0.05)


def test_cuda_predictions_match_the_cpus(easy_split, tmp_path):
    train(ADD, TrainConfig(epochs=2, batch_size=16, device="cuda", precision="bf16"), *easy_split, tmp_path / "run")
    run = load_run(tmp_path / "run")
    val = easy_split[1]
    on_cpu = predict(run, val, device="cpu", precision="fp32")
    on_gpu = predict(run, val, device="cuda", precision="fp32")
    on_gpu_bf16 = predict(run, val, device="cuda", precision="bf16")
    np.testing.assert_allclose(on_gpu.probabilities, on_cpu.probabilities, atol=2e-3)  # TF32 convolutions
    np.testing.assert_allclose(on_gpu.embeddings, on_cpu.embeddings, atol=2e-2, rtol=2e-2)
    confident = np.abs(on_cpu.logits) > 0.5
    assert (on_gpu_bf16.labels[confident] == on_cpu.labels[confident]).all()


def test_the_cilp_stages_train_on_cuda(easy_split, tmp_path):
    results = {}
    for stage in PIPELINE:
        spec = pipeline_spec(stage, {role: tmp_path / role for role in pipeline_parents(stage)})
        epochs = {"lidar": 8, "cilp": 8, "projector": 6, "rgb2lidar": 3}[stage]
        results[stage] = train(spec, TrainConfig(epochs=epochs, device="cuda", precision="bf16"), *easy_split,
                               tmp_path / stage)
    assert results["lidar"].best["val/accuracy"] >= 0.95
    assert results["cilp"].best["val/rgb2lidar_top5"] > 5 / 120  # better than chance
    assert results["rgb2lidar"].best["val/accuracy"] >= 0.9
    for stage, result in results.items():
        assert result.manifest["device"].startswith("cuda"), stage
        load_run(tmp_path / stage)  # loads on the CPU
