"""`octi serve` as a process: it starts, answers, and stops on Ctrl-C without a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx

from app.calllog.store import CallLogStore
from app.simulators.twilio_caller import CallScript, place_call
from tests.harness import AUTH_TOKEN, PUBLIC_URL, loopback_socket

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


async def test_sigterm_drains_the_calls_under_way_refuses_new_ones_then_exits_cleanly(tmp_path: Path, double) -> None:
    sock, port = loopback_socket()
    sock.close()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TWILIO_", "RAG_"))}
    env.update({"OPENAI_API_KEY": "sk-test", "OPENAI_REALTIME_URL": double.url, "RAG_MODE": "off",
                "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "PUBLIC_BASE_URL": PUBLIC_URL, "DRAIN_TIMEOUT_S": "60",
                "SILENCE_PROMPT_SECONDS": "0", "CALL_RECAP": "false", "LOG_LEVEL": "WARNING",
                "DATA_DIR": str(tmp_path), "PYTHONPATH": str(REPO)})
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port), cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            async with asyncio.timeout(60):
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(url + "/ready")).status_code == 200:
                            break
                    await asyncio.sleep(0.2)
            under_way = asyncio.create_task(place_call(url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN,
                                                       script=CallScript(hangup_after=6)))
            await double.wait_for_connection(timeout=20)
            server.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                while True:
                    # A kept-alive connection the server closed meanwhile fails once: ask again.
                    with contextlib.suppress(httpx.TransportError):
                        if (await http.get(url + "/ready")).status_code == 503:
                            break
                    await asyncio.sleep(0.1)
            health = (await http.get(url + "/health")).json()
            refused = await place_call(url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN,
                                       script=CallScript(hangup_after=2))
            finished = await under_way
        _, err = await asyncio.wait_for(server.communicate(), 60)
    finally:
        if server.returncode is None:
            server.kill()
            await server.communicate()
    assert finished.status == "completed" and finished.closed_by == "caller", finished.summary()
    assert refused.status == "spoken_only" and "lignes sont occupées" in " ".join(refused.say_texts)
    assert any("draining" in problem for problem in health["problems"])
    assert server.returncode == 0 and "Traceback" not in err.decode(), err.decode()
    async with await CallLogStore.open(f"sqlite+aiosqlite:///{tmp_path / 'calls.sqlite3'}") as store:
        detail = await store.get_call(await store.find_call_id(finished.call_sid))
    assert detail.summary.outcome == "caller_hung_up"
