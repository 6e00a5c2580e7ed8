"""Pairs as tensors for training: resident on the device, or streamed from host memory.

The RGB images stay uint8 ``(N, H, W, 4)`` (4x smaller than float) and become
float in [0, 1] one batch at a time on the device; ``permute`` of the NHWC array
gives an NCHW view with channels_last strides for free. The LiDAR XYZA grids are
float32 ``(N, 4, H, W)``, stored channels_last. Batches are slices of a seeded
permutation computed on the device: no DataLoader, no per-item work.

Two placements, the same batches (:func:`mm_models.placement.place`, ``TrainConfig.data``):

- *resident* (:class:`PairTensors` after ``to(device)``): every pair on the device for
  the whole run; the fastest, while the data fits.
- *streamed* (:class:`StreamedPairs`): the pairs stay in host memory, usually memory-mapped
  from an arrays folder on disk (:mod:`mm_models.arrays`), and each batch is read (its rows
  in file order, :mod:`mm_models.reading`), moved to the device and put back in the
  epoch's order; the next batch is read by a background thread meanwhile. Same seed,
  same rows, same values: training gives the same weights as resident data.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import distributed, reading
from .arrays import open_arrays

#: memory-mapped data gives back the pages of its files after about this many bytes read (a read maps
#: up to ~3x its bytes: the kernel maps the neighbours of a page that faults in)
_DROP_BYTES = 64 << 20

Batch = dict[str, Tensor]


@dataclass
class PairTensors:
    """RGB + LiDAR pairs (and optional class indices) as tensors on one device.

    Made from numpy arrays that are memory-mapped (an arrays folder, :meth:`open`) the
    tensors share the mapping: nothing is read until :meth:`to` copies the data to the
    device (in chunks) or :meth:`streamed` reads it a batch at a time.
    """

    rgb: Tensor  # (N, H, W, 4) uint8 RGBA
    lidar: Tensor  # (N, 4, AZIMUTH, ZENITH) float32 XYZ + valid mask (a size of its own)
    labels: Tensor | None = None  # (N,) float32 class indices 0, 1, ...; None when only predicting
    #: the memory maps rgb and lidar are views of (none when they are in memory)
    mapped: tuple = field(default=(), repr=False, compare=False)
    #: where those maps' arrays lie in their files: (address, file offset, bytes, path) each
    files: tuple = field(default=(), repr=False, compare=False)
    _unreleased: list = field(default_factory=lambda: [0], init=False, repr=False, compare=False)

    @classmethod
    def from_numpy(
        cls, rgb: np.ndarray, lidar: np.ndarray, labels: np.ndarray | None = None, *, name: str = "data"
    ) -> PairTensors:
        """Validate and wrap numpy arrays (no copy where the dtypes already match; memory-mapped
        arrays stay mapped)."""
        mapped = tuple({id(m): m for m in map(reading.mapping, (rgb, lidar)) if m is not None}.values())
        files = tuple(f for f in map(reading.file_span, (rgb, lidar)) if f is not None)
        rgb, lidar = np.asarray(rgb), np.asarray(lidar)
        if rgb.ndim != 4 or rgb.shape[-1] != 4 or rgb.dtype != np.uint8:
            raise ValueError(f"{name}.rgb: expected uint8 (N, H, W, 4), got {rgb.dtype} {rgb.shape}")
        if lidar.ndim != 4 or lidar.shape[1] != 4:
            raise ValueError(f"{name}.lidar: expected (N, 4, H, W), got {lidar.shape}")
        if lidar.shape[0] != rgb.shape[0]:
            raise ValueError(f"{name}: rgb {rgb.shape} and lidar {lidar.shape} do not describe the same pairs "
                             f"({rgb.shape[0]} and {lidar.shape[0]})")
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (rgb.shape[0],):
                raise ValueError(f"{name}.labels: expected shape ({rgb.shape[0]},), got {labels.shape}")
            if labels.size and not (np.all(labels >= 0) and np.all(labels == np.round(labels))):
                raise ValueError(f"{name}.labels: expected 0, 1, ... (class indices), got {np.unique(labels)}")
            labels = torch.from_numpy(labels.astype(np.float32))
        return cls(
            _tensor(np.ascontiguousarray(rgb)),
            _tensor(np.ascontiguousarray(lidar, dtype=np.float32)),
            labels,
            mapped,
            files,
        )

    @classmethod
    def open(cls, folder: Path | str) -> PairTensors:
        """The pairs of an arrays folder (:class:`mm_models.arrays.ArraysWriter`), memory-mapped:
        nothing is read yet."""
        arrays, _ = open_arrays(folder)
        return cls.from_numpy(arrays["rgb"], arrays["lidar"], arrays.get("labels"), name=str(folder))

    def __len__(self) -> int:
        return self.rgb.shape[0]

    @property
    def device(self) -> torch.device:
        return self.rgb.device

    @property
    def nbytes(self) -> int:
        """Bytes of the pairs (and labels): what resident data takes on the device."""
        return sum(t.nbytes for t in (self.rgb, self.lidar, self.labels) if t is not None)

    def to(self, device: torch.device | str) -> PairTensors:
        """Move everything to ``device`` once (LiDAR stored channels_last there); memory-mapped
        data is copied in chunks, the pages of its files given back as it goes."""
        if self.mapped:
            return PairTensors(reading.copy_mapped(self.rgb, device, torch.contiguous_format, self.mapped),
                               reading.copy_mapped(self.lidar, device, torch.channels_last, self.mapped),
                               None if self.labels is None else self.labels.to(device))
        move = dict(device=device, non_blocking=True)
        return PairTensors(
            self.rgb.to(**move),
            self.lidar.to(**move).contiguous(memory_format=torch.channels_last),
            None if self.labels is None else self.labels.to(**move),
        )

    def resident(self, device: torch.device | str) -> PairTensors:
        """Every pair on ``device`` for the whole run (:meth:`to`)."""
        return self.to(device)

    def streamed(self, device: torch.device | str, *, prefetch: bool = True) -> StreamedPairs:
        """The pairs left in host memory (or their memory-mapped files), read to ``device`` a
        batch at a time (:class:`StreamedPairs`); data already on a GPU stays resident."""
        if self.rgb.device.type != "cpu":
            return self.to(device)  # type: ignore[return-value]
        return StreamedPairs(self.rgb, self.lidar, self.labels, self.mapped, self.files, prefetch=prefetch).to(device)

    def subset(self, index: Tensor | slice) -> PairTensors:
        whole = isinstance(index, slice)
        return PairTensors(self.rgb[index], self.lidar[index], None if self.labels is None else self.labels[index],
                           self.mapped if whole else (), self.files if whole else ())

    def batch(self, index: Tensor | slice) -> tuple[Batch, Tensor | None]:
        """Model inputs (float, channels_last) and labels for the rows ``index``."""
        rgb = self.rgb[index].permute(0, 3, 1, 2).float().div_(255)  # NHWC storage = channels_last
        lidar = self.lidar[index].contiguous(memory_format=torch.channels_last)
        labels = None if self.labels is None else self.labels[index]
        self._read_from_maps(rgb.nbytes // 4 + lidar.nbytes)
        return {"rgb": rgb, "lidar": lidar}, labels

    def _read_from_maps(self, nbytes: int) -> None:
        """Count bytes read from the memory maps; give their pages back every ``_DROP_BYTES``."""
        if self.mapped:
            self._unreleased[0] += nbytes
            if self._unreleased[0] >= _DROP_BYTES:
                self._unreleased[0] = 0
                reading.release(self.mapped)

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                drop_last: bool = False) -> Iterator[tuple[Batch, Tensor | None]]:
        """All rows in batches; with ``shuffle`` in the order of a permutation seeded by
        ``seed``; with ``drop_last`` without a final, smaller batch."""
        for rows in self.batch_rows(batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last):
            yield self.batch(rows)

    def batch_rows(self, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                   drop_last: bool = False) -> Iterator[Tensor | slice]:
        """The rows of each of :meth:`batches`: slices in order, index tensors with ``shuffle``."""
        yield from _epoch_rows(len(self), batch_size, shuffle, seed, drop_last, self.device)


@dataclass
class StreamedPairs(PairTensors):
    """Pairs in host memory, usually memory-mapped from an arrays folder, read to the device
    (``target``) one batch at a time: the streamed placement of :func:`place`.

    The order of the batches and their rows are those of resident data with the same seed
    (the permutation is drawn on the target device too), and so are their values: a run
    trains to the same weights either way. A shuffled batch's rows are read from the files
    in file order with positioned reads, each into its place in the batch (no page is
    mapped: the process's memory stays flat); with ``prefetch`` a thread reads the next
    batch while the current one trains (into pinned memory for CUDA).
    """

    target: torch.device = torch.device("cpu")
    prefetch: bool = True
    _ahead: deque = field(default_factory=deque, init=False, repr=False, compare=False)

    @property
    def device(self) -> torch.device:
        return self.target

    def to(self, device: torch.device | str) -> StreamedPairs:
        """Only the labels (small) move; the pairs stay where they are."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        return StreamedPairs(self.rgb, self.lidar, None if self.labels is None else self.labels.to(device),
                             self.mapped, self.files, target=device, prefetch=self.prefetch)

    def resident(self, device: torch.device | str) -> PairTensors:
        return PairTensors(self.rgb, self.lidar, self.labels, self.mapped, self.files).to(device)

    def streamed(self, device: torch.device | str, *, prefetch: bool | None = None) -> StreamedPairs:
        moved = self.to(device)
        if prefetch is not None:
            moved.prefetch = prefetch
        return moved

    def subset(self, index: Tensor | slice) -> StreamedPairs:
        whole = isinstance(index, slice)
        host = index if whole else index.cpu()
        return StreamedPairs(self.rgb[host], self.lidar[host], None if self.labels is None else self.labels[index],
                             self.mapped if whole else (), self.files if whole else (), target=self.target,
                             prefetch=self.prefetch)

    def batch(self, index: Tensor | slice) -> tuple[Batch, Tensor | None]:
        rgb, lidar = self._take(index)
        move = dict(device=self.target, non_blocking=True)
        rgb = rgb.to(**move).permute(0, 3, 1, 2).float().div_(255)
        lidar = lidar.to(**move).contiguous(memory_format=torch.channels_last)
        labels = None if self.labels is None else self.labels[index]
        return {"rgb": rgb, "lidar": lidar}, labels

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                drop_last: bool = False) -> Iterator[tuple[Batch, Tensor | None]]:
        for rows in self._rows(batch_size, shuffle, seed, drop_last, read=lambda rows: rows):
            yield self.batch(rows)

    def batch_rows(self, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                   drop_last: bool = False) -> Iterator[Tensor | slice]:
        """As resident data's, but index tensors on the host. The rows read ahead are this
        process's share of each batch (the engine's share under ``torchrun``)."""
        yield from self._rows(batch_size, shuffle, seed, drop_last, read=_share)

    def _rows(self, batch_size, shuffle, seed, drop_last, read) -> Iterator[Tensor | slice]:
        # resident data's rows: the permutation drawn on the same device, then used on the host
        epoch = _epoch_rows(len(self), batch_size, shuffle, seed, drop_last, self.target, host=True)
        pool = ThreadPoolExecutor(1, thread_name_prefix="mm-prefetch") if self.prefetch and epoch else None
        try:
            for i, rows in enumerate(epoch):
                for ahead in ((i, i + 1) if i == 0 else (i + 1,)):
                    if pool and ahead < len(epoch):
                        wanted = read(epoch[ahead])
                        self._ahead.append((wanted, pool.submit(self._read, wanted)))
                        while len(self._ahead) > 2:  # rows listed but not taken: drop their reads
                            self._ahead.popleft()
                yield rows
        finally:
            if pool:
                pool.shutdown(wait=True, cancel_futures=True)
                self._ahead.clear()

    def _take(self, index: Tensor | slice) -> tuple[Tensor, Tensor]:
        """The rows ``index`` on the host: read ahead when they were the next, else read now."""
        while self._ahead:
            rows, future = self._ahead.popleft()
            if _same_rows(rows, index):
                return future.result()
        return self._read(index)

    def _read(self, index: Tensor | slice) -> tuple[Tensor, Tensor]:
        """Copy the rows ``index`` into new host tensors (pinned for CUDA), in ``index``'s order, with
        positioned reads, not torch's parallel copies (they stall on a busy CPU: their threads wait
        for each other).

        Rows of a file are read in file order (:func:`mm_models.reading.read_rows`), each into its
        place in the batch: no page of the file is mapped into this process. Rows in memory are copied.
        """
        pin = self.target.type == "cuda"
        if isinstance(index, slice) and range(len(self))[index].step == 1:
            positions, rows = None, range(len(self))[index]
        else:
            rows, positions = (torch.arange(len(self))[index] if isinstance(index, slice) else index.cpu()).sort()
            rows, positions = rows.tolist(), positions.tolist()
        out = []
        for source in (self.rgb, self.lidar):
            buffer = torch.empty((len(rows), *source.shape[1:]), dtype=source.dtype, pin_memory=pin)
            span = reading.span_of(source, self.files)
            if not len(rows):  # a process's share of a batch smaller than the world
                pass
            elif span is not None:
                reading.read_rows(span, buffer, rows, positions)
            elif positions is None:
                buffer.numpy()[:] = source.numpy()[rows.start:rows.stop]
            else:
                into, source = buffer.numpy(), source.numpy()
                for position, row in zip(positions, rows):
                    into[position] = source[row]
            out.append(buffer)
        if not self.files:
            self._read_from_maps(out[0].nbytes + out[1].nbytes)
        return out[0], out[1]


def _epoch_rows(count: int, batch_size: int, shuffle: bool, seed: int, drop_last: bool, device: torch.device,
                *, host: bool = False) -> list[Tensor | slice]:
    """The rows of each batch of an epoch of ``count`` pairs: slices in order or, with ``shuffle``,
    slices of a permutation seeded by ``seed`` and drawn on ``device`` (then moved to the host
    with ``host``: the same rows wherever the data lives)."""
    stop = count - count % batch_size if drop_last else count
    starts = range(0, stop, batch_size)
    if not shuffle:
        return [slice(start, start + batch_size) for start in starts]
    generator = torch.Generator(device=device).manual_seed(seed)
    order = torch.randperm(count, generator=generator, device=device)
    order = order.cpu() if host else order
    return [order[start:start + batch_size] for start in starts]


def _share(rows: Tensor | slice) -> Tensor | slice:
    """This process's share of a batch's rows, as the engine takes it under ``torchrun``."""
    if distributed.world_size() == 1 or isinstance(rows, slice):
        return rows
    return rows[slice(*distributed.shard_bounds(len(rows)))]


def _same_rows(a: Tensor | slice, b: Tensor | slice) -> bool:
    if isinstance(a, slice) or isinstance(b, slice):
        return a == b
    return a.shape == b.shape and a.device == b.device and bool(torch.equal(a, b))


def _tensor(array: np.ndarray) -> Tensor:
    """``torch.from_numpy``, also of a read-only (memory-mapped) array: nothing writes to these."""
    if array.flags.writeable:
        return torch.from_numpy(array)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def fingerprint(*arrays: np.ndarray) -> str:
    """A short content hash of arrays (shape, dtype and bytes): a data fingerprint or cache key."""
    digest = hashlib.blake2b(digest_size=12)
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape};".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()
