"""The `octi` command: serve the phone line, and try it without a phone."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TextIO

from app.config import get_settings
from app.logs import configure_logging


def run_async_command(
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace, TextIO, TextIO], Awaitable[int]],
    argv: Sequence[str] | None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Parse a sub-command's arguments and run its coroutine; usage errors and Ctrl-C become exit codes."""
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_:  # --help or a usage error
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    err = err or sys.stderr
    try:
        return asyncio.run(run(args, out or sys.stdout, err))
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return 130


def serve(argv: list[str]) -> int:
    import uvicorn

    from app.web import WEBSOCKET_IMPLEMENTATIONS, create_app, server_config

    parser = argparse.ArgumentParser(prog="octi serve", description="Run the phone agent.")
    parser.add_argument("--host", help="bind address (default: HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: PORT, 8000)")
    parser.add_argument("--ws", default="streaming", choices=WEBSOCKET_IMPLEMENTATIONS,
                        help="uvicorn's websocket implementation")
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.host:
        settings.host = args.host
    if args.port:
        settings.port = args.port
    configure_logging(settings.log_level)
    try:
        uvicorn.Server(server_config(create_app(settings), settings.host, settings.port, args.ws)).run()
    except KeyboardInterrupt:
        # uvicorn has shut down gracefully, then raises the captured Ctrl-C/SIGINT again.
        return 130
    return 0


def call(argv: list[str]) -> int:
    from app.simulators.twilio_caller import cli

    return cli(argv)


def realtime_double(argv: list[str]) -> int:
    from app.simulators.realtime_double import cli

    return cli(argv)


def knowledge(argv: list[str]) -> int:
    from app.knowledge.cli import cli

    return cli(argv)


def calls(argv: list[str]) -> int:
    from app.calllog.cli import cli

    return cli(argv)


def review(argv: list[str]) -> int:
    from app.review.auth import cli

    return cli(argv)


def doctor(argv: list[str]) -> int:
    from app.doctor import cli

    return cli(argv)


COMMANDS = {
    "serve": (serve, "run the phone agent (TwiML webhook + media stream)"),
    "call": (call, "place a simulated Twilio call against a running server"),
    "realtime-double": (realtime_double, "run a local OpenAI Realtime GA double"),
    "kb": (knowledge, "the knowledge base: ingest, search, stats, eval"),
    "calls": (calls, "the call log: list, show, export, purge"),
    "review": (review, "reviewer access: hash-password for REVIEW_PASSWORD"),
    "doctor": (doctor, "check the set-up: keys, models, URLs, database, knowledge base, realtime, ngrok"),
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in COMMANDS:
        print("usage: octi COMMAND [options]\n\ncommands:")
        for name, (_, summary) in COMMANDS.items():
            print(f"  {name:<16} {summary}")
        sys.exit(0 if argv and argv[0] in {"-h", "--help"} else 2)
    command, _ = COMMANDS[argv[0]]
    sys.exit(command(argv[1:]))
