"""Benchmark results as CSV files named by what measured them.

    benchmarks/results/<benchmark>-<machine>[-<precision>][-<variant>]-<date>.csv

A benchmark writes one row per measurement as it lands, so a run stopped half-way keeps what it
measured; a second run of the same benchmark on the same machine, precision and day replaces the
file (a variant, such as another input size, has a file of its own). ``CILP_BENCH_RESULTS`` names
another folder (the tests point it at a temporary one).
"""

from __future__ import annotations

import csv
import datetime
import os
import platform
import re
import sys
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """The GPU's name where torch sees one, else the CPU's model and core count, as a slug:
    ``nvidia-h200``, ``amd-epyc-7b13-2c``."""
    torch = sys.modules.get("torch")  # a benchmark that trains imported it; the others run on the CPU
    if torch is not None and torch.cuda.is_available():
        return slug(torch.cuda.get_device_name(0))
    return f"{slug(cpu_model())}-{os.cpu_count()}c"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1]
    except OSError:
        pass
    return platform.processor() or platform.machine()


def slug(name: str) -> str:
    name = re.sub(r"\((r|tm)\)|\bcpu\b|\bprocessor\b|@.*|\b\d+-core\b", " ", name.lower())
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")


class Results:
    """The CSV file of one benchmark run; :meth:`add` writes a row (columns from the first row)."""

    def __init__(self, benchmark: str, precision: str | None = None, variant: str | None = None):
        folder = Path(os.environ.get("CILP_BENCH_RESULTS") or RESULTS_DIR)
        parts = [benchmark, machine(), *filter(None, (precision, variant)), datetime.date.today().isoformat()]
        self.path = folder / f"{'-'.join(parts)}.csv"
        self.columns: list[str] | None = None

    def add(self, **row) -> None:
        if self.columns is None:
            self.columns = list(row)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(self.columns)
        if list(row) != self.columns:
            raise ValueError(f"{self.path.name}: a row with columns {list(row)}, the file has {self.columns}")
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([_cell(value) for value in row.values()])

    def __str__(self) -> str:
        return str(self.path)


def _cell(value):
    return f"{value:.6g}" if isinstance(value, float) else value
