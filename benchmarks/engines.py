"""The two engines on the same scripted calls: server CPU per call-minute, first answer audio
after the caller stops, and cost per call-minute.

For each configuration, `octi serve` (a subprocess) talks to a double in this process: the
Realtime double (the caller transcoded to PCM16 24 kHz, or μ-law passed through), or the GPT-Live double
(`ENGINE=gpt-live`, μ-law both ways). `--calls` simulated Twilio callers at once each ask the
first `--questions` questions of `app/knowledge/eval/questions.json`, spoken as real French
speech, each once OCTI has answered the previous one, and hang up 2.5 s after the last answer.

- CPU: the server process's utime + stime over the run, per minute of call.
- first audio: from the end of the caller's speech to the first OCTI audio they hear (p50,
  p95). This is the bridge plus the doubles' own assumed timings (the Realtime double answers at
  once; the GPT-Live double delegates 0.2 s after the caller's last word and says a short
  acknowledgement meanwhile), not the services'.
- cost: the call log's, per minute of call: tokens at MODEL_PRICES for the Realtime model (the
  double reports usage as the service does), seconds at $0.05 per active minute for GPT-Live
  (a WebSocket session reports no standby time).

Usage:
    .venv/bin/python benchmarks/engines.py                       # 3 configurations, 4 calls × 3 questions
    .venv/bin/python benchmarks/engines.py --calls 8 --questions 4 --configs gpt-live
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from live_calls import AUTH_TOKEN, load_questions, question_wavs, start_server, stop_server
from relay import process_cpu_s

from app.calllog.store import CallLogStore
from app.simulators.live_double import LiveDouble
from app.simulators.realtime_double import RealtimeDouble
from app.simulators.twilio_caller import CallScript, Utterance, place_call

ANSWER_SECONDS = 4.0


@dataclass(frozen=True)
class Config:
    name: str
    label: str
    env: dict[str, str]


CONFIGS = {
    "realtime-pcm16": Config("realtime-pcm16", "Realtime gpt-realtime-2.1, caller in PCM16 24 kHz", {}),
    "realtime-pcmu": Config("realtime-pcmu", "Realtime gpt-realtime-2.1, μ-law passed through",
                            {"AUDIO_CODEC": "pcmu"}),
    "gpt-live": Config("gpt-live", "GPT-Live gpt-live-1.1, μ-law both ways", {"ENGINE": "gpt-live"}),
}


async def run(config: Config, calls: int, questions: int, data_dir: Path, wavs: list[Path],
              texts: list[str]) -> str:
    if config.name == "gpt-live":
        # Its script runs across sessions: every caller asks the same questions, in turn.
        double = LiveDouble(transcripts=texts * calls, answer_seconds=ANSWER_SECONDS)
        await double.start()
        env = {**config.env, "GPT_LIVE_URL": double.url}
    else:
        double = RealtimeDouble(port=0, transcripts=texts, answer_seconds=ANSWER_SECONDS)
        await double.start()
        env = config.env
    server, port = await asyncio.to_thread(start_server, env, double.url, data_dir)
    try:
        before = process_cpu_s(server.pid) or 0.0
        script = CallScript(utterances=[Utterance(wav) for wav in wavs[:questions]], hangup_after=120,
                            hangup_when_done_after_s=2.5)
        results = await asyncio.gather(*(
            place_call(f"http://127.0.0.1:{port}", script=script, auth_token=AUTH_TOKEN,
                       from_number=f"+3361234{index:04d}") for index in range(calls)))
        await asyncio.sleep(1.0)  # the sessions write their end records
        cpu = (process_cpu_s(server.pid) or 0.0) - before
    finally:
        await asyncio.to_thread(stop_server, server)
        await double.stop()
    minutes = sum(result.duration_s for result in results) / 60
    latencies = sorted(u.answer_latency_ms for r in results for u in r.utterances if u.answer_latency_ms is not None)
    costs = []
    async with await CallLogStore.open(f"sqlite+aiosqlite:///{data_dir / 'calls.sqlite3'}") as store:
        for result in results:
            call_id = await store.find_call_id(result.call_sid)
            detail = await store.get_call(call_id) if call_id is not None else None
            if detail is not None and detail.summary.cost_usd is not None:
                costs.append(detail.summary.cost_usd)
    failed = sum(result.status != "completed" for result in results)
    p50 = statistics.median(latencies) if latencies else float("nan")
    p95 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))] if latencies else float("nan")
    cost = sum(costs) / minutes if costs and minutes else float("nan")
    return (f"{config.label:<56}{calls:>6}{minutes:>9.2f}{cpu / minutes:>11.3f}{p50:>10.0f}ms{p95:>8.0f}ms"
            f"{cost:>10.4f}{'' if not failed else f'  ({failed} failed)'}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="octi-engines-"))
    try:
        chosen = load_questions(args.questions)
        wavs = question_wavs(chosen, folder)
        texts = [question["question"] for question in chosen]
        print(f"{'configuration':<56}{'calls':>6}{'minutes':>9}{'CPU s/min':>11}{'1st audio p50':>14}"
              f"{'p95':>8}{'USD/min':>10}")
        print("-" * 114)
        for name in args.configs:
            data_dir = folder / f"data-{name}"
            print(await run(CONFIGS[name], args.calls, args.questions, data_dir, wavs, texts), flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
