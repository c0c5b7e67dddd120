"""A channel's websocket, whatever server carries it: starlette's (under uvicorn, every channel)
or picows' (the Twilio media stream's own listener, `app/channels/twilio/stream_listener.py`).

Channels read and write through `FrameSocket`: frames in, text out, a close that never raises.
"""

from __future__ import annotations

from typing import Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from app.channels.contract import CallOutcome

# The websocket servers' hard cap on one message (uvicorn's ws_max_size, the stream listener's
# max_size): they buffer a whole message before the application sees it, so past this they
# must close the socket (1009) to protect memory. Below it the channels drop what is too big
# for them (the Twilio stream over MAX_STREAM_MESSAGE_BYTES, a browser's audio or control
# message over its wire limits) and the call goes on: a 4 MiB frame costs the farmer nothing
# but that frame.
WEBSOCKET_FRAME_LIMIT = 16 * 1024 * 1024

# The close of a socket whose peer broke the rules (RFC 6455): it should not try again.
POLICY_VIOLATION = 1008

# Errors a send or receive on starlette's websocket can meet once the peer is gone.
_CLOSED_ERRORS = (WebSocketDisconnect, RuntimeError, OSError)


class SocketClosed(Exception):
    """A send found the peer gone."""


class FrameSocket(Protocol):
    async def accept(self) -> None: ...

    async def receive(self) -> str | bytes | None:
        """The next frame (text or bytes), or None once the peer is gone."""

    async def send(self, message: str | bytes) -> None:
        """A text frame for str, a binary one for bytes; raises SocketClosed once the peer is gone."""

    async def close(self, code: int, reason: str = "") -> None:
        """Close unless the peer is gone already (then nothing)."""


class StarletteSocket:
    """starlette's websocket (under uvicorn) as a FrameSocket."""

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket

    async def accept(self) -> None:
        await self._websocket.accept()

    async def receive(self) -> str | bytes | None:
        try:
            message = await self._websocket.receive()
        except _CLOSED_ERRORS:
            return None
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        return text if text is not None else message.get("bytes", b"")

    async def send(self, message: str | bytes) -> None:
        try:
            if isinstance(message, bytes):
                await self._websocket.send_bytes(message)
            else:
                await self._websocket.send_text(message)
        except _CLOSED_ERRORS as exc:
            raise SocketClosed from exc

    async def close(self, code: int, reason: str = "") -> None:
        if self._websocket.application_state == WebSocketState.DISCONNECTED:
            return
        try:
            await self._websocket.close(code=code, reason=reason)
        except _CLOSED_ERRORS:
            pass


def close_code(outcome: CallOutcome) -> int:
    """How a call's socket ends: 1000, or 1011 when the call failed."""
    return 1000 if outcome != CallOutcome.ERROR else 1011
