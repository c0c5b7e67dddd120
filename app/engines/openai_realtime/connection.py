"""One websocket to a Realtime GA server, with send helpers that survive a closed socket.

The websocket is picows' implementation of the `websockets` asyncio API (`picows.websockets`):
the same calls and exceptions as `websockets`, framed in compiled code. Measured on the relay's
two hot paths (benchmarks/README.md, "Websocket stacks"), it costs about half the CPU of
`websockets` per audio append sent and per audio delta received.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from picows import WSInvalidURL
from picows.websockets import (
    ClientConnection, ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI, State, connect,
)

from app.config import Settings
from app.engines.contract import EngineUnavailable

log = logging.getLogger(__name__)

# Model audio deltas can be several hundred kB of base64; cap well above that.
MAX_SERVER_MESSAGE_BYTES = 8 * 1024 * 1024

# Seconds the closing handshake may take before the socket is dropped.
CLOSE_TIMEOUT_SECONDS = 2


class RealtimeUnavailable(EngineUnavailable):
    """The realtime service could not be reached or refused us.

    `http_status` is the service's answer when it refused the handshake (picows keeps no
    body); `bad_url` says the configured URL is not a websocket URL."""

    def __init__(self, message: str, *, http_status: int | None = None, bad_url: bool = False) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.bad_url = bad_url


def realtime_url(settings: Settings) -> str:
    parts = urlsplit(settings.openai_realtime_url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("model", settings.openai_realtime_model)
    return urlunsplit(parts._replace(query=urlencode(query)))


def auth_headers(settings: Settings, url: str | None = None) -> dict[str, str]:
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
    host = urlsplit(url or settings.openai_realtime_url).hostname or ""
    if host.endswith(".azure.com"):
        return {"api-key": key}  # Azure OpenAI takes its key in its own header
    return {"Authorization": f"Bearer {key}"}


class RealtimeConnection:
    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket
        # perf_counter() when the last server frame arrived, before parsing: the start of
        # the bridge delay for the audio it carries.
        self.last_received_at = 0.0

    @classmethod
    async def open(cls, settings: Settings, configure: dict[str, Any], url: str | None = None) -> "RealtimeConnection":
        """Connect (to the Realtime URL unless another service's `url` is given) and send the
        session configuration (`session.update`, or GPT-Live's `session.start`).

        Cancelled or out of time, the opening carries on in the background and whatever it
        opens is closed: picows does not abort a handshake under way, and a socket opened for
        nobody would hold a model session until the service dropped it."""
        url = url or realtime_url(settings)
        timeout = settings.realtime_connect_timeout_seconds
        opening = asyncio.ensure_future(connect(
            url,
            additional_headers=auth_headers(settings, url),
            max_size=MAX_SERVER_MESSAGE_BYTES,
            compression=None,  # base64 audio does not compress; deflate would only burn CPU
            open_timeout=timeout,  # the handshake's own bound: it ends even when no one waits
            ping_interval=20,
            ping_timeout=20,
            close_timeout=CLOSE_TIMEOUT_SECONDS,
        ))
        try:
            try:
                async with asyncio.timeout(timeout):  # the TCP and TLS set-up too
                    socket = await asyncio.shield(opening)
            except BaseException:
                opening.add_done_callback(_close_opened)
                raise
        except InvalidStatus as exc:
            raise RealtimeUnavailable(f"the realtime service refused the websocket: HTTP {exc.response.status_code}",
                                      http_status=exc.response.status_code) from exc
        except (InvalidURI, WSInvalidURL) as exc:  # picows' websockets API lets its own through
            raise RealtimeUnavailable(f"not a websocket URL: {exc!r}", bad_url=True) from exc
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise RealtimeUnavailable(f"cannot open the realtime websocket: {exc!r}") from exc
        connection = cls(socket)
        try:
            sent = await connection.send(configure)
        except BaseException:
            connection.close_soon()
            raise
        if not sent:
            raise RealtimeUnavailable("the realtime websocket closed during set-up")
        return connection

    @property
    def is_open(self) -> bool:
        return self._socket.state is State.OPEN

    @property
    def close_code(self) -> int | None:
        return self._socket.close_code

    async def send(self, event: dict[str, Any] | str | bytes) -> bool:
        """Send one client event (a dict, or JSON text or UTF-8 bytes); False (never an
        exception) when the socket is gone. Waits only while the socket's buffer is full."""
        payload = orjson.dumps(event) if isinstance(event, dict) else event
        try:
            await self._socket.send(payload, text=True)
            return True
        except ConnectionClosed:
            return False

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Server events in order; ends when the socket closes. Unparseable frames are dropped."""
        try:
            while True:
                # Text frames as bytes: orjson checks the UTF-8 itself, no str copy first.
                raw = await self._socket.recv(decode=False)
                self.last_received_at = perf_counter()
                try:
                    event = orjson.loads(raw)
                except ValueError:
                    log.warning("dropping a non-JSON frame from the realtime server")
                    continue
                if isinstance(event, dict) and isinstance(event.get("type"), str):
                    yield event
        except ConnectionClosed:
            return

    async def close(self) -> None:
        try:
            await self._socket.close()
        except (ConnectionClosed, OSError):
            pass

    def close_soon(self) -> None:
        """Close in the background: for a caller that was cancelled and cannot wait."""
        task = asyncio.ensure_future(self.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)


# Closings nobody awaits, kept referenced until they are done.
_closing: set[asyncio.Future[None]] = set()


def _close_opened(opening: asyncio.Future[ClientConnection]) -> None:
    """An opening given up on: close what it opened (its failure needs nothing, but is read)."""
    if opening.cancelled() or opening.exception() is not None:
        return
    RealtimeConnection(opening.result()).close_soon()
