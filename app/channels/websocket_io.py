"""Reading a channel's websocket (starlette's), shared by the channels that run on one."""

from __future__ import annotations

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from app.channels.contract import CallOutcome

# Errors a send or receive can meet once the peer is gone.
CLOSED_ERRORS = (WebSocketDisconnect, RuntimeError, OSError)


async def receive_frame(websocket: WebSocket) -> str | bytes | None:
    """The next frame (text or bytes), or None once the peer is gone."""
    try:
        message = await websocket.receive()
    except CLOSED_ERRORS:
        return None
    if message["type"] == "websocket.disconnect":
        return None
    text = message.get("text")
    return text if text is not None else message.get("bytes", b"")


async def close_quietly(websocket: WebSocket, code: int, reason: str = "") -> None:
    """Close unless the peer is gone already."""
    try:
        await websocket.close(code=code, reason=reason)
    except CLOSED_ERRORS:
        pass


async def close_for(websocket: WebSocket, outcome: CallOutcome) -> None:
    """End a call's socket: 1000, or 1011 when the call failed; nothing if the peer is gone."""
    if websocket.application_state != WebSocketState.DISCONNECTED:
        await close_quietly(websocket, 1000 if outcome != CallOutcome.ERROR else 1011)
