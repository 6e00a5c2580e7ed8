"""The arrays folder: the pairs of a split as ``.npy`` files that training memory-maps (numpy only).

An arrays folder holds one ``.npy`` file per array (``rgb.npy``, ``lidar.npy``,
``labels.npy``, readable with ``np.load(path, mmap_mode="r")``) and ``index.json``
(format, count, shapes, dtypes, metadata such as the data fingerprint), written last:
a folder without it is incomplete and never read. :meth:`mm_models.data.PairTensors.open`
turns one into pairs for training.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

#: the arrays-folder format (index.json "format")
ARRAYS_FORMAT = "mm_models.arrays/1"
INDEX = "index.json"


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

    def __enter__(self) -> ArraysWriter:
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
