"""Load test of the relay: N simulated Twilio calls through the real server, in real time.

Run from the repo root:

  .venv/bin/python benchmarks/relay.py                      # 50 100 200 300 calls, pcm16 and pcmu, 60 s each
  .venv/bin/python benchmarks/relay.py --calls 5 --duration 20 --codec pcm16          # smoke run
  .venv/bin/python benchmarks/relay.py --calls 100 --codec pcm16 \\
      --ws websockets websockets-sansio wsproto                # uvicorn's websocket implementations
  .venv/bin/python benchmarks/relay.py --calls 100 200 --codec pcm16 --pin           # server alone on CPU 0
  .venv/bin/python benchmarks/relay.py --calls 100 --codec pcm16 --pin --profile 20   # py-spy the server
  .venv/bin/python benchmarks/relay.py --calls 200 300 --codec pcm16 --peers lean     # cheap peers, see below
  .venv/bin/python benchmarks/relay.py --report /tmp/octi-relay-XXXX/results.json     # print a past run again
  .venv/bin/python benchmarks/relay.py --calls 150 --codec pcm16 --peers lean \\
      --target octi sample --sample-dir /tmp/twilio-sample --repeat 3  # against Twilio's sample, in pairs
  .venv/bin/python benchmarks/relay.py --calls 150 --codec pcm16 --peers lean \\
      --ws stream-listener                                     # the stream on its own listener (STREAM_PORT)

(--ws wsproto and --profile need `.venv/bin/pip install wsproto py-spy`.)

For each codec, websocket implementation and number of calls N, three kinds of processes:

* the realtime double (`octi realtime-double`, answers each caller utterance with audio,
  faster than real time by --speed) and the server (`octi serve`, pointed at the double),
  each in its own process, started fresh for the run; the server runs with RAG_MODE=off (the
  relay alone; --server-env NAME=VALUE adds or overrides server settings);
* K load generators (this file with --worker), each running N/K simulated Twilio callers
  (`app.simulators.twilio_caller.place_call`): a media frame every 20 ms, the greeting, then
  utterances from tests/audio/*.wav, each spoken once OCTI has been silent for 700 ms, so the
  callers talk and OCTI answers in turn, for --duration seconds. The call starts are spread
  evenly over --ramp seconds.

The measurement window runs from --settle seconds after the last call started to the end of
the first calls. Over it: the server process's CPU time (utime + stime from /proc), per
call-minute and as a share of one core; the bridge delays from the server's /metrics (the
difference of the histograms at both ends of the window, p50/p99 interpolated linearly inside
a bucket); the share of OCTI's audio that reached the callers late (Twilio's playback buffer
ran dry inside an answer: time missing inside answer bursts / their length); the server's RSS;
and, so that readers can tell whether the machine was saturated, the CPU used by the whole
machine (/proc/stat), the double and the generators, plus how late the generators' own 20 ms
ticks ran (if they lag, the callers' figures are not trustworthy), and the CPU that other jobs
on the machine took meanwhile. A GET /health every 250 ms shows how far behind the server's
event loop runs, which the bridge delays (measured from the moment a message is read) cannot
show. Every call must end "completed", hung up by the caller, with no protocol violation;
failures are counted.

--peers lean swaps both peers for the lean ones of benchmarks/lean_peers.py (same wire
protocols, a fraction of the CPU): the double becomes a lean picows Realtime server that
never JSON-decodes an append, and each generator runs up to 150 calls on one shared 20 ms
ticker with pre-built messages and Twilio's playback buffer kept as counters. Callers then speak
only the speech part of each WAV (so 'talked %' is lower). The server is unchanged; use it
where the faithful peers would saturate the machine (from ~150 calls on 2 cores). The run
label says "lean-peers"; the default is --peers faithful.

--target sample runs the same load against Twilio's own sample relay instead of `octi serve`
(twilio-samples/speech-assistant-openai-realtime-api-python: FastAPI + uvicorn, μ-law passed
to OpenAI as is, no transcoding), from a checkout given with --sample-dir, through
benchmarks/sample_launcher.py (which points the sample's hard-coded OpenAI URL at the double
and calls the sample's own "AI speaks first" greeting; nothing of the sample is copied here).
The callers then post their webhook to the sample's /incoming-call; the sample checks no
signature and has no /metrics (no bridge delays; /health is its GET /). Its session is μ-law,
so its runs are listed under pcmu whatever --codec says. With several --target values and
--repeat R, the runs go in pairs (for each repetition and N: every octi configuration, then
the sample) and a last table gives each octi pcm16 run's CPU per call-minute over the sample's
of the same pair, against the budget (<= 0.9).

Every process started here is killed at the end (also on Ctrl-C or an error); every loop is
bounded in count and time. Logs and the raw results go to --out (a fresh /tmp dir by default).
"""

from __future__ import annotations

import argparse
import ctypes
import http.client
import json
import math
import os
import platform
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
AUDIO = REPO / "tests" / "audio"
WAVS = [AUDIO / "question_incubation.wav", AUDIO / "question_followup.wav", AUDIO / "interruption.wav"]
AUTH_TOKEN = "relay-bench-auth-token-0123456789"
API_KEY = "sk-relay-bench"
STREAM_LISTENER = "stream-listener"  # --ws: the media stream on its own listener (STREAM_PORT)

TARGET_CPU_PER_CALL_MIN = 0.2  # CPU-seconds per call-minute, with transcoding (pcm16)
TARGET_P99_MS = 5.0
TARGET_LATE_PCT = 0.1
SATURATED_PCT = 90.0  # machine CPU busy share above which the run is called saturated
QUIET_PCT = 15.0  # machine busy share under which a run may start (see --wait-idle)
OTHERS_PCT = 20.0  # CPU used by other jobs during the window (% of one core) above which a run is contaminated
SERVER_BEHIND_MS = 250.0  # /health p99 round trip above which the server's event loop is behind
GEN_LAG_P99_MS, GEN_LAG_MAX_MS = 20.0, 250.0  # generators' loop lag above which callers' figures are doubtful
CALLS_PER_GENERATOR = 75
CALLS_PER_LEAN_GENERATOR = 150  # a lean fleet costs a fraction of the faithful callers
LEAN_PEERS = Path(__file__).resolve().with_name("lean_peers.py")
SAMPLE_LAUNCHER = Path(__file__).resolve().with_name("sample_launcher.py")
SAMPLE_WEBHOOK_PATH = "/incoming-call"  # the sample's route for Twilio's incoming-call webhook
SAMPLE_BUDGET = 0.9  # octi pcm16 CPU per call-minute over the sample's, at most
FRAME_MS = 20


# --------------------------------------------------------------------------- /proc readings


def clk_tck() -> int:
    return os.sysconf("SC_CLK_TCK")


def process_times(pid: int) -> tuple[float, float] | None:
    """(utime, stime) of a process (all its threads), in seconds; None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()  # fields from #3 (state) on; comm may hold spaces
    return int(fields[11]) / clk_tck(), int(fields[12]) / clk_tck()


def process_cpu_s(pid: int) -> float | None:
    """utime + stime of a process, in seconds; None once it is gone."""
    times = process_times(pid)
    return None if times is None else times[0] + times[1]


def process_memory_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    except OSError:
        pass
    return values.get("VmRSS", float("nan")), values.get("VmHWM", float("nan"))


def all_process_cpu() -> dict[int, float]:
    """CPU seconds (utime + stime) of every process on the machine, by pid."""
    result = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cpu = process_cpu_s(int(entry.name))
            if cpu is not None:
                result[int(entry.name)] = cpu
    return result


def command_line(pid: int, limit: int = 60) -> str:
    try:
        text = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        text = ""
    return (text[:limit] + "…") if len(text) > limit else text or f"pid {pid}"


def machine_cpu() -> list[tuple[int, int, int]]:
    """(busy, total, irq + softirq) jiffies, over all cores then per core, from /proc/stat.

    irq and softirq time (much of the loopback TCP processing) is not charged to any process.
    """
    rows = []
    for line in Path("/proc/stat").read_text().splitlines():
        if not line.startswith("cpu"):
            break
        values = [int(v) for v in line.split()[1:9]]
        idle = values[3] + values[4]  # idle + iowait
        total = sum(values)  # user nice system idle iowait irq softirq steal (guest is inside user)
        rows.append((total - idle, total, values[5] + values[6]))
    return rows


# --------------------------------------------------------------------------- metrics


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def scrape(port: int, timeout: float = 10.0) -> dict[str, Any] | None:
    """The server's /metrics: cumulative histogram buckets per direction, gauges and counters.

    None when the server does not answer in time (its event loop is that far behind).
    """
    try:
        status, body = http_get(port, "/metrics", timeout=timeout)
    except OSError:
        return None
    if status != 200:
        return None
    hist: dict[str, list[tuple[float, int]]] = defaultdict(list)
    values: dict[str, float] = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        if name.startswith("octi_bridge_delay_seconds_bucket{"):
            labels = dict(part.split("=", 1) for part in name[name.index("{") + 1:-1].split(","))
            direction, le = labels["direction"].strip('"'), labels["le"].strip('"')
            hist[direction].append((float("inf") if le == "+Inf" else float(le), int(float(value))))
        else:
            values[name] = float(value)
    return {"hist": dict(hist), "values": values}


def histogram_diff(before: list[tuple[float, int]], after: list[tuple[float, int]]) -> list[tuple[float, int]]:
    assert [b for b, _ in before] == [b for b, _ in after], "bucket bounds changed"
    return [(bound, a - b) for (bound, a), (_, b) in zip(after, before)]


def quantile_ms(cumulative: list[tuple[float, int]], q: float) -> float:
    """q-quantile of a cumulative histogram, interpolated linearly inside its bucket, in ms.

    NaN without observations; inf when it falls in the +Inf bucket.
    """
    total = cumulative[-1][1] if cumulative else 0
    if total <= 0:
        return float("nan")
    rank = q * total
    lower_bound, lower_count = 0.0, 0
    for bound, count in cumulative:
        if count >= rank and count > lower_count:
            if math.isinf(bound):
                return float("inf")
            return 1000 * (lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count))
        lower_bound, lower_count = bound, count
    return float("inf")


# --------------------------------------------------------------------------- processes


def _child_setup(cpus: set[int] | None) -> Any:
    """What the child runs before exec: SIGTERM if this benchmark dies; optional CPU pinning."""
    def setup() -> None:
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass
        if cpus:
            os.sched_setaffinity(0, cpus)
    return setup


class Processes:
    """Every child process started by the benchmark, each in its own process group."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, cmd: list[str], *, log: Path, env: dict[str, str] | None = None,
              cwd: Path | None = None, pipes: bool = False, cpus: set[int] | None = None) -> subprocess.Popen:
        out = open(log, "wb")
        try:
            proc = subprocess.Popen(
                cmd, env=env, cwd=cwd, start_new_session=True, preexec_fn=_child_setup(cpus),
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else out, stderr=out,
            )
        finally:
            out.close()
        self.started.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen, *, grace: float = 10.0) -> None:
        """SIGINT to the child's own process group, SIGKILL if it is still there after `grace`."""
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    def stop_all(self) -> None:
        for _, proc in reversed(self.started):
            self.stop(proc, grace=5.0)
        self.started.clear()


def wait_for_quiet(max_wait: float, threshold: float = QUIET_PCT) -> tuple[float, float]:
    """Wait (at most max_wait s) until the machine is nearly idle over 2 s; returns (busy %, waited s)."""
    started = time.monotonic()
    while True:
        before = machine_cpu()[0]
        time.sleep(2.0)
        after = machine_cpu()[0]
        busy = (after[0] - before[0]) / max(1, after[1] - before[1]) * 100
        waited = time.monotonic() - started
        if busy < threshold or waited >= max_wait:
            return busy, waited


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with code {proc.returncode}")
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not ready after {timeout:.0f} s")


def port_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def healthy(port: int) -> bool:
    status, body = http_get(port, "/health", timeout=2)
    return status == 200 and json.loads(body).get("status") == "ok"


def server_stack() -> str:
    """What `octi serve` runs on here: uvicorn's 'auto' websocket implementation and event loop."""
    try:
        import uvicorn
        from uvicorn.protocols.websockets import auto

        ws = getattr(auto.AutoWebSocketsProtocol, "__name__", "none")
    except ImportError:
        return "uvicorn not importable"
    loops = []
    for name in ("uvloop", "httptools"):
        try:
            __import__(name)
            loops.append(f"{name} installed")
        except ImportError:
            loops.append(f"no {name}")
    return f"uvicorn {uvicorn.__version__}, ws auto = {ws}, {', '.join(loops)}"


def code_fingerprint() -> str:
    """Which server code was measured (no VCS here): a hash of app/**/*.py and its newest mtime."""
    import hashlib

    digest = hashlib.sha256()
    newest = 0.0
    for path in sorted((REPO / "app").rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
        newest = max(newest, path.stat().st_mtime)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(newest))
    return f"app/ sha256 {digest.hexdigest()[:12]}, newest file {stamp} UTC"


def sample_fingerprint(sample_dir: Path) -> str:
    """Which sample code was measured: a hash of its main.py."""
    import hashlib

    path = sample_dir.resolve() / "main.py"
    return f"{path}, sha256 {hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"


def sample_stack(python: Path) -> str:
    """What the sample's own environment runs: the versions that decide its speed."""
    script = ("from importlib import metadata as m\n"
              "names = ('uvicorn', 'websockets', 'fastapi', 'starlette', 'uvloop', 'httptools')\n"
              "out = []\n"
              "for n in names:\n"
              "    try: out.append(n + ' ' + m.version(n))\n"
              "    except m.PackageNotFoundError: out.append('no ' + n)\n"
              "print(', '.join(out))")
    try:
        return subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"


def octi_command() -> list[str]:
    script = Path(sys.executable).parent / "octi"
    return [str(script)] if script.exists() else [sys.executable, "-m", "app"]


# --------------------------------------------------------------------------- the load generator


def worker_main(config_path: str, result_path: str) -> int:
    """One load-generator process: its share of the calls, then a JSON summary of each."""
    import asyncio
    import functools

    sys.path.insert(0, str(REPO))
    cfg = json.loads(Path(config_path).read_text())
    if cfg.get("peers") == "lean":
        return _lean_worker(cfg, result_path)
    from app.simulators import twilio_wire as wire
    from app.simulators.twilio_caller import WEBHOOK_PATH, CallScript, Utterance, place_call

    webhook_path = cfg.get("webhook_path") or WEBHOOK_PATH  # another server than octi (--target sample)

    # Keep the generators' per-call start-up cost down, so that they keep real time while the
    # calls ramp up (this changes nothing the server sees): every call decodes and resamples
    # the same WAVs at its start; once per process is enough.
    wire.wav_to_ulaw = functools.cache(wire.wav_to_ulaw)
    wire.speech_bounds = functools.cache(wire.speech_bounds)
    for wav in WAVS:
        wire.speech_bounds(wire.wav_to_ulaw(Path(wav)))

    print("READY", flush=True)
    go = json.loads(sys.stdin.readline() or "{}")
    if "t0" not in go:
        return 1
    t0 = go["t0"]
    duration = cfg["duration"]

    async def one_call(spec: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(max(0.0, t0 + spec["offset"] - time.monotonic()))
        started: dict[str, float] = {}

        def hook(message: Any) -> None:
            if isinstance(message, dict) and message.get("event") == "start":
                started["t"] = time.monotonic()
            return None

        order = [WAVS[(spec["index"] + k) % len(WAVS)] for k in range(len(WAVS))]
        turns = int(duration // 2) + 2  # more than can be spoken: the caller hangs up first
        script = CallScript(utterances=[Utterance(order[k % len(order)]) for k in range(turns)],
                            hangup_after=duration)
        launched = time.monotonic()
        try:
            r = await asyncio.wait_for(
                place_call(cfg["url"], script=script, public_url=cfg["public_url"], auth_token=AUTH_TOKEN,
                           call_sid=spec["call_sid"], send_hook=hook, webhook_path=webhook_path,
                           tunnels=cfg.get("tunnels")),
                timeout=duration + 90)
        except Exception as exc:  # noqa: BLE001 - counted as a failed call
            return {"index": spec["index"], "status": "exception", "errors": [repr(exc)], "launched": launched}
        summary = {
            "index": spec["index"],
            "status": r.status,
            "closed_by": r.closed_by,
            "close_code": r.close_code,
            "violations": len(r.violations),
            "violation_kinds": dict(Counter(f"{v.get('code')} {v.get('kind')}" for v in r.violations)),
            "errors": r.errors[:5],
            "n_errors": len(r.errors),
            "frames_sent": r.media_frames_sent,
            "duration_s": r.duration_s,
            "max_tick_lag_ms": r.max_tick_lag_ms,
            "launched": launched,
            "stream_t0": started.get("t"),
            "webhook_ms": r.webhook_ms,
            "clears": len(r.clears),
            "bursts": [[b.start_t, b.end_t, b.played_ms, b.underruns] for b in r.bursts],
            "utterances": [[u.start_t, u.duration_ms, u.answer_latency_ms] for u in r.utterances],
        }
        del r
        return summary

    async def calls() -> list[dict[str, Any]]:
        return await asyncio.gather(*(one_call(spec) for spec in cfg["calls"]))

    result = asyncio.run(_probed(calls, cfg, go))
    Path(result_path).write_text(json.dumps(result))
    return 0


async def _probed(calls: Any, cfg: dict[str, Any], go: dict[str, Any]) -> dict[str, Any]:
    """Run the generator's calls beside a probe of its own loop lag (20 ms ticks, bounded in time)."""
    import asyncio

    t0, w_start, w_end = go["t0"], go["window_start"], go["window_end"]
    lags: list[float] = []
    max_lag = 0.0

    async def probe() -> None:
        nonlocal max_lag
        loop = asyncio.get_running_loop()
        end = t0 + cfg["max_seconds"]
        next_tick = loop.time()
        while time.monotonic() < end:
            next_tick += FRAME_MS / 1000
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            lag = (loop.time() - next_tick) * 1000
            max_lag = max(max_lag, lag)
            if w_start <= time.monotonic() <= w_end:
                lags.append(lag)
            if lag > 1000:
                next_tick = loop.time()  # do not try to catch up a long stall tick by tick

    prober = asyncio.create_task(probe())
    try:
        results = await calls()
    finally:
        prober.cancel()
    lags.sort()
    return {
        "calls": results,
        "loop_lag_window_p99_ms": lags[int(0.99 * (len(lags) - 1))] if lags else None,
        "loop_lag_window_max_ms": lags[-1] if lags else None,
        "loop_lag_max_ms": max_lag,
    }


def _lean_worker(cfg: dict[str, Any], result_path: str) -> int:
    """A generator of lean calls (benchmarks/lean_peers.py): one process, one shared 20 ms ticker."""
    sys.path.insert(0, str(LEAN_PEERS.parent))
    import lean_peers

    webhook_path = cfg.get("webhook_path") or lean_peers.WEBHOOK_PATH  # another server than octi (--target sample)
    speech = lean_peers.Utterances(WAVS)  # the callers' frames, encoded once before the start
    print("READY", flush=True)
    go = json.loads(sys.stdin.readline() or "{}")
    if "t0" not in go:
        return 1

    async def calls() -> list[dict[str, Any]]:
        return await lean_peers.run_fleet(cfg["url"], cfg["calls"], duration=cfg["duration"], t0=go["t0"],
                                          public_url=cfg["public_url"], auth_token=AUTH_TOKEN, speech=speech,
                                          webhook_path=webhook_path, tunnels=cfg.get("tunnels"))

    result = lean_peers.run_async(_probed(calls, cfg, go))
    Path(result_path).write_text(json.dumps(result))
    return 0


# --------------------------------------------------------------------------- one run


@dataclass
class Snapshot:
    t: float
    server_cpu: float
    server_stime: float
    double_cpu: float
    generator_cpu: float
    own_cpu: float  # this process (the probe and the scrapes)
    machine: list[tuple[int, int, int]]
    processes: dict[int, float]
    metrics: dict[str, Any] | None
    scrape_s: float


def snapshot(server: subprocess.Popen, double: subprocess.Popen, generators: list[subprocess.Popen],
             port: int, metrics: bool = True) -> Snapshot:
    t = time.monotonic()
    utime, stime = process_times(server.pid) or (0.0, 0.0)
    dcpu = process_cpu_s(double.pid) or 0.0
    gcpu = sum(process_cpu_s(g.pid) or 0.0 for g in generators)
    machine = machine_cpu()
    metrics = scrape(port) if metrics else None
    own = sum(os.times()[:2])
    processes = all_process_cpu()
    return Snapshot(t, utime + stime, stime, dcpu, gcpu, own, machine, processes, metrics, time.monotonic() - t)


class HealthProbe(threading.Thread):
    """GET /health a few times a second during the window: how fast the server's loop answers."""

    def __init__(self, port: int, until: float, interval: float = 0.25, path: str = "/health") -> None:
        super().__init__(daemon=True)
        self.port, self.until, self.interval, self.path = port, until, interval, path
        self.rtts_ms: list[float] = []
        self.failures = 0

    def run(self) -> None:
        next_at = time.monotonic()
        while time.monotonic() < self.until and len(self.rtts_ms) < 100_000:
            start = time.monotonic()
            try:
                status, _ = http_get(self.port, self.path, timeout=5)
                if status == 200:
                    self.rtts_ms.append((time.monotonic() - start) * 1000)
                else:
                    self.failures += 1
            except OSError:  # a timeout: counted as an infinite round trip
                self.failures += 1
                self.rtts_ms.append(float("inf"))
            next_at += self.interval
            time.sleep(max(0.0, min(next_at, self.until) - time.monotonic()))


@dataclass
class RunConfig:
    codec: str
    calls: int
    ws: str
    duration: float
    generators: int
    ramp: float
    settle: float
    speed: float
    answer_seconds: float
    profile: float
    pin: bool
    out: Path
    server_env: dict[str, str] = field(default_factory=dict)
    idle_before: float = float("nan")  # machine busy % just before the run (see --wait-idle)
    peers: str = "faithful"  # or "lean": benchmarks/lean_peers.py as double and callers
    target: str = "octi"  # or "sample": Twilio's sample relay, through benchmarks/sample_launcher.py
    sample_dir: str = ""
    rep: int = 0  # repetition (--repeat), to pair runs
    sample_python: str = ""  # the interpreter of the sample's own environment (target sample-reqs)

    @property
    def label(self) -> str:
        head = self.target if self.target.startswith("sample") else self.ws
        return head + (" pinned" if self.pin else "") + (" lean-peers" if self.peers == "lean" else "")


@dataclass
class RunResult:
    config: RunConfig
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def run_one(rc: RunConfig, procs: Processes) -> RunResult:
    tag = f"{rc.codec}-{rc.label}-{rc.calls}-r{rc.rep}".replace(" ", "-")
    out = rc.out / tag
    out.mkdir(parents=True, exist_ok=True)
    result = RunResult(rc)
    octi = octi_command()
    # --pin: the server alone on CPU 0, everything else on the other CPU(s).
    all_cpus = sorted(os.sched_getaffinity(0))
    server_cpus = {all_cpus[0]} if rc.pin and len(all_cpus) > 1 else None
    other_cpus = set(all_cpus[1:]) if server_cpus else None

    dport, sport = free_port(), free_port()
    # The media stream's own listener, behind a tunnel of its own as Twilio would reach it.
    stream_port = free_port() if rc.ws == STREAM_LISTENER else 0
    tunnels = {f"https://127.0.0.1:{stream_port}": f"http://127.0.0.1:{stream_port}"} if stream_port else {}
    double_cmd = [*octi, "realtime-double"] if rc.peers == "faithful" else [sys.executable, str(LEAN_PEERS), "realtime"]
    double = procs.start("double", [*double_cmd, "--port", str(dport), "--speed", str(rc.speed),
                                    "--answer-seconds", str(rc.answer_seconds), "--api-key", API_KEY,
                                    "--log-level", "WARNING"], log=out / "double.log", cpus=other_cpus)
    wait_until(lambda: port_open(dport), 30, "realtime double", double)

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "TWILIO_", "AGENT_", "VAD_"))
           and not k.startswith(("RAG_", "WEAVIATE_", "KNOWLEDGE_"))
           and k not in ("AUDIO_CODEC", "PUBLIC_BASE_URL", "HOST", "PORT", "LOG_LEVEL", "TURN_DETECTION",
                         "NOISE_REDUCTION", "DATA_DIR")}
    env.update({
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_REALTIME_URL": f"ws://127.0.0.1:{dport}/v1/realtime",
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        # What Twilio would call, as behind a TLS tunnel: the TwiML then holds a wss:// stream URL,
        # as Twilio requires (an http base URL earns every call a 31922 warning). The callers
        # sign for this URL but connect to http://127.0.0.1:PORT, like through the tunnel.
        "PUBLIC_BASE_URL": f"https://127.0.0.1:{sport}",
        "AUDIO_CODEC": rc.codec,
        "LOG_LEVEL": "WARNING",
        # The relay alone: retrieval (RAG) has its own benchmark. --server-env RAG_MODE=inject puts it back.
        "RAG_MODE": "off",
        # Every simulated call comes from one number, and runs go past one instance's capacity
        # on purpose: neither guard may refuse them.
        "CALLS_PER_CALLER_PER_HOUR": "0",
        "MAX_CONCURRENT_CALLS": "0",
        # The lean peer answers no out-of-band response, and a recap is not the relay's cost.
        "CALL_RECAP": "false",
    })
    if stream_port:
        env.update({"STREAM_PORT": str(stream_port), "STREAM_PUBLIC_URL": f"wss://127.0.0.1:{stream_port}"})
    env.update(rc.server_env)
    sample = rc.target.startswith("sample")
    # cwd: the run directory, so that no developer's .env is read and nothing lands in the repo.
    if sample:
        env.pop("PYTHONUNBUFFERED", None)  # the sample prints some events: stdout block-buffered, as in a service
        python = rc.sample_python or sys.executable
        server = procs.start("server", [python, str(SAMPLE_LAUNCHER), "--sample-dir", rc.sample_dir,
                                        "--host", "127.0.0.1", "--port", str(sport),
                                        "--realtime-url", f"ws://127.0.0.1:{dport}/v1/realtime"],
                             log=out / "server.log", env=env, cwd=out, cpus=server_cpus)
        wait_until(lambda: http_get(sport, "/", timeout=2)[0] == 200, 30, "sample GET /", server)
    else:
        ws = "websockets-sansio" if stream_port else rc.ws
        server = procs.start("server", [*octi, "serve", "--host", "127.0.0.1", "--port", str(sport), "--ws", ws],
                             log=out / "server.log", env=env, cwd=out, cpus=server_cpus)
        wait_until(lambda: healthy(sport), 30, "server /health", server)

    # The calls, round-robin over the generators so each one's starts are spread over the ramp.
    k = rc.generators
    url = f"http://127.0.0.1:{sport}"
    public = f"https://127.0.0.1:{sport}"
    shares: list[list[dict[str, Any]]] = [[] for _ in range(k)]
    for i in range(rc.calls):
        shares[i % k].append({"index": i, "offset": i * rc.ramp / rc.calls, "call_sid": f"CA{i:032x}"})
    max_seconds = rc.ramp + rc.duration + 60
    generators = []
    for g, share in enumerate(shares):
        cfg_path, res_path = out / f"gen{g}.json", out / f"gen{g}.result.json"
        res_path.unlink(missing_ok=True)
        cfg_path.write_text(json.dumps({"url": url, "public_url": public, "tunnels": tunnels,
                                        "duration": rc.duration, "calls": share,
                                        "max_seconds": max_seconds, "peers": rc.peers,
                                        "webhook_path": SAMPLE_WEBHOOK_PATH if sample else None}))
        generators.append(procs.start(f"gen{g}", [sys.executable, str(Path(__file__).resolve()), "--worker",
                                                  str(cfg_path), str(res_path)],
                                      log=out / f"gen{g}.log", pipes=True, cpus=other_cpus))
    deadline = time.monotonic() + 90
    for g, gen in enumerate(generators):
        ready, _, _ = select.select([gen.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = gen.stdout.readline() if ready else b""
        if line.strip() != b"READY":
            raise RuntimeError(f"generator {g} did not get ready (see {out / f'gen{g}.log'})")

    t0 = time.monotonic() + 1.0
    w_start = t0 + rc.ramp + rc.settle
    w_end = t0 + rc.duration - 0.5
    go = json.dumps({"t0": t0, "window_start": w_start, "window_end": w_end}).encode() + b"\n"
    for gen in generators:
        gen.stdin.write(go)
        gen.stdin.flush()

    time.sleep(max(0.0, w_start - time.monotonic()))
    first = snapshot(server, double, generators, sport, metrics=not sample)
    profiler = None
    if rc.profile:
        py_spy = Path(sys.executable).parent / "py-spy"
        profiler = procs.start("py-spy", [str(py_spy), "record", "--pid", str(server.pid), "--duration",
                                          str(int(rc.profile)), "--rate", "100", "--nonblocking", "--format", "raw",
                                          "-o", str(out / "profile.txt")], log=out / "py-spy.log")
    probe = HealthProbe(sport, w_end, path="/" if sample else "/health")
    probe.start()
    time.sleep(max(0.0, w_end - time.monotonic()))
    last = snapshot(server, double, generators, sport, metrics=not sample)
    # Who else used the CPU meanwhile (other people's jobs): named now, while they still run.
    ours = {os.getpid(), server.pid, double.pid, *(g.pid for g in generators)}
    if profiler is not None:
        ours.add(profiler.pid)
    busiest = sorted(((last.processes[pid] - cpu0) / (last.t - first.t) * 100, pid)
                     for pid, cpu0 in first.processes.items() if pid in last.processes and pid not in ours)
    top_others = [f"{pct:.0f} % {command_line(pid)}" for pct, pid in reversed(busiest[-3:]) if pct >= 5]
    rss, hwm = process_memory_mib(server.pid)
    probe.join(timeout=10)

    results: list[dict[str, Any]] = []
    lag_window_p99, lag_window_max, lag_max = [], [], []
    for g, gen in enumerate(generators):
        left = max(5.0, t0 + max_seconds + 10 - time.monotonic())
        try:
            gen.wait(timeout=left)
        except subprocess.TimeoutExpired:
            result.notes.append(f"generator {g} did not finish in time: killed")
            procs.stop(gen)
        res_path = out / f"gen{g}.result.json"
        if not res_path.exists():
            result.notes.append(f"generator {g} wrote no result (exit {gen.returncode}, see {out / f'gen{g}.log'})")
            continue
        data = json.loads(res_path.read_text())
        results.extend(data["calls"])
        lag_window_p99.append(data["loop_lag_window_p99_ms"] or 0.0)
        lag_window_max.append(data["loop_lag_window_max_ms"] or 0.0)
        lag_max.append(data["loop_lag_max_ms"] or 0.0)
    final = (None if sample else scrape(sport)) or {"hist": {}, "values": {}}
    if profiler is not None:
        try:
            profiler.wait(timeout=30)
        except subprocess.TimeoutExpired:
            procs.stop(profiler)
    procs.stop(server)
    procs.stop(double)
    for gen in generators:
        procs.stop(gen)
    log_lines = (out / "server.log").read_text(errors="replace").splitlines()
    server_warnings = Counter(line.split()[2] for line in log_lines
                              if len(line.split()) > 2 and line.split()[2] in ("WARNING", "ERROR", "CRITICAL"))
    if sample:  # uvicorn's default log format, and the sample's own prints
        server_warnings = Counter(line.split(":", 1)[0] for line in log_lines
                                  if line.startswith(("WARNING:", "ERROR:", "CRITICAL:")))
        errors = sum(1 for line in log_lines if line.startswith("Error in send_to_twilio"))
        if errors:
            server_warnings["sample 'Error in send_to_twilio'"] = errors

    # ---------------------------------------------------------------- figures
    f = result.figures
    window = last.t - first.t
    for name, snap in (("start", first), ("end", last)):
        if sample:
            continue  # no /metrics
        if snap.metrics is None:
            result.notes.append(f"the server did not answer /metrics within 10 s at the window's {name}: "
                                "its event loop was that far behind; no bridge delays")
        elif snap.scrape_s > 1:
            result.notes.append(f"/metrics took {snap.scrape_s:.1f} s to answer at the window's {name}")
    metrics_ok = first.metrics is not None and last.metrics is not None
    active_start = first.metrics["values"].get("octi_active_calls", float("nan")) if first.metrics else float("nan")
    active_end = last.metrics["values"].get("octi_active_calls", float("nan")) if last.metrics else float("nan")
    active = (active_start + active_end) / 2 if metrics_ok else float(rc.calls)
    if metrics_ok and (active_start != rc.calls or active_end != rc.calls):
        result.notes.append(f"active calls at the window's ends: {active_start:.0f} and {active_end:.0f} "
                            f"(expected {rc.calls})")
    cpu = last.server_cpu - first.server_cpu
    per_cpu = [(b1 - b0) / max(1, n1 - n0) * 100 for (b0, n0, _), (b1, n1, _) in zip(first.machine, last.machine)]
    busy, per_cpu = per_cpu[0], per_cpu[1:]
    (_, jiffies0, irq0), (_, jiffies1, irq1) = first.machine[0], last.machine[0]
    irq_pct = (irq1 - irq0) / max(1, jiffies1 - jiffies0) * 100 * len(per_cpu)  # % of one core
    f.update(window_s=window, active_calls=active, server_cpu_s=cpu,
             cpu_per_call_min=cpu / (active * window / 60) if active > 0 else float("nan"),
             server_cpu_pct=cpu / window * 100, machine_busy_pct=busy, per_cpu_busy_pct=per_cpu,
             server_stime_share_pct=(last.server_stime - first.server_stime) / cpu * 100 if cpu else float("nan"),
             double_cpu_pct=(last.double_cpu - first.double_cpu) / window * 100,
             generators_cpu_pct=(last.generator_cpu - first.generator_cpu) / window * 100,
             bench_cpu_pct=(last.own_cpu - first.own_cpu) / window * 100,
             rss_mib=rss, hwm_mib=hwm)
    for direction in ("inbound", "outbound"):
        diff = histogram_diff(first.metrics["hist"].get(direction, []),
                              last.metrics["hist"].get(direction, [])) if metrics_ok else []
        f[f"{direction}_n"] = diff[-1][1] if diff else 0
        f[f"{direction}_p50_ms"] = quantile_ms(diff, 0.50)
        f[f"{direction}_p99_ms"] = quantile_ms(diff, 0.99)
    rtts = sorted(probe.rtts_ms)
    f["health_p50_ms"] = statistics.median(rtts) if rtts else float("nan")
    f["health_p99_ms"] = rtts[int(0.99 * (len(rtts) - 1))] if rtts else float("nan")
    f["health_max_ms"] = rtts[-1] if rtts else float("nan")
    if probe.failures:
        result.notes.append(f"{probe.failures} of {len(rtts)} /health probes got no answer within 5 s")
    f["health_failures"] = probe.failures

    # The callers' side.
    failed = [c for c in results if c["status"] != "completed" or c.get("closed_by") != "caller"]
    f["calls_reported"] = len(results)
    f["failed_calls"] = len(failed) + (rc.calls - len(results))
    f["failure_kinds"] = dict(Counter(f"{c['status']}/{c.get('closed_by')}/{c.get('close_code')}" for c in failed))
    f["calls_with_violations"] = sum(1 for c in results if c.get("violations"))
    f["violations"] = sum(c.get("violations", 0) for c in results)
    kinds: Counter[str] = Counter()
    for c in results:
        kinds.update(c.get("violation_kinds", {}))
    f["violation_kinds"] = dict(kinds)
    f["caller_errors"] = sum(c.get("n_errors", 0) for c in results)
    f["caller_error_samples"] = [e for c in results for e in c.get("errors", [])][:5]
    f["clears"] = sum(c.get("clears", 0) for c in results)
    f["gen_tick_lag_max_ms"] = max((c.get("max_tick_lag_ms", 0.0) for c in results), default=float("nan"))
    f["gen_loop_lag_window_p99_ms"] = max(lag_window_p99, default=float("nan"))
    f["gen_loop_lag_window_max_ms"] = max(lag_window_max, default=float("nan"))
    f["gen_loop_lag_max_ms"] = max(lag_max, default=float("nan"))

    span_ms = played_ms = missing_ms = 0.0
    underruns_window = underruns_all = splits = 0
    talk_ms = octi_ms = call_ms = 0.0
    latencies: list[float] = []
    spoken = answered = 0
    for c in results:
        if c["status"] != "completed":
            continue
        call_ms += c["duration_s"] * 1000
        bursts, utterances = c["bursts"], c["utterances"]
        talk_ms += sum(u[1] for u in utterances)
        octi_ms += sum(b[2] for b in bursts)
        for u in utterances:
            if u[0] + u[1] / 1000 < c["duration_s"] - 5:  # had time to be answered before the hang-up
                spoken += 1
                if u[2] is not None:
                    answered += 1
                    latencies.append(u[2])
        starts = sorted(u[0] for u in utterances)
        previous_by_turn: dict[int, list[float]] = {}
        for b in bursts:
            start_t, end_t, played, underruns = b[0], b[1] if b[1] is not None else b[0], b[2], b[3]
            underruns_all += underruns
            turn = sum(1 for s in starts if s <= start_t)  # bursts of one turn are one answer
            gap_ms = 0.0
            if turn in previous_by_turn:  # the answer ran dry for >= 200 ms and was split in two
                gap_ms = max(0.0, (start_t - previous_by_turn[turn][1]) * 1000)
                underruns_all += 1
            previous_by_turn[turn] = [start_t, end_t]
            t_wall = c["stream_t0"] + start_t if c.get("stream_t0") else None
            if t_wall is None or not (first.t <= t_wall < last.t):
                continue
            if gap_ms:
                splits += 1
                underruns_window += 1
                span_ms += gap_ms
                missing_ms += gap_ms
            span = (end_t - start_t) * 1000
            span_ms += span
            played_ms += played
            missing_ms += max(0.0, span - played)
            underruns_window += underruns
    f.update(answer_span_ms=span_ms, answer_played_ms=played_ms, late_ms=missing_ms,
             late_pct=missing_ms / span_ms * 100 if span_ms else float("nan"),
             underruns_window=underruns_window, underruns_all=underruns_all, split_answers=splits,
             talk_pct=talk_ms / call_ms * 100 if call_ms else float("nan"),
             octi_pct=octi_ms / call_ms * 100 if call_ms else float("nan"),
             utterances_spoken=spoken, utterances_answered=answered,
             answer_latency_p50_ms=statistics.median(latencies) if latencies else float("nan"))
    counters = {k.removeprefix("octi_").removesuffix("_total"): v for k, v in final["values"].items()
                if k.endswith("_total")}
    f["server_counters"] = counters
    f["server_log"] = dict(server_warnings)
    f["saturated"] = busy >= SATURATED_PCT or (rc.pin and max(per_cpu, default=0) >= 95)
    # Whatever else ran on the machine meanwhile (other people's jobs), in % of one core.
    f["irq_cpu_pct"] = irq_pct
    f["others_cpu_pct"] = max(0.0, busy * len(per_cpu) - f["server_cpu_pct"] - f["double_cpu_pct"]
                              - f["generators_cpu_pct"] - f["bench_cpu_pct"] - irq_pct)
    f["idle_before_pct"] = rc.idle_before
    f["top_others"] = top_others
    if profiler is not None and (out / "profile.txt").exists():
        f["profile"] = summarize_profile(out / "profile.txt", f["cpu_per_call_min"])
    (out / "figures.json").write_text(json.dumps({"config": {k: str(v) for k, v in vars(rc).items()},
                                                  "figures": f, "notes": result.notes}, indent=2, default=str))
    return result


# --------------------------------------------------------------------------- profile summary

# Leaf functions that stand for a system call: the time is mostly spent in the kernel.
SYSCALL_CATEGORIES = {
    "_SelectorSocketTransport.write": "kernel: socket send (loopback TCP)",
    "_SelectorSocketTransport._write_ready": "kernel: socket send (loopback TCP)",
    "_SelectorSocketTransport._read_ready__data_received": "kernel: socket recv",
    "_SelectorSocketTransport._read_ready__get_buffer": "kernel: socket recv",
    "EpollSelector.select": "kernel: epoll_wait",
    "_PollLikeSelector.select": "kernel: epoll_wait",
    "_PollLikeSelector.register": "kernel: epoll_ctl",
    "_PollLikeSelector.unregister": "kernel: epoll_ctl",
    "_PollLikeSelector.modify": "kernel: epoll_ctl",
}
# Outer frames every sample goes through: not worth listing as inclusive hot spots.
OUTER_FRAMES = {"<module>", "main", "serve", "run", "asyncio_run", "Runner.run", "BaseEventLoop.run_until_complete",
                "BaseEventLoop.run_forever", "Server.run", "Server.serve", "BaseEventLoop._run_once", "Handle._run"}
CATEGORIES = [  # first match wins, on the frame's file path
    ("uvicorn websocket protocol", ("uvicorn/protocols/websockets",)),
    ("uvicorn other", ("uvicorn/",)),
    ("starlette/fastapi", ("starlette/", "fastapi/")),
    ("websockets library", ("websockets/",)),
    ("wsproto/h11", ("wsproto/", "h11/")),
    ("json", ("json/",)),
    ("base64", ("base64.py",)),
    ("resampler", ("app/audio/resampler.py",)),
    ("g711/convert/framing", ("app/audio/",)),
    ("session", ("app/agent/",)),
    ("twilio channel/wire", ("app/channels/",)),
    ("realtime connection/protocol", ("app/engines/",)),
    ("picows", ("picows/",)),
    ("metrics", ("app/metrics.py",)),
    ("logging", ("logging/",)),
    ("numpy", ("numpy/",)),
    ("the sample's main.py", ("/main.py",)),
    ("asyncio event loop/transports", ("asyncio/", "selectors.py")),
]


def _frame_parts(frame: str) -> tuple[str, str]:
    """'func (path/file.py:123)' -> ('func', 'path/file.py')."""
    name, _, where = frame.rpartition(" (")
    if not name:
        return frame, ""
    return name, where.rstrip(")").rsplit(":", 1)[0]


def _category(path: str) -> str:
    for name, needles in CATEGORIES:
        if any(n in path for n in needles):
            return name
    return "other"


def summarize_profile(path: Path, cpu_per_call_min: float, top: int = 15) -> dict[str, Any]:
    """Self and inclusive shares of the sampled (non-idle) stacks, by function and by category."""
    self_fn: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    self_cat: Counter[str] = Counter()
    incl_cat: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if " (" in f]  # drop thread/process labels
        if not frames:
            continue
        parsed = [_frame_parts(f) for f in frames]
        leaf_name, leaf_path = parsed[-1]
        self_fn[f"{leaf_name} ({_short(leaf_path)})"] += n
        self_cat[SYSCALL_CATEGORIES.get(leaf_name) or _category(leaf_path)] += n
        for key in {f"{name} ({_short(p)})" for name, p in parsed if name not in OUTER_FRAMES}:
            incl_fn[key] += n
        for cat in {_category(p) for _, p in parsed}:
            incl_cat[cat] += n
    if not total:
        return {"samples": 0}

    def rows(counter: Counter[str]) -> list[tuple[str, float, float]]:
        return [(k, v / total * 100, v / total * cpu_per_call_min * 1000) for k, v in counter.most_common(top)]

    return {"samples": total, "self_functions": rows(self_fn), "inclusive_functions": rows(incl_fn),
            "self_categories": rows(self_cat), "inclusive_categories": rows(incl_cat)}


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def print_profile(profile: dict[str, Any]) -> None:
    if not profile.get("samples"):
        print("  profile: no samples")
        return
    print(f"  profile of the server ({profile['samples']} non-idle samples at 100 Hz; "
          "share of the server's CPU, and CPU-ms per call-minute):")
    for title, key in (("by category, self", "self_categories"), ("by category, inclusive", "inclusive_categories"),
                       ("by function, self", "self_functions"), ("by function, inclusive", "inclusive_functions")):
        print(f"    {title}:")
        for name, pct, ms in profile[key]:
            print(f"      {pct:5.1f} %  {ms:6.2f} ms/call-min  {name}")


# --------------------------------------------------------------------------- report


def _ms(v: float, beyond: str = ">1000") -> str:
    """A delay in ms; `beyond` stands for infinity (the +Inf bucket, or a probe that timed out)."""
    if isinstance(v, float) and math.isnan(v):
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return beyond
    return f"{v:.2f}"


def _others(f: dict[str, Any]) -> float:
    """CPU used by other jobs during the window, % of one core (older results: irq included)."""
    if "others_cpu_pct" in f:
        return f["others_cpu_pct"]
    cores = len(f.get("per_cpu_busy_pct") or [None, None])
    return max(0.0, f["machine_busy_pct"] * cores - f["server_cpu_pct"] - f["double_cpu_pct"]
               - f["generators_cpu_pct"])


# (header line 1, header line 2, width, cell) for the table rows; widths include one leading space.
COLUMNS: list[tuple[str, str, int, Any]] = [
    ("CPU-s/", "call-min", 9, lambda f: f"{f['cpu_per_call_min']:.3f}"),
    ("server", "CPU %", 7, lambda f: f"{f['server_cpu_pct']:.0f}"),
    ("inbound ms", "p50/p99", 12, lambda f: f"{_ms(f['inbound_p50_ms'])}/{_ms(f['inbound_p99_ms'])}"),
    ("outbound ms", "p50/p99", 12, lambda f: f"{_ms(f['outbound_p50_ms'])}/{_ms(f['outbound_p99_ms'])}"),
    ("late", "%", 7, lambda f: f"{f['late_pct']:.3f}"),
    ("under-", "runs w/a", 9, lambda f: f"{f['underruns_window']}/{f['underruns_all']}"),
    ("answer", "p50 ms", 7, lambda f: f"{f['answer_latency_p50_ms']:.0f}"),
    ("/health", "p99 ms", 8, lambda f: _ms(f["health_p99_ms"], ">5000")),
    ("failed", "calls", 7, lambda f: f"{f['failed_calls']}"),
    ("viol", "", 5, lambda f: f"{f['violations']}"),
    ("gen lag ms", "tick/wndw", 11, lambda f: f"{f['gen_tick_lag_max_ms']:.0f}/{f['gen_loop_lag_window_max_ms']:.0f}"),
    ("machine", "CPU %", 8, lambda f: f"{f['machine_busy_pct']:.0f}{'!' if f['saturated'] else ' '}"),
    ("double", "CPU %", 7, lambda f: f"{f['double_cpu_pct']:.0f}"),
    ("gens", "CPU %", 6, lambda f: f"{f['generators_cpu_pct']:.0f}"),
    ("irq", "CPU %", 6, lambda f: f"{f['irq_cpu_pct']:.0f}" if "irq_cpu_pct" in f else "n/a"),
    ("others", "CPU %", 7, lambda f: f"{_others(f):.0f}"),
    ("RSS", "MiB", 5, lambda f: f"{f['rss_mib']:.0f}"),
]


def print_tables(runs: list[RunResult]) -> None:
    label_width = max([len(run.config.label) for run in runs] + [4])
    header = f"{'calls':>5} {'ws':<{label_width}}" + "".join(f"{c[0]:>{c[2]}}" for c in COLUMNS)
    header2 = f"{'':>5} {'':<{label_width}}" + "".join(f"{c[1]:>{c[2]}}" for c in COLUMNS)
    by_codec: dict[str, list[RunResult]] = defaultdict(list)
    for run in runs:
        by_codec[run.config.codec].append(run)
    for codec, items in by_codec.items():
        print()
        print(f"codec {codec} ({'caller audio transcoded to PCM16 24 kHz, answers in μ-law' if codec == 'pcm16' else 'μ-law passed through'})")
        print(header)
        print(header2)
        print("-" * len(header))
        for run in items:
            f, rc = run.figures, run.config
            if not f:
                print(f"{rc.calls:>5} {rc.label:<{label_width}} run failed: {'; '.join(run.notes)}")
                continue
            print(f"{rc.calls:>5} {rc.label:<{label_width}}" + "".join(f"{c[3](f):>{c[2]}}" for c in COLUMNS))
        for run in items:
            f, rc = run.figures, run.config
            if not f:
                continue
            peers = ("lean peers (double = benchmarks/lean_peers.py realtime, gens = lean fleets)"
                     if rc.peers == "lean" else "faithful peers")
            print(f"  {rc.calls} calls, ws {rc.label}, {peers}: window {f['window_s']:.1f} s with {f['active_calls']:.0f} calls "
                  f"active; server CPU {f['server_cpu_s']:.1f} s, {f['server_stime_share_pct']:.0f} % of it in "
                  f"the kernel (stime); {f['inbound_n']} inbound / {f['outbound_n']} outbound delays observed; "
                  f"/health round trip p50 {_ms(f['health_p50_ms'], '>5000')} p99 "
                  f"{_ms(f['health_p99_ms'], '>5000')} max {_ms(f['health_max_ms'], '>5000')} ms; generators' loop lag in window p99 "
                  f"{f['gen_loop_lag_window_p99_ms']:.1f} ms")
            print(f"    callers talked {f['talk_pct']:.0f} % and heard OCTI {f['octi_pct']:.0f} % of the time; "
                  f"{f['utterances_answered']}/{f['utterances_spoken']} utterances answered, first answer audio "
                  f"p50 {_ms(f['answer_latency_p50_ms'])} ms after the end of speech; {f['split_answers']} answers "
                  f"split by a gap >= 200 ms; late {f['late_ms']:.0f} ms of {f['answer_span_ms'] / 1000:.0f} s "
                  f"of answers in the window")
            extra = []
            if f["failure_kinds"]:
                extra.append(f"failures {f['failure_kinds']}")
            if f["violation_kinds"]:
                extra.append(f"violations {f['violation_kinds']}")
            if f["caller_errors"]:
                extra.append(f"caller errors {f['caller_errors']} e.g. {f['caller_error_samples'][:2]}")
            if f["server_log"]:
                extra.append(f"server log {f['server_log']}")
            counters = {k: v for k, v in f["server_counters"].items() if k not in ("calls",)}
            extra.append(f"server counters {counters}")
            if f["saturated"]:
                extra.append(f"MACHINE SATURATED ({f['machine_busy_pct']:.0f} % of all cores busy, per core "
                             f"{'/'.join(f'{c:.0f}' for c in f['per_cpu_busy_pct'])} %): the figures include "
                             "waiting for a core")
            if f.get("top_others"):
                extra.append("other jobs during the window: " + "; ".join(f["top_others"]))
            for note in run.notes:
                extra.append(note)
            for line in extra:
                print(f"    {line}")
            if "profile" in f:
                print_profile(f["profile"])


def print_targets(runs: list[RunResult]) -> None:
    print()
    print(f"Targets: <= {TARGET_CPU_PER_CALL_MIN} CPU-s per call-minute with transcoding (pcm16), "
          f"p99 bridge delay < {TARGET_P99_MS:g} ms, < {TARGET_LATE_PCT:g} % late frames; "
          "'!' marks a saturated machine")
    for run in runs:
        f, rc = run.figures, run.config
        head = f"  {rc.codec:<5} {rc.calls:>4} calls ({rc.label}): "
        if not f:
            print(head + "no figures (" + "; ".join(run.notes) + ")")
            continue
        caveats = []
        if f["saturated"]:
            caveats.append(f"machine saturated ({f['machine_busy_pct']:.0f} %)")
        behind = not f["health_p99_ms"] < SERVER_BEHIND_MS
        if behind:
            caveats.append(f"server loop behind (/health p99 {_ms(f['health_p99_ms'], '>5000')} ms, first answer "
                           f"audio p50 {_ms(f['answer_latency_p50_ms'])} ms after speech)")
        if _others(f) > OTHERS_PCT:
            caveats.append(f"other jobs on the machine used {_others(f):.0f} % of a core: contaminated")
        if f["gen_loop_lag_window_p99_ms"] > GEN_LAG_P99_MS or f["gen_loop_lag_window_max_ms"] > GEN_LAG_MAX_MS:
            caveats.append(f"generators lagged (p99 {f['gen_loop_lag_window_p99_ms']:.0f} ms, max "
                           f"{f['gen_loop_lag_window_max_ms']:.0f} ms): callers' figures doubtful")
        no_delays = not f["inbound_n"] and not rc.target.startswith("sample")  # the sample has no /metrics
        if f["failed_calls"] or f["violations"] or no_delays:
            problems = [f"{f['failed_calls']} failed calls", f"{f['violations']} violations"]
            if no_delays:
                problems.append("no bridge delays (the server did not answer /metrics)")
            print(head + "NOT A VALID OPERATING POINT: " + ", ".join(problems) + "; " + "; ".join(caveats))
            continue
        verdicts = []
        cpu_ok = f["cpu_per_call_min"] <= TARGET_CPU_PER_CALL_MIN
        verdicts.append(f"CPU {f['cpu_per_call_min']:.3f} "
                        + ("(for reference: the target is OCTI's)" if rc.target.startswith("sample")
                           else ('met' if cpu_ok else 'MISSED') + ("" if rc.codec == "pcm16" else " (the target is for pcm16)"))
                        + (" (server behind: batching, not a steady-state cost)" if behind else ""))
        worst = max(f["inbound_p99_ms"], f["outbound_p99_ms"])
        if not rc.target.startswith("sample"):
            verdicts.append(f"p99 {_ms(worst)} ms {'met' if worst < TARGET_P99_MS else 'MISSED'}"
                            + (" (blind to the loop's backlog)" if behind else ""))
        late_ok = f["late_pct"] < TARGET_LATE_PCT
        verdicts.append(f"late {f['late_pct']:.3f} % {'met' if late_ok else 'MISSED'}")
        print(head + "; ".join(verdicts + caveats))


def print_pairs(runs: list[RunResult]) -> None:
    """octi's CPU per call-minute over the sample's, run by run in each (repetition, N) pair."""
    samples = {(r.config.target, r.config.rep, r.config.calls, r.config.peers, r.config.pin): r for r in runs
               if r.config.target.startswith("sample") and r.figures}
    octis = [r for r in runs if r.config.target == "octi" and r.figures]
    if not samples or not octis:
        return
    print()
    print(f"Against Twilio's sample (budget: octi pcm16 <= {SAMPLE_BUDGET:g} x the sample's CPU per call-minute; "
          "each octi run over the sample run of the same repetition and N, run next to it)")
    print(f"{'rep':>3} {'calls':>5} {'octi run':<28} {'sample run':<12} {'octi':>7} {'sample':>7} {'ratio':>6}  "
          "machine % octi/sample")
    ratios: dict[tuple[str, str, int, str], list[float]] = defaultdict(list)
    kinds = sorted({key[0] for key in samples})
    for r in octis:
        for kind in kinds:
            pair = samples.get((kind, r.config.rep, r.config.calls, r.config.peers, r.config.pin))
            if pair is None:
                continue
            a, b = r.figures["cpu_per_call_min"], pair.figures["cpu_per_call_min"]
            ratio = a / b if b else float("nan")
            ratios[(r.config.codec, r.config.label, r.config.calls, kind)].append(ratio)
            print(f"{r.config.rep:>3} {r.config.calls:>5} {r.config.codec + ' ' + r.config.label:<28} {kind:<12} "
                  f"{a:7.3f} {b:7.3f} {ratio:6.2f}  "
                  f"{r.figures['machine_busy_pct']:.0f}/{pair.figures['machine_busy_pct']:.0f}")
    for (codec, label, calls, kind), values in ratios.items():
        verdict = ("within" if max(values) <= SAMPLE_BUDGET else
                   "over" if min(values) > SAMPLE_BUDGET else "across") + f" the {SAMPLE_BUDGET:g} budget"
        print(f"  {calls} calls, {codec} {label} / {kind}: ratio {min(values):.2f}-{max(values):.2f}, median "
              f"{statistics.median(values):.2f} over {len(values)} pair(s): {verdict}"
              + ("" if codec == "pcm16" else " (the budget is for pcm16)"))


# --------------------------------------------------------------------------- main


def _config_from_strings(values: dict[str, str]) -> RunConfig:
    """A RunConfig back from results.json, where every value was written as a string."""
    return RunConfig(
        codec=values["codec"], calls=int(values["calls"]), ws=values["ws"], duration=float(values["duration"]),
        generators=int(values["generators"]), ramp=float(values["ramp"]), settle=float(values["settle"]),
        speed=float(values["speed"]), answer_seconds=float(values["answer_seconds"]),
        profile=float(values["profile"]), pin=values.get("pin") == "True", out=Path(values["out"]),
        server_env=_literal_dict(values.get("server_env", "{}")), peers=values.get("peers", "faithful"),
        target=values.get("target", "octi"), sample_dir=values.get("sample_dir", ""), rep=int(values.get("rep", 0)),
        sample_python=values.get("sample_python", ""))


def _literal_dict(text: str) -> dict[str, str]:
    import ast

    value = ast.literal_eval(text)
    return value if isinstance(value, dict) else {}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, nargs="+", default=[50, 100, 200, 300])
    p.add_argument("--codec", nargs="+", default=["pcm16", "pcmu"], choices=["pcm16", "pcmu"])
    p.add_argument("--ws", nargs="+", default=["websockets-sansio"],
                   choices=["websockets-sansio", "auto", "websockets", "wsproto", STREAM_LISTENER],
                   help="uvicorn websocket implementation(s) for the server (default: websockets-sansio, "
                        f"the server's own default), or {STREAM_LISTENER}: the media stream on its own "
                        "listener (STREAM_PORT, picows), the rest on uvicorn's default")
    p.add_argument("--duration", type=float, default=60.0, help="seconds each call lasts (default 60)")
    p.add_argument("--generators", type=int, help=f"load-generator processes (default: <= {CALLS_PER_GENERATOR} "
                                                   f"calls each, {CALLS_PER_LEAN_GENERATOR} with --peers lean)")
    p.add_argument("--target", nargs="+", choices=["octi", "sample", "sample-reqs"], default=["octi"],
                   help="the server under load: octi (`octi serve`, default) and/or Twilio's sample relay "
                        "(needs --sample-dir): 'sample' on this virtualenv's packages, 'sample-reqs' on the "
                        "interpreter given by --sample-python (a virtualenv made from the sample's "
                        "requirements.txt); with several, the runs go in pairs")
    p.add_argument("--sample-python", type=Path, metavar="PYTHON",
                   help="for --target sample-reqs: python of a virtualenv with the sample's requirements.txt")
    p.add_argument("--sample-dir", type=Path, metavar="PATH",
                   help="checkout of twilio-samples/speech-assistant-openai-realtime-api-python (holds main.py)")
    p.add_argument("--repeat", type=int, default=1, help="run every configuration this many times, in pairs "
                                                         "(default 1)")
    p.add_argument("--peers", choices=["faithful", "lean"], default="faithful",
                   help="the double and callers: the project's simulators (default), or the lean ones of "
                        "benchmarks/lean_peers.py, cheap enough for 200-300 calls on a small machine")
    p.add_argument("--ramp", type=float, help="seconds over which the calls start (default N/40, 2..8)")
    p.add_argument("--settle", type=float, default=10.0, help="window starts this long after the last call "
                                                              "started (default 10)")
    p.add_argument("--speed", type=float, default=2.0, help="realtime double's streaming speed (default 2)")
    p.add_argument("--answer-seconds", type=float, default=3.0, help="length of the double's answers (default 3)")
    p.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                   help="py-spy the server for this long at the start of each window (perturbs the figures)")
    p.add_argument("--pin", action="store_true",
                   help="run the server alone on the first CPU, the double and the generators on the others")
    p.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment variable for the server, e.g. RAG_MODE=off (repeatable)")
    p.add_argument("--wait-idle", type=float, default=60.0, metavar="SECONDS",
                   help=f"before each run, wait up to this long for the machine to be under {QUIET_PCT:g} %% busy "
                        "(other people's jobs); default 60, 0 to start at once")
    p.add_argument("--out", type=Path, help="directory for logs and raw results (default: a new /tmp dir)")
    p.add_argument("--report", type=Path, metavar="RESULTS_JSON",
                   help="print the tables of an earlier run from its results.json, without running anything")
    p.add_argument("--worker", nargs=2, metavar=("CONFIG", "RESULT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(*args.worker)
    if any("=" not in item for item in args.server_env):
        p.error("--server-env takes NAME=VALUE")
    if any(t.startswith("sample") for t in args.target) and not (args.sample_dir and
                                                                 (args.sample_dir / "main.py").is_file()):
        p.error("--target sample needs --sample-dir PATH, a checkout holding the sample's main.py")
    if "sample-reqs" in args.target and not (args.sample_python and args.sample_python.exists()):
        p.error("--target sample-reqs needs --sample-python PYTHON")
    if args.repeat < 1:
        p.error("--repeat takes a positive number")
    if args.report:
        saved = json.loads(args.report.read_text())
        if isinstance(saved, dict):
            print("\n".join(f"{key}: {value}" for key, value in saved["meta"].items()))
            saved = saved["runs"]
        runs = [RunResult(_config_from_strings(r["config"]), r["figures"], r["notes"]) for r in saved]
        print_tables(runs)
        print_targets(runs)
        print_pairs(runs)
        return 0

    out = args.out or Path(tempfile.mkdtemp(prefix="octi-relay-"))
    out.mkdir(parents=True, exist_ok=True)
    configs = []

    def config(codec: str, ws: str, n: int, target: str, rep: int) -> RunConfig:
        ramp = args.ramp if args.ramp is not None else min(8.0, max(2.0, n / 40))
        per_generator = CALLS_PER_LEAN_GENERATOR if args.peers == "lean" else CALLS_PER_GENERATOR
        gens = args.generators or max(1, math.ceil(n / per_generator))
        window = args.duration - 0.5 - ramp - args.settle
        if window < 5:
            p.error(f"{n} calls: a {args.duration:g} s call leaves a {window:.1f} s window after the "
                    f"{ramp:g} s ramp and {args.settle:g} s settling; use a longer --duration")
        if args.profile and args.profile > window:
            p.error(f"--profile {args.profile:g} is longer than the {window:.1f} s window")
        return RunConfig(codec, n, ws, args.duration, min(gens, n), ramp, args.settle, args.speed,
                         args.answer_seconds, args.profile, args.pin, out,
                         dict(item.split("=", 1) for item in args.server_env), peers=args.peers, target=target,
                         sample_dir=str(args.sample_dir.resolve()) if target.startswith("sample") else "", rep=rep,
                         sample_python=str(args.sample_python) if target == "sample-reqs" else "")

    if args.target == ["octi"] and args.repeat == 1:  # the original order: by codec, then ws, then N
        configs = [config(codec, ws, n, "octi", 0) for codec in args.codec for ws in args.ws for n in args.calls]
    else:  # in pairs: for each repetition and N, every octi configuration, then the sample (μ-law, its own ws)
        for rep in range(args.repeat):
            for n in args.calls:
                for target in args.target:
                    if target.startswith("sample"):
                        configs.append(config("pcmu", "auto", n, target, rep))
                    else:
                        configs.extend(config(codec, ws, n, "octi", rep) for codec in args.codec for ws in args.ws)

    print(f"Relay benchmark: {len(configs)} run(s), {args.duration:g} s calls; {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {platform.platform()}; logs and raw results in {out}")
    print("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    print(f"server stack: {server_stack()}")
    fingerprint = code_fingerprint()
    print(f"server code: {fingerprint}" + (f"; extra server environment {args.server_env}" if args.server_env else ""))
    sample_code = sample_fingerprint(args.sample_dir) if any(t.startswith("sample") for t in args.target) else None
    if sample_code:
        print(f"sample: {sample_code}")
    if "sample-reqs" in args.target:
        reqs_stack = sample_stack(args.sample_python)
        sample_code += f"; sample-reqs on {reqs_stack}"
        print(f"sample-reqs stack: {reqs_stack}")

    def on_term(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    procs = Processes()
    runs: list[RunResult] = []
    try:
        for rc in configs:
            if args.wait_idle > 0:
                rc.idle_before, waited = wait_for_quiet(args.wait_idle)
                quiet = "quiet" if rc.idle_before < QUIET_PCT else "STILL BUSY"
                print(f"  machine {rc.idle_before:.0f} % busy before the run ({quiet}, waited {waited:.0f} s)",
                      flush=True)
            started = time.monotonic()
            print(f"- {rc.codec}, {rc.calls} calls, ws {rc.label}, {rc.generators} generator(s), ramp {rc.ramp:g} s ...",
                  flush=True)
            try:
                run = run_one(rc, procs)
            except RuntimeError as exc:
                run = RunResult(rc, notes=[str(exc)])
                print(f"  failed: {exc}", flush=True)
            finally:
                procs.stop_all()
            runs.append(run)
            f = run.figures
            if f:
                print(f"  done in {time.monotonic() - started:.0f} s: {f['cpu_per_call_min']:.3f} CPU-s/call-min, "
                      f"server {f['server_cpu_pct']:.0f} % of a core, machine {f['machine_busy_pct']:.0f} %, "
                      f"late {f['late_pct']:.3f} %, {f['failed_calls']} failed", flush=True)
    except KeyboardInterrupt:
        print("interrupted: every process started was stopped; the runs completed so far follow", flush=True)
        status = 130
    else:
        status = 0
    finally:
        procs.stop_all()
    if runs:
        print_tables(runs)
        print_targets(runs)
        print_pairs(runs)
    if code_fingerprint() != fingerprint:
        print(f"WARNING: the server code changed during the benchmark (now {code_fingerprint()}): "
              "the runs did not all measure the same code")
    meta = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "server_code": fingerprint,
            "server_stack": server_stack(), "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "platform": platform.platform(), "cpus": os.cpu_count(), "sample_code": sample_code}
    (out / "results.json").write_text(json.dumps(
        {"meta": meta, "runs": [{"config": {k: str(v) for k, v in vars(r.config).items()}, "figures": r.figures,
                                 "notes": r.notes} for r in runs]}, indent=2, default=str))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
