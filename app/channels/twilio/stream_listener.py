"""The media stream's own listener: picows, beside the web server, when STREAM_PORT is set.

Why: each caller frame (50 a second per call) costs uvicorn about two and a half times the CPU
it costs picows (benchmarks/README.md, "Relay" and "Websocket stacks"); uvicorn pauses and resumes
reading after every message and hands it over through ASGI. picows serves the `websockets`
API (`picows.websockets.serve`), so the call runs the same `TwilioLine.serve_stream` through a
`FrameSocket` of a few lines. Only `/voice/stream` is served here; everything else stays on
the web server.
"""

from __future__ import annotations

import http
import logging

from picows.websockets import (ConnectionClosed, Request, Response, Server, ServerConnection,
                               ServerHandshakeConnection, serve)

from app.channels.twilio.line import STREAM_PATH, TwilioLine
from app.channels.websocket_io import WEBSOCKET_FRAME_LIMIT, SocketClosed

log = logging.getLogger(__name__)

# Twilio sends no pings; ours find a peer that vanished without closing (as uvicorn's do).
PING_INTERVAL_SECONDS = 20.0
SHUTDOWN_CLOSE_CODE = 1012  # service restart, as uvicorn closes websockets when it stops


class PicowsSocket:
    """A picows `websockets` connection as a FrameSocket (app/channels/websocket_io.py)."""

    def __init__(self, connection: ServerConnection) -> None:
        self._connection = connection

    async def accept(self) -> None:
        """picows has accepted the upgrade before the handler runs."""

    async def receive(self) -> str | bytes | None:
        try:
            return await self._connection.recv()
        except ConnectionClosed:
            return None

    async def send(self, message: str | bytes) -> None:
        try:
            await self._connection.send(message)
        except ConnectionClosed as exc:
            raise SocketClosed from exc

    async def close(self, code: int, reason: str = "") -> None:
        await self._connection.close(code, reason)


class StreamListener:
    """Twilio media streams on host:port, from `open` to `close`. Several worker processes share
    the port (SO_REUSEPORT): the kernel spreads connections among them."""

    def __init__(self, server: Server) -> None:
        self._server = server

    @classmethod
    async def open(cls, line: TwilioLine, host: str, port: int) -> StreamListener:
        def signed_stream_only(handshake: ServerHandshakeConnection, request: Request) -> Response | None:
            if request.path.partition("?")[0] != STREAM_PATH:
                return handshake.respond(http.HTTPStatus.NOT_FOUND, "Only the media stream is served here.\n")
            if not line.stream_upgrade_signed(request.headers):
                return handshake.respond(http.HTTPStatus.FORBIDDEN, "Invalid Twilio signature\n")
            return None

        async def handler(connection: ServerConnection) -> None:
            await line.serve_stream(PicowsSocket(connection))

        try:
            server = await serve(handler, host, port, process_request=signed_stream_only, compression=None,
                                 max_size=WEBSOCKET_FRAME_LIMIT, ping_interval=PING_INTERVAL_SECONDS,
                                 server_header=None, reuse_port=True)
        except OSError as exc:
            raise RuntimeError(f"cannot listen for media streams on {host}:{port} (STREAM_PORT): {exc}") from exc
        log.info("media streams on their own listener, %s:%d", host, port)
        return cls(server)

    async def close(self) -> None:
        """Stop taking streams and end those still open (1012: the service restarts)."""
        self._server.close(code=SHUTDOWN_CLOSE_CODE)
        await self._server.wait_closed()
