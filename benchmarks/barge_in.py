"""Barn noise over OCTI's answers, and callers who really cut in: BARGE_IN_MIN_MS at 0 (every
sound is a barge-in) against the default.

Through the real server (`octi serve`, a subprocess) and the Realtime double (in this process,
generating answers at 1.2× real time, so an answer is still being generated when it is
interrupted), concurrent simulated Twilio calls each ask one question, then either:

- noise: short noise bursts (150 ms clangs, no voice) over OCTI's answer, each 800 ms into
  what OCTI says again after the previous one;
- speech: the caller cuts in with real speech (tests/audio/interruption.wav) 1500 ms into
  the answer.

It prints, per configuration and scenario:

- answers lost: answers the double had to cut (truncated or cancelled), out of the calls' (with
  speech, every answer is meant to be cut);
- heard / generated (noise): what the callers heard of the answer (where it was cut, if it
  was), against what the model generated;
- noise responses: responses created for a noise (ours; with no words, an answer goes with the
  search tool, so two responses each);
- clear p50 / max: from the start of the caller's voice (or noise) in the audio they sent to
  the `clear` reaching them (the caller hears OCTI stop);
- truncate p50 / max: from the double sending `speech_started` to it receiving the truncate.

Usage:
    .venv/bin/python benchmarks/barge_in.py                    # 8 calls per configuration and scenario
    .venv/bin/python benchmarks/barge_in.py --calls 4 --noises 2
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from live_calls import API_KEY, AUTH_TOKEN, REPO, quantile, start_server, stop_server

from app.simulators.realtime_double import DoubleConnection, RealtimeDouble
from app.simulators.twilio_caller import CallResult, CallScript, NoiseBurst, Utterance, place_call

AUDIO = REPO / "tests" / "audio"
QUESTION = AUDIO / "question_followup.wav"
INTERRUPTION = AUDIO / "interruption.wav"
CONFIGS = {"immediate": {"BARGE_IN_MIN_MS": "0"}, "default": {}}


@dataclass
class Figures:
    calls: int = 0
    answers_lost: int = 0
    heard_ms: float = 0.0
    generated_ms: float = 0.0
    noise_answered: int = 0
    clears_ms: list[float] = field(default_factory=list)
    truncates_ms: list[float] = field(default_factory=list)


def script(scenario: str, noises: int) -> CallScript:
    if scenario == "noise":
        interruptions: list[Utterance | NoiseBurst] = [NoiseBurst(after_answer_starts_ms=800) for _ in range(noises)]
    else:
        interruptions = [Utterance(INTERRUPTION, after_answer_starts_ms=1500)]
    return CallScript(utterances=[Utterance(QUESTION), *interruptions], hangup_after=60,
                      hangup_when_done_after_s=2.0)


def measure(figures: Figures, result: CallResult, connection: DoubleConnection) -> None:
    answers = [r for r in connection.responses if r.conversation == "auto"]
    answer = answers[1]
    figures.calls += 1
    cut_items = {t.item_id for t in connection.truncations}
    figures.answers_lost += answer.status == "cancelled" or answer.item_id in cut_items
    if result.utterances[1].noise:
        # What the caller heard of the answer: where it was cut if it was, else every burst
        # after the question (no other answer plays then).
        cut = next((t.audio_end_ms for t in connection.truncations if t.item_id == answer.item_id), None)
        question_end = result.utterances[0].speech_end_t
        figures.heard_ms += cut if cut is not None else sum(b.played_ms for b in result.bursts
                                                            if b.start_t >= question_end)
        figures.generated_ms += answer.audio_ms
        figures.noise_answered += len(answers) - 2
    for utterance in result.utterances[1:]:
        clear = next((c for c in result.clears if c.t >= utterance.start_t), None)
        if clear is not None:
            figures.clears_ms.append((clear.t - utterance.speech_start_t) * 1000)
    started = [at for at, who, e in connection.timed_events()
               if who == "server" and e["type"] == "input_audio_buffer.speech_started"]
    for at, who, e in connection.timed_events():
        if who == "client" and e["type"] == "conversation.item.truncate":
            figures.truncates_ms.append((at - max(s for s in started if s <= at)) * 1000)


async def run(env: dict[str, str], scenario: str, calls: int, noises: int, data_dir: Path) -> Figures:
    figures = Figures()
    async with RealtimeDouble(api_key=API_KEY, speed=1.2, answer_seconds=6.0, greeting_seconds=1.0) as double:
        server, port = await asyncio.to_thread(start_server, {"CALL_RECAP": "false", **env}, double.url, data_dir)
        try:
            tasks = []
            for index in range(calls):
                double.script_next_connection(["Et pour les œufs de cane ?", "Attendez, une autre question."])
                tasks.append(asyncio.create_task(place_call(
                    f"http://127.0.0.1:{port}", script=script(scenario, noises), auth_token=AUTH_TOKEN,
                    call_sid=f"CAbargein{index:04d}")))
                await double.wait_for_connection(timeout=30)  # scripts go to connections in order
            for result, connection in zip(await asyncio.gather(*tasks), double.connections):
                measure(figures, result, connection)
        finally:
            await asyncio.to_thread(stop_server, server)
    return figures


def ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.0f}ms"


def print_report(rows: list[tuple[str, str, Figures]]) -> None:
    header = (f"{'BARGE_IN_MIN_MS':<16} {'scenario':<9} {'calls':>5} {'answers lost':>13} {'heard/gen':>10} "
              f"{'noise responses':>15} {'clear p50':>10} {'max':>6} {'truncate p50':>13} {'max':>6}")
    print(header)
    print("-" * len(header))
    for config, scenario, f in rows:
        label = "0" if config == "immediate" else "300 (default)"
        ratio = f"{f.heard_ms / f.generated_ms:.1%}" if f.generated_ms else "-"
        answered = f.noise_answered if scenario == "noise" else "-"
        print(f"{label:<16} {scenario:<9} {f.calls:>5} {f.answers_lost:>13} {ratio:>10} {answered:>15} "
              f"{ms(quantile(f.clears_ms, 0.5)):>10} {ms(max(f.clears_ms, default=None)):>6} "
              f"{ms(quantile(f.truncates_ms, 0.5)):>13} {ms(max(f.truncates_ms, default=None)):>6}")


async def main_async(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="octi-barge-in-"))
    try:
        rows = []
        for config, env in CONFIGS.items():
            for scenario in ("noise", "speech"):
                figures = await run(env, scenario, args.calls, args.noises, workdir / "data")
                rows.append((config, scenario, figures))
                print(f"{config} {scenario}: {figures.calls} calls", flush=True)
        print()
        print_report(rows)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=8, help="concurrent calls per configuration and scenario")
    parser.add_argument("--noises", type=int, default=3, help="noise bursts over each answer (default: 3)")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
