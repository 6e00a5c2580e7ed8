"""``cilp app`` and ``cilp worker``: the FiftyOne App and executors for its background runs.

The App offers "Schedule" (an operation queued in the database, run by an executor, with no time
limit) only when its server runs with ``FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS=true``; the user's
side of this is in docs/background-runs.md.

``run_app`` starts two child processes with the same environment, that setting included:

- the App server (``python -m fiftyone.server.main``), and
- an executor (:mod:`cilp_plugin.service.executor`): it serves the queue as ``fiftyone delegated
  launch -m`` does (FiftyOne's ``DelegatedOperationService``, one operation at a time, each
  in a child process that FiftyOne monitors, so a crash or an out-of-memory kill of a
  training marks it failed), except that it takes the oldest scheduled operation first,
  that an operation it is running when it is stopped is marked failed ("interrupted")
  instead of staying "running" forever, that it marks failed the operations of executors
  that died (their heartbeat went stale), and that it runs an operation that may change a
  dataset's fields only while no other executor does so on that dataset.

``run_worker`` (``cilp worker``) starts the executor alone, for machines that run no App:
any number of them, on any number of machines, serve one database
(``FIFTYONE_DATABASE_URI``), each operation exactly once.

How they stop (the policy, the same for both):

- Ctrl-C, SIGTERM or SIGHUP: the executor first (its running operation is marked
  failed), then the App server; exit status 0.
- The App server exits on its own: the executor is stopped too; exit status 1.
- The executor exits on its own (killed, crashed): what it left running (the
  operation's process) is killed, and it is restarted, since scheduled runs would
  otherwise wait forever; if it exits within ``QUICK_EXIT_S`` of its start
  ``MAX_QUICK_EXITS`` times in a row (a settings or database problem, not a one-off),
  everything stops; exit status 1. The operation it was running is marked failed by an
  executor (this one, restarted, or another) once its heartbeat is stale.
- ``cilp app`` / ``cilp worker`` killed outright (SIGKILL): the kernel sends the children
  SIGTERM (``PR_SET_PDEATHSIG``, Linux), and they stop as above.
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

from .executor import Settings, serve_queue
from .executor import add_arguments as add_executor_arguments
from .executor import settings_from as executor_settings

#: an executor that exits this soon after its start counts as a quick exit
QUICK_EXIT_S = 30.0
#: that many quick exits in a row stop ``cilp app`` (``cilp worker``)
MAX_QUICK_EXITS = 3
#: how long a child has to stop after SIGTERM before it is killed (the executor stops its
#: running operation's process tree first: FiftyOne gives that up to 25 s)
STOP_TIMEOUT_S = {"executor": 45.0, "server": 15.0}
SERVER_START_TIMEOUT_S = 120.0
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
    """The App server, as ``python -m fiftyone.server.main`` runs it, without the traceback that
    Python 3.11 prints for each connection still open when it stops (:func:`_quiet_cancelled`)."""
    import asyncio

    from fiftyone.server.main import start_server  # sets FIFTYONE_SERVER before importing fiftyone

    class QuietStopPolicy(asyncio.DefaultEventLoopPolicy):
        def new_event_loop(self):
            loop = super().new_event_loop()
            loop.set_exception_handler(_quiet_cancelled)
            return loop

    asyncio.set_event_loop_policy(QuietStopPolicy())
    start_server(port=port, address=address)


def _quiet_cancelled(loop, context: dict) -> None:
    """An event loop's exception handler that drops ``CancelledError``: when the server stops, it
    cancels the connections still open (the App's event stream), and asyncio's stream callback
    reports each as "Exception in callback ... CancelledError" with a traceback (Python 3.11)."""
    import asyncio

    if isinstance(context.get("exception"), asyncio.CancelledError):
        return
    loop.default_exception_handler(context)


def _child_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cilp_plugin.service.app")
    sub = parser.add_subparsers(dest="role", required=True)
    server = sub.add_parser("server")
    server.add_argument("--port", type=int, required=True)
    server.add_argument("--address", required=True)
    add_executor_arguments(sub.add_parser("executor"))
    args = parser.parse_args(argv)
    _die_with_parent()
    if args.role == "server":
        serve_app(args.port, args.address)
        return 0
    _handle_stop_signals()
    return serve_queue(executor_settings(args))


# --------------------------------------------------------------------------- the supervisor


class _Child:
    def __init__(self, role: str, argv: list[str], env: dict, label: str = "cilp app"):
        self.role, self.argv, self.env, self.label = role, argv, env, label
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
            print(f"{self.label}: the {self.role} did not stop within {STOP_TIMEOUT_S[self.role]:.0f} s: killed",
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


def app_answers(url: str) -> bool:
    """Whether the App server at ``url`` answers ``GET /fiftyone``."""
    try:
        with urllib.request.urlopen(f"{url}/fiftyone", timeout=2) as answer:
            return answer.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _wait_for_server(server: _Child, url: str, timeout: float = SERVER_START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.exited() is not None:
            raise RuntimeError(f"the App server exited with status {server.exited()} (see its output above)")
        if app_answers(url):
            return
        time.sleep(0.25)
    raise RuntimeError(f"the App server did not answer {url}/fiftyone within {timeout:.0f} s")


def _set_subreaper(on: bool) -> bool:
    """Adopt this process's orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``): an operation's
    process outlives a killed executor (it runs in a session of its own) and is killed here."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, int(on), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _kill_orphans(label: str, keep: set[int], report: bool = True) -> None:
    """Kill (with their descendants) the children of this process it did not start: what a dead
    executor left running, adopted as its subreaper (``report``: say so)."""
    import psutil

    for child in psutil.Process().children():
        if child.pid in keep:
            continue
        try:
            tree = [child, *child.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in tree:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(tree, timeout=10)
        if report:
            print(f"{label}: killed process {child.pid} ({len(tree)} in all), left running by the executor",
                  file=sys.stderr, flush=True)


def _supervise(label: str, server: _Child | None, worker: _Child | None, started=None) -> int:
    """Run ``server`` and ``worker`` until a stop signal or the server's exit, ``worker`` restarted
    as the module docstring says; ``started()`` once both are started. The exit status."""
    import psutil

    status, quick_exits = 0, 0
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    _handle_stop_signals()
    theirs = {child.pid for child in psutil.Process().children()}  # not ours to clean up (e.g. in tests)
    subreaper = _set_subreaper(True)
    ours = [child for child in (server, worker) if child]

    def keep() -> set[int]:
        return theirs | {child.process.pid for child in ours if child.process}

    try:
        for child in ours:
            child.start()
        if started:
            started()
        while True:
            if server and server.exited() is not None:
                print(f"{label}: the App server exited (status {server.exited()}): stopping",
                      file=sys.stderr, flush=True)
                status = 1
                break
            if worker and worker.exited() is not None:
                if subreaper:
                    _kill_orphans(label, keep())
                quick = time.monotonic() - worker.started < QUICK_EXIT_S
                quick_exits = quick_exits + 1 if quick else 0
                if quick_exits >= MAX_QUICK_EXITS:
                    print(f"{label}: the executor exited {quick_exits} times within {QUICK_EXIT_S:.0f} s of its "
                          f"start (last status {worker.exited()}): stopping", file=sys.stderr, flush=True)
                    status = 1
                    break
                print(f"{label}: the executor exited (status {worker.exited()}): restarting it",
                      file=sys.stderr, flush=True)
                worker.start()
            time.sleep(0.5)
    except KeyboardInterrupt:
        stopping = " and ".join(("the executor",) * bool(worker) + ("the App",) * bool(server))
        print(f"{label}: stopping {stopping}", flush=True)
    finally:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # the children stop in order, whatever comes now
        if worker:
            worker.stop()
        if server:
            server.stop()
        if subreaper:  # e.g. multiprocessing's resource tracker of a stopped executor, or what a killed one left
            _kill_orphans(label, keep(), report=False)
            _set_subreaper(False)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


def _child_env() -> dict:
    return {**os.environ, PARENT_ENV: str(os.getpid())}


def run_app(name: str, port: int = 5151, address: str = "127.0.0.1", executor: bool = True,
            settings: Settings | None = None) -> int:
    """Serve the App on ``address:port`` showing dataset ``name`` and, with ``executor``,
    run what is scheduled from it; until Ctrl-C / SIGTERM (see the module docstring)."""
    check_port_free(address, port)
    env = _child_env()
    me = [sys.executable, "-m", "cilp_plugin.service.app"]
    worker = None
    if executor:
        env["FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS"] = "true"  # the App offers "Schedule"
        settings = (settings or Settings()).resolved()  # checked before anything starts
        worker = _Child("executor", me + ["executor", *settings.argv()], env)
    server = _Child("server", me + ["server", "--port", str(port), "--address", address], env)
    url = f"http://{address}:{port}"

    def started() -> None:
        _wait_for_server(server, url)
        print(f"the App shows '{name}' at {url}/datasets/{urllib.parse.quote(name)} (Ctrl-C to stop)", flush=True)
        if worker:
            print("background runs: choose 'Schedule' in an operator's form; this process runs them "
                  "(`fiftyone delegated list` shows them)", flush=True)

    return _supervise("cilp app", server, worker, started)


def run_worker(settings: Settings | None = None) -> int:
    """Run scheduled operations of FiftyOne's database (``FIFTYONE_DATABASE_URI``) here, beside any
    other executors, until Ctrl-C / SIGTERM; the executor restarted as ``cilp app``'s is."""
    settings = (settings or Settings(label="cilp worker")).resolved()
    worker = _Child("executor", [sys.executable, "-m", "cilp_plugin.service.app", "executor", *settings.argv()],
                    _child_env(), label=settings.label)
    return _supervise(settings.label, None, worker)


if __name__ == "__main__":
    sys.exit(_child_main())
