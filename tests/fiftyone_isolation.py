"""A private MongoDB and FiftyOne configuration for one test run.

Imported by ``conftest.py`` before anything imports fiftyone: FiftyOne reads its
environment at import time, and its auto-started mongod is shared by every
process of the user, so tests get their own server and database name.
"""

import atexit
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mongod exited with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"mongod did not listen on port {port} within {timeout:.0f} s")


def start() -> dict:
    """Start a private mongod and point FiftyOne at it; returns the environment set."""
    if "fiftyone" in __import__("sys").modules:
        raise RuntimeError("fiftyone was imported before the test database was set up")
    spec = importlib.util.find_spec("fiftyone")  # does not import it
    if spec is None:  # a torch-only machine (benchmarks/gpu_check.sh): the mm_models tests still run
        return {}
    package = Path(spec.origin).parent
    mongod = package / "db" / "bin" / "mongod"
    workdir = Path(tempfile.mkdtemp(prefix="cilp-test-fiftyone-"))
    (workdir / "db").mkdir()
    port = _free_port()
    server = subprocess.Popen(
        [str(mongod), "--dbpath", str(workdir / "db"), "--port", str(port), "--bind_ip", "127.0.0.1",
         "--nounixsocket", "--quiet", "--logpath", str(workdir / "mongod.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def stop():  # registered before fiftyone's own exit handlers, so it runs after them
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(workdir, ignore_errors=True)

    atexit.register(stop)
    _wait_for_port(port, server)
    env = {
        "FIFTYONE_DATABASE_URI": f"mongodb://127.0.0.1:{port}",
        "FIFTYONE_DATABASE_NAME": f"cilp-test-{uuid.uuid4().hex[:8]}",
        "FIFTYONE_DATABASE_VALIDATION": "false",
        "FIFTYONE_DO_NOT_TRACK": "true",
        "FIFTYONE_PLUGINS_DIR": str(REPO),
        "FIFTYONE_CONFIG_PATH": str(workdir / "config.json"),
        "FIFTYONE_APP_CONFIG_PATH": str(workdir / "app_config.json"),
        "FIFTYONE_DEFAULT_DATASET_DIR": str(workdir / "datasets"),
        "WANDB_MODE": "offline",
    }
    os.environ.update(env)
    return env
