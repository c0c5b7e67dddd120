"""GPT-Live's greeting, two ways: the model's own first turn (`GPT_LIVE_GREETING=model`), or the
clip of an earlier call's greeting played by the service (`fixture`). Prints, over `--calls`
calls each way, the time from the stream's start (Twilio's `start` message) to the first audio
of the greeting the simulated caller plays, on the caller's media clock (20 ms ticks).

`octi serve` (a subprocess, ENGINE=gpt-live, RAG_MODE=off: the greeting needs no knowledge)
talks to the GPT-Live double in this process, or to `--live-url` with OPENAI_API_KEY from the
environment. For the fixture, a first call (not counted) has the model greet and keeps its
greeting; the calls then place one after the other, each hanging up once greeted.

On the double both ways go through the same mixer: the model's turn starts at its next 100 ms
chunk with no generation time, as it does in every other test and benchmark. That is the
double's assumption, not a figure of the service's, which publishes none: what the service's
model takes to start a turn is what a fixture saves, and only `--live-url` measures it.

Usage:
    .venv/bin/python benchmarks/greeting.py                  # 10 calls each way, on the double
    .venv/bin/python benchmarks/greeting.py --calls 20 --ways fixture
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from live_calls import AUTH_TOKEN, start_server, stop_server

from app.simulators.live_double import LiveDouble
from app.simulators.twilio_caller import CallScript, place_call

# Long enough for the double's 2.5 s greeting to be heard whole (and kept, for the fixture).
HANG_UP_AFTER_S = 4.5


async def greetings(url: str, calls: int) -> list[float]:
    latencies = []
    for index in range(calls):
        result = await place_call(url, script=CallScript(hangup_after=HANG_UP_AFTER_S), auth_token=AUTH_TOKEN,
                                  from_number=f"+3361235{index:04d}")
        if result.status == "completed" and result.greeting_latency_ms is not None:
            latencies.append(result.greeting_latency_ms)
    return latencies


async def run(way: str, calls: int, folder: Path, live_url: str | None) -> str:
    double = None if live_url else await LiveDouble().start()
    env = {"ENGINE": "gpt-live", "GPT_LIVE_GREETING": way, "RAG_MODE": "off",
           "GPT_LIVE_URL": live_url or double.url}
    if live_url:
        env["OPENAI_API_KEY"] = os.environ["OPENAI_API_KEY"]
    data_dir = folder / f"data-{way}"
    server, port = await asyncio.to_thread(start_server, env, "ws://127.0.0.1:9/unused", data_dir)
    try:
        url = f"http://127.0.0.1:{port}"
        if way == "fixture":
            await greetings(url, 1)  # the model greets once; its greeting is kept
            if not any((data_dir / "greetings").glob("*.wav")):
                return f"{way:<9}no greeting was kept: every call would have the model greet"
        latencies = sorted(await greetings(url, calls))
    finally:
        await asyncio.to_thread(stop_server, server)
        if double is not None:
            await double.stop()
    if not latencies:
        return f"{way:<9}no call was greeted"
    p95 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))]
    return (f"{way:<9}{len(latencies):>6}{min(latencies):>9.0f}{statistics.median(latencies):>9.0f}"
            f"{p95:>9.0f}{max(latencies):>9.0f}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--ways", nargs="+", choices=["model", "fixture"], default=["model", "fixture"])
    parser.add_argument("--live-url", help="a GPT-Live service instead of the double (OPENAI_API_KEY set)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="octi-greeting-"))
    try:
        print("stream start → first greeting audio heard, ms")
        print(f"{'way':<9}{'calls':>6}{'min':>9}{'p50':>9}{'p95':>9}{'max':>9}")
        for way in args.ways:
            print(await run(way, args.calls, folder, args.live_url), flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
