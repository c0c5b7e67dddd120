"""`octi serve` as a process: it starts, answers, and stops on Ctrl-C without a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import pytest

from app.calllog.store import CallLogStore
from app.simulators.twilio_caller import CallScript, place_call
from app.config import Settings
from app.serve import DrainingServer
from app.web import create_app, server_config
from tests.harness import AUTH_TOKEN, PUBLIC_URL, free_loopback_port, loopback_socket, stream_tunnels

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_stops_the_server_cleanly(tmp_path: Path, workers: int) -> None:
    port = free_loopback_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TWILIO_", "RAG_"))}
    env.update({"OPENAI_API_KEY": "sk-test", "RAG_MODE": "off", "LOG_LEVEL": "WARNING", "DATA_DIR": str(tmp_path)})
    if workers > 1:  # where the supervisor's workers show they have started
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
    server = subprocess.Popen([sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port),
                               "--workers", str(workers)],
                              cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        answered = False
        while time.monotonic() < deadline and server.poll() is None and workers > 1 and \
                len(_worker_pids(tmp_path / "metrics")) < workers:  # every worker has started
            time.sleep(0.2)
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


async def test_sigterm_drains_the_calls_under_way_refuses_new_ones_then_exits_cleanly(tmp_path: Path, double,
                                                                                     stream_on) -> None:
    port = free_loopback_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TWILIO_", "RAG_"))}
    env.update({"OPENAI_API_KEY": "sk-test", "OPENAI_REALTIME_URL": double.url, "RAG_MODE": "off",
                "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "PUBLIC_BASE_URL": PUBLIC_URL, "DRAIN_TIMEOUT_S": "60",
                "SILENCE_PROMPT_SECONDS": "0", "CALL_RECAP": "false", "LOG_LEVEL": "WARNING",
                "DATA_DIR": str(tmp_path), "PYTHONPATH": str(REPO)})
    env.update({name.upper(): str(value) for name, value in stream_on.items()})
    dial = functools.partial(place_call, url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN,
                             tunnels=stream_tunnels(stream_on.get("stream_port")))
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
            under_way = asyncio.create_task(dial(script=CallScript(hangup_after=6)))
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
            refused = await dial(script=CallScript(hangup_after=2))
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


async def test_workers_share_the_port_and_their_metrics_and_all_drain_on_sigterm(tmp_path: Path, double,
                                                                                 redis_url: str, stream_on) -> None:
    """With REDIS_URL, as several workers need: a call's webhook and stream may reach different
    workers, and the one that admitted the call must learn where its stream went. With the
    stream's own listener, the workers share its port too."""
    port = free_loopback_port()
    url = f"http://127.0.0.1:{port}"
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"")  # an earlier run's: emptied at start
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TWILIO_", "RAG_", "REDIS_"))}
    env.update({"OPENAI_API_KEY": "sk-test", "OPENAI_REALTIME_URL": double.url, "RAG_MODE": "off",
                "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "PUBLIC_BASE_URL": PUBLIC_URL, "DRAIN_TIMEOUT_S": "60",
                "SILENCE_PROMPT_SECONDS": "0", "CALL_RECAP": "false", "LOG_LEVEL": "WARNING",
                "CALLS_PER_CALLER_PER_HOUR": "0", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                "REDIS_URL": redis_url.rsplit("/", 1)[0] + "/9",
                "DATA_DIR": str(tmp_path), "PYTHONPATH": str(REPO)})
    env.update({name.upper(): str(value) for name, value in stream_on.items()})
    dial = functools.partial(place_call, url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN,
                             tunnels=stream_tunnels(stream_on.get("stream_port")))
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", "serve", "--workers", "2", "--host", "127.0.0.1", "--port", str(port),
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            async with asyncio.timeout(60):
                while len(_worker_pids(metrics_dir)) < 2 or not await _ready(url):
                    await asyncio.sleep(0.2)
            workers = _worker_pids(metrics_dir)
            placed = await asyncio.gather(*(dial(script=CallScript(hangup_after=3)) for _ in range(3)))
            # Whichever worker answers (a new connection each time), it counts every worker's calls.
            counted = []
            for _ in range(4):
                async with httpx.AsyncClient(timeout=5) as fresh:
                    counted.append(_sample((await fresh.get(url + "/metrics")).text, "octi_calls_total"))
            under_way = asyncio.create_task(dial(script=CallScript(hangup_after=6)))
            async with asyncio.timeout(20):  # the call is in conversation, on one worker or the other
                while _sample((await http.get(url + "/metrics")).text, "octi_active_calls") < 1:
                    await asyncio.sleep(0.05)
            server.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                while await _ready(url):
                    await asyncio.sleep(0.1)
            refused = await dial(script=CallScript(hangup_after=2))
            finished = await under_way
        _, err = await asyncio.wait_for(server.communicate(), 60)
    finally:
        if server.returncode is None:
            server.kill()
            await server.communicate()
    assert len(workers) == 2 and 999999 not in workers
    assert all(result.status == "completed" for result in placed), [r.summary() for r in placed]
    assert counted == [3.0] * 4
    assert finished.status == "completed" and finished.closed_by == "caller", finished.summary()
    assert refused.status == "spoken_only" and "lignes sont occupées" in " ".join(refused.say_texts)
    assert server.returncode == 0 and "Traceback" not in err.decode(), err.decode()
    # Each worker's lines name it, on one output (a worker still starting at SIGTERM ends unheard).
    drained = {int(pid) for pid in re.findall(r" WARNING (\d+) app\.serve \[-\] drained", err.decode())}
    assert drained and drained <= workers
    async with await CallLogStore.open(f"sqlite+aiosqlite:///{tmp_path / 'calls.sqlite3'}") as store:
        for result in (*placed, finished):
            detail = await store.get_call(await store.find_call_id(result.call_sid))
            assert detail.summary.outcome == "caller_hung_up"


def test_a_worker_that_dies_has_the_others_drain_and_the_parent_exit_1(tmp_path: Path) -> None:
    """Not replaced: whatever runs the service restarts it whole."""
    port = free_loopback_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        server = subprocess.Popen([sys.executable, "-m", "app", "serve", "--port", str(port), "--workers", "2"],
                                  cwd=tmp_path, env=_workers_env(tmp_path), stdout=log, stderr=subprocess.STDOUT)
    try:
        first, second = sorted(_serving_workers(log_path))
        os.kill(first, signal.SIGKILL)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    logged = log_path.read_text()
    assert server.returncode == 1
    assert f"worker {first} ended on its own" in logged and f"WARNING {second} app.serve [-] drained: stopping" in logged
    with pytest.raises(ProcessLookupError):
        os.kill(second, 0)


def test_workers_whose_parent_was_killed_drain_by_themselves(tmp_path: Path) -> None:
    port = free_loopback_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        server = subprocess.Popen([sys.executable, "-m", "app", "serve", "--port", str(port), "--workers", "2"],
                                  cwd=tmp_path, env=_workers_env(tmp_path), stdout=log, stderr=subprocess.STDOUT)
    workers = _serving_workers(log_path)
    server.kill()
    server.wait()
    deadline = time.monotonic() + 30
    while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(workers) == 2 and all(_gone(pid) for pid in workers)
    assert log_path.read_text().count("drained: stopping") == 2


def _workers_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TWILIO_", "RAG_", "REDIS_"))}
    env.update({"OPENAI_API_KEY": "sk-test", "RAG_MODE": "off", "LOG_LEVEL": "INFO", "DATA_DIR": str(tmp_path),
                "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), "PYTHONPATH": str(REPO)})
    return env


def _serving_workers(log_path: Path, count: int = 2) -> set[int]:
    """The workers' pids once `count` of them serve: a worker still starting has nothing to
    drain, and a signal then ends it before it could say so."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        started = re.findall(r" INFO (\d+) uvicorn\.error \[-\] Application startup complete", log_path.read_text())
        if len(set(started)) >= count:
            return {int(pid) for pid in started}
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} workers started:\n{log_path.read_text()}")


def _gone(pid: int) -> bool:
    """The process has ended (reaped, or a zombie waiting for an init that does not reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_one_server_forgets_the_metrics_of_a_killed_process_but_not_of_a_live_one(tmp_path: Path) -> None:
    """PROMETHEUS_MULTIPROC_DIR shared by instances a supervisor runs, one server each: one was
    killed (SIGKILL) with two calls under way, another lives with one. A server starting there
    counts the live one's call, not the dead one's; the dead one's counters stay in the totals."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "PYTHONPATH": str(REPO)}
    program = ("import os, sys, time\nfrom app.metrics import Metrics\nmetrics = Metrics()\n"
               "for _ in range(int(sys.argv[1])): metrics.call_started()\nprint('ready', flush=True)\n"
               "time.sleep(60) if sys.argv[2] == 'live' else os.kill(os.getpid(), 9)")
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", program, "2", "dead", env=env,
                                                stdout=asyncio.subprocess.PIPE)
    await dead.communicate()
    live = await asyncio.create_subprocess_exec(sys.executable, "-c", program, "1", "live", env=env,
                                                stdout=asyncio.subprocess.PIPE)
    port = free_loopback_port()
    server = None
    try:
        assert await live.stdout.readline() == b"ready\n"
        assert dead.returncode == -signal.SIGKILL and len(_worker_pids(metrics_dir)) == 2
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port), cwd=tmp_path,
            env={**env, "DATA_DIR": str(tmp_path), "RAG_MODE": "off", "LOG_LEVEL": "WARNING"},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        async with asyncio.timeout(60):
            while not await _ready(f"http://127.0.0.1:{port}"):
                await asyncio.sleep(0.2)
        async with httpx.AsyncClient(timeout=5) as http:
            exposition = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    finally:
        for process in (live, server):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
    assert _sample(exposition, "octi_active_calls") == 1.0
    assert _sample(exposition, "octi_calls_total") == 3.0  # the dead one's two calls stay counted
    dead_files = {path.name.split("_")[0] for path in metrics_dir.glob(f"*_{dead.pid}.db")}
    assert "gauge" not in dead_files and dead_files, dead_files  # its live gauges gone, its counters kept
    assert live.pid in _worker_pids(metrics_dir)

def _worker_pids(metrics_dir: Path) -> set[int]:
    """The processes writing metrics there (prometheus-client names its files by pid)."""
    return {int(path.stem.rsplit("_", 1)[1]) for path in metrics_dir.glob("*.db")}


async def _ready(url: str) -> bool:
    async with httpx.AsyncClient(timeout=5) as http:
        with contextlib.suppress(httpx.HTTPError):
            return (await http.get(url + "/ready")).status_code == 200
    return False


def _sample(exposition: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in exposition.splitlines() if line.startswith(name + " "))


async def test_what_start_up_built_is_left_out_of_the_collectors_scans(tmp_path: Path) -> None:
    """Full collections otherwise go over every module and the knowledge store again, stalling
    every call's audio (benchmarks/README.md, "Relay")."""
    sock, port = loopback_socket()
    settings = Settings(_env_file=None, openai_api_key="sk-test", data_dir=tmp_path, rag_mode="off", port=port)
    app = create_app(settings)
    server = DrainingServer(server_config(app, "127.0.0.1", port), app.state.service, settings.drain_timeout_s)
    gc.unfreeze()
    running = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not running.done(), running.result()
            await asyncio.sleep(0.01)
        assert gc.get_freeze_count() > 10_000
    finally:
        server.should_exit = True
        await asyncio.wait_for(running, 30)
        gc.unfreeze()
        sock.close()
