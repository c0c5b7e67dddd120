"""Soak: many concurrent simulated calls through one `octi serve` for minutes, nothing may give.

Through the real server (`octi serve`, a subprocess, with a fresh call log) and the lean
Realtime peer of benchmarks/lean_peers.py (a process of its own: it answers every turn with
audio of the double's recording and with transcripts of both sides), `--calls` call slots
run side by side for `--minutes`. Each slot places a lean Twilio call (lean_peers.Fleet: the
signed webhook, the signed media stream), talks, hangs up and places the next one, until
the time is up; the last calls then end on their own time. Calls last `--min-call-s` to
`--max-call-s` (drawn per call), and the slots' first calls are spread over `--ramp` s, so
calls start and end all the time. In a call the caller asks questions (slices of real French
speech, live_calls.question_wavs), each once OCTI has answered the previous one; about half
the calls press * (OCTI repeats its answer) as their second step, and about half talk over
OCTI's answer as their third (a barge-in).

Figures, printed as a table at the end (see benchmarks/README.md, "Soak"):

- calls placed, and failed: a call fails when its webhook or stream was refused, the stream
  ended other than by the caller's hang-up (close 1000), the caller saw a protocol violation,
  the greeting did not come, or a step of the caller (a question, the key) that ended at
  least ANSWER_WITHIN_S before the hang-up got no answer within ANSWER_WITHIN_S;
- call-log rows, once the server has drained (SIGTERM) and flushed its log: one `calls` row
  per call placed, with its end, whose outcome is the caller's hang-up; and the `turns` rows
  of each call against the number of turns the server counted for it (`calls.turns`) and
  against the caller's questions that were answered (each must have its caller turn row);
- the server's RSS (/proc/PID/status), every few seconds: after the warm-up and at the end of
  the load, and the growth between the two (median of the three samples up to each point).
  The warm-up lasts until every slot has moved on to its second call (`--ramp` +
  `--max-call-s`, 2 minutes by default): until then the calls under way are all young and
  none has ended yet, and RSS climbs by about a quarter before it levels off
  (benchmarks/README.md, "Soak");
- event-loop lag p50/p99 from the server's own `octi_event_loop_lag_seconds` histogram, and
  the round trip of a GET /health 4 times a second, both between the warm-up and the end of
  the load.

With `--server-env WORKERS=2 --server-env REDIS_URL=redis://127.0.0.1:6379/5` the server is
`octi serve --workers 2` (Redis shares the stream claims between the workers): RSS and CPU are
the supervisor's and its workers' added up, and /metrics sums the workers.

Targets (issue 14): 0 failed calls, 0 lost log rows, RSS growth < 10 %; the exit status is 1
when one is missed.

Usage:
    .venv/bin/python benchmarks/soak.py                          # 200 calls for 10 minutes (~13 min)
    .venv/bin/python benchmarks/soak.py --calls 20 --minutes 1   # a short check
    .venv/bin/python benchmarks/soak.py --database-url postgresql://postgres@127.0.0.1:5432/octi_soak
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from live_calls import (API_KEY, AUTH_TOKEN, free_port, health, load_questions, quantile, question_wavs,
                        start_server)
from relay import HealthProbe, Processes, machine_cpu, process_cpu_s, process_memory_mib, quantile_ms, scrape

import lean_peers

from app.calllog.models import CallRow, TurnRow, make_engine

CALLS_PER_GENERATOR = 100  # lean calls per load-generator process
ANSWER_WITHIN_S = 5.0  # a step of the caller unanswered this long is a failed call
RSS_EVERY_S = 5.0
PROGRESS_EVERY_S = 30.0
RSS_GROWTH_TARGET = 0.10
QUESTIONS = 24  # distinct questions the callers ask (live_calls.question_wavs)
LOOP_LAG_BUCKET = "octi_event_loop_lag_seconds_bucket"
MARK_SCRAPE_TIMEOUT_S = 30.0  # the loop-lag figures need both scrapes, even from a server far behind


# --------------------------------------------------------------------------- the load generators


def call_plan(rng: random.Random) -> tuple[str, ...]:
    """The steps of a call that are not a plain question: * as the second, a barge-in as the third."""
    return (lean_peers.SPEAK,
            f"{lean_peers.DTMF_STEP}*" if rng.random() < 0.5 else lean_peers.SPEAK,
            lean_peers.BARGE_IN if rng.random() < 0.5 else lean_peers.SPEAK)


async def run_slots(cfg: dict[str, Any]) -> dict[str, Any]:
    """Every slot of this generator: calls one after another from the slot's start to the end of the load."""
    speech = lean_peers.Utterances([Path(p) for p in cfg["wavs"]])
    to_monotonic = time.monotonic() - time.time()
    start, end = cfg["t0"] + to_monotonic, cfg["load_end"] + to_monotonic
    results: list[dict[str, Any]] = []
    async with lean_peers.running_fleet(cfg["url"], duration=cfg["max_call_s"], public_url=cfg["public_url"],
                                        auth_token=AUTH_TOKEN, speech=speech) as fleet:

        async def slot(index: int, offset: float) -> None:
            rng = random.Random(f"{cfg['seed']}-{index}")
            await asyncio.sleep(max(0.0, start + offset - time.monotonic()))
            number = 0
            while time.monotonic() < end:
                call_sid = f"CA{cfg['run_tag']}{index:08x}{number:08x}{0:08x}"
                duration = rng.uniform(cfg["min_call_s"], cfg["max_call_s"])
                result = await fleet.place(index, call_sid, duration=duration, plan=call_plan(rng))
                result.setdefault("call_sid", call_sid)
                results.append(result)
                number += 1

        await asyncio.gather(*(slot(index, offset) for index, offset in cfg["slots"]))
        lags = sorted(fleet.ticker.lags_ms)
    return {"calls": results, "tick_lag_p99_ms": lags[int(0.99 * (len(lags) - 1))] if lags else None,
            "tick_lag_max_ms": lags[-1] if lags else None}


def worker_main(config_path: str, result_path: str) -> int:
    cfg = json.loads(Path(config_path).read_text())
    Path(result_path).write_text(json.dumps(lean_peers.run_async(run_slots(cfg))))
    return 0


# --------------------------------------------------------------------------- what the callers saw


def call_failure(call: dict[str, Any]) -> str | None:
    """Why a call failed, from the caller's side; None when it went as it should."""
    if call["status"] != "completed":
        return call["status"]
    if (call["closed_by"], call["close_code"]) != ("caller", 1000):
        return f"stream closed by the {call['closed_by']} ({call['close_code']})"
    if call["violations"]:
        return "protocol violation"
    if call["n_errors"]:
        return "caller error"
    if not call["bursts"] or call["bursts"][0][0] > ANSWER_WITHIN_S:
        return "no greeting"
    if unanswered_steps(call):
        return "step unanswered"
    return None


def unanswered_steps(call: dict[str, Any]) -> list[str]:
    late = []
    for start, spoken_ms, latency_ms, step in call["utterances"]:
        if start + spoken_ms / 1000 + ANSWER_WITHIN_S > call["duration_s"]:
            continue  # too close to the hang-up for an answer to be due
        if latency_ms is None or latency_ms > ANSWER_WITHIN_S * 1000:
            late.append(step)
    return late


def answered_questions(call: dict[str, Any]) -> int:
    """Questions (spoken steps, barge-ins included) that OCTI answered: each has its caller turn row."""
    return sum(1 for _, _, latency_ms, step in call["utterances"]
               if latency_ms is not None and not step.startswith(lean_peers.DTMF_STEP))


# --------------------------------------------------------------------------- the call log


@dataclass
class Logged:
    placeholder: bool
    ended: bool
    outcome: str | None
    turns: int  # what the server counted at the call's end
    rows: Counter[str] = field(default_factory=Counter)  # turn rows by role


async def read_call_log(url: str, run_tag: str) -> dict[str, Logged]:
    """This run's calls in the call log (their SIDs carry the run's tag), with their turn rows."""
    from sqlalchemy import func, select

    engine = make_engine(url, pooled=False)
    try:
        async with engine.connect() as db:
            mine = CallRow.call_sid.like(f"CA{run_tag}%")
            calls = (await db.execute(select(CallRow.id, CallRow.call_sid, CallRow.placeholder, CallRow.ended_at,
                                             CallRow.outcome, CallRow.turns).where(mine))).all()
            turns = (await db.execute(select(TurnRow.call_id, TurnRow.role, func.count())
                                      .join(CallRow, CallRow.id == TurnRow.call_id).where(mine)
                                      .group_by(TurnRow.call_id, TurnRow.role))).all()
    finally:
        await engine.dispose()
    by_id = {row.id: Logged(row.placeholder, row.ended_at is not None, row.outcome, row.turns) for row in calls}
    for call_id, role, count in turns:
        by_id[call_id].rows[role] = count
    return {row.call_sid: by_id[row.id] for row in calls}


@dataclass
class LogCheck:
    calls_missing: int = 0  # placed, no row (or only a placeholder: its start record is lost)
    ends_missing: int = 0  # a row without its end
    bad_outcomes: dict[str, str] = field(default_factory=dict)  # call SID -> outcome, when not the hang-up
    turn_rows_missing: int = 0  # below the server's own count
    caller_rows_missing: int = 0  # answered questions without their caller turn row
    turn_rows: int = 0

    @property
    def lost(self) -> int:
        return self.calls_missing + self.ends_missing + self.turn_rows_missing + self.caller_rows_missing


def check_log(calls: list[dict[str, Any]], logged: dict[str, Logged]) -> LogCheck:
    check = LogCheck()
    for call in calls:
        if call["status"] != "completed":
            continue  # the stream never opened: the server had no call to log
        row = logged.get(call["call_sid"])
        if row is None or row.placeholder:
            check.calls_missing += 1
            continue
        if not row.ended:
            check.ends_missing += 1
        elif row.outcome != "caller_hung_up":
            check.bad_outcomes[call["call_sid"]] = row.outcome or "none"
        rows = sum(row.rows.values())
        check.turn_rows += rows
        check.turn_rows_missing += max(0, row.turns - rows)
        check.caller_rows_missing += max(0, answered_questions(call) - row.rows["caller"])
    return check


# --------------------------------------------------------------------------- the server, seen from outside


def loop_lag(metrics: dict[str, Any] | None) -> list[tuple[float, int]]:
    """The cumulative buckets of octi_event_loop_lag_seconds in a /metrics scrape."""
    buckets = []
    for name, value in (metrics or {}).get("values", {}).items():
        if name.startswith(LOOP_LAG_BUCKET + "{"):
            le = name.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((math.inf if le == "+Inf" else float(le), int(value)))
    return sorted(buckets)


def lag_between(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[tuple[float, int]]:
    earlier = dict(loop_lag(before))
    return [(bound, count - earlier.get(bound, 0)) for bound, count in loop_lag(after)]


def metric(metrics: dict[str, Any] | None, name: str) -> float:
    """A sample's value in a scrape, summed over its labels (NaN when the scrape failed)."""
    if metrics is None:
        return math.nan
    return sum(v for k, v in metrics["values"].items() if k == name or k.startswith(name + "{"))


def server_pids(pid: int) -> list[int]:
    """The server and its direct children: the worker processes of `octi serve --workers N`."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return [pid, *children]


@dataclass
class Watch:
    """What the main process reads off the server while the load runs."""

    pid: int
    port: int
    t0: float  # time.monotonic() of the load's start
    rss: list[tuple[float, float]] = field(default_factory=list)  # (s into the run, MiB)
    scrapes: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    cpu: dict[str, tuple[float, list[tuple[int, int, int]]]] = field(default_factory=dict)

    def sample(self) -> None:
        self.rss.append((time.monotonic() - self.t0, sum(process_memory_mib(pid)[0] for pid in server_pids(self.pid))))

    def mark(self, name: str) -> None:
        self.scrapes[name] = scrape(self.port, timeout=MARK_SCRAPE_TIMEOUT_S)
        self.cpu[name] = (sum(process_cpu_s(pid) or 0.0 for pid in server_pids(self.pid)) or math.nan, machine_cpu())

    def rss_at(self, seconds: float) -> float:
        """Median of the three samples up to `seconds` into the run (GC and allocator noise)."""
        upto = [mib for t, mib in self.rss if t <= seconds + 0.5][-3:]
        return statistics.median(upto) if upto else math.nan

    def cpu_between(self, start: str, end: str) -> tuple[float, float]:
        """(server CPU in % of a core, machine busy in %) between two marks."""
        (s0, m0), (s1, m1) = self.cpu[start], self.cpu[end]
        busy, total = m1[0][0] - m0[0][0], m1[0][1] - m0[0][1]
        cores = len(m1) - 1
        seconds = total / max(1, cores) / os.sysconf("SC_CLK_TCK")
        return 100 * (s1 - s0) / max(seconds, 1e-9), 100 * busy / max(total, 1)


def watch_load(watch: Watch, warmup_at: float, load_end: float, generators: list[subprocess.Popen],
               tail_s: float) -> HealthProbe:
    """Sample RSS and progress until every generator is done; /health probed from the warm-up to the load's end."""
    probe: HealthProbe | None = None
    next_rss = time.monotonic()
    next_progress = watch.t0 + PROGRESS_EVERY_S
    deadline = load_end + tail_s
    while time.monotonic() < deadline and any(g.poll() is None for g in generators):
        now = time.monotonic()
        if now >= next_rss:
            watch.sample()
            next_rss += RSS_EVERY_S
        if probe is None and now >= warmup_at:
            watch.mark("warm")
            probe = HealthProbe(watch.port, until=load_end)
            probe.start()
        if "end" not in watch.scrapes and now >= load_end:
            watch.mark("end")
        if now >= next_progress:
            current = scrape(watch.port, timeout=5)
            print(f"{now - watch.t0:6.0f} s  active calls {metric(current, 'octi_active_calls'):4.0f}  "
                  f"ended {metric(current, 'octi_calls_ended_total'):6.0f}  RSS {watch.rss[-1][1]:6.1f} MiB",
                  flush=True)
            next_progress += PROGRESS_EVERY_S
        time.sleep(0.2)
    if probe is None:  # the load ended before the warm-up: nothing to compare
        raise RuntimeError("the load ended before the warm-up")
    probe.join(timeout=10)
    if "end" not in watch.scrapes:
        watch.mark("end")
    return probe


def drain(server: subprocess.Popen, port: int, timeout: float) -> int | None:
    """Once the calls are over: SIGTERM, as a deployment stops the service; its exit status."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (health(port) or {}).get("active_calls", 0) > 0:
        time.sleep(0.5)
    server.send_signal(signal.SIGTERM)
    try:
        return server.wait(timeout)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(10)
        return None


# --------------------------------------------------------------------------- the run


def print_report(args: argparse.Namespace, calls: list[dict[str, Any]], generators: list[dict[str, Any]],
                 check: LogCheck, watch: Watch, probe: HealthProbe, warm_s: float, end_s: float,
                 exit_status: int | None, call_log: dict[str, Any]) -> bool:
    failures = Counter()
    for call in calls:  # the caller's view first, then the server's outcome
        reason = call_failure(call) or (f"server outcome {check.bad_outcomes[call['call_sid']]}"
                                        if call["call_sid"] in check.bad_outcomes else None)
        if reason:
            failures[reason] += 1
    failed = sum(failures.values())
    rss_warm, rss_end = watch.rss_at(warm_s), watch.rss_at(end_s)
    growth = (rss_end - rss_warm) / rss_warm
    lag = lag_between(watch.scrapes["warm"], watch.scrapes["end"])
    rtts = sorted(probe.rtts_ms)
    latencies = [u[2] for c in calls if c["status"] == "completed" for u in c["utterances"] if u[2] is not None]
    steps = Counter(u[3].split(":")[0] for c in calls if c["status"] == "completed" for u in c["utterances"])
    server_cpu, machine_busy = watch.cpu_between("warm", "end")
    durations = [c["duration_s"] for c in calls if c["status"] == "completed"]
    tick_p99 = max((g["tick_lag_p99_ms"] or 0 for g in generators), default=math.nan)
    met = {"failed": failed == 0, "lost": check.lost == 0, "rss": growth < RSS_GROWTH_TARGET,
           "drain": exit_status == 0}

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    print()
    print(f"soak: {args.calls} call slots for {args.minutes:g} min, lean peers, "
          f"{args.server_env.get('AUDIO_CODEC', 'pcm16')}, call log on "
          f"{'PostgreSQL' if args.database_url and args.database_url.startswith('postgres') else 'SQLite'}")
    rows = [
        ("calls placed", f"{len(calls)}", f"{statistics.mean(durations):.0f} s on average" if durations else ""),
        ("  with a barge-in / a key", f"{steps['barge-in']} / {steps['dtmf']}", f"{steps['speak']} plain questions"),
        ("calls failed", f"{failed}", f"target 0: {verdict(met['failed'])}"
         + (" (" + ", ".join(f"{k} {v}" for k, v in failures.items()) + ")" if failures else "")),
        ("log rows lost", f"{check.lost}", f"target 0: {verdict(met['lost'])} (calls {check.calls_missing}, ends "
         f"{check.ends_missing}, turns {check.turn_rows_missing}, questions {check.caller_rows_missing}; "
         f"{check.turn_rows} turn rows)"),
        ("call log at the end", f"{call_log.get('written', '?')} written",
         f"spooled {call_log.get('spooled', '?')}, rejected {call_log.get('rejected', '?')}, "
         f"lost {call_log.get('lost', '?')}"),
        ("RSS after warm-up", f"{rss_warm:.1f} MiB", f"at {warm_s:.0f} s"),
        ("RSS at the end", f"{rss_end:.1f} MiB", f"at {end_s:.0f} s; growth {growth:+.1%}, target < "
         f"{RSS_GROWTH_TARGET:.0%}: {verdict(met['rss'])}"),
        ("RSS once idle", f"{watch.rss[-1][1]:.1f} MiB", f"max {max(m for _, m in watch.rss):.1f} MiB"),
        ("loop lag p50 / p99", f"{quantile_ms(lag, 0.5):.1f} / {quantile_ms(lag, 0.99):.1f} ms",
         f"{lag[-1][1]} timer wake-ups, from the warm-up to the end of the load" if lag
         else "n/a: /metrics did not answer at the warm-up or at the end"),
        ("/health p50 / p99", f"{quantile(rtts, 0.5):.1f} / {quantile(rtts, 0.99):.1f} ms",
         f"{len(rtts)} probes, {probe.failures} failed"),
        ("answer p50 / p99", f"{quantile(latencies, 0.5):.0f} / {quantile(latencies, 0.99):.0f} ms",
         "end of the caller's step to OCTI's audio"),
        ("server CPU", f"{server_cpu:.0f} % of a core", f"machine {machine_busy:.0f} % busy (all cores)"),
        ("callers' tick lag p99", f"{tick_p99:.1f} ms", "how late the load generators ran"),
        ("drain (SIGTERM)", f"exit {exit_status}", verdict(met["drain"])),
    ]
    for name, value, note in rows:
        print(f"{name:<27} {value:>18}   {note}")
    return all(met.values())


def main_run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="octi-soak-"))
    print(f"logs in {workdir}", flush=True)
    procs = Processes()
    server: subprocess.Popen | None = None
    try:
        wavs = question_wavs(load_questions(QUESTIONS), workdir)
        data_dir = workdir / "data"
        data_dir.mkdir()
        database_url = args.database_url or f"sqlite+aiosqlite:///{data_dir / 'calls.sqlite3'}"
        peer_port, port = free_port(), free_port()
        peer = procs.start("realtime peer", [sys.executable, str(Path(lean_peers.__file__)), "realtime",
                                             "--port", str(peer_port), "--api-key", API_KEY, "--speed", "2",
                                             "--answer-seconds", "3", "--log-level", "WARNING"],
                           log=workdir / "peer.log")
        env = {"RAG_MODE": "off", "CALL_RECAP": "false", "CALLS_PER_CALLER_PER_HOUR": "0",
               "MAX_CONCURRENT_CALLS": "0", "PUBLIC_BASE_URL": f"https://127.0.0.1:{port}",
               "DATABASE_URL": database_url, **args.server_env}
        server, port = start_server(env, f"ws://127.0.0.1:{peer_port}/v1/realtime", data_dir, port=port,
                                    log=workdir / "server.log")
        if peer.poll() is not None:
            raise RuntimeError(f"the realtime peer exited: see {workdir / 'peer.log'}")

        run_tag = f"{random.getrandbits(32):08x}"
        ramp = min(args.ramp, args.minutes * 60 / 2)
        t0 = time.time() + 3  # the generators load their speech meanwhile
        load_end = t0 + args.minutes * 60
        shares = [list(range(g, args.calls, math.ceil(args.calls / CALLS_PER_GENERATOR)))
                  for g in range(math.ceil(args.calls / CALLS_PER_GENERATOR))]
        generators = []
        for number, share in enumerate(shares):
            cfg = {"url": f"http://127.0.0.1:{port}", "public_url": f"https://127.0.0.1:{port}",
                   "wavs": [str(w) for w in wavs], "t0": t0, "load_end": load_end, "seed": args.seed,
                   "run_tag": run_tag, "min_call_s": args.min_call_s, "max_call_s": args.max_call_s,
                   "slots": [(index, index * ramp / args.calls) for index in share]}
            (workdir / f"gen{number}.json").write_text(json.dumps(cfg))
            generators.append(procs.start(f"generator {number}", [
                sys.executable, __file__, "--worker", str(workdir / f"gen{number}.json"),
                str(workdir / f"gen{number}.result.json")], log=workdir / f"gen{number}.log"))

        to_monotonic = time.monotonic() - time.time()
        warm_s = min(args.ramp + args.max_call_s if args.warmup is None else args.warmup, args.minutes * 60 / 2)
        watch = Watch(server.pid, port, t0 + to_monotonic)
        print(f"{args.calls} call slots for {args.minutes:g} min (ramp {ramp:.0f} s, warm-up {warm_s:.0f} s), "
              f"server pid {server.pid} on port {port}", flush=True)
        probe = watch_load(watch, t0 + to_monotonic + warm_s, load_end + to_monotonic, generators,
                           tail_s=args.max_call_s + 90)
        results = []
        for number, generator in enumerate(generators):
            if generator.wait(30) != 0:
                raise RuntimeError(f"load generator {number} failed: see {workdir / f'gen{number}.log'}")
            results.append(json.loads((workdir / f"gen{number}.result.json").read_text()))
        calls = [call for result in results for call in result["calls"]]

        time.sleep(RSS_EVERY_S)  # the last calls' ends reach the server
        watch.sample()
        call_log = (health(port) or {}).get("call_log", {})
        exit_status = drain(server, port, timeout=60)
        check = check_log(calls, asyncio.run(read_call_log(database_url, run_tag)))
        end_s = load_end + to_monotonic - watch.t0
        ok = print_report(args, calls, results, check, watch, probe, warm_s, end_s, exit_status, call_log)
        (workdir / "calls.json").write_text(json.dumps(calls))
        return 0 if ok else 1
    finally:
        if server is not None and server.poll() is None:
            server.kill()
            server.wait(10)
        procs.stop_all()
        if not args.keep:
            shutil.rmtree(workdir / "data", ignore_errors=True)


def server_env(values: list[str]) -> dict[str, str]:
    env = {}
    for value in values:
        name, sep, setting = value.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--server-env {value!r}: expected NAME=VALUE")
        env[name] = setting
    return env


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        return worker_main(sys.argv[2], sys.argv[3])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="calls under way at once (default: 200)")
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the load lasts (default: 10)")
    parser.add_argument("--database-url", help="the call log's database (default: a fresh SQLite file); rows are "
                                               "matched by this run's call SIDs, but an empty database is best")
    parser.add_argument("--min-call-s", type=float, default=30.0, help="shortest call (default: 30 s)")
    parser.add_argument("--max-call-s", type=float, default=90.0, help="longest call (default: 90 s)")
    parser.add_argument("--ramp", type=float, default=30.0, help="the slots' first calls spread over this (s)")
    parser.add_argument("--warmup", type=float,
                        help="RSS and loop lag are compared from this many seconds into the run (default: --ramp "
                             "+ --max-call-s, when every slot has moved on to its second call; at most half the run)")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the server (e.g. AUDIO_CODEC=pcmu)")
    parser.add_argument("--seed", type=int, default=1, help="call lengths and plans (default: 1)")
    parser.add_argument("--keep", action="store_true", help="keep the server's data directory (the call log)")
    args = parser.parse_args()
    args.server_env = server_env(args.server_env)
    return main_run(args)


if __name__ == "__main__":
    raise SystemExit(main())
