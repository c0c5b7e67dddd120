"""`octi serve`: run the phone agent (the TwiML webhook and the media stream) under uvicorn.

SIGTERM drains rather than stops: `/ready` turns 503, new calls go elsewhere, the calls under
way go on (DRAIN_TIMEOUT_S at most), then uvicorn shuts down as usual, the call log flushed as
the service closes, and the process exits 0. A second SIGTERM, or Ctrl-C, stops at once.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from types import FrameType

import click
import uvicorn

from app.cli_support import INTERRUPTED_EXIT_CODE
from app.config import get_settings
from app.logs import configure_logging
from app.service import Service
from app.web import WEBSOCKET_IMPLEMENTATIONS, create_app, server_config

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service: Service, drain_seconds: float) -> None:
        super().__init__(config)
        self._service = service
        self._drain_seconds = drain_seconds
        self._drain_started: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self._drain_started is None and self._drain_seconds > 0:
            self._drain_started = time.monotonic()
            self._service.begin_drain()
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_started is not None and not self.should_exit:
            drained = self._service.calls_held == 0
            if drained or time.monotonic() - self._drain_started >= self._drain_seconds:
                log.warning("drained: stopping with %d calls under way", self._service.calls_held)
                self.should_exit = True
        return await super().on_tick(counter)


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
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    server = DrainingServer(server_config(app, settings.host, settings.port, ws), app.state.service,
                            settings.drain_timeout_s)
    try:
        server.run()
    except KeyboardInterrupt:
        # uvicorn has shut down gracefully, then raises the captured Ctrl-C/SIGINT again.
        sys.exit(INTERRUPTED_EXIT_CODE)
