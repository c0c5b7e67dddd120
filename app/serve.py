"""`octi serve`: run the phone agent (the TwiML webhook and the media stream) under uvicorn."""

from __future__ import annotations

import sys

import click
import uvicorn

from app.cli_support import INTERRUPTED_EXIT_CODE
from app.config import get_settings
from app.logs import configure_logging
from app.web import WEBSOCKET_IMPLEMENTATIONS, create_app, server_config


@click.command(name="serve")
@click.option("--host", help="bind address (default: HOST, 127.0.0.1)")
@click.option("--port", type=int, help="port (default: PORT, 8000)")
@click.option("--ws", type=click.Choice(WEBSOCKET_IMPLEMENTATIONS), default="websockets-sansio",
              help="uvicorn's websocket implementation")
def cli(host: str | None, port: int | None, ws: str) -> None:
    """Run the phone agent."""
    settings = get_settings()
    if host:
        settings.host = host
    if port:
        settings.port = port
    configure_logging(settings.log_level)
    try:
        uvicorn.Server(server_config(create_app(settings), settings.host, settings.port, ws)).run()
    except KeyboardInterrupt:
        # uvicorn has shut down gracefully, then raises the captured Ctrl-C/SIGINT again.
        sys.exit(INTERRUPTED_EXIT_CODE)
