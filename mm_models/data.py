"""Pairs as tensors for training: resident on the device, or streamed from a memory-mapped cache.

The RGB images stay uint8 ``(N, H, W, 4)`` (4x smaller than float) and become
float in [0, 1] one batch at a time on the device; ``permute`` of the NHWC array
gives an NCHW view with channels_last strides for free. The LiDAR XYZA grids are
float32 ``(N, 4, H, W)``, stored channels_last. Batches are slices of a seeded
permutation computed on the device: no DataLoader, no per-item work.

Two placements, the same batches (:func:`place`, ``TrainConfig.data``):

- *resident* (:class:`PairTensors` after ``to(device)``): every pair on the device for
  the whole run; the fastest, while the data fits.
- *streamed* (:class:`StreamedPairs`): the pairs stay in host memory, usually memory-mapped
  from an arrays folder on disk (:class:`ArraysWriter`, :func:`open_arrays`), and each
  batch is read (its rows in file order), moved to the device and put back in the
  epoch's order; the next batch is read by a background thread meanwhile. Same seed,
  same rows, same values: training gives the same weights as resident data.

``auto`` keeps the data resident while it fits :func:`resident_budget` (a fraction of
the memory available where it would live) and streams it otherwise, saying why.

An arrays folder holds one ``.npy`` file per array (``rgb.npy``, ``lidar.npy``,
``labels.npy``, readable with ``np.load(path, mmap_mode="r")``) and ``index.json``
(format, count, shapes, dtypes, metadata such as the data fingerprint), written last:
a folder without it is incomplete and never read.
"""

from __future__ import annotations

import functools
import hashlib
import json
import mmap
import os
import shutil
import uuid
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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
#: where the pairs live while a model trains (TrainConfig.data, ``--data``)
DATA_MODES = ("auto", "resident", "streamed")
#: ``auto`` keeps the data resident while it takes at most this fraction of the memory available there
RESIDENT_FRACTION = 0.5
#: the arrays-folder format (index.json "format")
ARRAYS_FORMAT = "mm_models.arrays/1"
INDEX = "index.json"
#: threads reading the rows of a large streamed batch, each at least ROWS_PER_READER rows
#: (positioned reads release the GIL; at batch 256 on 2 cores, two threads read 43,000-57,000
#: rows/s, one 37,000-45,000, in six alternating rounds)
MAX_READ_THREADS = 4
READ_THREADS = max(1, min(MAX_READ_THREADS, os.cpu_count() or 1))
ROWS_PER_READER = 32
#: memory-mapped data gives back the pages of its files after about this many bytes read (a read maps
#: up to ~3x its bytes: the kernel maps the neighbours of a page that faults in)
_DROP_BYTES = 64 << 20

Batch = dict[str, Tensor]


@dataclass
class PairTensors:
    """RGB + LiDAR pairs (and optional 0/1 labels) as tensors on one device.

    Made from numpy arrays that are memory-mapped (an arrays folder, :meth:`open`) the
    tensors share the mapping: nothing is read until :meth:`to` copies the data to the
    device (in chunks) or :meth:`streamed` reads it a batch at a time.
    """

    rgb: Tensor  # (N, H, W, 4) uint8 RGBA
    lidar: Tensor  # (N, 4, H, W) float32 XYZ + valid mask
    labels: Tensor | None = None  # (N,) float32 in {0, 1}; None when only predicting
    #: the memory maps rgb and lidar are views of (none when they are in memory)
    mapped: tuple = field(default=(), repr=False, compare=False)
    #: where those maps' arrays lie in their files: (address, file offset, bytes, path) each
    files: tuple = field(default=(), repr=False, compare=False)
    _unreleased: list = field(default_factory=lambda: [0], init=False, repr=False, compare=False)

    @classmethod
    def from_numpy(
        cls, rgb: np.ndarray, lidar: np.ndarray, labels: np.ndarray | None = None, *, name: str = "data"
    ) -> "PairTensors":
        """Validate and wrap numpy arrays (no copy where the dtypes already match; memory-mapped
        arrays stay mapped)."""
        mapped = tuple({id(m): m for m in map(_mapping, (rgb, lidar)) if m is not None}.values())
        files = tuple(f for f in map(_file_span, (rgb, lidar)) if f is not None)
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
            _tensor(np.ascontiguousarray(rgb)),
            _tensor(np.ascontiguousarray(lidar, dtype=np.float32)),
            labels,
            mapped,
            files,
        )

    @classmethod
    def open(cls, folder: Path | str) -> "PairTensors":
        """The pairs of an arrays folder (:class:`ArraysWriter`), memory-mapped: nothing is read yet."""
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

    def to(self, device: torch.device | str) -> "PairTensors":
        """Move everything to ``device`` once (LiDAR stored channels_last there); memory-mapped
        data is copied in chunks, the pages of its files given back as it goes."""
        if self.mapped:
            return PairTensors(_copy_mapped(self.rgb, device, torch.contiguous_format, self.mapped),
                               _copy_mapped(self.lidar, device, torch.channels_last, self.mapped),
                               None if self.labels is None else self.labels.to(device))
        move = dict(device=device, non_blocking=True)
        return PairTensors(
            self.rgb.to(**move),
            self.lidar.to(**move).contiguous(memory_format=torch.channels_last),
            None if self.labels is None else self.labels.to(**move),
        )

    def resident(self, device: torch.device | str) -> "PairTensors":
        """Every pair on ``device`` for the whole run (:meth:`to`)."""
        return self.to(device)

    def streamed(self, device: torch.device | str, *, prefetch: bool = True) -> "StreamedPairs":
        """The pairs left in host memory (or their memory-mapped files), read to ``device`` a
        batch at a time (:class:`StreamedPairs`); data already on a GPU stays resident."""
        if self.rgb.device.type != "cpu":
            return self.to(device)  # type: ignore[return-value]
        return StreamedPairs(self.rgb, self.lidar, self.labels, self.mapped, self.files, prefetch=prefetch).to(device)

    def subset(self, index: Tensor | slice) -> "PairTensors":
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
                _release(self.mapped)

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

    def to(self, device: torch.device | str) -> "StreamedPairs":
        """Only the labels (small) move; the pairs stay where they are."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        return StreamedPairs(self.rgb, self.lidar, None if self.labels is None else self.labels.to(device),
                             self.mapped, self.files, target=device, prefetch=self.prefetch)

    def resident(self, device: torch.device | str) -> PairTensors:
        return PairTensors(self.rgb, self.lidar, self.labels, self.mapped, self.files).to(device)

    def streamed(self, device: torch.device | str, *, prefetch: bool | None = None) -> "StreamedPairs":
        moved = self.to(device)
        if prefetch is not None:
            moved.prefetch = prefetch
        return moved

    def subset(self, index: Tensor | slice) -> "StreamedPairs":
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

        Rows of a file are read in file order with positioned reads (``os.preadv``), each into its place
        in the batch: no page of the file is mapped into this process. Reading a mapped file row by row
        made the kernel map whole runs of pages around each row (up to 2 MB for a 16 KB row: 6x slower
        than ``preadv`` here, and the process's memory grew by gigabytes). Rows in memory are copied.
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
            span = _span_of(source, self.files)
            if not len(rows):  # a process's share of a batch smaller than the world
                pass
            elif span is not None:
                _read_rows(span, buffer, rows, positions)
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


def _file_span(array: np.ndarray) -> tuple[int, int, int, str] | None:
    """(address, file offset, bytes, path) of the memory-mapped file array ``array`` is a view of, if any."""
    root = array
    while isinstance(getattr(root, "base", None), np.ndarray):
        root = root.base
    if not isinstance(root, np.memmap) or not isinstance(root.base, mmap.mmap) or not root.filename:
        return None
    return root.ctypes.data, int(root.offset), root.nbytes, str(root.filename)


def _span_of(source: Tensor, files: tuple) -> tuple[str, int, int] | None:
    """(path, file offset of row 0, bytes a row) of ``source``'s rows where they are contiguous rows of a file."""
    if not files or len(source) == 0 or not source[0].is_contiguous():
        return None
    row_bytes = source[0].nbytes
    if source.stride(0) * source.element_size() != row_bytes:
        return None
    start = source.data_ptr()
    for address, offset, nbytes, path in files:
        if address <= start and start + len(source) * row_bytes <= address + nbytes:
            return path, offset + start - address, row_bytes
    return None


def _read_rows(span: tuple[str, int, int], buffer: Tensor, rows, positions) -> None:
    """Rows ``rows`` (a range, or a sorted list with ``positions``) of a file into ``buffer``; the
    rows of a large batch by up to :data:`READ_THREADS` threads."""
    path, first, row_bytes = span
    view = memoryview(buffer.numpy()).cast("B")
    if positions is None:  # consecutive rows: one read
        pieces = [(0, first + rows.start * row_bytes, len(rows) * row_bytes)]
    else:
        pieces = [(position * row_bytes, first + row * row_bytes, row_bytes) for position, row in zip(positions, rows)]
    parts = min(READ_THREADS, len(pieces) // ROWS_PER_READER)
    if parts <= 1:
        _read_pieces(path, view, pieces)
        return
    step = -(-len(pieces) // parts)
    reads = [_readers().submit(_read_pieces, path, view, pieces[i:i + step]) for i in range(0, len(pieces), step)]
    for read in reads:
        read.result()


def _read_pieces(path: str, view: memoryview, pieces) -> None:
    """``(at, offset, size)``: ``size`` bytes at ``offset`` of the file into ``view[at:]``, each."""
    fd = os.open(path, os.O_RDONLY)
    try:
        for at, offset, size in pieces:
            while size:
                done = os.preadv(fd, [view[at:at + size]], offset)
                if done <= 0:
                    raise OSError(f"{path}: {size} bytes short at offset {offset} (the file was truncated?)")
                at, offset, size = at + done, offset + done, size - done
    finally:
        os.close(fd)


@functools.cache
def _readers() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(MAX_READ_THREADS, thread_name_prefix="mm-read")


def _share(rows: Tensor | slice) -> Tensor | slice:
    """This process's share of a batch's rows, as the engine takes it under ``torchrun``."""
    from . import distributed

    if distributed.world_size() == 1 or isinstance(rows, slice):
        return rows
    return rows[slice(*distributed.shard_bounds(len(rows)))]


def _same_rows(a: Tensor | slice, b: Tensor | slice) -> bool:
    if isinstance(a, slice) or isinstance(b, slice):
        return a == b
    return a.shape == b.shape and a.device == b.device and bool(torch.equal(a, b))


def _mapping(array) -> mmap.mmap | None:
    """The memory map a numpy array is a view of, if any."""
    while array is not None:
        if isinstance(array, mmap.mmap):
            return array
        array = getattr(array, "base", None)
    return None


def _tensor(array: np.ndarray) -> Tensor:
    """``torch.from_numpy``, also of a read-only (memory-mapped) array: nothing writes to these."""
    if array.flags.writeable:
        return torch.from_numpy(array)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def _release(mapped: tuple) -> None:
    """Give back the pages of memory-mapped files (they stay in the page cache; a read maps them again)."""
    for mapping in mapped:
        try:
            mapping.madvise(mmap.MADV_DONTNEED)
        except (AttributeError, OSError, ValueError):  # no madvise here, or a closed map
            pass


def _copy_mapped(source: Tensor, device, memory_format, mapped: tuple, chunk_bytes: int = 64 << 20) -> Tensor:
    """``source`` (memory-mapped) copied to ``device`` a chunk at a time, the file's pages given back
    after each: the process holds the copy, not the copy and the file."""
    out = torch.empty(source.shape, dtype=source.dtype, device=device, memory_format=memory_format)
    rows = max(1, chunk_bytes // max(1, source[:1].nbytes))
    for start in range(0, len(source), rows):
        out[start:start + rows].copy_(source[start:start + rows])
        _release(mapped)
    return out


# --------------------------------------------------------------------------- placement


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:,.1f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:,.1f} MB"


def available_ram() -> int:
    """Bytes of RAM available to a new allocation (MemAvailable)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        return int(fields["MemAvailable"].split()[0]) * 1024


def resident_budget(device: torch.device | str) -> tuple[int, str]:
    """How many bytes of pairs ``auto`` keeps resident on ``device``, and where that number comes from:
    :data:`RESIDENT_FRACTION` of the GPU's free memory, or of the RAM available (shared by the
    processes ``torchrun`` started on this node)."""
    device = torch.device(device)
    share = f"{RESIDENT_FRACTION:.0%}"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(RESIDENT_FRACTION * free), f"{share} of the {_gb(free)} free on {device}"
    processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    available = available_ram()
    budget = int(RESIDENT_FRACTION * available / processes)
    return budget, f"{share} of the {_gb(available)} of RAM available" + (
        f", shared by {processes} processes" if processes > 1 else "")


def _resident_cost(data: PairTensors, device: torch.device) -> int:
    """Bytes that making ``data`` resident on ``device`` adds (none for in-memory data on the CPU)."""
    if data.rgb.device.type == device.type and not data.mapped:
        return 0
    return data.nbytes


def placement(mode: str, device: torch.device | str, *datasets: PairTensors) -> tuple[str, str]:
    """``resident`` or ``streamed`` for ``datasets`` on ``device`` under ``mode`` (one of
    :data:`DATA_MODES`), and a sentence that says why (with the sizes and the budget)."""
    from .encoders import check_choice

    check_choice("data", mode, DATA_MODES)
    device = torch.device(device)
    total = sum(d.nbytes for d in datasets)
    sizes = " + ".join(_gb(d.nbytes) for d in datasets) + (f" = {_gb(total)}" if len(datasets) > 1 else "")
    if mode != "auto":
        return mode, f"data {mode} on {device} as asked ({sizes} of pairs)"
    cost = sum(_resident_cost(d, device) for d in datasets)
    if not cost:
        return "resident", f"data resident on {device} ({sizes} of pairs, already in memory)"
    budget, why = resident_budget(device)
    if cost <= budget:
        return "resident", f"data resident on {device}: {sizes} of pairs fit the budget of {_gb(budget)} ({why})"
    source = "their memory-mapped files" if any(d.mapped for d in datasets) else "host memory"
    return "streamed", (f"data streamed from {source} to {device} a batch at a time: {sizes} of pairs exceed the "
                        f"budget of {_gb(budget)} ({why}); --data resident (TrainConfig.data) loads them anyway")


def place(data: PairTensors, device: torch.device | str, mode: str = "auto") -> PairTensors:
    """``data`` resident on ``device`` or streamed to it, as :func:`placement` decides."""
    chosen, _ = placement(mode, device, data)
    return data.streamed(device) if chosen == "streamed" else data.resident(device)


# --------------------------------------------------------------------------- arrays folders


class ArraysWriter:
    """Write an arrays folder chunk by chunk, never the whole set in memory.

        with ArraysWriter(folder, {"rgb": ((n, 64, 64, 4), np.uint8), ...}, {"fingerprint": fp}) as out:
            out.write(start, rgb=chunk_rgb, ...)

    The ``.npy`` files are made at full size in a temporary folder beside ``folder``; each
    chunk is written in place with positioned writes (no memory map, so the process's
    memory stays flat); on success ``index.json`` is written and the folder renamed into
    place (another process that finished the same folder first wins); on failure the
    temporary folder is removed.
    """

    def __init__(self, folder: Path | str, arrays: dict[str, tuple[tuple[int, ...], object]],
                 metadata: dict | None = None):
        self.folder = Path(folder)
        counts = {shape[0] for shape, _ in arrays.values()}
        if len(counts) != 1 or min(counts) < 1:
            raise ValueError(f"arrays: expected one number (>= 1) of rows for every array, got {sorted(counts)}")
        self.count = counts.pop()
        self.metadata = dict(metadata or {})
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        self.temp = self.folder.with_name(f".{self.folder.name}.{uuid.uuid4().hex[:8]}.partial")
        self.temp.mkdir()
        self.layout: dict[str, tuple[Path, int, int, np.dtype, tuple[int, ...]]] = {}
        try:
            for name, (shape, dtype) in arrays.items():
                path = self.temp / f"{name}.npy"
                made = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=tuple(shape))
                row_bytes = made[:1].nbytes
                self.layout[name] = (path, int(made.offset), row_bytes, made.dtype, tuple(shape[1:]))
                del made
        except BaseException:
            self.abort()
            raise

    def write(self, start: int, **arrays: np.ndarray) -> None:
        """Rows ``start ...`` of the named arrays."""
        for name, values in arrays.items():
            path, offset, row_bytes, dtype, row_shape = self.layout[name]
            values = np.ascontiguousarray(values, dtype=dtype)
            if values.shape[1:] != row_shape or not 0 <= start <= self.count - len(values):
                raise ValueError(f"{name}: rows {start}..{start + len(values)} of shape {values.shape[1:]} do not "
                                 f"fit {self.count} rows of {row_shape}")
            data = memoryview(values.reshape(-1).view(np.uint8))
            position = offset + start * row_bytes
            fd = os.open(path, os.O_WRONLY)
            try:
                while data:
                    written = os.pwrite(fd, data, position)
                    data, position = data[written:], position + written
            finally:
                os.close(fd)

    def finish(self) -> Path:
        """Write the index and move the folder into place; returns it."""
        index = {"format": ARRAYS_FORMAT, "count": self.count,
                 "arrays": {name: {"shape": [self.count, *row_shape], "dtype": dtype.str}
                            for name, (_, _, _, dtype, row_shape) in self.layout.items()},
                 **self.metadata}
        for path, *_ in self.layout.values():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        (self.temp / INDEX).write_text(json.dumps(index, indent=1))
        try:
            os.rename(self.temp, self.folder)
        except OSError:
            if not (self.folder / INDEX).is_file():
                raise
            self.abort()  # another process wrote the same folder first
        return self.folder

    def abort(self) -> None:
        shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> "ArraysWriter":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.finish()
        else:
            self.abort()


def open_arrays(folder: Path | str) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays of an arrays folder, memory-mapped read-only (``allow_pickle=False``), checked
    against its index; and the index. ``ValueError`` naming the folder when it is not whole."""
    folder = Path(folder)
    try:
        index = json.loads((folder / INDEX).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder}: not a complete arrays folder ({type(exc).__name__}: {exc})") from None
    if not isinstance(index, dict) or index.get("format") != ARRAYS_FORMAT or not isinstance(index.get("arrays"), dict):
        raise ValueError(f"{folder / INDEX}: not an index of format {ARRAYS_FORMAT}")
    arrays = {}
    for name, spec in index["arrays"].items():
        path = folder / f"{name}.npy"
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
        if list(array.shape) != spec.get("shape") or array.dtype.str != spec.get("dtype"):
            raise ValueError(f"{path}: {array.dtype.str} {list(array.shape)}, the index says "
                             f"{spec.get('dtype')} {spec.get('shape')}")
        arrays[name] = array
    return arrays, index


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
