"""Rows of memory-mapped pair arrays read without mapping them: positioned reads, pages given back.

A streamed batch (:class:`mm_models.data.StreamedPairs`) takes its rows from the
arrays' files with positioned reads (``os.preadv``), each row into its place in the
batch, by a few threads for a large batch (positioned reads release the GIL). Reading
a mapped file row by row instead makes the kernel map whole runs of pages around each
row, and the process's memory grows with every batch. Resident data copied from its
memory maps (:func:`copy_mapped`) gives the files' pages back as it goes
(:func:`release`).
"""

from __future__ import annotations

import functools
import mmap
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

#: threads reading the rows of a large streamed batch, each at least ROWS_PER_READER rows
MAX_READ_THREADS = 4
READ_THREADS = max(1, min(MAX_READ_THREADS, os.cpu_count() or 1))
ROWS_PER_READER = 32


def mapping(array) -> mmap.mmap | None:
    """The memory map a numpy array is a view of, if any."""
    while array is not None:
        if isinstance(array, mmap.mmap):
            return array
        array = getattr(array, "base", None)
    return None


def file_span(array: np.ndarray) -> tuple[int, int, int, str] | None:
    """(address, file offset, bytes, path) of the memory-mapped file array ``array`` is a view of, if any."""
    root = array
    while isinstance(getattr(root, "base", None), np.ndarray):
        root = root.base
    if not isinstance(root, np.memmap) or not isinstance(root.base, mmap.mmap) or not root.filename:
        return None
    return root.ctypes.data, int(root.offset), root.nbytes, str(root.filename)


def span_of(source: Tensor, files: tuple) -> tuple[str, int, int] | None:
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


def read_rows(span: tuple[str, int, int], buffer: Tensor, rows, positions) -> None:
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


def release(mapped: tuple) -> None:
    """Give back the pages of memory-mapped files (they stay in the page cache; a read maps them again)."""
    for mapped_file in mapped:
        try:
            mapped_file.madvise(mmap.MADV_DONTNEED)
        except (AttributeError, OSError, ValueError):  # no madvise here, or a closed map
            pass


def copy_mapped(source: Tensor, device, memory_format, mapped: tuple, chunk_bytes: int = 64 << 20) -> Tensor:
    """``source`` (memory-mapped) copied to ``device`` a chunk at a time, the file's pages given back
    after each: the process holds the copy, not the copy and the file."""
    out = torch.empty(source.shape, dtype=source.dtype, device=device, memory_format=memory_format)
    rows = max(1, chunk_bytes // max(1, source[:1].nbytes))
    for start in range(0, len(source), rows):
        out[start:start + rows].copy_(source[start:start + rows])
        release(mapped)
    return out
