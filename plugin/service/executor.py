"""The executor of scheduled (delegated) operations that ``cilp app`` and ``cilp worker`` run.

Any number of executors, on any number of machines, may serve one FiftyOne database
(``FIFTYONE_DATABASE_URI``); FiftyOne's own ``fiftyone delegated launch`` may serve it too.
Each executor runs one operation at a time, the oldest queued first, each in a child
process that FiftyOne's ``DelegatedOperationService`` monitors (``monitor=True``).

Exactly once: FiftyOne claims a queued operation with one atomic ``find_one_and_update``
that requires ``run_state == "queued"`` (``DelegatedOperationService.set_running(...,
required_state=QUEUED)``), and records its completion or failure only while it is still
``running``: of two executors that pick the same operation, one gets it and the other
moves on. This executor adds to the claim which executor took it (``run_link``:
``cilp worker NAME (host H, pid P)``, shown by ``fiftyone delegated info``).

What FiftyOne open source does not do, done here:

- **A dead executor's operation is marked failed.** While an operation runs, its
  executor writes a heartbeat into it (FiftyOne's monitor refreshes ``updated_at`` every
  ``FIFTYONE_DELEGATED_OPERATION_MONITOR_INTERVAL`` seconds, default 60). An executor
  killed with its machine stops writing it, and FiftyOne leaves the operation
  ``running`` forever. Every executor here checks, every heartbeat, for monitored running
  operations whose heartbeat is older than ``stale_after`` (``CILP_WORKER_STALE_S``,
  default 300 s; at least 3 heartbeats) and marks them failed, each with one conditional
  update (still running, heartbeat unchanged), so a late heartbeat wins. Operations run by
  an unmonitored executor (``fiftyone delegated launch`` without ``-m``) have no
  heartbeat and are never touched: ``fiftyone delegated fail ID``. A run marked failed
  wrote nothing to the dataset: training records a run only once it finished, and
  ``apply`` swaps its results in at the end (``cilp_plugin.writeback.staging``).
- **One dataset writer at a time.** FiftyOne saves a dataset's field schema as one list:
  two processes adding fields to one dataset at once each write their own version, and
  the fields of the first are lost from the schema. So an operation that may change a
  dataset's fields (every operator but the trainings, whose only dataset write is a run
  record, one key of its own) runs only while its executor holds the dataset's lease, a
  document in the database (``cilp_worker_leases``) taken atomically, renewed every
  heartbeat and expiring ``stale_after`` seconds after the last renewal (a dead holder's
  lease lapses). Other executors run other operations meanwhile. Writes outside the
  queue take it too (:func:`cilp_plugin.dataset.leases.dataset_lease`, around every staged write: ``cilp apply``,
  "Execute" in the App), so they wait for a worker's and it for theirs. Under FiftyOne's
  own executor only those staged writes take it, not a whole operation (a dataset load
  or split it runs is unguarded).
- **A stopped executor's operation is marked failed** ("interrupted"), instead of
  staying ``running``.
"""

from __future__ import annotations

import argparse
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..dataset.leases import (
    DEFAULT_STALE_S,
    HELD_LEASE_ENV,
    MIN_HEARTBEATS,
    STALE_ENV,
    acquire_lease,
    release_lease,
    renew_lease,
)

#: the operators that run beside others on the same dataset: they read it, and record a run
#: (``runs.<name>``: FiftyOne saves it as a key of its own); every other operator takes the
#: dataset's lease
CONCURRENT_OPERATORS = frozenset({"@cilp/multimodal/train_fusion", "@cilp/multimodal/train_cilp"})
#: the error a scheduled operation gets when its executor is stopped while it runs
INTERRUPTED = ("interrupted: the executor running this operation was stopped ({signal}), "
               "e.g. `{label}` ended; schedule it again to rerun it")
STALE = ("failed: no heartbeat from the executor running it for {age:.0f} s (more than {stale:.0f} s, "
         f"{STALE_ENV}): {{holder}} died, or lost the database; marked failed by {{me}}; "
         "schedule it again to rerun it")


@dataclass
class Settings:
    """How an executor runs: what it calls itself, its heartbeat, when a heartbeat is stale."""

    label: str = "cilp app"  # the command, in messages
    name: str = field(default_factory=socket.gethostname)
    heartbeat_s: float | None = None  # default: fo.config.delegated_operation_monitor_interval
    stale_after_s: float | None = None  # default: $CILP_WORKER_STALE_S or DEFAULT_STALE_S
    poll_s: float = 0.5

    def resolved(self) -> Settings:
        """With its defaults filled in, checked (``ValueError``)."""
        import fiftyone as fo

        heartbeat = float(self.heartbeat_s or fo.config.delegated_operation_monitor_interval)
        stale = self.stale_after_s
        if stale is None:
            try:
                stale = float(os.environ.get(STALE_ENV) or DEFAULT_STALE_S)
            except ValueError:
                raise ValueError(f"{STALE_ENV}: expected seconds, got {os.environ[STALE_ENV]!r}") from None
        if heartbeat < 1:
            raise ValueError(f"heartbeat: at least 1 s (FIFTYONE_DELEGATED_OPERATION_MONITOR_INTERVAL), "
                             f"got {heartbeat:g}")
        if stale < MIN_HEARTBEATS * heartbeat:
            raise ValueError(f"stale after {stale:g} s: at least {MIN_HEARTBEATS} heartbeats "
                             f"({MIN_HEARTBEATS} x {heartbeat:g} s, FIFTYONE_DELEGATED_OPERATION_MONITOR_INTERVAL), "
                             f"or a live executor's operation would be marked failed")
        return Settings(self.label, self.name, heartbeat, float(stale), self.poll_s)

    def argv(self) -> list[str]:
        """These settings as arguments of the executor process (:func:`parse_args`)."""
        return ["--label", self.label, "--name", self.name, "--heartbeat", f"{self.heartbeat_s:g}",
                "--stale-after", f"{self.stale_after_s:g}"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--label", default="cilp app")
    parser.add_argument("--name", default=socket.gethostname())
    parser.add_argument("--heartbeat", type=float)
    parser.add_argument("--stale-after", type=float)


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(label=args.label, name=args.name, heartbeat_s=args.heartbeat,
                    stale_after_s=args.stale_after).resolved()


# --------------------------------------------------------------------------- the database side


def _operations():
    """FiftyOne's collection of delegated operations."""
    import fiftyone.core.odm as foo
    from fiftyone.factory.repos.delegated_operation import MongoDelegatedOperationRepo

    return foo.get_db_conn()[MongoDelegatedOperationRepo.COLLECTION_NAME]


def _now() -> datetime:
    return datetime.utcnow()  # noqa: DTZ003 - FiftyOne stores naive UTC times


def mark_failed(query: dict, error: str) -> dict | None:
    """Mark the operation matching ``query`` failed, with ``error``, in one conditional update
    (what FiftyOne's ``set_failed`` writes); the document before, or ``None`` if none matched."""
    from fiftyone.operators.executor import ExecutionResult, ExecutionRunState

    result = ExecutionResult(error=error, error_message=error).to_json()
    result.pop("outputs_schema", None)  # FiftyOne keeps it beside the result, for completed operations only
    now = _now()
    return _operations().find_one_and_update(
        query, {"$set": {"run_state": ExecutionRunState.FAILED, "failed_at": now, "updated_at": now,
                         "result": result}})


def fail_stale_operations(stale_after_s: float, me: str = "an executor") -> list:
    """Mark failed every monitored running operation without a heartbeat for ``stale_after_s``;
    the ids of those marked."""
    from fiftyone.operators.executor import ExecutionRunState

    now = _now()
    marked = []
    stale = {"run_state": ExecutionRunState.RUNNING, "monitored": True,
             "updated_at": {"$lt": now - timedelta(seconds=stale_after_s)}}
    for doc in _operations().find(stale, {"updated_at": 1, "run_link": 1}):
        age = (now - doc["updated_at"]).total_seconds()
        error = STALE.format(age=age, stale=stale_after_s, holder=doc.get("run_link") or "the executor", me=me)
        # still running, and no heartbeat since we looked: a live executor's late heartbeat wins
        if mark_failed({"_id": doc["_id"], "run_state": ExecutionRunState.RUNNING,
                        "updated_at": doc["updated_at"]}, error):
            marked.append(doc["_id"])
    return marked


def lease_key(operation) -> str | None:
    """The lease ``operation`` needs: its dataset's, unless its operator runs beside others."""
    if operation.operator in CONCURRENT_OPERATORS or operation.dataset_id is None:
        return None
    return f"dataset:{operation.dataset_id}"


def check_worker_environment() -> str:
    """What a worker serves, checked before it starts: the database answers and the plugin's
    operators load here (``RuntimeError`` otherwise); one line saying what it found."""
    import fiftyone as fo
    import fiftyone.core.odm as foo
    from fiftyone.operators.registry import OperatorRegistry

    from ..runs.registry import default_runs_dir  # imports fiftyone: not at the executor's start

    try:
        client = foo.get_db_client()
        client.admin.command("ping")
        host, port = client.address or ("?", "?")
    except Exception as exc:  # noqa: BLE001 - pymongo's errors, FiftyOne's, the local mongod's
        raise RuntimeError(f"cannot reach FiftyOne's database ({type(exc).__name__}: {exc}); "
                           f"set FIFTYONE_DATABASE_URI to the server the App and the other workers use") from None
    registry = OperatorRegistry()
    missing = sorted(uri for uri in CONCURRENT_OPERATORS if not registry.operator_exists(uri))
    if missing:
        errors = "; ".join(str(e) for e in registry.list_errors()) or "no plugin errors"
        raise RuntimeError(f"the cilp plugin's operators are not available here ({', '.join(missing)}: {errors}); "
                           f"set FIFTYONE_PLUGINS_DIR to the folder holding the plugin (its fiftyone.yml), "
                           f"as on the App's machine")
    where = f"{host}:{port}" if fo.config.database_uri else f"this machine's own database ({host}:{port})"
    return (f"serving database '{fo.config.database_name}' at {where}; runs written to {default_runs_dir()} "
            f"(CILP_RUNS_DIR)")


# --------------------------------------------------------------------------- the executor


class _Janitor(threading.Thread):
    """Every heartbeat: renew the lease held, mark operations with stale heartbeats failed."""

    def __init__(self, settings: Settings, holder: str, me: str):
        super().__init__(name="cilp-executor-janitor", daemon=True)
        self.settings, self.holder, self.me = settings, holder, me
        self.lease: str | None = None
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.settings.heartbeat_s):
            try:
                lease = self.lease
                if lease and not renew_lease(lease, self.holder, self.settings.stale_after_s):
                    print(f"{self.settings.label}: lost the lease {lease}", flush=True)
                for op_id in fail_stale_operations(self.settings.stale_after_s, self.me):
                    print(f"{self.settings.label}: operation {op_id} marked failed: no heartbeat for more than "
                          f"{self.settings.stale_after_s:g} s (its executor died)", flush=True)
            except Exception as exc:  # noqa: BLE001 - the database may be away for a while: try again
                print(f"{self.settings.label}: heartbeat check failed: {exc}", flush=True)


def serve_queue(settings: Settings) -> int:
    """Run scheduled (delegated) operations, oldest first, until SIGINT / SIGTERM (see the module
    docstring); an operation running when the executor is stopped is marked failed (interrupted)."""
    from fiftyone.factory import DelegatedOperationPagingParams, SortByField, SortDirection
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionRunState

    settings = settings.resolved()
    label = settings.label
    service = DelegatedOperationService()
    oldest_first = DelegatedOperationPagingParams(sort_by=SortByField.QUEUED_AT,
                                                  sort_direction=SortDirection.ASCENDING, limit=50)
    me = f"{label} {settings.name} (host {socket.gethostname()}, pid {os.getpid()})"
    holder = f"{me} {uuid.uuid4().hex[:8]}"
    janitor = _Janitor(settings, holder, me)
    janitor.start()
    print(f"{label}: executor ready: scheduled operations run here, one at a time ({me}; heartbeat "
          f"{settings.heartbeat_s:g} s, stale after {settings.stale_after_s:g} s)", flush=True)
    current = None
    try:
        while True:
            attempted = False
            for operation in service.list_operations(run_state=ExecutionRunState.QUEUED, paging=oldest_first):
                key = lease_key(operation)
                if key and not acquire_lease(key, holder, operation.id, settings.stale_after_s):
                    continue  # another executor writes to that dataset: a later operation, or wait
                attempted, current, janitor.lease = True, operation, key
                if key:
                    os.environ[HELD_LEASE_ENV] = key  # the operation's own staged writes need not wait for it
                try:
                    outcome = service.execute_operation(operation, log=True, run_link=me, monitor=True,
                                                        check_interval_seconds=settings.heartbeat_s)
                    current = None  # done (a stop signal leaves it set: see below)
                finally:
                    janitor.lease = None
                    os.environ.pop(HELD_LEASE_ENV, None)
                    if key:
                        release_lease(key, holder)
                if outcome is None:
                    print(f"{label}: operation {operation.id} was claimed by another executor", flush=True)
                break  # the queue again, from its oldest
            if not attempted:
                time.sleep(settings.poll_s)
    except KeyboardInterrupt as stop:
        if current is not None:  # still running here (only then): failed, with the reason
            error = INTERRUPTED.format(signal=str(stop) or "SIGINT", label=label)
            if mark_failed({"_id": current.id, "run_state": ExecutionRunState.RUNNING, "run_link": me}, error):
                print(f"{label}: operation {current.id} ({current.operator}) marked failed: interrupted",
                      flush=True)
    finally:
        janitor.stopped.set()
    return 0
