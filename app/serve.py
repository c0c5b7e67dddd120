"""`octi serve`: run the phone agent (the TwiML webhook and the media stream) under uvicorn.

SIGTERM drains rather than stops: `/ready` turns 503, new calls go elsewhere, the calls under
way go on (DRAIN_TIMEOUT_S at most), then uvicorn shuts down as usual, the call log flushed as
the service closes, and the process exits 0. A second SIGTERM, or Ctrl-C, stops at once.
`--workers N` runs N such servers on one socket (`app/workers.py`).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import signal
import socket
import sys
import time
from types import FrameType

import click
import uvicorn

from app.cli_support import INTERRUPTED_EXIT_CODE
from app.calllog.migrate import upgrade_database
from app.config import Settings, get_settings
from app.knowledge.seed import ensure_seeded
from app.knowledge.stores import open_store
from app.logs import configure_logging
from app.metrics import forget_dead_processes
from app.service import Service
from app.web import WEBSOCKET_IMPLEMENTATIONS, create_app, server_config
from app.workers import METRICS_DIR_VARIABLE, serve_workers

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service: Service, drain_seconds: float) -> None:
        super().__init__(config)
        self._service = service
        self._drain_seconds = drain_seconds
        self._drain_started: float | None = None
        self.interrupted = False  # Ctrl-C/SIGINT stopped it

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # What start-up built (modules, the knowledge store, settings) lives as long as the
        # process: the collector need not scan it again. Without this, a full collection at
        # 150 calls went over 200 000 objects, stalling every call's audio for 120 ms (24 with).
        gc.freeze()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.interrupted = self.interrupted or sig == signal.SIGINT
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


def run_server(sock: socket.socket | None = None, *, host: str, port: int, ws: str) -> None:
    """One draining server, on `sock` (a worker's share of the listening socket) or binding
    host:port itself. Ctrl-C exits with INTERRUPTED_EXIT_CODE once it has shut down."""
    settings = get_settings()
    settings.host, settings.port = host, port
    configure_logging(settings.log_level, settings.log_format, workers=sock is not None)
    app = create_app(settings)
    server = DrainingServer(server_config(app, host, port, ws), app.state.service, settings.drain_timeout_s)
    try:
        server.run(sockets=[sock] if sock is not None else None)
    except KeyboardInterrupt:
        # uvicorn has shut down gracefully, then raises the captured Ctrl-C/SIGINT again.
        sys.exit(INTERRUPTED_EXIT_CODE)
    if server.interrupted:  # the same, when the signal was not raised again (it came during shutdown)
        sys.exit(INTERRUPTED_EXIT_CODE)


def prepare_shared_data() -> None:
    """Before the workers start, once: what each would otherwise do at the same moment on a
    fresh DATA_DIR (migrate the call log, seed the knowledge base). Failures are left for the
    workers, which live with a database or knowledge store that is down."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, workers=True)
    asyncio.run(_prepare(settings))


async def _prepare(settings: Settings) -> None:
    try:
        await upgrade_database(settings.effective_database_url)
    except Exception as exc:
        log.warning("could not migrate the call log before starting the workers: %s", exc)
    if settings.rag_mode == "off":
        return
    try:
        store = open_store(settings)
        try:
            await ensure_seeded(store)
        finally:
            await store.close()
    except Exception as exc:
        log.warning("could not seed the knowledge base before starting the workers: %s", exc)


@click.command(name="serve")
@click.option("--host", help="bind address (default: HOST, 127.0.0.1)")
@click.option("--port", type=int, help="port (default: PORT, 8000)")
@click.option("--ws", type=click.Choice(WEBSOCKET_IMPLEMENTATIONS), default="websockets-sansio",
              help="uvicorn's websocket implementation")
@click.option("--workers", type=click.IntRange(min=1),
              help="worker processes sharing the port (default: WORKERS, 1); REDIS_URL shares calls' state")
def cli(host: str | None, port: int | None, ws: str, workers: int | None) -> None:
    """Run the phone agent."""
    settings = get_settings()
    host, port, workers = host or settings.host, port or settings.port, workers or settings.workers
    if workers == 1:
        if metrics_directory := os.environ.get(METRICS_DIR_VARIABLE):
            forget_dead_processes(metrics_directory)
        run_server(host=host, port=port, ws=ws)
        return
    configure_logging(settings.log_level, settings.log_format, workers=True)
    if not settings.redis_url:
        log.warning("%d workers without REDIS_URL: each keeps its own rate limits and stream claims, and a "
                    "call's <Connect> action may not find how its stream ended", workers)
    worker = functools.partial(run_server, host=host, port=port, ws=ws)
    sys.exit(serve_workers(workers, host, port, worker, prepare=prepare_shared_data))
