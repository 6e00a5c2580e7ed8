"""The worker processes of the data side: generation, validation, derived files."""

from __future__ import annotations

import gc
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager


@contextmanager
def process_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """``workers`` processes, forks of this one where the system forks (Linux). A fork server or
    spawn, Python 3.14's and macOS's defaults, would run the caller's main script again in each
    worker: a script without an ``if __name__ == "__main__":`` guard would ingest or generate
    again there.

    This process's objects are frozen out of garbage collection while the pool runs: the forks
    share their pages until written, and a fork's collector walking them would write every one
    (at 20,000 pairs the workers' private memory grew by 135 MB, copies of this process's)."""
    start = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    gc.freeze()
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(start)) as pool:
            yield pool
    finally:
        gc.unfreeze()
