"""`octi live-double`: run the GPT-Live double from the command line until Ctrl-C."""

from __future__ import annotations

import logging

import click

from app.cli_support import HELP_OPTIONS
from app.simulators.command_line import serve_until_interrupted
from app.simulators.live_double.server import LiveDouble


@click.command(name="live-double", context_settings=HELP_OPTIONS)
@click.option("--host", default="127.0.0.1", show_default=True, help="interface to listen on")
@click.option("--port", type=int, default=8766, show_default=True, help="port to listen on")
@click.option("--api-key", help="require this bearer key (default: accept any non-empty key)")
@click.option("--transcript", "transcripts", multiple=True, metavar="TEXT",
              help="what the caller says in their n-th utterance; repeat in order")
@click.option("--answer-seconds", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True,
              help="length of the answer to each delegation")
@click.option("--greeting-seconds", type=click.FloatRange(min=0, min_open=True), default=2.5, show_default=True,
              help="length of the greeting (and of any notice)")
@click.option("--overlap-ms", type=click.IntRange(min=0), default=600, show_default=True,
              help="how long the model talks over a caller who cuts in before it yields")
@click.option("--lead-ms", type=click.IntRange(min=0), default=300, show_default=True,
              help="how far ahead of real time speech is sent")
@click.option("--log-level", default="INFO", show_default=True, help="logging level")
def cli(host: str, port: int, api_key: str | None, transcripts: tuple[str, ...], answer_seconds: float,
        greeting_seconds: float, overlap_ms: int, lead_ms: int, log_level: str) -> None:
    """Run a local double of OpenAI GPT-Live (/v1/live/sessions) for offline calls."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    double = LiveDouble(host, port, api_key=api_key, transcripts=transcripts, answer_seconds=answer_seconds,
                        greeting_seconds=greeting_seconds, overlap_ms=overlap_ms, lead_ms=lead_ms)
    serve_until_interrupted(double, "GPT-Live", lambda url: [
        f"ENGINE=gpt-live GPT_LIVE_URL={url} OPENAI_API_KEY={double.api_key or 'dev'}"])
