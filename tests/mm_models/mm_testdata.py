"""Test data helpers: pairs rendered by cilp_plugin.data.synth, read back with cilp_plugin.data.layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cilp_plugin.data import layout
from mm_models import ModelConfig, PairTensors
from mm_models.checkpoint import atomic_write

#: a tiny intermediate-fusion model: same wiring as the reference, ~100x cheaper
TINY = ModelConfig(family="intermediate", fusion="add", widths=(4, 8, 8, 8))


def seed_all(seed: int = 0) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def random_pairs(n: int, classes: int, seed: int = 0) -> PairTensors:
    """``n`` pairs of noise labelled 0, 1, ..., ``classes`` - 1 in turn (the shapes a model of that many
    classes reads)."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (n, 64, 64, 4), dtype=np.uint8)
    lidar = rng.normal(size=(n, 4, 64, 64)).astype(np.float32)
    lidar[:, 3] = 1.0
    return PairTensors.from_numpy(rgb, lidar, np.arange(n) % classes)


def read_arrays(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGBA uint8 (N,64,64,4), XYZA float32 (N,4,64,64), labels (N,) for every pair under root."""
    report = layout.scan(root, validate=False).require_usable()
    rgb, xyza, labels = [], [], []
    for pair in report.pairs:
        azimuth, zenith = report.angles(pair.label)
        rgb.append(layout.read_rgb(pair.rgb_path))
        xyza.append(layout.depth_to_xyza(layout.read_depth(pair.lidar_path), azimuth, zenith))
        labels.append(layout.LABELS.index(pair.label))
    return np.stack(rgb), np.stack(xyza), np.asarray(labels)


def split(arrays, val_fraction: float = 0.2, seed: int = 0) -> tuple[PairTensors, PairTensors]:
    """A seeded random train/val split as PairTensors."""
    rgb, xyza, labels = arrays
    order = np.random.default_rng(seed).permutation(len(labels))
    n_val = round(len(labels) * val_fraction)
    val, train = order[:n_val], order[n_val:]
    return (PairTensors.from_numpy(rgb[train], xyza[train], labels[train], name="train"),
            PairTensors.from_numpy(rgb[val], xyza[val], labels[val], name="val"))


def save_tensors(data: PairTensors, path: Path | str, metadata: dict[str, str] | None = None) -> None:
    """Write pairs to one safetensors file atomically: the splits the ``torchrun`` workers read."""
    tensors = {"rgb": data.rgb.contiguous().cpu(), "lidar": data.lidar.contiguous().cpu()}
    if data.labels is not None:
        tensors["labels"] = data.labels.contiguous().cpu()
    atomic_write(Path(path), lambda temp: save_file(tensors, temp, metadata=metadata))


def load_tensors(path: Path | str) -> PairTensors:
    """Pairs saved by :func:`save_tensors`, validated; ``ValueError`` naming the file otherwise."""
    try:
        tensors = load_file(path)
        return PairTensors.from_numpy(tensors["rgb"].numpy(), tensors["lidar"].numpy(),
                                      tensors["labels"].numpy() if "labels" in tensors else None, name=str(path))
    except (SafetensorError, OSError, KeyError) as exc:
        raise ValueError(f"{path}: not a readable pair-tensor file ({type(exc).__name__}: {exc})") from None
