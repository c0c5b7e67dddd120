"""One websocket to a Realtime GA server, with send helpers that survive a closed socket."""

from __future__ import annotations

import asyncio
import json
import logging
from time import perf_counter
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.protocol import State

from app import json_wire
from app.config import Settings
from app.engines.contract import EngineUnavailable
from app.websocket import MaskingKeys, masked_text_frame

log = logging.getLogger(__name__)

# Model audio deltas can be several hundred kB of base64; cap well above that.
MAX_SERVER_MESSAGE_BYTES = 8 * 1024 * 1024

# Bytes the kernel has not taken yet beyond which sends go through the library's path,
# which waits for the buffer to drain (the library's default write limit).
WRITE_BUFFER_HIGH_WATER = 32 * 1024


class RealtimeUnavailable(EngineUnavailable):
    """The realtime service could not be reached or refused us."""


def realtime_url(settings: Settings) -> str:
    parts = urlsplit(settings.openai_realtime_url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("model", settings.openai_realtime_model)
    return urlunsplit(parts._replace(query=urlencode(query)))


def auth_headers(settings: Settings) -> dict[str, str]:
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
    host = urlsplit(settings.openai_realtime_url).hostname or ""
    if host.endswith(".azure.com"):
        return {"api-key": key}  # Azure OpenAI takes its key in its own header
    return {"Authorization": f"Bearer {key}"}


class RealtimeConnection:
    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket
        self._masking_keys = MaskingKeys()
        # perf_counter() when the last server frame arrived, before parsing: the start of
        # the bridge delay for the audio it carries.
        self.last_received_at = 0.0

    @classmethod
    async def open(cls, settings: Settings, configure: dict[str, Any]) -> "RealtimeConnection":
        """Connect and send the session configuration (`session.update`; answered asynchronously)."""
        try:
            socket = await asyncio.wait_for(
                connect(
                    realtime_url(settings),
                    additional_headers=auth_headers(settings),
                    max_size=MAX_SERVER_MESSAGE_BYTES,
                    compression=None,  # base64 audio does not compress; deflate would only burn CPU
                    open_timeout=None,
                    ping_interval=20,
                    ping_timeout=20,
                ),
                timeout=settings.realtime_connect_timeout_seconds,
            )
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise RealtimeUnavailable(f"cannot open the realtime websocket: {exc!r}") from exc
        connection = cls(socket)
        if not await connection.send(configure):
            raise RealtimeUnavailable("the realtime websocket closed during set-up")
        return connection

    @property
    def is_open(self) -> bool:
        return self._socket.close_code is None and self._socket.state.name == "OPEN"

    @property
    def close_code(self) -> int | None:
        return self._socket.close_code

    @property
    def writable(self) -> bool:
        """Whether `send_now` may write: the socket is open and its buffer is not full."""
        socket = self._socket
        return socket.protocol.state is State.OPEN and socket.transport.get_write_buffer_size() < WRITE_BUFFER_HIGH_WATER

    def send_now(self, event: bytes) -> bool:
        """Frame and write one event (UTF-8 JSON) at once; only when `writable`. False if the
        transport died.

        Taken by nearly every audio append (50 a second per call). The library's `send` costs
        several times as much in locks, context managers, awaits and a getrandom per frame; it
        is needed only to wait for a full buffer or a closing socket. The library writes
        whatever it frames at once, so nothing of its own can be waiting to go out first.
        """
        try:
            self._socket.transport.write(masked_text_frame(event, self._masking_keys.take()))
            return True
        except (OSError, RuntimeError):
            return False

    async def send(self, event: dict[str, Any] | str | bytes) -> bool:
        """Send one client event (a dict, or JSON text or UTF-8 bytes); False (never an
        exception) when the socket is gone."""
        if isinstance(event, dict):
            event = json.dumps(event)
        payload = event.encode() if isinstance(event, str) else event
        if self.writable:
            return self.send_now(payload)
        try:
            await self._socket.send(payload, text=True)
            return True
        except ConnectionClosed:
            return False

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Server events in order; ends when the socket closes. Unparseable frames are dropped."""
        try:
            async for raw in self._socket:
                self.last_received_at = perf_counter()
                try:
                    event = json_wire.loads(raw)
                except ValueError:
                    log.warning("dropping a non-JSON frame from the realtime server")
                    continue
                if isinstance(event, dict) and isinstance(event.get("type"), str):
                    yield event
        except ConnectionClosed:
            return

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._socket.close(), timeout=2)
        except (TimeoutError, ConnectionClosed, OSError):
            self._socket.transport.abort()
