"""Training scheduled from the App: queued, run by an executor, stopped together with the App.

- ``fiftyone delegated launch`` (FiftyOne's own executor, what a user runs beside an
  existing FiftyOne) runs a queued ``train_fusion``: completed, with its result and
  progress; a run that fails is marked failed with its error and leaves the dataset and
  the run it was to replace as they were.
- ``cilp app`` (``make app``) serves the App with "Schedule" available and an executor: a
  training scheduled through the App's route completes; a killed executor is restarted;
  Ctrl-C stops the App, the executor and the training it runs, which is marked failed
  (interrupted) and leaves the finished run it was to replace intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import fiftyone.operators as foo
import psutil
import pytest
from bson import ObjectId
from fiftyone.operators.delegated import DelegatedOperationService
from fiftyone.operators.executor import ExecutionRunState

from cilp_plugin.runs.registry import find_run

TRAIN = "@cilp/multimodal/train_fusion"
TERMINAL = (ExecutionRunState.COMPLETED, ExecutionRunState.FAILED)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """CILP_RUNS_DIR of this process and of the executors it starts."""
    path = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CILP_RUNS_DIR", str(path))
        yield path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env() -> dict:
    """This process's environment (the private database, plugins dir, runs dir) without
    the setting under test."""
    env = dict(os.environ)
    env.pop("FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS", None)
    return env


def _log_tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no output)"


def _wait_for(operation_id, states, process: subprocess.Popen, log: Path, timeout: float = 150.0,
              seen: list | None = None, until=None):
    """The operation once its run_state is one of ``states`` (and ``until(doc)`` holds);
    ``seen`` collects the progress it reports on the way."""
    service = DelegatedOperationService()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = service.get(ObjectId(str(operation_id)))
        status = getattr(doc, "status", None)
        if seen is not None and status is not None and (status.progress, status.label) not in seen:
            seen.append((status.progress, status.label))
        if doc.run_state in states and (until is None or until(doc)):
            return doc
        if process.poll() is not None:
            pytest.fail(f"the executor exited ({process.returncode}) with the operation {doc.run_state}:\n"
                        f"{_log_tail(log)}")
        time.sleep(0.2)
    pytest.fail(f"the operation is still {doc.run_state} after {timeout:.0f} s:\n{_log_tail(log)}")


def _stop(process: subprocess.Popen, timeout: float = 60.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            pytest.fail(f"pid {process.pid} did not stop within {timeout:.0f} s of SIGTERM")
    return process.returncode


def _state(dataset) -> dict:
    """What a failed run must leave as it was."""
    dataset.reload()
    return {"fields": sorted(dataset.get_field_schema(flat=True)), "runs": sorted(dataset.list_runs()),
            "info": json.dumps(dataset.info, sort_keys=True, default=str), "tags": dataset.count_sample_tags(),
            "evaluations": dataset.list_evaluations(), "brain_runs": dataset.list_brain_runs()}


def _folder(path: Path) -> dict:
    """File -> SHA-256 of everything in a run folder."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _fiftyone_command() -> list[str]:
    """The ``fiftyone`` command of this environment."""
    script = Path(sys.executable).parent / "fiftyone"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from fiftyone.core.cli import main; sys.argv[0] = 'fiftyone'; main()"]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _failing_params() -> tuple[dict, str]:
    """Parameters the form accepts and ``execute`` refuses, and the error they give."""
    if not _cuda():
        return {"device": "cuda"}, "'cuda' requested but no CUDA device is available"
    return {"train_tag": "val"}, "tagged both 'val' and 'val'"


# --------------------------------------------------------------------------- fiftyone delegated launch


def test_fiftyone_delegated_launch_runs_a_queued_training_and_marks_a_failed_one(split_dataset, runs_dir,
                                                                                  tmp_path):
    dataset = split_dataset
    queued = foo.execute_operator(TRAIN, ctx={"dataset": dataset, "params": {
        "family": "late", "epochs": 1, "batch_size": 8, "name": "queued_late"}}, request_delegation=True)
    assert queued.delegated, "train_fusion ran at once instead of being queued"
    op_id = queued.result["id"]
    assert DelegatedOperationService().get(op_id).run_state == ExecutionRunState.QUEUED
    with pytest.raises(ValueError):
        find_run(dataset, "queued_late")  # nothing trained yet

    log = tmp_path / "executor.log"
    with open(log, "wb") as out:
        executor = subprocess.Popen(_fiftyone_command() + ["delegated", "launch"],
                                    env=_child_env(), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
    try:
        seen = []
        doc = _wait_for(op_id, TERMINAL, executor, log, seen=seen)
        assert doc.run_state == ExecutionRunState.COMPLETED, doc.result.error if doc.result else doc
        result = doc.result.result
        assert result["run"] == "queued_late" and result["best_epoch"] == 1
        assert 0 <= result["val_accuracy"] <= 1 and result["params"] == 1_994_793
        assert doc.status.progress == 1.0 and "queued_late: epoch 1/1: val loss" in doc.status.label, doc.status
        assert any("epoch 1/1" in label for _, label in seen), seen
        assert doc.metadata["outputs_schema"], "no result form for the App"
        run_dir = find_run(dataset.reload() or dataset, "queued_late")
        assert run_dir == Path(result["run_dir"]) and (run_dir / "model.safetensors").is_file()
        assert json.loads((run_dir / "manifest.json").read_text())["status"] == "finished"

        # a run that fails in execute: failed, with its error; the dataset and the earlier run untouched
        before, folder = _state(dataset), _folder(run_dir)
        params, message = _failing_params()
        failing = foo.execute_operator(TRAIN, ctx={"dataset": dataset, "params": {
            "family": "late", "epochs": 1, "batch_size": 8, "name": "queued_late", "overwrite": True,
            **params}}, request_delegation=True)
        assert failing.delegated
        doc = _wait_for(failing.result["id"], TERMINAL, executor, log)
        assert doc.run_state == ExecutionRunState.FAILED
        assert message in doc.result.error, doc.result.error
        assert _state(dataset) == before
        assert find_run(dataset, "queued_late") == run_dir and _folder(run_dir) == folder
    finally:
        _stop(executor)


# --------------------------------------------------------------------------- cilp app


def _post(url: str, route: str, body: dict) -> dict:
    request = urllib.request.Request(f"{url}{route}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def _wait_until_served(url: str, process: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"cilp app exited ({process.returncode}):\n{_log_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/fiftyone", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    pytest.fail(f"the App did not answer within {timeout:.0f} s:\n{_log_tail(log)}")


def _role(process: psutil.Process) -> str:
    """What a child of ``cilp app`` is: ``server`` or ``executor``."""
    command = process.cmdline()
    return next((arg for arg in command if arg in ("server", "executor")), " ".join(command))


def _schedule(url: str, dataset, params: dict) -> str:
    """What the App's "Schedule" sends; the queued operation's id."""
    answer = _post(url, "/operators/execute", {
        "dataset_name": dataset.name, "operator_uri": TRAIN, "params": params, "view": [],
        "request_delegation": True})
    assert answer.get("delegated") is True and not answer.get("error"), answer
    op_id = answer["result"]["id"]
    return op_id["$oid"] if isinstance(op_id, dict) else op_id  # extended JSON


def test_cilp_app_schedules_trainings_runs_them_and_stops_with_its_executor(split_dataset, runs_dir, tmp_path):
    dataset = split_dataset
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "cilp-app.log"
    with open(log, "wb") as out:
        app = subprocess.Popen([sys.executable, "-m", "cilp_plugin.cli", "app", dataset.name, "--port", str(port)],
                               env=_child_env(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)  # a terminal of its own: Ctrl-C is SIGINT to its group
    try:
        _wait_until_served(url, app, log)

        # the form's split button: "Schedule" available, and the default for training
        options = _post(url, "/operators/resolve-execution-options",
                        {"dataset_name": dataset.name, "operator_uri": TRAIN, "params": {}})
        assert options["allow_delegated_execution"] and options["default_choice_to_delegated"], options
        assert options["orchestrator_registration_enabled"] is False, \
            "the App would show 'Schedule - NOT AVAILABLE' (FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS unset)"

        op_id = _schedule(url, dataset, {"family": "late", "epochs": 1, "batch_size": 8, "name": "app_late"})
        doc = _wait_for(op_id, TERMINAL, app, log)
        assert doc.run_state == ExecutionRunState.COMPLETED, doc.result.error if doc.result else doc
        assert doc.result.result["run"] == "app_late" and doc.status.progress == 1.0
        assert sorted(_role(p) for p in psutil.Process(app.pid).children()) == ["executor", "server"]
        run_dir = find_run(dataset.reload() or dataset, "app_late")
        folder = _folder(run_dir)

        # the executor killed (e.g. out of memory): restarted
        executor = next(p for p in psutil.Process(app.pid).children() if _role(p) == "executor")
        ready = _log_tail(log, 1_000_000).count("executor ready")
        executor.kill()
        deadline = time.monotonic() + 60
        while _log_tail(log, 1_000_000).count("executor ready") == ready and time.monotonic() < deadline:
            time.sleep(0.25)
        restarted = [p for p in psutil.Process(app.pid).children() if _role(p) == "executor"]
        assert len(restarted) == 1 and restarted[0].pid != executor.pid, _log_tail(log)

        # app_late trained again, longer, and the App stopped meanwhile: the new run is marked failed
        # (interrupted), the dataset and the finished app_late are as they were
        before = _state(dataset)
        op_id = _schedule(url, dataset, {"family": "late", "epochs": 10_000, "batch_size": 8, "name": "app_late",
                                         "overwrite": True})
        seen = []
        _wait_for(op_id, [ExecutionRunState.RUNNING], app, log, seen=seen,
                  until=lambda doc: "epoch" in (getattr(doc.status, "label", None) or ""))
        children = psutil.Process(app.pid).children(recursive=True)  # now with the training's process
        assert len(children) >= 3, children
        started = time.monotonic()
        os.killpg(app.pid, signal.SIGINT)  # Ctrl-C
        assert app.wait(60) == 0, _log_tail(log)
        print(f"cilp app stopped in {time.monotonic() - started:.1f} s")
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"still running after cilp app stopped: {alive}"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()

        doc = DelegatedOperationService().get(ObjectId(str(op_id)))
        assert doc.run_state == ExecutionRunState.FAILED, doc.run_state
        assert "interrupted" in doc.result.error and "SIGTERM" in doc.result.error, doc.result.error
        assert _state(dataset) == before
        assert find_run(dataset, "app_late") == run_dir and _folder(run_dir) == folder
    finally:
        _stop(app)


def test_cilp_app_refuses_a_busy_port_or_an_unknown_dataset_before_starting_anything(split_dataset, capsys):
    from cilp_plugin.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        before = psutil.Process().children(recursive=True)
        assert main(["app", split_dataset.name, "--port", str(port)]) == 2
        assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err
        assert psutil.Process().children(recursive=True) == before
    assert main(["app", "no-such-dataset", "--port", str(_free_port())]) == 2
    assert "dataset 'no-such-dataset' does not exist" in capsys.readouterr().err
