"""`octi serve` as a process: it starts, answers, and stops on Ctrl-C without a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.harness import loopback_socket

REPO = Path(__file__).resolve().parents[1]


def test_ctrl_c_stops_the_server_cleanly(tmp_path: Path) -> None:
    sock, port = loopback_socket()
    sock.close()  # the server binds the port itself
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TWILIO_", "RAG_"))}
    env.update({"OPENAI_API_KEY": "sk-test", "RAG_MODE": "off", "LOG_LEVEL": "WARNING", "DATA_DIR": str(tmp_path)})
    server = subprocess.Popen([sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        answered = False
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    answered = "status" in json.loads(response.read())
                    break
            except OSError:
                time.sleep(0.2)
        assert answered
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 130
    assert "Traceback" not in err, err
