"""WebSocket framing on the relay's hot paths (RFC 6455), beside the libraries that own the protocol.

A call moves about a hundred small websocket messages a second: Twilio's 20 ms media frames in,
an audio append upstream for each. Through the libraries' general-purpose parsers and writers,
the per-message bookkeeping cost more CPU than the audio work. Two narrow fast paths, each
handing anything beyond the common case back to the library:

* `StreamingWebSocketProtocol`: uvicorn's websocket protocol (websockets' sans-I/O state
  machine) with its own parser for whole, masked data frames, and without uvicorn's
  pause/resume of reading after every message (two system calls per frame); reading pauses
  only when the application falls `PAUSE_READING_AT` messages behind; and, for an
  application that asks, text messages handed to a callback as they are parsed, with no
  queue or task switch in between.
* `MaskingKeys` and `masked_text_frame`: client frames masked with keys drawn from the OS in
  batches, not one `getrandom` per frame.

Handshake, pings, pongs, closing, fragmented messages and every protocol error stay with the
library: the parser gives it whole frames only, so its own parser never loses its place.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets built without its C extension
    from websockets.utils import apply_mask

log = logging.getLogger(__name__)

# ASGI scope extensions under which `StreamingWebSocketProtocol` offers `set_text_receiver`
# and `send_texts_now`.
TEXT_RECEIVER_EXTENSION = "octi.text_receiver"
TEXT_SENDER_EXTENSION = "octi.text_sender"

# Messages queued for the application beyond which reading from the socket pauses. Twilio sends
# 50 a second; 32 is 640 ms of audio, so a busy event loop does not stall the stream, while a
# stalled application still stops reading long before its queue costs memory.
PAUSE_READING_AT = 32

_TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x1, 0x2, 0x8, 0x9, 0xA
_FIN = 0x80
_MASKED = 0x80
_FAST_OPCODES = frozenset({_TEXT, _BINARY, _CLOSE, _PING, _PONG})
_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")


def frame_header(first_byte: int, length: int, *, masked: bool) -> bytes:
    """The header of a frame (FIN, opcode and length; the mask bit when `masked`)."""
    mask_bit = _MASKED if masked else 0
    if length < 126:
        return bytes((first_byte, mask_bit | length))
    if length < 65536:
        return _HEADER_16.pack(first_byte, mask_bit | 126, length)
    return _HEADER_64.pack(first_byte, mask_bit | 127, length)


class MaskingKeys:
    """Unpredictable 4-byte masking keys for one client connection.

    RFC 6455 wants each key unpredictable (it keeps a hostile page from steering what the
    bytes on the wire look like), so they come from `os.urandom`, in batches of 1024 keys.
    """

    __slots__ = ("_pool", "_next")

    BATCH = 1024

    def __init__(self) -> None:
        self._pool = b""
        self._next = 0

    def take(self) -> bytes:
        start = self._next
        if start >= len(self._pool):
            self._pool = os.urandom(4 * self.BATCH)
            start = 0
        self._next = start + 4
        return self._pool[start : start + 4]


def masked_text_frame(payload: bytes, key: bytes) -> bytes:
    """A whole client text frame: header, masking key, masked payload."""
    return frame_header(_FIN | _TEXT, len(payload), masked=True) + key + apply_mask(payload, key)


def text_frame(payload: bytes) -> bytes:
    """A whole server text frame (servers do not mask)."""
    return frame_header(_FIN | _TEXT, len(payload), masked=False) + payload


class StreamingWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O websocket protocol with fast paths for whole data frames.

    Incoming: complete, unfragmented, masked text or binary frames within the size limit are
    parsed here and queued for the application as the library would; control frames are
    handed to the library whole. At the first frame of any other kind (fragmented, reserved
    bits, unmasked, oversized, invalid UTF-8, unknown opcode), this connection hands the rest
    of its bytes to the library for good, which then fails or reassembles as RFC 6455 says.
    Outgoing: text messages on an open, writable connection are framed and written at once;
    `send_texts_now` (under TEXT_SENDER_EXTENSION) writes several in one system call.

    The scope's extensions offer `set_text_receiver` (under TEXT_RECEIVER_EXTENSION): while
    a receiver is set and nothing is queued ahead, each text message goes to it first, and
    only those it declines (returns False) are queued.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # permessage-deflate would transform payloads and set RSV1: the library's job.
        self._fast = not self.config.ws_per_message_deflate
        self._max_size = self.config.ws_max_size
        # Bytes after the handshake request not parsed yet (an unfinished frame, or frames
        # that came before the application accepted): a bytearray, or b"" when there are none.
        self._pending: bytes | bytearray = b""
        self._text_receiver: Callable[[str], bool] | None = None

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        if self.handshake_initiated and not self.close_sent:  # the scope exists; the app has not run yet
            self.scope["extensions"][TEXT_RECEIVER_EXTENSION] = self.set_text_receiver
            self.scope["extensions"][TEXT_SENDER_EXTENSION] = self.send_texts_now

    def set_text_receiver(self, receiver: Callable[[str], bool] | None) -> None:
        self._text_receiver = receiver

    def data_received(self, data: bytes) -> None:
        if not self._fast:
            super().data_received(data)
            return
        if not self.handshake_initiated:
            super().data_received(data)
            # uvicorn hands the upgrade request over on its own; bytes that came with it would
            # already sit in the library's parser, which must then keep the stream.
            if self.handshake_initiated and (len(self.conn.reader.buffer) or not data.endswith(b"\r\n\r\n")):
                self._fast = False
            return
        if self._pending:
            self._pending += data
        elif self.handshake_complete:
            self._parse(data)  # the usual case: whole frames, parsed without a copy
            return
        else:
            self._pending = bytearray(data)
        if self.handshake_complete:  # frames sent before the application accepted wait for it
            self._parse(self._pending)

    def send_texts_now(self, *texts: str) -> bool:
        """Write text messages at once, in one write; False (nothing written) when the
        connection cannot take them now: not open yet, closing, or its buffer full. The
        ASGI `send` then knows what to do."""
        if not (
            self.handshake_complete
            and not self.close_sent
            and self.initial_response is None
            and not self.disconnected
            and self.writable.is_set()
            and self.conn.state is State.OPEN
        ):
            return False
        self.transport.write(b"".join([text_frame(text.encode()) for text in texts]))
        return True

    async def send(self, message: Any) -> None:
        text = message.get("text") if message["type"] == "websocket.send" else None
        if text is not None and self.send_texts_now(text):
            return
        await super().send(message)
        if message["type"] == "websocket.accept" and self._pending and self._fast:
            self._parse(self._pending)

    def _parse(self, buf: bytes | bytearray) -> None:
        """Take every whole frame in `buf`; an unfinished one is kept in `_pending`."""
        end = len(buf)
        pos = 0
        while end - pos >= 2 and self._fast:
            first, second = buf[pos], buf[pos + 1]
            length = second & 0x7F
            head = pos + 2
            if length == 126:
                if end - pos < 4:
                    break
                length = int.from_bytes(buf[head : head + 2], "big")
                head += 2
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(buf[head : head + 8], "big")
                head += 8
            opcode = first & 0x0F
            if first & 0xF0 != _FIN or not second & _MASKED or length > self._max_size or opcode not in _FAST_OPCODES:
                self._hand_over(buf, pos)
                return
            stop = head + 4 + length
            if stop > end:
                break
            if opcode >= _CLOSE:
                super().data_received(bytes(buf[pos:stop]))
                if self.transport.is_closing():
                    self._pending = b""
                    return
            else:
                payload = apply_mask(buf[head + 4 : stop], buf[head : head + 4])
                if opcode == _TEXT:
                    try:
                        text = payload.decode()
                    except UnicodeDecodeError:
                        self._hand_over(buf, pos)
                        return
                    if not self._offer(text):
                        self._deliver({"type": "websocket.receive", "text": text})
                else:
                    self._deliver({"type": "websocket.receive", "bytes": payload})
            pos = stop
        self._pending = bytearray(buf[pos:]) if pos < end else b""

    def _hand_over(self, buf: bytes | bytearray, pos: int) -> None:
        """From the frame at `pos` on, the library parses this connection."""
        self._fast = False
        self._pending = b""
        super().data_received(bytes(buf[pos:]))

    def _offer(self, text: str) -> bool:
        """Whether the receiver took the message; never when messages wait in the queue."""
        receiver = self._text_receiver
        if receiver is None or self.close_sent or not self.queue.empty():
            return False
        try:
            return receiver(text)
        except Exception:
            # The application's bug, not the peer's: queue the message, so that the
            # application meets the error again in its own task and handles it there.
            log.exception("the websocket text receiver failed; back to the queue")
            self._text_receiver = None
            return False

    def _deliver(self, message: dict[str, Any]) -> None:
        if self.close_sent:
            return  # as uvicorn: past `websocket.close`, data is read and dropped
        self.queue.put_nowait(message)
        if not self.read_paused and self.queue.qsize() >= PAUSE_READING_AT:
            # The library's `receive` resumes reading once the queue is empty.
            self.read_paused = True
            self.transport.pause_reading()
