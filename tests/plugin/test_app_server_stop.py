"""``cilp app``'s App server stops without a traceback while the App is connected.

The App keeps an event stream open (``POST /events``); when the server stops (Ctrl-C on
``cilp app`` sends it SIGTERM), Python 3.11's asyncio printed "Exception in callback ...
asyncio.exceptions.CancelledError" with a hypercorn traceback for each such connection.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys

from .app_browser import AppServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_app_server_stops_quietly_with_an_event_stream_open(tmp_path):
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "cilp_plugin.service.app", "server", "--port", str(port),
                               "--address", "127.0.0.1"], env=os.environ.copy(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        AppServer.wait_until_answering(f"http://127.0.0.1:{port}", server)
        stream = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        stream.request("POST", "/events", body=json.dumps({"initializer": None, "events": ["state_update"],
                                                           "subscription": "stop-test"}),
                       headers={"Content-Type": "application/json"})
        answer = stream.getresponse()
        assert (answer.status, answer.getheader("content-type").split(";")[0]) == (200, "text/event-stream")
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=60)[0].decode(errors="replace")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, output
    assert "Traceback" not in output and "CancelledError" not in output, output
