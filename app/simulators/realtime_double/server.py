"""The double's websocket server: the opening handshake (API key, refusals), one
`DoubleConnection` per session, per-connection scripts, and failure injection on them all."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from http import HTTPStatus
from pathlib import Path
from typing import Iterable

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from app.simulators import transcriber
from app.simulators.realtime_double.connection import SERVER_ERROR_MESSAGE, DoubleConnection
from app.simulators.realtime_double.records import ConnectionScript, RejectedHandshake
from app.simulators.realtime_double.session import DEFAULT_INSTRUCTIONS, DEFAULT_VOICE
from app.simulators.realtime_double.voice import ASSET_PATH, VoiceAsset, load_voice_asset

logger = logging.getLogger(__package__)

DEFAULT_PATH = "/v1/realtime"


class RealtimeDouble:
    """Websocket server speaking the Realtime GA protocol.

    ``async with RealtimeDouble(port=0, transcripts=[...]) as double:`` then connect to
    ``double.url``. Options:

    - api_key: when set, `Authorization: Bearer <api_key>` must match (else HTTP 401); any
      non-empty bearer key is accepted otherwise.
    - transcripts: scripted ASR; the n-th committed utterance of a connection gets
      transcripts[n], then (cycle_transcripts) wraps around or gets a French placeholder.
    - speed: how many times faster than real time audio is streamed; 0 = as fast as possible.
    - answer_seconds / greeting_seconds: audio length of a response; a connection's first
      response is the greeting.
    - latency: seconds between `response.content_part.added` and the first delta.
    - voice, instructions: session defaults announced in `session.created`.
    - seed: makes ids and delta sizes reproducible (per connection index).
    - handshake_delay: seconds to wait before answering the opening handshake.
    - session_max_seconds: after this long a connection gets `session_expired` and is closed
      (its `session.created` announces that end in `expires_at`, as the service's does).
    - history_limit: events kept per direction per connection (None = all).
    - transcription_seconds: how long a model that does not stream takes to transcribe a
      committed turn.
    - stream_lag_seconds: how far a streaming model's words trail the audio (default: by
      `delay`, `transcriber.STREAM_LAG_SECONDS`).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        transcripts: Iterable[str] | None = None,
        cycle_transcripts: bool = False,
        speed: float = 4.0,
        answer_seconds: float = 4.0,
        greeting_seconds: float = 2.5,
        latency: float = 0.0,
        voice: str = DEFAULT_VOICE,
        instructions: str = DEFAULT_INSTRUCTIONS,
        seed: int | str = 0,
        handshake_delay: float = 0.0,
        session_max_seconds: float | None = None,
        history_limit: int | None = 20_000,
        asset_path: Path | str | None = None,
        transcription_seconds: float = transcriber.COMMITTED_TURN_SECONDS,
        stream_lag_seconds: float | None = None,
    ) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0 (0 streams as fast as possible)")
        if answer_seconds <= 0 or greeting_seconds <= 0:
            raise ValueError("answer_seconds and greeting_seconds must be > 0")
        self.host = host
        self._requested_port = port
        self.api_key = api_key
        self.transcripts: list[str] = list(transcripts or [])
        self.cycle_transcripts = cycle_transcripts
        self.speed = speed
        self.answer_seconds = answer_seconds
        self.greeting_seconds = greeting_seconds
        self.latency = latency
        self.voice = voice
        self.instructions = instructions
        self.seed = seed
        self.handshake_delay = handshake_delay
        self.session_max_seconds = session_max_seconds
        self.history_limit = history_limit
        self.transcription_seconds = transcription_seconds
        self.stream_lag_seconds = stream_lag_seconds
        self.refuse_connections = False
        self._refusals_left = 0  # refuse_next(): handshakes still to refuse
        self.handshakes_waiting = 0  # opening handshakes held by handshake_delay right now
        self._asset_path = Path(asset_path) if asset_path else ASSET_PATH
        self.asset: VoiceAsset | None = None  # loaded by start(), off the event loop

        self.connections: list[DoubleConnection] = []
        self.rejected_handshakes: list[RejectedHandshake] = []
        self._live: set[DoubleConnection] = set()
        self._scripts: deque[ConnectionScript] = deque()
        self._handed_out = 0
        self._connection_waiters: list[asyncio.Future[None]] = []
        self._server: Server | None = None
        self._port: int | None = None
        self._stopping = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> RealtimeDouble:
        if self._server is not None:
            return self
        self._stopping = asyncio.Event()
        # File reading and resampling stay off the event loop.
        self.asset = await asyncio.to_thread(load_voice_asset, self._asset_path)
        self._server = await serve(
            self._handle,
            self.host,
            self._requested_port,
            process_request=self._process_request,
            max_size=32 * 2**20,  # the service takes appends of up to 15 MiB
            compression=None,
        )
        self._port = self._server.sockets[0].getsockname()[1]
        logger.info("realtime double listening on %s", self.url)
        return self

    async def stop(self) -> None:
        """Close every connection (1001), stop listening and wait for all handlers to end."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.close()
        await server.wait_closed()

    async def __aenter__(self) -> RealtimeDouble:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the realtime double is not started")
        return self._port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else "::1" if self.host == "::" else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"ws://{host}:{self.port}{DEFAULT_PATH}"

    @property
    def live_connections(self) -> list[DoubleConnection]:
        return [conn for conn in self.connections if conn in self._live]

    # -- scripting and observation ---------------------------------------------------------

    def script_next_connection(
        self,
        transcripts: Iterable[str] | None = None,
        *,
        answer_seconds: float | None = None,
        greeting_seconds: float | None = None,
        transcription_seconds: float | None = None,
    ) -> None:
        """Queue per-connection settings; the next accepted connection takes the oldest."""
        self._scripts.append(
            ConnectionScript(
                transcripts=list(transcripts) if transcripts is not None else None,
                answer_seconds=answer_seconds,
                greeting_seconds=greeting_seconds,
                transcription_seconds=transcription_seconds,
            )
        )

    async def wait_for_connection(self, timeout: float = 5.0) -> DoubleConnection:
        """The oldest connection not yet returned by this method, waiting for one if needed."""
        try:
            async with asyncio.timeout(timeout):
                while self._handed_out >= len(self.connections):
                    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    self._connection_waiters.append(waiter)
                    try:
                        await waiter
                    finally:
                        self._connection_waiters.remove(waiter)
        except TimeoutError:
            raise TimeoutError(f"no new connection reached the realtime double within {timeout}s") from None
        connection = self.connections[self._handed_out]
        self._handed_out += 1
        return connection

    # -- failure injection -----------------------------------------------------------------

    async def drop_all(self, code: int = 1011, reason: str = "realtime double: dropped", *, abort: bool = False) -> int:
        """Close every live connection (close frame `code`, or no handshake at all with `abort`)."""
        live = self.live_connections
        if abort:
            for connection in live:
                connection.abort()
        else:
            await asyncio.gather(*(connection.close(code, reason) for connection in live), return_exceptions=True)
        return len(live)

    def refuse_next(self, count: int) -> None:
        """Refuse the next `count` opening handshakes (HTTP 503), as a service that is down for
        a moment; later ones are accepted again."""
        self._refusals_left = count

    async def fail_all(
        self,
        code: str | None = "server_error",
        message: str = SERVER_ERROR_MESSAGE,
        *,
        error_type: str = "server_error",
        close_code: int = 1011,
    ) -> int:
        """Send an `error` event on every live connection, then close it."""
        live = self.live_connections
        await asyncio.gather(
            *(c.send_error_and_close(code, message, error_type=error_type, close_code=close_code) for c in live),
            return_exceptions=True,
        )
        return len(live)

    # -- websocket plumbing ----------------------------------------------------------------

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.handshake_delay > 0:
            # Wait on the stop signal, not a bare sleep, so stop() need not outlast the delay.
            self.handshakes_waiting += 1
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.handshake_delay):
                        await self._stopping.wait()
            finally:
                self.handshakes_waiting -= 1
        refused_once = self._refusals_left > 0
        self._refusals_left = max(self._refusals_left - 1, 0)
        if self.refuse_connections or refused_once or self._stopping.is_set():
            return self._reject(
                connection,
                request,
                HTTPStatus.SERVICE_UNAVAILABLE,
                "server_error",
                None,
                "The service is temporarily unavailable (realtime double: refusing connections).",
            )
        authorization = request.headers.get("Authorization") or ""
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return self._reject(
                connection,
                request,
                HTTPStatus.UNAUTHORIZED,
                "invalid_request_error",
                None,
                "You didn't provide an API key. Send it in an Authorization header using Bearer auth "
                "(Authorization: Bearer YOUR_KEY).",
            )
        if self.api_key is not None and key != self.api_key:
            shown = f"{key[:3]}...{key[-4:]}" if len(key) > 8 else "***"
            return self._reject(
                connection,
                request,
                HTTPStatus.UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
                f"Incorrect API key provided: {shown}.",
            )
        return None

    def _reject(
        self,
        connection: ServerConnection,
        request: Request,
        status: HTTPStatus,
        error_type: str,
        code: str | None,
        message: str,
    ) -> Response:
        body = json.dumps({"error": {"message": message, "type": error_type, "param": None, "code": code}})
        response = connection.respond(status, body + "\n")
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        self.rejected_handshakes.append(RejectedHandshake(request.path, int(status), message))
        logger.info("realtime double: refused %s with HTTP %d", request.path, int(status))
        return response

    async def _handle(self, ws: ServerConnection) -> None:
        script = self._scripts.popleft() if self._scripts else None
        connection = DoubleConnection(self, ws, len(self.connections), script)
        self.connections.append(connection)
        self._live.add(connection)
        for waiter in self._connection_waiters:
            if not waiter.done():
                waiter.set_result(None)
        try:
            await connection.run()
        finally:
            self._live.discard(connection)
