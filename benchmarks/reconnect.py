"""A call whose model connection drops mid-answer: how soon the caller hears OCTI again.

Through the real server (`octi serve`, a subprocess) and the Realtime double (in this process,
generating answers at 1.5× real time, so the answer is still being generated), calls one after
another ask one question; 1.5 s into the answer's generation the double drops the connection
(close 1011). The server plays « Un instant. », opens a new session with the conversation and
asks the question again. Per call, from the drop:

- filler: until the caller hears « Un instant. » (the first audio after the drop reaches them);
- restored: until the new session has the conversation and is asked for the answer (the
  double receives `response.create`);
- model audio: until the new session's first answer audio leaves the double;
- answer heard: until the caller hears that answer (after the filler, which plays whole).

Target: the caller hears OCTI again (filler) within 300 ms, the answer within 1.5 s.

Usage:
    .venv/bin/python benchmarks/reconnect.py              # 8 calls
    .venv/bin/python benchmarks/reconnect.py --calls 4
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
import wave
from pathlib import Path

from live_calls import API_KEY, AUTH_TOKEN, REPO, start_server, stop_server

from app.agent.resilience import FILLER_WAV
from app.simulators.realtime_double import RealtimeDouble
from app.simulators.twilio_caller import CallScript, Utterance, place_call

QUESTION = REPO / "tests" / "audio" / "question_followup.wav"
with wave.open(str(FILLER_WAV)) as _wav:
    FILLER_MS = _wav.getnframes() / _wav.getframerate() * 1000  # « Un instant. »
FIGURES = ("filler", "restored", "model audio", "answer heard")


def first(connection, side: str, kind: str) -> float:
    return next(at for at, who, event in connection.timed_events() if who == side and event["type"] == kind)


async def one_call(double: RealtimeDouble, port: int, index: int) -> dict[str, float]:
    double.script_next_connection(["Et pour les œufs de cane ?"], answer_seconds=6.0)
    double.script_next_connection([], answer_seconds=3.0)
    calling = asyncio.create_task(place_call(
        f"http://127.0.0.1:{port}", script=CallScript(utterances=[Utterance(QUESTION)], hangup_after=40,
                                                      hangup_when_done_after_s=1.0),
        auth_token=AUTH_TOKEN, call_sid=f"CAreconnect{index:04d}"))
    dropped_conn = await double.wait_for_connection(timeout=30)
    while len(dropped_conn.responses) < 2 or dropped_conn.responses[1].audio_ms < 1500:
        await asyncio.sleep(0.01)
    dropped_at = time.monotonic()  # the loop's clock, as the caller's and the double's
    await dropped_conn.close(1011, "benchmark: dropped")
    renewed = await double.wait_for_connection(timeout=30)
    result = await calling
    assert result.started_at is not None
    drop_t = dropped_at - result.started_at
    filler_burst = next(b for b in result.bursts if b.start_t >= drop_t)
    model_audio = first(renewed, "server", "response.output_audio.delta")
    heard = max(filler_burst.start_t + FILLER_MS / 1000, model_audio - result.started_at)
    return {"filler": (filler_burst.start_t - drop_t) * 1000,
            "restored": (first(renewed, "client", "response.create") - dropped_at) * 1000,
            "model audio": (model_audio - dropped_at) * 1000,
            "answer heard": (heard - drop_t) * 1000}


async def main_async(calls: int) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="octi-reconnect-"))
    rows: list[dict[str, float]] = []
    try:
        async with RealtimeDouble(api_key=API_KEY, speed=1.5, answer_seconds=6.0, greeting_seconds=1.0) as double:
            server, port = await asyncio.to_thread(start_server, {"CALL_RECAP": "false"}, double.url,
                                                   workdir / "data")
            try:
                for index in range(calls):
                    rows.append(await one_call(double, port, index))
                    print(f"call {index + 1}: " + ", ".join(f"{k} {v:.0f} ms" for k, v in rows[-1].items()),
                          flush=True)
            finally:
                await asyncio.to_thread(stop_server, server)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"{'from the drop to':<14} {'p50':>8} {'max':>8}")
    for name in FIGURES:
        values = [row[name] for row in rows]
        print(f"{name:<14} {statistics.median(values):>6.0f}ms {max(values):>6.0f}ms")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=8, help="calls, one after another (default: 8)")
    return asyncio.run(main_async(parser.parse_args().calls))


if __name__ == "__main__":
    raise SystemExit(main())
