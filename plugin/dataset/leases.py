"""One writer of a dataset's fields at a time: the dataset lease, a document in FiftyOne's database.

FiftyOne saves a dataset's field schema as one list: two processes adding fields to one
dataset at once each write their own version, and the fields of the first are lost from
the schema. So whatever may change a dataset's fields holds its lease
(``cilp_worker_leases``), taken atomically, renewed every ``stale_after / 3`` seconds and
expiring ``stale_after`` seconds after the last renewal (a dead holder's lease lapses; one
held by a process of this host that is gone is taken over at once). Every staged write
(:mod:`cilp_plugin.writeback.staging`) holds it; an executor
(:mod:`cilp_plugin.service.executor`) holds it for each operation that may change fields.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta

from .owners import owner, owner_state

#: ``stale_after`` when neither ``--stale-after`` nor this variable says otherwise
STALE_ENV = "CILP_WORKER_STALE_S"
DEFAULT_STALE_S = 300.0
#: ``stale_after`` must cover this many heartbeats
MIN_HEARTBEATS = 3

#: the collection of dataset leases, in FiftyOne's database
LEASES = "cilp_worker_leases"

#: dataset name -> how many threads of this process write it now (under its lease). FiftyOne keeps
#: one dataset object per process, and ``ctx.dataset`` reloads it from the database on each
#: operator or panel call: a reload in another thread, between a write adding a field to the
#: in-memory schema and saving it, loses the field. Polling callers skip a dataset written here.
_writing: dict[str, int] = {}
_writing_guard = threading.Lock()


def being_written(name: str | None) -> bool:
    """Whether a thread of this process writes the dataset ``name`` now (holds its lease)."""
    with _writing_guard:
        return bool(_writing.get(name))


@contextmanager
def _writing_here(name: str):
    with _writing_guard:
        _writing[name] = _writing.get(name, 0) + 1
    try:
        yield
    finally:
        with _writing_guard:
            _writing[name] -= 1


def _leases():
    import fiftyone.core.odm as foo

    return foo.get_db_conn()[LEASES]


def _now() -> datetime:
    return datetime.utcnow()  # noqa: DTZ003 - FiftyOne stores naive UTC times


def acquire_lease(key: str, holder: str, operation_id, stale_after_s: float) -> bool:
    """Take the lease ``key`` for ``holder`` if it is free, lapsed, already ``holder``'s, or
    held by a process of this host that is gone (killed: no need to wait for it to lapse)."""
    from pymongo import ReturnDocument
    from pymongo.errors import DuplicateKeyError

    held = _leases().find_one({"_id": key})
    if held and held.get("owner") and owner_state(held["owner"]) == "gone":
        _leases().delete_one({"_id": key, "holder": held["holder"]})
    now = _now()
    try:
        _leases().find_one_and_update(
            {"_id": key, "$or": [{"expires_at": {"$lt": now}}, {"holder": holder}]},
            {"$set": {"holder": holder, "owner": owner(), "operation": operation_id, "taken_at": now,
                      "expires_at": now + timedelta(seconds=stale_after_s)}},
            upsert=True, return_document=ReturnDocument.AFTER)
    except DuplicateKeyError:  # held by another: the filter missed, the upsert met its _id
        return False
    return True


def renew_lease(key: str, holder: str, stale_after_s: float) -> bool:
    return _leases().update_one({"_id": key, "holder": holder},
                                {"$set": {"expires_at": _now() + timedelta(seconds=stale_after_s)}}).modified_count == 1


def release_lease(key: str, holder: str) -> None:
    _leases().delete_one({"_id": key, "holder": holder})


#: the dataset lease an executor holds for the operation it runs (set in its process for the
#: operation's process to inherit)
HELD_LEASE_ENV = "CILP_HELD_LEASE"
#: the dataset leases this thread holds (``held.keys``): an App server runs operations in threads
_held = threading.local()


@contextmanager
def dataset_lease(dataset, *, poll_s: float = 1.0):
    """Hold ``dataset``'s lease, the one an executor takes for an operation that may change
    its fields, while the block runs: waits (saying so) while another process holds it,
    renews it every ``stale_after / 3`` seconds. Within an operation whose executor holds
    it, or within an enclosing ``dataset_lease``, it is held already."""
    key = f"dataset:{dataset._doc.id}"
    held = getattr(_held, "keys", frozenset())
    if os.environ.get(HELD_LEASE_ENV) == key or key in held:
        with _writing_here(dataset.name):
            yield
        return
    stale_after_s = float(os.environ.get(STALE_ENV, DEFAULT_STALE_S))
    holder = f"{os.path.basename(sys.argv[0]) or 'python'} (host {socket.gethostname()}, pid {os.getpid()}) " \
             f"{uuid.uuid4().hex[:8]}"
    waiting = False
    while not acquire_lease(key, holder, None, stale_after_s):
        if not waiting:
            other = (_leases().find_one({"_id": key}) or {}).get("holder", "another process")
            print(f"dataset '{dataset.name}' is being written by {other}: waiting for it to finish", file=sys.stderr,
                  flush=True)
            waiting = True
        time.sleep(poll_s)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(stale_after_s / MIN_HEARTBEATS):
            try:
                renew_lease(key, holder, stale_after_s)
            except Exception:  # noqa: BLE001 - the database away for a while: the next beat tries again
                pass

    renewer = threading.Thread(target=renew, name="cilp-dataset-lease", daemon=True)
    renewer.start()
    _held.keys = held | {key}
    try:
        with _writing_here(dataset.name):
            yield
    finally:
        _held.keys = held
        stop.set()
        renewer.join()
        release_lease(key, holder)
