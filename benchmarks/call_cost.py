"""What a scripted 10-turn call is billed, with and without the session settings that cut cost.

One call per configuration, through the real server (`octi serve`) and the Realtime double:
the caller asks the first ten knowledge questions of `app/knowledge/eval/questions.json`, each
after OCTI's previous answer. The double reports usage on every `response.done` as the service
does (input text and audio tokens, cached tokens, output tokens) and applies the session's
`truncation` and `max_output_tokens`. Printed per configuration: the sums over the call's
responses, how often the conversation was truncated, and the price of those tokens at
MODEL_PRICES for the configured model.

Usage:
    .venv/bin/python benchmarks/call_cost.py [--turns 10] [--answer-seconds 12]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from live_calls import API_KEY, AUTH_TOKEN, load_questions, question_wavs, start_server, stop_server

from app.calllog.cost import estimate_cost, sum_usage
from app.config import Settings
from app.simulators.realtime_double import RealtimeDouble
from app.simulators.twilio_caller import CallScript, Utterance, place_call


@dataclass(frozen=True)
class Config:
    label: str
    env: dict[str, str]


CONFIGS = [
    Config("retention 1.0 at the model's limit, no output cap", {"TRUNCATION_RETENTION_RATIO": "1.0",
                                                                 "MAX_OUTPUT_TOKENS": "inf"}),
    Config("defaults: retention 0.8 at the model's limit, 600 out", {}),
    Config("retention 0.8 past 4000 tokens, 600 out", {"TRUNCATION_TOKEN_LIMIT": "4000"}),
    Config("retention 0.8 past 2500 tokens, 600 out", {"TRUNCATION_TOKEN_LIMIT": "2500"}),
]


async def one_call(config: Config, questions, wavs, data_dir: Path, answer_seconds: float) -> dict:
    async with RealtimeDouble(api_key=API_KEY, speed=4.0, latency=0.3, answer_seconds=answer_seconds,
                              greeting_seconds=3.0) as double:
        double.script_next_connection([q["question"] for q in questions])
        server, port = await asyncio.to_thread(start_server, config.env, double.url, data_dir)
        try:
            script = CallScript(utterances=[Utterance(wav) for wav in wavs], hangup_after=1200,
                                hangup_when_done_after_s=2.0)
            result = await place_call(f"http://127.0.0.1:{port}", script=script, auth_token=AUTH_TOKEN,
                                      call_sid="CAcallcost0001")
        finally:
            await asyncio.to_thread(stop_server, server)
        connection = double.connections[0]
        usages = [r.usage for r in connection.responses if r.usage]
        answers = [r for r in connection.responses if r.kind == "answer"]
        return {"status": result.status, "usage": sum_usage(usages), "model": connection.model,
                "truncations": connection.truncations_applied, "answers": len(answers),
                "cut_by_limit": sum(r.status_reason == "max_output_tokens" for r in answers)}


async def main_async(args: argparse.Namespace) -> int:
    questions = load_questions(args.turns)
    prices = Settings(_env_file=None).model_prices
    workdir = Path(tempfile.mkdtemp(prefix="octi-call-cost-"))
    rows = []
    try:
        wavs = question_wavs(questions, workdir)
        for config in CONFIGS:
            rows.append((config, await one_call(config, questions, wavs, workdir / "data", args.answer_seconds)))
            print(f"{config.label}: done", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{args.turns} caller turns, answers of {args.answer_seconds:g} s (the double's), model {rows[0][1]['model']}")
    header = (f"{'configuration':<54} {'answers':>7} {'input':>7} {'in audio':>8} {'cached':>7} {'billed in':>9} "
              f"{'output':>7} {'truncated':>9} {'USD':>8}")
    print(header)
    print("-" * len(header))
    baseline = None
    for config, row in rows:
        usage = row["usage"]
        usd = estimate_cost(row["model"], usage, prices)
        baseline = baseline if baseline is not None else usage["input_tokens"]
        change = f"  ({usage['input_tokens'] / baseline - 1:+.0%} input)" if baseline else ""
        print(f"{config.label:<54} {row['answers']:>7} {usage['input_tokens']:>7} {usage['input_audio_tokens']:>8} "
              f"{usage['cached_tokens']:>7} {usage['input_tokens'] - usage['cached_tokens']:>9} "
              f"{usage['output_tokens']:>7} {row['truncations']:>9} "
              f"{usd if usd is not None else float('nan'):>8.4f}{change}"
              + (f"  [{row['cut_by_limit']} answers cut by max_output_tokens]" if row["cut_by_limit"] else "")
              + ("" if row["status"] == "completed" else f"  [call {row['status']}]"))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=10, help="caller questions in the call (default: 10)")
    parser.add_argument("--answer-seconds", type=float, default=12.0,
                        help="length of each of the double's answers (default: 12)")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
