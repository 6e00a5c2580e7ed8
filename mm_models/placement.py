"""Where the pairs live while a model trains: resident on the device, or streamed to it.

Both placements give the same batches (:class:`mm_models.data.PairTensors`,
:class:`mm_models.data.StreamedPairs`); resident data is the fastest while it fits.
``auto`` keeps the data resident while it fits :func:`resident_budget` (a fraction of
the memory available where it would live) and streams it otherwise, saying why.
"""

from __future__ import annotations

import os

import torch

from .choices import DATA_MODES, check_choice
from .data import PairTensors

#: ``auto`` keeps the data resident while it takes at most this fraction of the memory available there
RESIDENT_FRACTION = 0.5


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
