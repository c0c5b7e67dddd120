"""How long an answer is held after the caller stops, and whether it carries the right passage.

Through the real server (`octi serve`, a subprocess) and the Realtime double (in this process),
simulated Twilio callers ask the knowledge questions of `app/knowledge/eval/questions.json`,
each spoken as real French speech of the length the question would take to say. For every
configuration (transcription model, its delay, RAG_HOLD_MS) it prints:

- hold: from the double sending `input_audio_buffer.speech_stopped` to it receiving the
  `response.create` that answers it (p50, p95);
- in create: the share of questions whose `response.create` carried the passage that answers
  them (the question's expected source among the passages sent with it, as a context item or
  in its instructions);
- before answer: the share whose passage reached the model before it answered, by the
  response's instructions or by a `search_knowledge` result (the tool route);
- first audio: from speech_stopped to the answer's first audio from the model (p50, p95),
  with the double taking `--model-latency` seconds to start each response.

Two configurations have the knowledge store down (Weaviate refusing connections, or taking
them and never answering); with `default` in the same run, the report prints what that costs
a turn: their first audio against the default's.

Usage:
    .venv/bin/python benchmarks/turn_latency.py                 # every configuration, 96 questions each
    .venv/bin/python benchmarks/turn_latency.py --questions 24 --configs default transcribe-0.8
    .venv/bin/python benchmarks/turn_latency.py --questions 24 --configs default store-refusing store-hanging
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from live_calls import API_KEY, AUTH_TOKEN, load_questions, quantile, question_wavs, start_server, stop_server

from app.simulators.hung_server import hung_server
from app.simulators.realtime_double import DoubleConnection, RealtimeDouble
from app.simulators.transcriber import STREAM_LAG_SECONDS
from app.simulators.twilio_caller import CallScript, Utterance, place_call

HOLD_TARGET_MS = 100
PASSAGE_TARGET = 0.90
STORE_DOWN_TARGET_MS = 300  # issue 14: a knowledge store that is down costs a turn at most this


@dataclass(frozen=True)
class Config:
    name: str
    label: str
    env: dict[str, str]
    transcription_seconds: float = 0.8  # the double's processing time for models that do not stream
    store_down: str = ""  # "refusing" or "hanging": the knowledge store is down that way


def configurations() -> list[Config]:
    configs = [Config("default", "gpt-realtime-whisper, delay low (the defaults)", {})]
    for delay in ("minimal", "medium", "high", "xhigh"):
        configs.append(Config(f"whisper-{delay}", f"gpt-realtime-whisper, delay {delay}",
                              {"OPENAI_TRANSCRIBE_DELAY": delay}))
    for seconds in (0.3, 0.8, 1.5):
        configs.append(Config(f"transcribe-{seconds}", f"gpt-transcribe, text {seconds} s after the turn",
                              {"OPENAI_TRANSCRIBE_MODEL": "gpt-transcribe"}, seconds))
    for seconds in (0.3, 0.8, 1.5):
        configs.append(Config(f"transcribe-{seconds}-wait", f"gpt-transcribe, +{seconds} s, waits (RAG_HOLD_MS=2500)",
                              {"OPENAI_TRANSCRIBE_MODEL": "gpt-transcribe", "RAG_HOLD_MS": "2500"}, seconds))
    configs.append(Config("store-refusing", "knowledge store down: refuses connections", {}, store_down="refusing"))
    configs.append(Config("store-hanging", "knowledge store down: takes them, never answers", {},
                          store_down="hanging"))
    return configs


@contextlib.asynccontextmanager
async def knowledge_store(config: Config):
    """The environment that puts the server's knowledge store in the state `config` asks for."""
    if config.store_down == "hanging":
        async with hung_server() as rest, hung_server() as grpc:
            yield {"KNOWLEDGE_BACKEND": "weaviate", "WEAVIATE_URL": f"http://127.0.0.1:{rest}?grpc_port={grpc}"}
    elif config.store_down == "refusing":
        yield {"KNOWLEDGE_BACKEND": "weaviate", "WEAVIATE_URL": "http://127.0.0.1:9"}
    else:
        yield {}


# --------------------------------------------------------------------------- one configuration


@dataclass
class TurnFigures:
    hold_ms: float
    first_audio_ms: float | None
    in_create: bool
    before_answer: bool


@dataclass
class ConfigResult:
    config: Config
    turns: list[TurnFigures] = field(default_factory=list)
    missing: int = 0  # questions the double never saw as one utterance (VAD split or merged)


def turn_figures(connection: DoubleConnection, expected: list[str]) -> tuple[list[TurnFigures], int]:
    """Walk the connection's timed events: each speech_stopped, the response.create after it,
    the function output (tool route) and the first answer audio."""
    events = connection.timed_events()
    stops = [(at, index) for index, (at, side, event) in enumerate(events)
             if side == "server" and event["type"] == "input_audio_buffer.speech_stopped"]
    if len(stops) != len(expected):
        return [], len(expected)
    figures = []
    for number, ((stopped_at, start), source) in enumerate(zip(stops, expected)):
        end = stops[number + 1][1] if number + 1 < len(stops) else len(events)
        window = events[start:end]
        position = next((i for i, (_, side, e) in enumerate(window)
                         if side == "client" and e["type"] == "response.create"), None)
        if position is None:
            figures.append(TurnFigures(float("inf"), None, False, False))
            continue
        create = window[position]
        # What the answer was released with: its instructions and the context items sent before it.
        released = [(create[2].get("response") or {}).get("instructions") or ""]
        released += [part.get("text") or "" for _, side, e in window[:position]
                     if side == "client" and e["type"] == "conversation.item.create"
                     for part in e["item"].get("content") or []]
        in_create = any(f"{source})" in text for text in released)
        outputs = [e["item"].get("output") or "" for _, side, e in window
                   if side == "client" and e["type"] == "conversation.item.create"
                   and e["item"].get("type") == "function_call_output"]
        audio = next((at for at, side, e in window
                      if side == "server" and e["type"] == "response.output_audio.delta"), None)
        figures.append(TurnFigures(
            hold_ms=(create[0] - stopped_at) * 1000,
            first_audio_ms=(audio - stopped_at) * 1000 if audio is not None else None,
            in_create=in_create,
            before_answer=in_create or any(source in output for output in outputs),
        ))
    return figures, 0


async def run_config(config: Config, questions: list[dict[str, str]], wavs: list[Path], calls: int,
                     data_dir: Path, model_latency: float) -> ConfigResult:
    result = ConfigResult(config)
    async with RealtimeDouble(api_key=API_KEY, speed=1.0, latency=model_latency, answer_seconds=1.5,
                              greeting_seconds=1.0, transcription_seconds=config.transcription_seconds) as double, \
            knowledge_store(config) as store_env:
        server, port = await asyncio.to_thread(start_server, {**config.env, **store_env}, double.url, data_dir,
                                               seeded=not config.store_down)
        try:
            shares = [list(range(k, len(questions), calls)) for k in range(calls)]
            tasks = []
            for share in shares:  # round robin: a call's questions are on unrelated topics
                double.script_next_connection([questions[i]["question"] for i in share])
                script = CallScript(utterances=[Utterance(wavs[i]) for i in share], hangup_after=600,
                                    hangup_when_done_after_s=2.0)
                tasks.append(asyncio.create_task(place_call(
                    f"http://127.0.0.1:{port}", script=script, auth_token=AUTH_TOKEN, call_sid=f"CAbench{len(tasks):04d}")))
                await double.wait_for_connection(timeout=30)  # scripts go to connections in order
            await asyncio.gather(*tasks)
            for share, connection in zip(shares, double.connections):
                figures, missing = turn_figures(connection, [questions[i]["expected_source"] for i in share])
                result.turns += figures
                result.missing += missing
        finally:
            await asyncio.to_thread(stop_server, server)
    return result


# --------------------------------------------------------------------------- report


def print_report(results: list[ConfigResult], model_latency: float) -> None:
    print(f"\nmodel latency in the double: {model_latency:.2f} s; streaming lag per delay (assumed): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in STREAM_LAG_SECONDS.items()))
    header = (f"{'configuration':<52} {'turns':>5} {'hold p50':>9} {'hold p95':>9} {'in create':>10} "
              f"{'before ans.':>11} {'1st audio p50':>14} {'p95':>6}")
    print(header)
    print("-" * len(header))
    for result in results:
        turns = result.turns
        holds = [t.hold_ms for t in turns]
        audio = [t.first_audio_ms for t in turns if t.first_audio_ms is not None]
        n = len(turns) or 1
        print(f"{result.config.label:<52} {len(turns):>5} {quantile(holds, 0.5):>7.0f}ms {quantile(holds, 0.95):>7.0f}ms "
              f"{sum(t.in_create for t in turns) / n:>9.0%} {sum(t.before_answer for t in turns) / n:>10.0%} "
              f"{quantile(audio, 0.5):>12.0f}ms {quantile(audio, 0.95):>4.0f}ms"
              + (f"   ({result.missing} questions not seen as one utterance)" if result.missing else ""))
    default = next((r for r in results if r.config.name == "default"), None)
    if default and default.turns:
        p95 = quantile([t.hold_ms for t in default.turns], 0.95)
        share = sum(t.in_create for t in default.turns) / len(default.turns)
        print(f"\ntargets with the defaults: hold p95 <= {HOLD_TARGET_MS} ms: {'met' if p95 <= HOLD_TARGET_MS else 'MISSED'} "
              f"({p95:.0f} ms); passage in response.create >= {PASSAGE_TARGET:.0%}: "
              f"{'met' if share >= PASSAGE_TARGET else 'MISSED'} ({share:.0%})")
        up = [t.first_audio_ms for t in default.turns if t.first_audio_ms is not None]
        for down in (r for r in results if r.config.store_down and r.turns):
            audio = [t.first_audio_ms for t in down.turns if t.first_audio_ms is not None]
            lost = [quantile(audio, q) - quantile(up, q) for q in (0.5, 0.95)]
            print(f"knowledge store down ({down.config.store_down}): first audio {lost[0]:+.0f} ms (p50), "
                  f"{lost[1]:+.0f} ms (p95) against the store up; <= {STORE_DOWN_TARGET_MS} ms lost: "
                  f"{'met' if max(lost) <= STORE_DOWN_TARGET_MS else 'MISSED'}")


async def main_async(args: argparse.Namespace) -> int:
    questions = load_questions(args.questions)
    chosen = [c for c in configurations() if not args.configs or c.name in args.configs]
    if not chosen:
        print("no such configuration; choose among: " + " ".join(c.name for c in configurations()))
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="octi-turn-latency-"))
    try:
        wavs = question_wavs(questions, workdir)
        data_dir = workdir / "data"
        results = []
        for config in chosen:
            started = time.monotonic()
            result = await run_config(config, questions, wavs, args.calls, data_dir, args.model_latency)
            results.append(result)
            print(f"{config.name}: {len(result.turns)} turns in {time.monotonic() - started:.0f} s", flush=True)
        print_report(results, args.model_latency)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=96, help="how many of the evaluation questions (default: all)")
    parser.add_argument("--calls", type=int, default=8, help="concurrent calls sharing the questions (default: 8)")
    parser.add_argument("--model-latency", type=float, default=0.5,
                        help="seconds the double takes to start a response (default: 0.5)")
    parser.add_argument("--configs", nargs="*", help="configuration names (default: all)")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
