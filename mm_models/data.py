"""Pairs as tensors that live on the training device for a whole run.

The RGB images stay uint8 ``(N, H, W, 4)`` (4x smaller than float) and become
float in [0, 1] one batch at a time on the device; ``permute`` of the NHWC array
gives an NCHW view with channels_last strides for free. The LiDAR XYZA grids are
float32 ``(N, 4, H, W)``, stored channels_last. Batches are slices of a seeded
permutation computed on the device: no DataLoader, no per-item work.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from .checkpoint import atomic_write

#: label index -> name; the model's logit is for index 1
CLASS_NAMES = ("cube", "sphere")

Batch = dict[str, Tensor]


@dataclass
class PairTensors:
    """RGB + LiDAR pairs (and optional 0/1 labels) as tensors on one device."""

    rgb: Tensor  # (N, H, W, 4) uint8 RGBA
    lidar: Tensor  # (N, 4, H, W) float32 XYZ + valid mask
    labels: Tensor | None = None  # (N,) float32 in {0, 1}; None when only predicting

    @classmethod
    def from_numpy(
        cls, rgb: np.ndarray, lidar: np.ndarray, labels: np.ndarray | None = None, *, name: str = "data"
    ) -> "PairTensors":
        """Validate and wrap numpy arrays (no copy where the dtypes already match)."""
        rgb, lidar = np.asarray(rgb), np.asarray(lidar)
        if rgb.ndim != 4 or rgb.shape[-1] != 4 or rgb.dtype != np.uint8:
            raise ValueError(f"{name}.rgb: expected uint8 (N, H, W, 4), got {rgb.dtype} {rgb.shape}")
        if lidar.ndim != 4 or lidar.shape[1] != 4:
            raise ValueError(f"{name}.lidar: expected (N, 4, H, W), got {lidar.shape}")
        if lidar.shape[0] != rgb.shape[0] or lidar.shape[2:] != rgb.shape[1:3]:
            raise ValueError(
                f"{name}: rgb {rgb.shape} and lidar {lidar.shape} do not describe the same pairs"
            )
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (rgb.shape[0],):
                raise ValueError(f"{name}.labels: expected shape ({rgb.shape[0]},), got {labels.shape}")
            if not np.isin(labels, (0, 1)).all():
                raise ValueError(f"{name}.labels: expected 0 (cube) or 1 (sphere), got {np.unique(labels)}")
            labels = torch.from_numpy(labels.astype(np.float32))
        return cls(
            torch.from_numpy(np.ascontiguousarray(rgb)),
            torch.from_numpy(np.ascontiguousarray(lidar, dtype=np.float32)),
            labels,
        )

    def __len__(self) -> int:
        return self.rgb.shape[0]

    @property
    def device(self) -> torch.device:
        return self.rgb.device

    def to(self, device: torch.device | str) -> "PairTensors":
        """Move everything to ``device`` once (LiDAR stored channels_last there)."""
        move = dict(device=device, non_blocking=True)
        return PairTensors(
            self.rgb.to(**move),
            self.lidar.to(**move).contiguous(memory_format=torch.channels_last),
            None if self.labels is None else self.labels.to(**move),
        )

    def subset(self, index: Tensor | slice) -> "PairTensors":
        return PairTensors(self.rgb[index], self.lidar[index],
                           None if self.labels is None else self.labels[index])

    def batch(self, index: Tensor | slice) -> tuple[Batch, Tensor | None]:
        """Model inputs (float, channels_last) and labels for the rows ``index``."""
        rgb = self.rgb[index].permute(0, 3, 1, 2).float().div_(255)  # NHWC storage = channels_last
        lidar = self.lidar[index].contiguous(memory_format=torch.channels_last)
        labels = None if self.labels is None else self.labels[index]
        return {"rgb": rgb, "lidar": lidar}, labels

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                drop_last: bool = False) -> Iterator[tuple[Batch, Tensor | None]]:
        """All rows in batches; with ``shuffle`` in the order of a permutation seeded by
        ``seed``; with ``drop_last`` without a final, smaller batch."""
        for rows in self.batch_rows(batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last):
            yield self.batch(rows)

    def batch_rows(self, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                   drop_last: bool = False) -> Iterator[Tensor | slice]:
        """The rows of each of :meth:`batches`: slices in order, index tensors with ``shuffle``."""
        stop = len(self) - len(self) % batch_size if drop_last else len(self)
        order = None
        if shuffle:
            generator = torch.Generator(device=self.device).manual_seed(seed)
            order = torch.randperm(len(self), generator=generator, device=self.device)
        for start in range(0, stop, batch_size):
            rows = slice(start, start + batch_size)
            yield rows if order is None else order[rows]


def save_tensors(data: PairTensors, path: Path | str, metadata: dict[str, str] | None = None) -> None:
    """Write pairs to one safetensors file atomically (e.g. a decoded-data cache)."""
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


def fingerprint(*arrays: np.ndarray) -> str:
    """A short content hash of arrays (shape, dtype and bytes): a data fingerprint or cache key."""
    digest = hashlib.blake2b(digest_size=12)
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape};".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()
