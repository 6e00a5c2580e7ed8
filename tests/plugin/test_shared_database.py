"""FiftyOne's production set-up: one MongoDB server, executors on other machines.

The test starts its own mongod (as a database server of its own, reached through
``FIFTYONE_DATABASE_URI``), points this process and two ``cilp worker`` processes at it,
and queues trainings and applies as the App's "Schedule" does:

- FiftyOne's claim of a queued operation is atomic: of many executors claiming one
  operation at once, one gets it;
- a dataset lease is taken by one executor at a time, and lapses when its holder dies;
- the stale-heartbeat check marks failed only monitored running operations whose
  heartbeat stopped;
- two workers run every queued operation exactly once, both take some, trainings in
  parallel, the applies to one dataset one at a time, and every result lands in the
  dataset;
- a worker's executor killed (its supervisor alive): the operation's process it left is
  killed, the executor restarted, the operation marked failed;
- a worker killed outright (a lost machine): its operation is marked failed by the other
  worker, which goes on with the queue; nothing of the killed run is in the dataset;
- a worker stopped (SIGTERM): its operation is marked failed (interrupted) at once.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import psutil
import pytest

from ..fiftyone_isolation import _free_port, _wait_for_port

TRAIN = "@cilp/multimodal/train_fusion"
APPLY = "@cilp/multimodal/apply_model"
#: seconds: the workers' heartbeat and when a heartbeat is stale (production: 60 and 300)
HEARTBEAT, STALE = 1, 8
WORKERS = ("a", "b")

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- the database server


def _use_database(uri: str | None, name: str) -> None:
    """Point FiftyOne in this process at another database server: it connects lazily, to fo.config's,
    on its next database call; what holds the old connection is dropped."""
    import fiftyone as fo
    import fiftyone.core.odm.database as fodb
    import fiftyone.factory.repo_factory as repo_factory

    fodb._disconnect()
    # the repositories of delegated operations and execution stores keep their database and collections
    repo_factory._db = None
    repo_factory.RepositoryFactory.repos.clear()
    fo.config.database_uri, fo.config.database_name = uri, name


@pytest.fixture(scope="module")
def shared_database(tmp_path_factory):
    """A mongod of this module's own; FiftyOne in this process uses it until the module ends."""
    import fiftyone as fo

    mongod = Path(fo.__file__).parent / "db" / "bin" / "mongod"
    workdir = tmp_path_factory.mktemp("shared-mongod")
    port = _free_port()
    server = subprocess.Popen(
        [str(mongod), "--dbpath", str(workdir), "--port", str(port), "--bind_ip", "127.0.0.1", "--nounixsocket",
         "--quiet", "--logpath", str(workdir / "mongod.log")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = fo.config.database_uri, fo.config.database_name
    env = {"FIFTYONE_DATABASE_URI": f"mongodb://127.0.0.1:{port}", "FIFTYONE_DATABASE_NAME": "cilp-shared"}
    try:
        _wait_for_port(port, server)
        _use_database(env["FIFTYONE_DATABASE_URI"], env["FIFTYONE_DATABASE_NAME"])
        yield env
    finally:
        _use_database(*saved)
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """CILP_RUNS_DIR of this process and of the workers: the shared storage of the set-up."""
    path = tmp_path_factory.mktemp("shared-runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CILP_RUNS_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def dataset(shared_database, runs_dir, tiny_data):
    """``tiny_data`` ingested into the shared database, split 12 train / 4 val."""
    from cilp_plugin.dataset import ingest, splits

    dataset = ingest.ingest(tiny_data, f"shared-{uuid.uuid4().hex[:8]}").dataset
    splits.create_splits(dataset, val=0.25, seed=0)
    yield dataset
    dataset.delete()


def _service():
    from fiftyone.operators.delegated import DelegatedOperationService

    return DelegatedOperationService()


def _queue(dataset, operator: str, params: dict) -> str:
    """What the App's "Schedule" does; the queued operation's id."""
    import fiftyone.operators as foo

    queued = foo.execute_operator(operator, ctx={"dataset": dataset, "params": params}, request_delegation=True)
    assert queued.delegated, f"{operator} ran at once instead of being queued"
    return str(queued.result["id"])


def _doc(op_id):
    from bson import ObjectId

    return _service().get(ObjectId(str(op_id)))


def _delete(op_ids) -> None:
    from bson import ObjectId

    for op_id in op_ids:
        _service().delete_operation(ObjectId(str(op_id)))


# --------------------------------------------------------------------------- the claim, leases, stale heartbeats


def test_fiftyones_claim_of_a_queued_operation_is_atomic(dataset):
    """What every executor calls before it runs an operation (``execute_operation``): 8 at once."""
    from fiftyone.operators.executor import ExecutionRunState

    op_id = _queue(dataset, TRAIN, {"family": "late", "epochs": 1, "name": "never_run"})
    oid, services = _doc(op_id).id, [_service() for _ in range(8)]  # an executor each
    start = threading.Barrier(8)
    won = []

    def claim(i: int) -> None:
        start.wait()
        if services[i].set_running(oid, run_link=f"claimer {i}", required_state=ExecutionRunState.QUEUED):
            won.append(i)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        doc = _doc(op_id)
        assert len(won) == 1, won
        assert doc.run_state == ExecutionRunState.RUNNING and doc.run_link == f"claimer {won[0]}"
    finally:
        _delete([op_id])


def test_a_dataset_lease_is_held_by_one_executor_and_lapses_when_not_renewed(shared_database):
    from cilp_plugin.dataset.leases import acquire_lease, release_lease, renew_lease

    key = f"dataset:{uuid.uuid4().hex}"
    try:
        assert acquire_lease(key, "one", "op1", stale_after_s=60)
        assert acquire_lease(key, "one", "op2", stale_after_s=60)  # its own again
        assert not acquire_lease(key, "two", "op3", stale_after_s=60)
        release_lease(key, "two")  # not its lease: nothing happens
        assert not acquire_lease(key, "two", "op3", stale_after_s=60)
        assert renew_lease(key, "one", stale_after_s=0.5) and not renew_lease(key, "two", stale_after_s=60)
        time.sleep(1.0)  # "one" died: its lease lapses
        assert acquire_lease(key, "two", "op3", stale_after_s=60)
        assert not renew_lease(key, "one", stale_after_s=60)
        release_lease(key, "two")
        assert acquire_lease(key, "one", "op4", stale_after_s=60)
    finally:
        release_lease(key, "one")
        release_lease(key, "two")


def test_writes_outside_the_queue_wait_for_the_dataset_lease_a_worker_holds(dataset, capfd):
    """``cilp apply`` and "Execute" in the App write through a StagedWrite, which takes the lease an
    executor takes for such an operation: while a worker holds it, they wait."""
    import threading

    from cilp_plugin.dataset.leases import _leases, acquire_lease, dataset_lease, release_lease
    from cilp_plugin.writeback.staging import StagedWrite

    key = f"dataset:{dataset._doc.id}"
    assert acquire_lease(key, "cilp worker w1 (host h, pid 1)", "op1", stale_after_s=60)
    entered, left = threading.Event(), threading.Event()

    def write() -> None:
        with StagedWrite(dataset):
            entered.set()
            with dataset_lease(dataset):  # nested: held already by this thread, no wait
                pass
        left.set()

    writer = threading.Thread(target=write)
    try:
        writer.start()
        assert not entered.wait(2.0), "the staged write did not wait for the worker's lease"
        assert "is being written by cilp worker w1 (host h, pid 1): waiting" in capfd.readouterr().err
        release_lease(key, "cilp worker w1 (host h, pid 1)")
        assert entered.wait(10) and left.wait(10)
        writer.join(10)
        assert _leases().find_one({"_id": key}) is None  # released

        other = threading.Event()  # two threads of one process (the App server's): one waits for the other

        def second_writer() -> None:
            with dataset_lease(dataset):
                other.set()

        with dataset_lease(dataset):
            thread = threading.Thread(target=second_writer)
            thread.start()
            assert not other.wait(1.5), "a second thread of the process entered a held lease"
        assert other.wait(10)
        thread.join(10)
    finally:
        release_lease(key, "cilp worker w1 (host h, pid 1)")
        writer.join(10)


def test_a_dataset_written_in_this_process_is_known_to_its_pollers(dataset):
    """The runs panel polls in the App server's process; FiftyOne's ``ctx.dataset`` reloads the one
    dataset object of the process, which loses the fields that an apply running there ("Execute")
    is adding. So the panel asks ``being_written`` first: true from a staged write's start to its
    end, nested leases included, in any thread of the process."""
    import threading

    from cilp_plugin.dataset.leases import being_written, dataset_lease
    from cilp_plugin.writeback.staging import StagedWrite

    inside, finish = threading.Event(), threading.Event()

    def write() -> None:
        with StagedWrite(dataset):
            with dataset_lease(dataset):  # nested: held already
                pass
            inside.set()
            finish.wait(10)

    assert not being_written(dataset.name)
    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert inside.wait(10)
        assert being_written(dataset.name) and not being_written(f"{dataset.name}-other")
    finally:
        finish.set()
        writer.join(10)
    assert not being_written(dataset.name)


def test_a_lease_left_by_a_killed_process_of_this_host_is_taken_at_once(dataset):
    """A ``cilp apply`` killed with ``kill -9`` holds its lease until it lapses (5 min by default):
    the next writer on the same host sees its process gone and takes the lease over."""
    import socket
    from datetime import datetime, timedelta

    from cilp_plugin.dataset.leases import _leases, dataset_lease

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    key = f"dataset:{dataset._doc.id}"
    _leases().insert_one({"_id": key, "holder": "cilp apply (killed)", "expires_at": datetime.utcnow() + timedelta(
        hours=1), "owner": {"host": socket.gethostname(), "pid": dead.pid, "started": 0.0}})
    try:
        started = time.monotonic()
        with dataset_lease(dataset):
            assert _leases().find_one({"_id": key})["owner"]["pid"] == os.getpid()
        assert time.monotonic() - started < 5
    finally:
        _leases().delete_one({"_id": key})


def test_only_monitored_running_operations_with_a_stale_heartbeat_are_marked_failed(dataset):
    from fiftyone.operators.executor import ExecutionRunState

    from cilp_plugin.service.executor import _operations, fail_stale_operations

    ops = {name: _queue(dataset, TRAIN, {"family": "late", "epochs": 1, "name": name})
           for name in ("dead", "alive", "unmonitored", "queued")}
    old = datetime.utcnow() - timedelta(seconds=STALE + 5)
    try:
        for name, monitored, updated in (("dead", True, old), ("alive", True, datetime.utcnow()),
                                         ("unmonitored", False, old)):
            doc = _service().set_running(_doc(ops[name]).id, run_link=f"worker {name}", monitored=monitored,
                                         required_state=ExecutionRunState.QUEUED)
            assert doc is not None
            _operations().update_one({"_id": doc.id}, {"$set": {"updated_at": updated}})
        _operations().update_one({"_id": _doc(ops["queued"]).id}, {"$set": {"updated_at": old}})

        marked = fail_stale_operations(STALE, me="the test")
        assert [str(op_id) for op_id in marked] == [ops["dead"]]
        doc = _doc(ops["dead"])
        assert doc.run_state == ExecutionRunState.FAILED and doc.failed_at is not None
        assert "no heartbeat" in doc.result.error and "worker dead" in doc.result.error, doc.result.error
        assert "marked failed by the test" in doc.result.error
        assert [_doc(ops[name]).run_state for name in ("alive", "unmonitored", "queued")] == [
            ExecutionRunState.RUNNING, ExecutionRunState.RUNNING, ExecutionRunState.QUEUED]
        assert fail_stale_operations(STALE) == []  # once
    finally:
        _delete(ops.values())


RACE = """
import sys, time
from pathlib import Path
import fiftyone as fo
name, prefix, ready, go = sys.argv[1:]
dataset = fo.load_dataset(name)
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.001)
for i in range(20):  # what an apply's write-back does: a burst of field additions and renames
    dataset.add_sample_field(f"{prefix}{i}", fo.IntField)
"""


def test_two_processes_adding_fields_to_one_dataset_at_once_lose_some_hence_the_dataset_lease(
        dataset, shared_database, tmp_path):
    """Why an executor runs an operation that may change a dataset's fields only with the dataset's
    lease: FiftyOne re-reads a dataset's field list before each change and writes the whole list
    back, so changes of two processes at once overwrite each other."""
    env, go = {**os.environ, **shared_database}, tmp_path / "go"
    racers = [subprocess.Popen([sys.executable, "-c", RACE, dataset.name, f"race_{i}_", str(tmp_path / f"ready{i}"),
                                str(go)], env=env) for i in range(2)]
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
            assert all(r.poll() is None for r in racers) and time.monotonic() < deadline
            time.sleep(0.05)
        go.touch()
        assert [r.wait(120) for r in racers] == [0, 0]
        dataset.reload()
        kept = [name for name in dataset.get_field_schema() if name.startswith("race_")]
        print(f"{len(kept)} of 40 fields kept")
        assert len(kept) < 40, "FiftyOne kept every field: its schema writes may no longer need the dataset " \
                               "lease of cilp_plugin.dataset.leases"
    finally:
        for r in racers:
            r.kill()
        dataset.reload()
        for name in [name for name in dataset.get_field_schema() if name.startswith("race_")]:
            dataset.delete_sample_field(name)


def test_cilp_worker_refuses_to_start_without_the_plugin_or_with_a_too_short_stale_time(
        shared_database, tmp_path, monkeypatch, capsys):
    import fiftyone as fo

    from cilp_plugin.cli import main
    from cilp_plugin.service import app

    def started(*args, **kwargs):
        raise AssertionError("the worker started")

    monkeypatch.setattr(app, "run_worker", started)
    assert main(["worker", "--stale-after", "10"]) == 2  # heartbeat: FiftyOne's default 60 s
    assert "stale after 10 s: at least 3 heartbeats" in capsys.readouterr().err
    monkeypatch.setattr(fo.config, "plugins_dir", str(tmp_path))  # a machine without the plugin
    assert main(["worker"]) == 2
    error = capsys.readouterr().err
    assert "the cilp plugin's operators are not available here" in error and "FIFTYONE_PLUGINS_DIR" in error


# --------------------------------------------------------------------------- two workers


class Worker:
    """A ``cilp worker`` process, as on a machine of its own, with its log."""

    def __init__(self, name: str, env: dict, log: Path):
        self.name, self.log = name, log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cilp_plugin.cli", "worker", "--name", name], env=env, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def executor(self) -> psutil.Process:
        found = [p for p in psutil.Process(self.process.pid).children() if "executor" in p.cmdline()]
        assert len(found) == 1, found
        return found[0]

    def tree(self) -> list[psutil.Process]:
        supervisor = psutil.Process(self.process.pid)
        return [supervisor, *supervisor.children(recursive=True)]

    def ran(self, op_id: str) -> int:
        """How many times this worker started ``op_id`` (FiftyOne logs each run it claimed)."""
        return len(re.findall(rf"^Running operation {op_id} \(\S+\)$", self.text(), flags=re.M))


def _tail(workers: dict) -> str:
    return "\n".join(f"--- worker {name}:\n{w.text()[-3000:]}" for name, w in workers.items())


@pytest.fixture(scope="module")
def workers(shared_database, runs_dir, dataset, tmp_path_factory):
    """Two ``cilp worker`` processes on the shared database, ready."""
    logs = tmp_path_factory.mktemp("worker-logs")
    env = {**os.environ, **shared_database, "CILP_RUNS_DIR": str(runs_dir),
           "FIFTYONE_DELEGATED_OPERATION_MONITOR_INTERVAL": str(HEARTBEAT), "CILP_WORKER_STALE_S": str(STALE)}
    env.pop("FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS", None)
    started = {name: Worker(name, env, logs / f"{name}.log") for name in WORKERS}
    try:
        deadline = time.monotonic() + 120
        while not all("executor ready" in w.text() for w in started.values()):
            dead = {name: w.process.returncode for name, w in started.items() if w.process.poll() is not None}
            if dead or time.monotonic() > deadline:
                pytest.fail(f"workers not ready (exited: {dead}):\n{_tail(started)}")
            time.sleep(0.25)
        yield started
    finally:
        for w in started.values():
            if w.process.poll() is None:
                w.process.send_signal(signal.SIGTERM)
        for w in started.values():
            try:
                w.process.wait(60)
            except subprocess.TimeoutExpired:
                for p in w.tree():
                    p.kill()
                w.process.wait(10)


def _wait(op_ids, workers: dict, states=("completed", "failed"), timeout: float = 240.0, until=None) -> dict:
    """op id -> its document once each is in one of ``states`` (and ``until(doc)`` holds)."""
    deadline = time.monotonic() + timeout
    docs = {}
    while time.monotonic() < deadline:
        docs = {op_id: _doc(op_id) for op_id in op_ids}
        if all(doc.run_state in states and (until is None or until(doc)) for doc in docs.values()):
            return docs
        time.sleep(0.25)
    states_now = {op_id: doc.run_state for op_id, doc in docs.items()}
    pytest.fail(f"after {timeout:.0f} s: {states_now}\n{_tail(workers)}")


def _ran_by(doc) -> str:
    """The worker that ran an operation: its name, from the claim's ``run_link``."""
    match = re.fullmatch(r"cilp worker (\S+) \(host \S+, pid \d+\)", doc.run_link or "")
    assert match, doc.run_link
    return match[1]


def _overlap(a, b) -> bool:
    return a.started_at < b.completed_at and b.started_at < a.completed_at


def test_two_workers_run_every_operation_once_and_every_result_lands_in_the_dataset(dataset, workers, runs_dir):
    import json

    from cilp_plugin.runs.registry import recorded_runs

    trainings = {name: _queue(dataset, TRAIN, {"family": family, "epochs": 1, "batch_size": 8, "name": name})
                 for name, family in (("t1", "late"), ("t2", "intermediate"), ("t3", "late"))}
    # each apply once its run exists (an apply queued earlier would find no run), beside the other trainings
    applies, deadline = {}, time.monotonic() + 240
    while len(applies) < len(trainings) and time.monotonic() < deadline:
        for name, op_id in trainings.items():
            if name not in applies and _doc(op_id).run_state in ("completed", "failed"):
                applies[name] = _queue(dataset, APPLY, {"run": name, "embedding_map": "none"})
        time.sleep(0.25)
    docs = _wait([*trainings.values(), *applies.values()], workers)

    for op_id, doc in docs.items():
        assert doc.run_state == "completed", (doc.operator, doc.result.error if doc.result else None)
        counts = {name: w.ran(op_id) for name, w in workers.items()}
        assert sum(counts.values()) == 1, f"operation {op_id} ({doc.operator}) ran {counts} times"
        assert counts[_ran_by(doc)] == 1, (counts, doc.run_link)
    by_worker = {name: sorted(op_id for op_id, doc in docs.items() if _ran_by(doc) == name) for name in WORKERS}
    print({name: len(ops) for name, ops in by_worker.items()})
    assert all(by_worker.values()), f"one worker ran everything: {by_worker}"
    training_docs = [docs[op_id] for op_id in trainings.values()]
    assert any(_overlap(x, y) for i, x in enumerate(training_docs) for y in training_docs[i + 1:]), \
        "no two trainings ran at the same time"
    apply_docs = [docs[op_id] for op_id in applies.values()]
    assert not any(_overlap(x, y) for i, x in enumerate(apply_docs) for y in apply_docs[i + 1:]), \
        "two applies wrote to the dataset at the same time (its lease)"

    dataset.reload()
    runs = recorded_runs(dataset)
    assert sorted(runs) == sorted(trainings)
    for name, run_dir in runs.items():
        assert run_dir.parent.parent == runs_dir.resolve() and docs[trainings[name]].result.result["run"] == name
        assert json.loads((run_dir / "manifest.json").read_text())["status"] == "finished"
        assert len((run_dir / "metrics.csv").read_text().strip().splitlines()) == 2, "one epoch, trained once"
    schema = dataset.get_field_schema()
    rgb = dataset.select_group_slices("rgb")
    for name in trainings:
        assert name in schema and f"{name}_embedding" in schema, f"'{name}' lost from the schema: {sorted(schema)}"
        assert rgb.count(name) == rgb.count() == 16 and rgb.count(f"{name}_embedding") == 16
        assert f"eval_{name}" in dataset.list_evaluations()


def _long_training(dataset, workers: dict, name: str):
    """A training queued and running (past its first batches): its id, document and worker."""
    op_id = _queue(dataset, TRAIN, {"family": "late", "epochs": 100_000, "batch_size": 4, "name": name})
    doc = _wait([op_id], workers, states=("running",), timeout=120,
                until=lambda d: "epoch" in (getattr(d.status, "label", None) or ""))[op_id]
    return op_id, doc, workers[_ran_by(doc)]


def _final_run_folder(dataset, runs_dir: Path, name: str) -> Path:
    return runs_dir.resolve() / dataset.slug / name


def test_a_killed_workers_operation_is_marked_failed_and_the_other_worker_goes_on(dataset, workers, runs_dir):
    from cilp_plugin.runs.registry import recorded_runs

    # 1. a worker's executor killed (e.g. for memory), its supervisor alive: the training's process it
    #    leaves is killed, the executor restarted; the operation marked failed once its heartbeat is stale
    op_id, doc, worker = _long_training(dataset, workers, "killed_executor")
    executor = worker.executor()
    left = [p for p in executor.children(recursive=True)]
    assert left, "the training runs in a process of its own"
    restarts = worker.text().count("executor ready")
    executor.kill()
    doc = _wait([op_id], workers, states=("failed",), timeout=STALE + 60)[op_id]
    assert "no heartbeat" in doc.result.error and f"cilp worker {worker.name} " in doc.result.error, doc.result.error
    _, alive = psutil.wait_procs(left, timeout=30)
    assert not alive, f"left running by the killed executor: {alive}\n{worker.text()[-3000:]}"
    deadline = time.monotonic() + 60
    while worker.text().count("executor ready") == restarts and time.monotonic() < deadline:
        time.sleep(0.25)
    assert worker.text().count("executor ready") == restarts + 1, worker.text()[-3000:]
    assert "killed_executor" not in recorded_runs(dataset.reload() or dataset)
    assert not _final_run_folder(dataset, runs_dir, "killed_executor").exists()

    # 2. a worker killed outright, with everything it runs (a lost machine): the other marks its training
    #    failed and goes on with the queue; nothing of the killed run is in the dataset
    op_id, doc, victim = _long_training(dataset, workers, "killed_worker")
    survivor = next(w for w in workers.values() if w is not victim)
    schema, runs = set(dataset.get_field_schema()), set(recorded_runs(dataset))
    evaluations = set(dataset.list_evaluations())
    tree, killed_at = victim.tree(), time.monotonic()
    for process in tree:
        process.kill()
    psutil.wait_procs(tree, timeout=30)
    victim.process.wait(10)
    after = _queue(dataset, APPLY, {"run": "t1", "field": "after_kill", "embedding_map": "none"})
    doc = _wait([op_id], {survivor.name: survivor}, states=("failed",), timeout=STALE + 60)[op_id]
    print(f"marked failed {time.monotonic() - killed_at:.1f} s after the kill")
    assert f"cilp worker {victim.name} " in doc.result.error and "no heartbeat" in doc.result.error
    assert f"marked failed by cilp worker {survivor.name} " in doc.result.error, doc.result.error
    done = _wait([after], {survivor.name: survivor})[after]
    assert done.run_state == "completed", done.result.error if done.result else done
    assert _ran_by(done) == survivor.name
    dataset.reload()
    assert set(recorded_runs(dataset)) == runs
    assert set(dataset.get_field_schema()) == schema | {"after_kill", "after_kill_embedding", "eval_after_kill"}
    assert set(dataset.list_evaluations()) == evaluations | {"eval_after_kill"}
    assert not _final_run_folder(dataset, runs_dir, "killed_worker").exists()

    # 3. the last worker stopped (SIGTERM, as Ctrl-C) while it trains: that operation is marked failed
    #    (interrupted) at once, and the worker exits 0
    op_id, doc, worker = _long_training(dataset, {survivor.name: survivor}, "stopped_worker")
    survivor.process.send_signal(signal.SIGTERM)
    assert survivor.process.wait(60) == 0, survivor.text()[-3000:]
    doc = _doc(op_id)
    assert doc.run_state == "failed" and "interrupted" in doc.result.error and "SIGTERM" in doc.result.error, \
        (doc.run_state, doc.result and doc.result.error)
    assert set(recorded_runs(dataset.reload() or dataset)) == runs
    shutil.rmtree(runs_dir.resolve() / dataset.slug / ".partial", ignore_errors=True)
