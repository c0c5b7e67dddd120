"""The GPT-Live double's websocket server: `/v1/live/sessions`, a bearer key, no query
parameters (the model goes in `session.start`), one `LiveConnection` per session."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from app.simulators.live_double.connection import SESSION_SECONDS, LiveConnection
from app.simulators.realtime_double.voice import VoiceAsset, load_voice_asset

logger = logging.getLogger(__package__)

PATH = "/v1/live/sessions"
# A 30 s fixture is 1.92 MB of base64: past websockets' default 1 MiB.
MAX_MESSAGE_BYTES = 4 * 2**20


class LiveDouble:
    """``async with LiveDouble(transcripts=[...]) as double:`` then connect to ``double.url``.

    - transcripts: what the caller says in each utterance with voice, in order, across the
      double's sessions (a caller carries on where they were when a session is replaced);
    - unanswered: what the caller says that the model lets pass, saying nothing and delegating
      nothing (« attendez… », a word to someone beside them);
    - greeting_seconds, answer_seconds, acknowledgement_seconds: how long the model speaks for a
      greeting (or notice), a delegation's answer, and while it waits for a delegation;
    - overlap_ms: how long the model talks over a caller who cuts in before it yields;
    - lead_ms: how far ahead of real time speech is sent (the client's buffer);
    - delegation_delay: seconds from the end of the caller's words to the delegation;
    - speaks_before_delegating: the model says its acknowledgement first, then delegates (the
      types let it speak before the delegation: « the model may still speak before this delay »),
      instead of delegating then saying it;
    - stream_lag_seconds: how far the caller's transcript trails their audio;
    - silence_ms: the silence that ends a caller's turn (energy VAD);
    - usage_interval: seconds between usage reports;
    - session_seconds: the session's duration limit, announced in `session.started`'s
      `expires_at`; then the session closes with reason `expired`;
    - start_seconds: how long the service takes to start a session (from `session.start` to
      `session.started`);
    - fixture_cancelled_at_ms: a fixture's playback cancelled that far in: it stops, and its
      `fixture.played` never comes (the types: not sent for canceled or failed playback);
    - drop_when: a test's choice of the moment the service goes away: a predicate on the events
      of a session, those it sends and the client events it takes; the session drops right
      after the first event it holds true for (once: then it is None again).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_key: str | None = None,
                 transcripts: Iterable[str] = (), unanswered: Iterable[str] = (), greeting_seconds: float = 2.5,
                 answer_seconds: float = 4.0, acknowledgement_seconds: float = 0.8, overlap_ms: int = 600,
                 lead_ms: int = 300, delegation_delay: float = 0.2, speaks_before_delegating: bool = False,
                 stream_lag_seconds: float = 0.3, silence_ms: int = 500, usage_interval: float = 1.0,
                 session_seconds: float = SESSION_SECONDS, start_seconds: float = 0.0,
                 fixture_cancelled_at_ms: float = float("inf"),
                 drop_when: Callable[[dict[str, Any]], bool] | None = None) -> None:
        self.host, self._requested_port = host, port
        self.api_key = api_key
        self.transcripts = list(transcripts)
        self.unanswered = frozenset(unanswered)
        self._utterances = 0
        self.greeting_seconds, self.answer_seconds = greeting_seconds, answer_seconds
        self.acknowledgement_seconds = acknowledgement_seconds
        self.overlap_ms, self.lead_ms = overlap_ms, lead_ms
        self.delegation_delay, self.stream_lag_seconds = delegation_delay, stream_lag_seconds
        self.speaks_before_delegating = speaks_before_delegating
        self.silence_ms = silence_ms
        self.usage_interval = usage_interval
        self.session_seconds, self.start_seconds = session_seconds, start_seconds
        self.fixture_cancelled_at_ms = fixture_cancelled_at_ms
        self.drop_when = drop_when
        self.asset: VoiceAsset | None = None
        self.connections: list[LiveConnection] = []
        self.refused: list[tuple[int, str]] = []
        self._server: Server | None = None
        self._new_connection = asyncio.Event()

    async def start(self) -> LiveDouble:
        self.asset = await asyncio.to_thread(load_voice_asset)
        self._server = await serve(self._handle, self.host, self._requested_port,
                                   process_request=self._check_request, compression=None, max_size=MAX_MESSAGE_BYTES)
        logger.info("live double listening on %s", self.url)
        return self

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def __aenter__(self) -> LiveDouble:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "the live double is not started"
        port = self._server.sockets[0].getsockname()[1]
        return f"ws://{self.host}:{port}{PATH}"

    async def wait_for_connection(self, count: int = 1, timeout: float = 5.0) -> LiveConnection:
        """The `count`-th connection, once it came."""
        async with asyncio.timeout(timeout):
            while len(self.connections) < count:
                self._new_connection.clear()
                await self._new_connection.wait()
        return self.connections[count - 1]

    def next_transcript(self) -> str:
        """What the caller says in their next utterance, as the script has it."""
        self._utterances += 1
        if self._utterances <= len(self.transcripts):
            return self.transcripts[self._utterances - 1]
        return f"[question de l'appelant n°{self._utterances}]"

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        scheme, _, key = (request.headers.get("Authorization") or "").partition(" ")
        if parts.path != PATH:
            return self._refuse(connection, HTTPStatus.NOT_FOUND, f"Invalid URL ({parts.path}).")
        if parts.query:
            return self._refuse(connection, HTTPStatus.BAD_REQUEST,
                                "Live sessions take no query parameters: put the model in session.start.")
        if scheme.lower() != "bearer" or not key.strip() or (self.api_key is not None and key.strip() != self.api_key):
            return self._refuse(connection, HTTPStatus.UNAUTHORIZED, "Incorrect or missing API key.")
        return None

    def _refuse(self, connection: ServerConnection, status: HTTPStatus, message: str) -> Response:
        self.refused.append((int(status), message))
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                     "code": None}})
        return connection.respond(status, body + "\n")

    async def _handle(self, ws: ServerConnection) -> None:
        connection = LiveConnection(self, ws, len(self.connections))
        self.connections.append(connection)
        self._new_connection.set()
        await connection.run()
