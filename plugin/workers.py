"""The worker processes of the data side: generation, validation, derived files."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor


def process_pool(workers: int) -> ProcessPoolExecutor:
    """``workers`` processes, forks of this one where the system forks (Linux; its pages are
    shared until written). A fork server or spawn, Python 3.14's and macOS's defaults, would
    run the caller's main script again in each worker: a script without an
    ``if __name__ == "__main__":`` guard would ingest or generate again there."""
    start = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(start))
