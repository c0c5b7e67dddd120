"""`octi realtime-double`: run the double from the command line until Ctrl-C."""

from __future__ import annotations

import logging

import click

from app.cli_support import HELP_OPTIONS
from app.simulators import transcriber
from app.simulators.command_line import serve_until_interrupted
from app.simulators.realtime_double.server import RealtimeDouble


@click.command(name="realtime-double", context_settings=HELP_OPTIONS)
@click.option("--host", default="127.0.0.1", show_default=True, help="interface to listen on")
@click.option("--port", type=int, default=8765, show_default=True, help="port to listen on")
@click.option("--api-key", help="require this bearer key (default: accept any non-empty key)")
@click.option("--speed", type=click.FloatRange(min=0), default=4.0, show_default=True,
              help="audio streaming speed vs real time; 0 = no pacing")
@click.option("--answer-seconds", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True,
              help="length of each spoken answer")
@click.option("--greeting-seconds", type=click.FloatRange(min=0, min_open=True), default=2.5, show_default=True,
              help="length of a connection's first answer")
@click.option("--transcript", "transcripts", multiple=True, metavar="TEXT",
              help="scripted transcript of the caller's n-th utterance; repeat in order")
@click.option("--transcription-seconds", type=float, default=transcriber.COMMITTED_TURN_SECONDS, show_default=True,
              help="time a non-streaming transcription model takes after a commit")
@click.option("--stream-lag-seconds", type=float,
              help="lag of a streaming transcription model's words behind the audio (default: by its delay)")
@click.option("--log-level", default="INFO", show_default=True, help="logging level")
def cli(host: str, port: int, api_key: str | None, speed: float, answer_seconds: float, greeting_seconds: float,
        transcripts: tuple[str, ...], transcription_seconds: float, stream_lag_seconds: float | None,
        log_level: str) -> None:
    """Run a local double of the OpenAI Realtime API (GA protocol) for offline calls."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    double = RealtimeDouble(
        host,
        port,
        api_key=api_key,
        speed=speed,
        answer_seconds=answer_seconds,
        greeting_seconds=greeting_seconds,
        transcripts=transcripts,
        transcription_seconds=transcription_seconds,
        stream_lag_seconds=stream_lag_seconds,
    )
    serve_until_interrupted(double, "Realtime", lambda url: [
        f"OPENAI_REALTIME_URL={url}", f"OPENAI_API_KEY={double.api_key or 'any-non-empty-key'}"])
