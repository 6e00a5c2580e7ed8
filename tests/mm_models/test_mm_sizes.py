"""Inputs of other sizes than the original's 64 x 64: images of H x W, range images of other beam
counts, each its own, through the fusion models, the data modes and the CILP chain."""

import numpy as np
import pytest
import torch

from mm_models import ModelConfig, PairTensors, TrainConfig, load_run, train
from mm_models.arrays import ArraysWriter
from mm_models.stages import pipeline_spec

IMAGE, BEAMS = (32, 48), (16, 32)
FAST = dict(epochs=1, batch_size=8, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def pairs():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (24, *IMAGE, 4), np.uint8)
    lidar = np.concatenate([rng.uniform(5, 20, (24, 3, *BEAMS)), np.ones((24, 1, *BEAMS))], 1).astype(np.float32)
    return PairTensors.from_numpy(rgb, lidar, rng.integers(0, 3, 24))


@pytest.fixture(scope="module")
def mapped(pairs, tmp_path_factory):
    """The pairs as an arrays folder, memory-mapped (what training streams from)."""
    folder = tmp_path_factory.mktemp("arrays") / "pairs"
    arrays = {"rgb": pairs.rgb.numpy(), "lidar": pairs.lidar.numpy(), "labels": pairs.labels.numpy().astype(np.int64)}
    with ArraysWriter(folder, {name: (array.shape, array.dtype) for name, array in arrays.items()}) as out:
        out.write(0, **arrays)
    return PairTensors.open(folder)


@pytest.mark.parametrize("family, fusion", [("intermediate", "concat"), ("intermediate", "mul"), ("late", "concat")])
def test_fusion_models_train_alike_resident_and_streamed(pairs, mapped, tmp_path, family, fusion):
    config = ModelConfig(family=family, fusion=fusion, image_size=IMAGE, beams=BEAMS, num_classes=3,
                         widths=(4, 8, 8, 8))
    losses = {}
    for data, source in (("resident", pairs), ("streamed", mapped)):
        torch.manual_seed(0)
        result = train(config, TrainConfig(**FAST, data=data, seed=0), source, source, tmp_path / data)
        losses[data] = result.history[-1]["train/loss"]
    assert losses["resident"] == pytest.approx(losses["streamed"], rel=1e-4)
    assert load_run(tmp_path / "streamed").spec.input_shapes() == {"rgb": (4, *IMAGE), "lidar": (4, *BEAMS)}


def test_the_cilp_chain_follows_each_input_size(pairs, tmp_path):
    sizes = dict(image_size=IMAGE, beams=BEAMS)
    train(pipeline_spec("lidar", {}, num_classes=3, **sizes), TrainConfig(**FAST), pairs, pairs, tmp_path / "lidar")
    train(pipeline_spec("cilp", {"lidar": tmp_path / "lidar"}, num_classes=3, **sizes), TrainConfig(**FAST),
          pairs, pairs, tmp_path / "cilp")
    train(pipeline_spec("projector", {"cilp": tmp_path / "cilp", "lidar": tmp_path / "lidar"}), TrainConfig(**FAST),
          pairs, pairs, tmp_path / "projector")
    chain = train(pipeline_spec("rgb2lidar", {"projector": tmp_path / "projector"}), TrainConfig(**FAST),
                  pairs, pairs, tmp_path / "rgb2lidar")
    assert load_run(chain.run_dir).spec.input_shapes() == {"rgb": (4, *IMAGE)}
    assert load_run(chain.run_dir).spec.num_classes == 3
    assert (tmp_path / "cilp" / "matches.png").stat().st_size > 0  # range images drawn at the images' size
    with pytest.raises(ValueError, match=r"parents: cilp reads LiDAR grids of shape \(4, 16, 16\), the lidar "
                                         r"classifier \(4, 16, 32\)"):
        pipeline_spec("cilp", {"lidar": tmp_path / "lidar"}, num_classes=3, image_size=IMAGE, beams=16)
