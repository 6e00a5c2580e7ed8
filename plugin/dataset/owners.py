"""Who holds what a process leaves behind while it works (journal entries, leases, unfinished
datasets), and whether that process is still alive."""

from __future__ import annotations

import os
import socket


def owner() -> dict:
    """This process, as recorded on what it leaves behind while it works."""
    import psutil

    return {"host": socket.gethostname(), "pid": os.getpid(), "started": psutil.Process().create_time()}


def owner_state(record: dict | None) -> str:
    """``alive``, ``gone`` (no such process on this host any more) or ``unknown`` (another host)."""
    import psutil

    if not record or "pid" not in record:
        return "gone"
    if record.get("host") != socket.gethostname():
        return "unknown"
    try:
        process = psutil.Process(int(record["pid"]))
        if process.status() == psutil.STATUS_ZOMBIE:
            return "gone"
        if abs(process.create_time() - float(record.get("started", 0))) > 1.0:
            return "gone"  # the pid was reused by a younger process
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return "gone"
    return "alive"


def describe_owner(record: dict | None) -> str:
    if not record:
        return "an unknown process"
    return f"pid {record.get('pid')} on {record.get('host')}"
