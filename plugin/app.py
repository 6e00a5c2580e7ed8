"""``cilp app``: the FiftyOne App and an executor for its background runs, started and stopped together.

FiftyOne (open source) runs an operator from the App in one of two ways:

- "Execute": synchronously, inside one request to the App server, which FiftyOne cuts
  off after ``FIFTYONE_OPERATOR_TIMEOUT`` (600 s): fine for short operations only;
- "Schedule": queued in the database as a delegated operation and run by an executor
  (what ``fiftyone delegated launch`` runs). The App offers it only when its server runs
  with ``FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS=true``; "Schedule" is otherwise shown as
  NOT AVAILABLE.

``run_app`` starts two child processes with the same environment, that setting included:

- the App server (``python -m fiftyone.server.main``), and
- an executor serving the queue as ``fiftyone delegated launch`` does (FiftyOne's
  ``DelegatedOperationService``, one operation at a time, each in a child process that
  FiftyOne monitors, so a crash or an out-of-memory kill of a training marks it failed),
  except that it takes the oldest scheduled operation first, and that an operation it is
  running when it is stopped is marked failed ("interrupted") instead of staying
  "running" forever.

How they stop (the policy):

- Ctrl-C, SIGTERM or SIGHUP to ``cilp app``: the executor first (its running operation
  is marked failed), then the App server; exit status 0.
- The App server exits on its own: the executor is stopped too; exit status 1.
- The executor exits on its own (killed, crashed): it is restarted, since the App is in
  use and scheduled runs would otherwise wait forever; if it exits within
  ``QUICK_EXIT_S`` of its start ``MAX_QUICK_EXITS`` times in a row (a settings or
  database problem, not a one-off), everything stops; exit status 1.
- ``cilp app`` killed outright (SIGKILL): the kernel sends both children SIGTERM
  (``PR_SET_PDEATHSIG``, Linux), and they stop as above.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

#: an executor that exits this soon after its start counts as a quick exit
QUICK_EXIT_S = 30.0
#: that many quick exits in a row stop ``cilp app``
MAX_QUICK_EXITS = 3
#: how long a child has to stop after SIGTERM before it is killed (the executor stops its
#: running operation's process tree first: FiftyOne gives that up to 25 s)
STOP_TIMEOUT_S = {"executor": 45.0, "server": 15.0}
SERVER_START_TIMEOUT_S = 120.0
#: the error a scheduled operation gets when its executor is stopped while it runs
INTERRUPTED = ("interrupted: the executor running this operation was stopped ({signal}), "
               "e.g. `cilp app` ended; schedule it again to rerun it")
PARENT_ENV = "CILP_APP_PARENT"


#: the signals that stop `cilp app` and its executor like Ctrl-C (no SIGHUP on Windows)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class _Stop(KeyboardInterrupt):
    """SIGTERM / SIGHUP, handled like Ctrl-C."""


def _raise_stop(signum, frame):
    # one stop is enough: a second signal must not interrupt the cleanup
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise _Stop(signal.Signals(signum).name)


def _handle_stop_signals() -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stop)


# --------------------------------------------------------------------------- the children


def _die_with_parent() -> None:
    """SIGTERM to this process when ``cilp app`` ends, however it ends (Linux)."""
    parent = int(os.environ.get(PARENT_ENV) or 0)
    if not parent:  # started by hand, not by `cilp app`
        return
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it ended before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def serve_app(port: int, address: str) -> None:
    """The App server, as ``python -m fiftyone.server.main`` runs it."""
    from fiftyone.server.main import start_server  # sets FIFTYONE_SERVER before importing fiftyone

    start_server(port=port, address=address)


def serve_queue(poll_s: float = 0.5) -> int:
    """Run scheduled (delegated) operations, oldest first, until SIGINT / SIGTERM.

    What ``fiftyone delegated launch`` does, through the same ``DelegatedOperationService``;
    an operation running when the executor is stopped is marked failed (``INTERRUPTED``).
    """
    import fiftyone as fo
    from fiftyone.factory import DelegatedOperationPagingParams, SortByField, SortDirection
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionResult, ExecutionRunState

    service = DelegatedOperationService()
    oldest_first = DelegatedOperationPagingParams(sort_by=SortByField.QUEUED_AT,
                                                  sort_direction=SortDirection.ASCENDING, limit=1)
    print("cilp app: executor ready: scheduled operations run here, one at a time", flush=True)
    current = None
    try:
        while True:
            for operation in service.list_operations(run_state=ExecutionRunState.QUEUED, paging=oldest_first):
                current = operation
                service.execute_operation(operation, log=True, monitor=True,
                                          check_interval_seconds=fo.config.delegated_operation_monitor_interval)
                current = None
            time.sleep(poll_s)
    except KeyboardInterrupt as stop:
        if current is not None:  # still RUNNING (only then): failed, with the reason
            error = INTERRUPTED.format(signal=str(stop) or "SIGINT")
            if service.set_failed(current.id, result=ExecutionResult(error=error, error_message=error),
                                  required_state=ExecutionRunState.RUNNING):
                print(f"cilp app: operation {current.id} ({current.operator}) marked failed: interrupted",
                      flush=True)
    return 0


def _child_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cilp_plugin.app")
    sub = parser.add_subparsers(dest="role", required=True)
    server = sub.add_parser("server")
    server.add_argument("--port", type=int, required=True)
    server.add_argument("--address", required=True)
    sub.add_parser("executor")
    args = parser.parse_args(argv)
    _die_with_parent()
    if args.role == "server":
        serve_app(args.port, args.address)
        return 0
    _handle_stop_signals()
    return serve_queue()


# --------------------------------------------------------------------------- the supervisor


class _Child:
    def __init__(self, role: str, argv: list[str], env: dict):
        self.role, self.argv, self.env = role, argv, env
        self.process: subprocess.Popen | None = None
        self.started = 0.0

    def start(self) -> None:
        # a session of its own: Ctrl-C reaches `cilp app` only, which stops the children in order
        self.process = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, start_new_session=True)
        self.started = time.monotonic()

    def exited(self) -> int | None:
        return self.process.poll() if self.process else None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT_S[self.role])
        except subprocess.TimeoutExpired:
            print(f"cilp app: the {self.role} did not stop within {STOP_TIMEOUT_S[self.role]:.0f} s: killed",
                  file=sys.stderr, flush=True)
            self.process.kill()
            self.process.wait()


def check_port_free(address: str, port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server: closed connections do not count
        try:
            s.bind((address, port))
        except OSError as exc:
            raise ValueError(f"port {port} on {address} is in use ({exc.strerror}): another App? Stop it, or "
                             f"choose another port with --port (make app PORT=...)") from None


def _wait_for_server(server: _Child, url: str, timeout: float = SERVER_START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.exited() is not None:
            raise RuntimeError(f"the App server exited with status {server.exited()} (see its output above)")
        try:
            with urllib.request.urlopen(f"{url}/fiftyone", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the App server did not answer {url}/fiftyone within {timeout:.0f} s")


def run_app(name: str, port: int = 5151, address: str = "127.0.0.1", executor: bool = True) -> int:
    """Serve the App on ``address:port`` showing dataset ``name`` and, with ``executor``,
    run what is scheduled from it; until Ctrl-C / SIGTERM (see the module docstring)."""
    check_port_free(address, port)
    env = {**os.environ, PARENT_ENV: str(os.getpid())}
    if executor:
        env["FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS"] = "true"  # the App offers "Schedule"
    me = [sys.executable, "-m", "cilp_plugin.app"]
    server = _Child("server", me + ["server", "--port", str(port), "--address", address], env)
    worker = _Child("executor", me + ["executor"], env) if executor else None
    url = f"http://{address}:{port}"
    status, quick_exits = 0, 0
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    _handle_stop_signals()
    try:
        server.start()
        if worker:
            worker.start()
        _wait_for_server(server, url)
        print(f"the App shows '{name}' at {url}/datasets/{urllib.parse.quote(name)} (Ctrl-C to stop)", flush=True)
        if worker:
            print("background runs: choose 'Schedule' in an operator's form; this process runs them "
                  "(`fiftyone delegated list` shows them)", flush=True)
        while True:
            if server.exited() is not None:
                print(f"cilp app: the App server exited (status {server.exited()}): stopping",
                      file=sys.stderr, flush=True)
                status = 1
                break
            if worker and worker.exited() is not None:
                quick = time.monotonic() - worker.started < QUICK_EXIT_S
                quick_exits = quick_exits + 1 if quick else 0
                if quick_exits >= MAX_QUICK_EXITS:
                    print(f"cilp app: the executor exited {quick_exits} times within {QUICK_EXIT_S:.0f} s of its "
                          f"start (last status {worker.exited()}): stopping", file=sys.stderr, flush=True)
                    status = 1
                    break
                print(f"cilp app: the executor exited (status {worker.exited()}): restarting it",
                      file=sys.stderr, flush=True)
                worker.start()
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("cilp app: stopping the executor and the App", flush=True)
    finally:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # the children stop in order, whatever comes now
        if worker:
            worker.stop()
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


if __name__ == "__main__":
    sys.exit(_child_main())
