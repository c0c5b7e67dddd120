"""Lean peers for benchmarks/relay.py and soak.py: the same wire protocols as the faithful simulators, for little CPU.

The faithful peers (`octi realtime-double`, which validates every client event with pydantic,
and `app.simulators.twilio_caller.place_call`, one websockets client, timer and pump per call)
cost about 1 % of a core per call together; on a small machine they saturate it long before
the server does. These peers speak the same protocols to the unchanged server:

* `realtime`: a picows server speaking the OpenAI Realtime GA protocol as far as the server
  uses it (the upgrade checked for the path and bearer key, the model taken from the query).
  Audio appends are recognised by their prefix and never JSON-decoded; an append is silence
  when its base64 is exactly that of digital silence (a C-speed compare), and a VAD on that
  (speech after 60 ms of sound, its end after the session's silence duration, positions on
  the appended-audio timeline) commits turns and answers them as the double does. Answers
  are slices of the double's recording, base64-encoded once at start-up for each output
  format, streamed in 20-250 ms deltas faster than real time by --speed. Every event shape
  it sends is validated once at start-up against `openai.types.realtime` (a scripted
  session against a fake transport), not per message.
* `run_fleet`: N Twilio callers in one process. Each call makes the signed webhook POST and
  the signed websocket upgrade with its TwiML token once; then one shared 20 ms ticker sends
  every call's media frame (pre-built JSON around pre-encoded payloads, one picows send per
  call per tick). Calls talk in turns like the faithful benchmark (an utterance, the speech
  part of a WAV, then silence until OCTI has been silent for 700 ms after its answer; a call's
  plan can make some steps a barge-in or a key press instead) and keep
  Twilio's playback buffer as counters: media ms queue up and drain 20 ms per tick, marks are
  echoed when playback reaches them, `clear` empties the buffer and echoes pending marks.
  Server frames are checked by exact prefixes; anything else goes through the faithful
  `twilio_wire.check_server_frame`.

The websocket layer is picows (a C implementation of RFC 6455): the HTTP upgrade, framing,
masking, pings and protocol checks are its; these peers only see whole text messages and
complete the closing handshake. Fragmented messages are refused (neither side fragments).

Run: `.venv/bin/python benchmarks/lean_peers.py realtime --port P --speed 2 --answer-seconds 3 --api-key K`
     `.venv/bin/python benchmarks/lean_peers.py calls --url http://127.0.0.1:8000 --calls 2 --duration 20`
     `.venv/bin/python benchmarks/lean_peers.py check`   (validate the event templates and exit)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import json
import logging
import os
import random
import sys
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, AsyncIterator, Callable
from urllib.parse import urlsplit

from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSHandshakeError,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_connect,
    ws_create_server,
)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from app.simulators import twilio_wire as wire  # noqa: E402
from app.simulators.realtime_double import (  # noqa: E402 - the double's settings, which the lean peer mirrors
    BETA_CLOSE_CODE,
    BYTES_PER_MS,
    DEFAULT_MODEL,
    DEFAULT_SEMANTIC_VAD,
    DEFAULT_SERVER_VAD,
    DEFAULT_VOICE,
    DELTA_MS_RANGE,
    FORMAT_KINDS,
    ID_ALPHABET,
    KEEP_ON_NULL,
    MIN_COMMIT_MS,
    SEMANTIC_PREFIX_MS,
    SEMANTIC_SILENCE_MS,
    SESSION_LIFETIME_SECONDS,
    UNITS_PER_MS,
    load_voice_asset,
    snap_to_word,
)
from app.simulators.realtime_schema import unexpected_server_keys, validate_server_event  # noqa: E402
from app.simulators.twilio_caller import STREAM_USER_AGENT, WEBHOOK_PATH, WEBHOOK_USER_AGENT  # noqa: E402

log = logging.getLogger("lean_peers")

MAX_MESSAGE = 32 * 2**20
HANDSHAKE_TIMEOUT_S = 10.0
CLOSE_WAIT_S = 2.0  # for the other side's close frame, after ours


def run_async(main: Any) -> Any:
    """Run `main` on uvloop when installed: the peers should cost as little CPU as they can."""
    try:
        import uvloop
    except ImportError:
        factory = None
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


# --------------------------------------------------------------------------- websocket messages over picows
# picows does RFC 6455: the HTTP upgrade, framing, masking, pings (auto-pong) and protocol checks.
# What is left here is the part of a message exchange that picows leaves to its listener.


class MessageListener(WSListener):
    """A picows listener that hands over whole text and binary messages and completes the closing handshake.

    Fragmented messages are refused with 1003: the server and its peers never fragment, and
    picows delivers frames, not messages. Subclasses implement `on_text` and `on_binary`.
    """

    def __init__(self) -> None:
        self.transport: WSTransport | None = None
        self.close_rcvd: int | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.CLOSE:
            code = frame.get_close_code()
            self.close_rcvd = 1005 if code == WSCloseCode.NO_INFO else int(code)
            self.on_close_frame(self.close_rcvd)
            if not transport.is_close_frame_sent:  # echo it, then the TCP close
                transport.send_close(WSCloseCode.OK if code == WSCloseCode.NO_INFO else code)
            transport.disconnect()
        elif transport.is_close_frame_sent:
            return  # closing: only the other side's close matters now
        elif not frame.fin or kind == WSMsgType.CONTINUATION:
            self.fail(WSCloseCode.UNSUPPORTED_DATA, "fragmented messages are not supported")
        elif kind == WSMsgType.TEXT:
            self.on_text(frame.get_payload_as_bytes())
        elif kind == WSMsgType.BINARY:
            self.on_binary(frame.get_payload_as_bytes())

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.on_closed()

    @property
    def sending(self) -> bool:
        """Whether messages can still go out: connected, and no close frame sent yet."""
        transport = self.transport
        return transport is not None and not transport.is_close_frame_sent and not transport.is_disconnected

    def send_text(self, payload: bytes) -> None:
        if self.sending:
            self.transport.send(WSMsgType.TEXT, payload)  # type: ignore[union-attr]

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        if self.sending:
            self.transport.send_close(code, reason.encode()[:120])  # type: ignore[union-attr, arg-type]

    def disconnect(self) -> None:
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.disconnect()

    def fail(self, code: int, reason: str) -> None:
        """Refuse what the other side sent: a close frame, its echo awaited CLOSE_WAIT_S at most."""
        log.warning("websocket closed with %d: %s", code, reason)
        self.send_close(code, reason)
        asyncio.get_running_loop().call_later(CLOSE_WAIT_S, self.disconnect)

    # -- for subclasses
    def on_text(self, payload: bytes) -> None:
        raise NotImplementedError

    def on_binary(self, payload: bytes) -> None:
        raise NotImplementedError

    def on_close_frame(self, code: int) -> None:
        pass

    def on_closed(self) -> None:
        pass


# --------------------------------------------------------------------------- the lean realtime peer

DEFAULT_INSTRUCTIONS = "You are a helpful, friendly voice assistant. (Default instructions of the lean realtime peer.)"
SPEECH_START_MS = 60  # sound this long starts a turn
UNITS_PER_BYTE = {"pcm": 1, "pcmu": 6, "pcma": 6}  # PCM16 24 kHz: 2 bytes a sample, 2 units a sample
SILENCE_BYTE = {"pcm": b"\x00", "pcmu": b"\xff", "pcma": b"\xd5"}
APPEND_PREFIX = b'{"type":"input_audio_buffer.append","audio":"'
APPEND_SUFFIX = b'"}'


class Voice:
    """The double's recording in every output format, as base64 made once; deltas are slices.

    Base64 maps 3 bytes to 4 characters, so a slice of the precomputed text is the encoding
    of the matching audio whenever it starts and ends on a multiple of 3 bytes: any whole ms
    of PCM16 24 kHz (48 bytes), multiples of 3 ms of G.711 (8 bytes a ms). The recording is
    cut to a whole number of such grains and doubled, so a delta never needs to wrap.
    """

    def __init__(self) -> None:
        self.asset = asset = load_voice_asset()
        self.b64: dict[str, bytes] = {}
        self.grain: dict[str, int] = {}
        self.duration_ms: dict[str, int] = {}
        for kind, per_ms in BYTES_PER_MS.items():
            grain = 1 if per_ms % 3 == 0 else 3
            duration = asset.duration_ms // grain * grain
            raw = asset.audio[kind][:duration * per_ms]
            self.grain[kind], self.duration_ms[kind] = grain, duration
            self.b64[kind] = base64.b64encode(raw + raw)

    def delta(self, kind: str, start_ms: int, ms: int) -> bytes:
        per_ms = BYTES_PER_MS[kind]
        begin = (start_ms % self.duration_ms[kind]) * per_ms // 3 * 4
        return self.b64[kind][begin:begin + ms * per_ms // 3 * 4]


class _Response:
    __slots__ = ("id", "item_id", "planned_ms", "position", "asset_start", "script", "sent_chars",
                 "handle", "status", "reason", "format", "voice", "output_kind", "head", "transcript", "previous")

    def __init__(self) -> None:
        self.handle: Any = None
        self.position = 0
        self.sent_chars = 0
        self.status = "in_progress"
        self.reason: str | None = None
        self.transcript = ""


class RealtimeConnection(MessageListener):
    """One session of the lean realtime peer."""

    def __init__(self, peer: "LeanRealtimePeer", index: int, *, model: str = DEFAULT_MODEL,
                 beta: bool = False) -> None:
        super().__init__()
        self.peer = peer
        self.index = index
        self._rng = random.Random(index)
        self._tag = "".join(self._rng.choices(ID_ALPHABET, k=12))  # ids: prefix_ + 12 random + 9-digit counter
        self._count = 0
        self.model = model
        self.beta = beta  # asked for the Beta protocol: refused once open, as the service does
        self.conversation_id = self.new_id("conv")
        self.session: dict[str, Any] = {}
        self.items: dict[str, list[Any]] = {}  # id -> [role, audio_ms, generated_ms]
        self.last_item: str | None = None
        self.active: _Response | None = None
        self.responses = 0
        self.asset_cursor = 0
        self.utterances = 0
        self.total_units = 0
        self.buffer_start = 0
        # VAD state, for input in `in_kind`
        self.in_kind = ""
        self.speaking = False
        self.voiced = 0
        self.silent = 0
        self.onset = 0
        self.speech_item: str | None = None
        self.speech_start = 0

    # -- ids and sending
    def new_id(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._tag}{self._count:09d}"

    def encode(self, event: dict[str, Any]) -> bytes:
        event["event_id"] = self.new_id("event")
        return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()

    def emit(self, *events: dict[str, Any]) -> None:
        for event in events:
            self.send_text(self.encode(event))

    def error_event(self, code: str | None, message: str, param: str | None = None,
                    event_id: str | None = None, error_type: str = "invalid_request_error") -> dict[str, Any]:
        error = {"type": error_type, "code": code, "message": message, "param": param, "event_id": event_id}
        if len(self.peer.errors_sent) < 100:  # for tests and logs: what the client did wrong
            self.peer.errors_sent.append(error)
        if self.peer.log_errors:
            log.warning("connection %d: error %s: %s", self.index, code, message)
        return {"type": "error", "error": dict(error)}

    # -- opening: picows has checked the upgrade, the peer's `upgrade` the path and the key
    def on_ws_connected(self, transport: WSTransport) -> None:
        super().on_ws_connected(transport)
        self.peer.connections.add(self)
        if self.beta:
            self.emit(self.error_event("beta_api_shape_disabled",
                                       "The Realtime Beta API is no longer supported. Remove the 'OpenAI-Beta: "
                                       "realtime=v1' header and use the GA Realtime API."))
            self.send_close(BETA_CLOSE_CODE, "beta_api_shape_disabled")
            return
        self.start_session()

    def start_session(self) -> None:
        self.session = self.default_session()
        self.configure()
        self.emit({"type": "session.created", "session": copy.deepcopy(self.session)})

    def on_closed(self) -> None:
        if self.active is not None and self.active.handle is not None:
            self.active.handle.cancel()
        self.active = None
        self.peer.connections.discard(self)

    # -- session
    def default_session(self) -> dict[str, Any]:
        return {
            "type": "realtime", "object": "realtime.session", "id": self.new_id("sess"), "model": self.model,
            "output_modalities": ["audio"], "instructions": DEFAULT_INSTRUCTIONS, "tools": [], "tool_choice": "auto",
            "max_output_tokens": "inf", "tracing": None, "truncation": "auto", "prompt": None, "include": None,
            "expires_at": int(time.time()) + SESSION_LIFETIME_SECONDS,
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": 24000}, "transcription": None,
                          "noise_reduction": None, "turn_detection": dict(DEFAULT_SERVER_VAD)},
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": DEFAULT_VOICE, "speed": 1.0},
            },
        }

    def configure(self) -> None:
        """Derive the hot-path settings (formats, VAD) from the session."""
        audio = self.session["audio"]
        kind = FORMAT_KINDS.get(audio["input"]["format"].get("type") or "audio/pcm", "pcm")
        if self.in_kind != kind:
            self.in_kind = kind
            self.speaking, self.voiced, self.silent = False, 0, 0
        self.units_per_byte = UNITS_PER_BYTE[kind]
        self.silence_fill = SILENCE_BYTE[kind]
        self.frame_bytes = 20 * BYTES_PER_MS[kind]  # the server appends 20 ms at a time
        silent_b64 = base64.b64encode(self.silence_fill * self.frame_bytes)
        self.silent_append = APPEND_PREFIX + silent_b64 + APPEND_SUFFIX
        self.silent_units = self.frame_bytes * self.units_per_byte
        self.out_kind = FORMAT_KINDS.get(audio["output"]["format"].get("type") or "audio/pcm", "pcm")
        detection = audio["input"]["turn_detection"]
        self.vad = detection is not None
        if detection is not None:
            if detection["type"] == "server_vad":
                silence_ms = detection.get("silence_duration_ms", 500)
                self.prefix_ms = detection.get("prefix_padding_ms", 300)
            else:
                silence_ms = SEMANTIC_SILENCE_MS[detection.get("eagerness") or "auto"]
                self.prefix_ms = SEMANTIC_PREFIX_MS
            self.stop_units = silence_ms * UNITS_PER_MS
            self.create_response = detection.get("create_response", True)
            self.interrupt_response = detection.get("interrupt_response", True)
        self.transcribe = audio["input"].get("transcription") is not None

    def update_session(self, update: dict[str, Any], event_id: str | None) -> dict[str, Any]:
        if update.get("type") != "realtime":
            return self.error_event("invalid_value", f"Invalid value: '{update.get('type')}'. This session's type is "
                                    "'realtime' and cannot be changed.", "session.type", event_id)
        session = copy.deepcopy(self.session)
        for key, value in update.items():
            if key in ("type", "model"):
                continue
            if key == "audio":
                _merge_audio(session["audio"], value or {})
            elif value is None and key in KEEP_ON_NULL:
                continue
            else:
                session[key] = value
        self.session = session
        self.configure()
        return {"type": "session.updated", "session": copy.deepcopy(session)}

    # -- client events
    def on_binary(self, payload: bytes) -> None:
        self.emit(self.error_event("invalid_json", "We could not parse the JSON body of your request: binary frames "
                                   "are not supported, send each event as a JSON text frame."))

    def on_text(self, payload: bytes) -> None:
        # The hot path: 50 appends a second per call, of digital silence most of the time.
        if payload == self.silent_append:
            self.total_units += self.silent_units
            if self.vad:
                self.audio(self.silent_units, True)
            return
        if payload.startswith(APPEND_PREFIX) and payload.endswith(APPEND_SUFFIX):
            chars = len(payload) - len(APPEND_PREFIX) - len(APPEND_SUFFIX)
            if chars % 4 == 0 and payload.find(b'"', len(APPEND_PREFIX), len(payload) - 2) < 0:
                pad = (payload[-3] == 61) + (payload[-4] == 61) if chars else 0  # '=' padding
                size = chars // 4 * 3 - pad
                units = size * self.units_per_byte
                self.total_units += units
                if self.vad:
                    silent = payload[len(APPEND_PREFIX):-2] == base64.b64encode(self.silence_fill * size)
                    self.audio(units, silent)
                return
        self.on_event(payload)

    def audio(self, units: int, silent: bool) -> None:
        """VAD on the audio timeline: speech after SPEECH_START_MS of sound, its end after the silence duration."""
        if not self.speaking:
            if silent:
                self.voiced = 0
                return
            if self.voiced == 0:
                self.onset = self.total_units - units
            self.voiced += units
            if self.voiced >= SPEECH_START_MS * UNITS_PER_MS:
                self.speaking, self.silent = True, 0
                self.speech_started()
        elif silent:
            self.silent += units
            if self.silent >= self.stop_units:
                self.speaking, self.voiced = False, 0
                self.speech_stopped()
        else:
            self.silent = 0

    def on_event(self, payload: bytes) -> None:
        try:
            event = json.loads(payload)
        except ValueError as exc:
            self.emit(self.error_event("invalid_json", f"We could not parse the JSON body of your request: {exc}"))
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self.emit(self.error_event("invalid_type", "Invalid type for event: expected an object with a 'type'."))
            return
        kind, event_id = event["type"], event.get("event_id") if isinstance(event.get("event_id"), str) else None
        handler = {
            "session.update": self.on_session_update,
            "input_audio_buffer.append": self.on_json_append,
            "input_audio_buffer.commit": self.on_commit,
            "input_audio_buffer.clear": self.on_clear,
            "response.create": self.on_response_create,
            "response.cancel": self.on_response_cancel,
            "conversation.item.truncate": self.on_truncate,
            "conversation.item.delete": self.on_delete,
            "conversation.item.create": self.on_item_create,
        }.get(kind)
        if handler is None:
            self.emit(self.error_event(None, f"The lean realtime peer does not implement '{kind}'.", "type", event_id))
            return
        handler(event, event_id)

    def on_session_update(self, event: dict[str, Any], event_id: str | None) -> None:
        update = event.get("session")
        if not isinstance(update, dict):
            self.emit(self.error_event("missing_required_parameter", "Missing required parameter: 'session'.",
                                       "session", event_id))
            return
        self.emit(self.update_session(update, event_id))

    def on_json_append(self, event: dict[str, Any], event_id: str | None) -> None:
        """An append that is not in the compact form: decoded the slow way."""
        try:
            raw = base64.b64decode(event.get("audio", ""), validate=True)
        except ValueError:
            self.emit(self.error_event("invalid_value", "Invalid 'audio': expected base64-encoded audio.", "audio",
                                       event_id))
            return
        units = len(raw) * self.units_per_byte
        self.total_units += units
        if self.vad:
            self.audio(units, raw == self.silence_fill * len(raw))

    def on_commit(self, event: dict[str, Any], event_id: str | None) -> None:
        buffered = self.total_units - self.buffer_start
        if buffered < MIN_COMMIT_MS * UNITS_PER_MS:
            self.emit(self.error_event(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms of "
                f"audio, but buffer only has {buffered / UNITS_PER_MS:.2f}ms of audio.", None, event_id))
            return
        item_id = self.speech_item or self.new_id("item")
        self.speech_item = None
        self.buffer_start = self.total_units
        self.speaking, self.voiced, self.silent = False, 0, 0
        self.emit(*self.commit_events(item_id, buffered // UNITS_PER_MS))

    def on_clear(self, event: dict[str, Any], event_id: str | None) -> None:
        self.buffer_start = self.total_units
        self.speech_item = None
        self.speaking, self.voiced, self.silent = False, 0, 0
        self.emit({"type": "input_audio_buffer.cleared"})

    def on_response_create(self, event: dict[str, Any], event_id: str | None) -> None:
        if self.active is not None:
            self.emit(self.error_event("conversation_already_has_active_response",
                                       active_message(self.active.id), None, event_id))
            return
        self.start_response()

    def on_response_cancel(self, event: dict[str, Any], event_id: str | None) -> None:
        wanted = event.get("response_id")
        if self.active is None or (wanted and wanted != self.active.id):
            self.emit(self.error_event("response_cancel_not_active", "Cancellation failed: no active response found",
                                       None, event_id))
            return
        self.cancel("client_cancelled")

    def on_truncate(self, event: dict[str, Any], event_id: str | None) -> None:
        item_id, end_ms = event.get("item_id"), event.get("audio_end_ms")
        content_index = event.get("content_index", 0)
        item = self.items.get(item_id) if isinstance(item_id, str) else None
        if item is None:
            self.emit(self.error_event("item_truncate_invalid_item_id", f"Error truncating item: the item with id "
                                       f"'{item_id}' does not exist.", "item_id", event_id))
        elif item[0] != "assistant" or item[2] == 0:
            self.emit(self.error_event("unsupported_content_type", "Only model output audio messages can be "
                                       "truncated", None, event_id))
        elif content_index != 0:
            self.emit(self.error_event("invalid_value", f"Invalid value: {content_index}. Item '{item_id}' has its "
                                       "audio at content index 0.", "content_index", event_id))
        elif not isinstance(end_ms, int) or end_ms < 0 or end_ms > item[1]:
            self.emit(self.error_event(None, f"Audio content of {item[1]}ms is already shorter than {end_ms}ms",
                                       "audio_end_ms", event_id))
        else:
            item[1] = end_ms
            self.emit({"type": "conversation.item.truncated", "item_id": item_id, "content_index": 0,
                       "audio_end_ms": end_ms})

    def on_delete(self, event: dict[str, Any], event_id: str | None) -> None:
        item_id = event.get("item_id")
        if not isinstance(item_id, str) or self.items.pop(item_id, None) is None:
            self.emit(self.error_event("item_delete_invalid_item_id", f"Error deleting item: the item with id "
                                       f"'{item_id}' does not exist.", "item_id", event_id))
            return
        self.emit({"type": "conversation.item.deleted", "item_id": item_id})

    def on_item_create(self, event: dict[str, Any], event_id: str | None) -> None:
        item = event.get("item")
        if not isinstance(item, dict) or item.get("type") not in ("message", "function_call_output"):
            self.emit(self.error_event(None, "The lean realtime peer only creates message and function_call_output "
                                       "items.", "item.type", event_id))
            return
        data = {k: v for k, v in item.items() if k != "audio"}
        data.update(id=item.get("id") or self.new_id("item"), object="realtime.item", status="completed")
        previous, self.last_item = self.last_item, data["id"]
        self.items[data["id"]] = [data.get("role", "tool"), 0, 0]
        self.emit({"type": "conversation.item.added", "item": data, "previous_item_id": previous},
                  {"type": "conversation.item.done", "item": data, "previous_item_id": previous})

    # -- turns
    def speech_started(self) -> None:
        start = max(self.onset - self.prefix_ms * UNITS_PER_MS, self.buffer_start)
        self.speech_item = self.new_id("item")
        self.speech_start = start
        self.emit({"type": "input_audio_buffer.speech_started", "audio_start_ms": start // UNITS_PER_MS,
                   "item_id": self.speech_item})
        if self.interrupt_response and self.active is not None:
            self.cancel("turn_detected")

    def speech_stopped(self) -> None:
        end = self.total_units
        item_id = self.speech_item or self.new_id("item")
        self.speech_item = None
        audio_ms = (end - self.speech_start) // UNITS_PER_MS
        self.buffer_start = end
        stopped = {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": end // UNITS_PER_MS,
                   "item_id": item_id}
        self.emit(stopped, *self.commit_events(item_id, audio_ms))
        if self.create_response:
            if self.active is not None:  # only with interrupt_response false, as the service
                self.emit(self.error_event("conversation_already_has_active_response", active_message(self.active.id)))
            else:
                self.start_response()

    def commit_events(self, item_id: str, audio_ms: int) -> list[dict[str, Any]]:
        previous, self.last_item = self.last_item, item_id
        self.items[item_id] = ["user", audio_ms, 0]
        item = {"id": item_id, "type": "message", "object": "realtime.item", "status": "completed", "role": "user",
                "content": [{"type": "input_audio", "transcript": None}]}
        events = [{"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": previous},
                  {"type": "conversation.item.added", "item": item, "previous_item_id": previous},
                  {"type": "conversation.item.done", "item": item, "previous_item_id": previous}]
        self.utterances += 1
        if self.transcribe:
            transcript = f"[question de l'appelant n°{self.utterances}]"
            events.append({"type": "conversation.item.input_audio_transcription.delta", "item_id": item_id,
                           "content_index": 0, "delta": transcript})
            events.append({"type": "conversation.item.input_audio_transcription.completed", "item_id": item_id,
                           "content_index": 0, "transcript": transcript,
                           "usage": {"type": "duration", "seconds": round(audio_ms / 1000, 3)}})
        return events

    # -- responses
    def start_response(self) -> None:
        peer = self.peer
        r = _Response()
        seconds = peer.greeting_seconds if self.responses == 0 else peer.answer_seconds
        self.responses += 1
        kind = self.out_kind
        grain = peer.voice.grain[kind]
        r.planned_ms = max(grain, round(1000 * seconds) // grain * grain)
        r.asset_start = self.asset_cursor
        self.asset_cursor = (self.asset_cursor + r.planned_ms) % peer.voice.duration_ms[kind]
        r.script = peer.voice.asset.transcript(r.asset_start, r.planned_ms)
        r.id, r.item_id = self.new_id("resp"), self.new_id("item")
        r.output_kind = kind
        r.format = dict(self.session["audio"]["output"]["format"])
        r.voice = self.session["audio"]["output"]["voice"]
        r.head = ('{"type":"response.output_audio.delta","response_id":"%s","item_id":"%s","output_index":0,'
                  '"content_index":0,"delta":"' % (r.id, r.item_id)).encode()
        r.previous, self.last_item = self.last_item, r.item_id
        self.items[r.item_id] = ["assistant", 0, 0]
        self.active = r
        item = {"id": r.item_id, "type": "message", "object": "realtime.item", "status": "in_progress",
                "role": "assistant", "content": []}
        ids = self.part_ids(r)
        self.emit({"type": "response.created", "response": self.response_object(r)},
                  {"type": "response.output_item.added", "response_id": r.id, "output_index": 0, "item": item},
                  {"type": "conversation.item.added", "item": item, "previous_item_id": r.previous},
                  {"type": "response.content_part.added", **ids, "part": {"type": "audio", "transcript": ""}})
        r.handle = peer.schedule(0, self.step, r)

    @staticmethod
    def part_ids(r: _Response) -> dict[str, Any]:
        return {"response_id": r.id, "item_id": r.item_id, "output_index": 0, "content_index": 0}

    def step(self, r: _Response) -> None:
        """One audio delta (and the transcript piece it covers); the next one `step / speed` later."""
        if self.active is not r or not self.sending:
            return
        peer = self.peer
        grain = peer.voice.grain[r.output_kind]
        step = min(self._rng.randint(*DELTA_MS_RANGE) // grain * grain or grain, r.planned_ms - r.position)
        chunk = peer.voice.delta(r.output_kind, r.asset_start + r.position, step)
        r.position += step
        script = r.script
        upto = snap_to_word(script, round(len(script) * r.position / r.planned_ms))
        if upto > r.sent_chars:
            text, r.sent_chars = script[r.sent_chars:upto], upto
            r.transcript += text
            self.emit({"type": "response.output_audio_transcript.delta", **self.part_ids(r), "delta": text})
        event_id = self.new_id("event").encode()
        self.send_text(b"".join((r.head, chunk, b'","event_id":"', event_id, b'"}')))
        item = self.items.get(r.item_id)
        if item is not None:
            item[1] += step
            item[2] += step
        delay = step / 1000 / peer.speed if peer.speed > 0 else 0
        r.handle = peer.schedule(delay, self.step if r.position < r.planned_ms else self.finish, r)

    def finish(self, r: _Response) -> None:
        if self.active is not r:
            return
        self.active = None
        r.status, r.transcript = "completed", r.script
        ids = self.part_ids(r)
        item = self.assistant_item(r, "completed")
        events = [{"type": "response.output_audio.done", **ids},
                  {"type": "response.output_audio_transcript.done", **ids, "transcript": r.script},
                  {"type": "response.content_part.done", **ids, "part": {"type": "audio", "transcript": r.script}},
                  {"type": "response.output_item.done", "response_id": r.id, "output_index": 0, "item": item}]
        if r.item_id in self.items:
            events.append({"type": "conversation.item.done", "item": item, "previous_item_id": r.previous})
        response = self.response_object(r)
        events += [{"type": "response.done", "response": response}, self.rate_limits(response["usage"])]
        self.emit(*events)

    def cancel(self, reason: str) -> None:
        """As the service: no more deltas, then `response.done` cancelled."""
        r = self.active
        if r is None:
            return
        self.active = None
        if r.handle is not None:
            r.handle.cancel()
        r.status, r.reason = "cancelled", reason
        response = self.response_object(r)
        self.emit({"type": "response.done", "response": response}, self.rate_limits(response["usage"]))

    def assistant_item(self, r: _Response, status: str) -> dict[str, Any]:
        return {"id": r.item_id, "type": "message", "object": "realtime.item", "status": status, "role": "assistant",
                "content": [{"type": "output_audio", "transcript": r.transcript}]}

    def response_object(self, r: _Response) -> dict[str, Any]:
        done = r.status != "in_progress"
        output_tokens = r.position // 50 + len(r.transcript) // 4
        input_audio = self.total_units // UNITS_PER_MS // 100
        return {
            "object": "realtime.response", "id": r.id, "status": r.status,
            "status_details": {"type": r.status, "reason": r.reason} if r.status == "cancelled" else None,
            "output": [self.assistant_item(r, "completed" if r.status == "completed" else "incomplete")] if done
            else [],
            "conversation_id": self.conversation_id, "output_modalities": ["audio"], "max_output_tokens": "inf",
            "audio": {"output": {"format": r.format, "voice": r.voice}},
            "usage": {"total_tokens": 250 + input_audio + output_tokens, "input_tokens": 250 + input_audio,
                      "output_tokens": output_tokens,
                      "input_token_details": {"text_tokens": 250, "audio_tokens": input_audio, "image_tokens": 0,
                                              "cached_tokens": 0,
                                              "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0,
                                                                        "image_tokens": 0}},
                      "output_token_details": {"text_tokens": len(r.transcript) // 4,
                                               "audio_tokens": r.position // 50}} if done else None,
            "metadata": None,
        }

    @staticmethod
    def rate_limits(usage: dict[str, Any] | None) -> dict[str, Any]:
        used = usage["total_tokens"] if usage else 0
        return {"type": "rate_limits.updated", "rate_limits": [
            {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
            {"name": "tokens", "limit": 800000, "remaining": max(0, 800000 - used), "reset_seconds": 0.6}]}


def active_message(response_id: str) -> str:
    return (f"Conversation already has an active response in progress: {response_id}. "
            "Wait until the response is finished before creating a new one.")


def _merge_audio(target: dict[str, Any], update: dict[str, Any]) -> None:
    for side in ("input", "output"):
        part = update.get(side)
        if not isinstance(part, dict):
            continue
        current = target[side]
        for key, value in part.items():
            if key == "format":
                if value is not None:
                    kind = value.get("type") or "audio/pcm"
                    current["format"] = {"type": "audio/pcm", "rate": 24000} if kind == "audio/pcm" else {"type": kind}
            elif key == "turn_detection":
                base = DEFAULT_SERVER_VAD if (value or {}).get("type") == "server_vad" else DEFAULT_SEMANTIC_VAD
                current[key] = None if value is None else {**base, **{k: v for k, v in value.items() if v is not None}}
            elif key == "noise_reduction":
                current[key] = None if value is None else {**(current.get(key) or {}), **value}
            else:
                current[key] = value


def upgrade_refusal(status: int, error: dict[str, Any]) -> WSUpgradeResponseWithListener:
    """An HTTP error in answer to the upgrade, with the API's JSON error body."""
    body = (json.dumps({"error": error}) + "\n").encode()
    response = WSUpgradeResponse.create_error_response(status, body, {"Content-Type": "application/json"})
    return WSUpgradeResponseWithListener(response, None)


class LeanRealtimePeer:
    """The lean realtime server.

    `async with LeanRealtimePeer(port=0) as peer:`, then point OPENAI_REALTIME_URL at peer.url.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_key: str | None = None, speed: float = 2.0,
                 answer_seconds: float = 3.0, greeting_seconds: float = 2.5, voice: Voice | None = None) -> None:
        self.host, self.port = host, port
        self.api_key = api_key
        self.speed = speed
        self.answer_seconds, self.greeting_seconds = answer_seconds, greeting_seconds
        self.voice = voice or Voice()
        self.connections: set[RealtimeConnection] = set()
        self.errors_sent: list[dict[str, Any]] = []
        self.log_errors = True
        self.opened = 0
        self.server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.schedule: Callable[..., Any] = self._schedule

    def _schedule(self, delay: float, callback: Callable[..., Any], *args: Any) -> Any:
        assert self._loop is not None
        if delay <= 0:
            return self._loop.call_soon(callback, *args)
        return self._loop.call_later(delay, callback, *args)

    def connection(self, *, model: str = DEFAULT_MODEL, beta: bool = False) -> RealtimeConnection:
        conn = RealtimeConnection(self, self.opened, model=model, beta=beta)
        self.opened += 1
        return conn

    def upgrade(self, request: WSUpgradeRequest) -> RealtimeConnection | WSUpgradeResponseWithListener:
        """picows' listener factory, before the 101: the path, the bearer key, the model, the Beta header."""
        target = urlsplit(request.path.decode("latin-1"))
        if not target.path.startswith("/v1/realtime"):
            return upgrade_refusal(404, {"message": "Not found", "type": "invalid_request_error", "param": None,
                                         "code": None})
        scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
        bearer = bearer.strip()
        if scheme.lower() != "bearer" or not bearer:
            return upgrade_refusal(401, {
                "message": "You didn't provide an API key. Send it in an Authorization header using Bearer auth "
                           "(Authorization: Bearer YOUR_KEY).",
                "type": "invalid_request_error", "param": None, "code": None})
        if self.api_key is not None and bearer != self.api_key:
            shown = f"{bearer[:3]}...{bearer[-4:]}" if len(bearer) > 8 else "***"
            return upgrade_refusal(401, {"message": f"Incorrect API key provided: {shown}.",
                                         "type": "invalid_request_error", "param": None, "code": "invalid_api_key"})
        model = DEFAULT_MODEL
        for name, value in (pair.split("=", 1) for pair in target.query.split("&") if "=" in pair):
            if name == "model" and value:
                model = value
        beta = "realtime=v1" in request.headers.get("OpenAI-Beta", "").replace(" ", "").lower()
        return self.connection(model=model, beta=beta)

    async def start(self) -> "LeanRealtimePeer":
        self._loop = asyncio.get_running_loop()
        self.server = await ws_create_server(self.upgrade, self.host, self.port, max_frame_size=MAX_MESSAGE,
                                             websocket_handshake_timeout=HANDSHAKE_TIMEOUT_S)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is None:
            return
        for conn in list(self.connections):
            conn.send_close(WSCloseCode.GOING_AWAY, "going away")
            conn.disconnect()
        self.server.close()
        await self.server.wait_closed()
        self.server = None
        await asyncio.sleep(0)  # let the connections' on_ws_disconnected run

    async def __aenter__(self) -> "LeanRealtimePeer":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"


# ----- start-up validation of every event shape the peer sends


class _RecordingTransport:
    """Stands in for picows' WSTransport in a scripted session: keeps the messages sent."""

    is_close_frame_sent = False
    is_disconnected = False

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def send(self, msg_type: WSMsgType, payload: bytes) -> None:
        assert msg_type == WSMsgType.TEXT
        self.messages.append(bytes(payload))


def scripted_session(session_update: dict[str, Any], voice: Voice | None = None) -> list[dict[str, Any]]:
    """Every event a scripted session sends, decoded: connect, configure, greeting, a turn answered,
    a barge-in with truncate and delete, cancel, commit, clear, item create, errors."""
    peer = LeanRealtimePeer(voice=voice, answer_seconds=0.6, greeting_seconds=0.4)
    queue: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()

    class Handle:
        def __init__(self, entry: tuple[Callable[..., Any], tuple[Any, ...]]) -> None:
            self.entry = entry

        def cancel(self) -> None:
            if self.entry in queue:
                queue.remove(self.entry)

    def schedule(delay: float, callback: Callable[..., Any], *args: Any) -> Handle:
        entry = (callback, args)
        queue.append(entry)
        return Handle(entry)

    def run_all() -> None:
        while queue:
            callback, args = queue.popleft()
            callback(*args)

    peer.schedule = schedule
    peer.log_errors = False  # the script provokes errors on purpose
    conn = peer.connection()
    transport = _RecordingTransport()
    conn.transport = transport  # type: ignore[assignment]
    conn.start_session()

    def send(event: dict[str, Any] | bytes) -> None:
        conn.on_text(event if isinstance(event, bytes) else json.dumps(event).encode())

    def append(ms: int, silent: bool) -> None:
        size = conn.frame_bytes
        for _ in range(ms // 20):
            audio = conn.silence_fill * size if silent else bytes((i * 37) % 256 for i in range(size))
            send(APPEND_PREFIX + base64.b64encode(audio) + APPEND_SUFFIX)

    send(session_update)
    send({"type": "response.create", "response": {"instructions": "Dis bonjour."}})
    send({"type": "response.create"})  # while one is active: error
    run_all()
    append(400, False)
    append(700, True)  # speech stopped, committed, transcribed, answered
    for _ in range(2):  # two deltas of the answer, so that it can be truncated
        callback, args = queue.popleft()
        callback(*args)
    answer = conn.last_item
    send({"type": "conversation.item.truncate", "item_id": answer, "content_index": 0, "audio_end_ms": 10})
    send({"type": "conversation.item.delete", "item_id": answer})
    send({"type": "conversation.item.delete", "item_id": "item_unknown"})
    run_all()
    append(400, False)
    append(700, True)
    append(400, False)  # speech while the answer streams: cancelled (turn_detected)
    send({"type": "response.cancel"})
    run_all()
    send({"type": "input_audio_buffer.clear"})
    append(200, False)
    send({"type": "input_audio_buffer.commit"})
    send({"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "call_1",
                                                        "output": "{}"}})
    send({"type": "response.create"})
    send({"type": "response.cancel"})
    run_all()
    return [json.loads(message) for message in transport.messages]


_SHAPE_KEYS = {"type", "status", "role", "reason", "code"}  # values that make a distinct template


def _shape(value: Any) -> Any:
    """The structure of an event (keys and value types), to validate each distinct one once."""
    if isinstance(value, dict):
        return tuple(sorted((k, v if k in _SHAPE_KEYS else _shape(v)) for k, v in value.items()
                            if k not in ("delta", "transcript")))
    if isinstance(value, list):
        return tuple(_shape(v) for v in value[:1])
    return type(value).__name__


def validate_templates(session_updates: list[dict[str, Any]] | None = None,
                       voice: Voice | None = None) -> Counter[str]:
    """Validate each distinct event shape the peer sends against `openai.types.realtime`
    (undeclared keys refused); returns the types validated. Raises ValueError on the first failure."""
    voice = voice or Voice()
    if session_updates is None:
        session_updates = [example_session_update(codec) for codec in ("pcm16", "pcmu")]
    seen: set[Any] = set()
    types: Counter[str] = Counter()
    for update in session_updates:
        for event in scripted_session(update, voice):
            shape = _shape(event)
            if shape in seen:
                continue
            seen.add(shape)
            try:
                model = validate_server_event(event)
            except Exception as exc:
                raise ValueError(f"{event['type']} does not validate: {exc}\n{json.dumps(event)[:600]}") from exc
            unexpected = unexpected_server_keys(model)
            if unexpected:
                raise ValueError(f"{event['type']} carries keys the GA models do not declare: {sorted(unexpected)}")
            if not str(event.get("event_id", "")).startswith("event_"):
                raise ValueError(f"{event['type']} without an event_id")
            types[event["type"]] += 1
    return types


def example_session_update(codec: str) -> dict[str, Any]:
    """A session.update shaped like the server's (app.engines.openai_realtime.protocol.session_update)."""
    fmt = {"type": "audio/pcmu"} if codec == "pcmu" else {"type": "audio/pcm", "rate": 24000}
    return {"type": "session.update", "session": {
        "type": "realtime", "model": DEFAULT_MODEL, "output_modalities": ["audio"], "instructions": "Tu es OCTI.",
        "audio": {"input": {"format": fmt, "transcription": {"model": "gpt-4o-mini-transcribe", "language": "fr"},
                            "noise_reduction": {"type": "far_field"},
                            "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                               "silence_duration_ms": 500, "create_response": True,
                                               "interrupt_response": True}},
                  "output": {"format": fmt, "voice": "alloy"}}}}


async def serve_realtime(args: argparse.Namespace) -> None:
    voice = Voice()
    types = validate_templates(voice=voice)
    log.info("validated %d event shapes over %d types", sum(types.values()), len(types))
    peer = LeanRealtimePeer(args.host, args.port, api_key=args.api_key, speed=args.speed,
                            answer_seconds=args.answer_seconds, greeting_seconds=args.greeting_seconds, voice=voice)
    async with peer:
        print(f"lean realtime peer listening on {peer.url}", flush=True)
        await asyncio.Event().wait()


# --------------------------------------------------------------------------- the lean caller fleet

FRAME_MS = wire.FRAME_MS
FRAME_BYTES = wire.FRAME_BYTES
ULAW_BYTES_PER_MS = wire.BYTES_PER_MS
BURST_GAP_MS = 200
SILENCE_BEFORE_REPLY_MS = 700
MEDIA_FMT = (b'{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d","timestamp":"%d",'
             b'"payload":"%s"},"streamSid":"%s"}')
MARK_FMT = b'{"event":"mark","sequenceNumber":"%d","streamSid":"%s","mark":{"name":%s}}'
SILENCE_B64 = base64.b64encode(wire.SILENCE_FRAME)
SPEAK, BARGE_IN, DTMF_STEP = "speak", "barge-in", "dtmf:"  # a caller's steps (LeanCall's plan)
BARGE_IN_AFTER_MS = 800


class Utterances:
    """The callers' speech, once per process: the speech part of each WAV as base64 μ-law frames."""

    def __init__(self, wavs: list[Path]) -> None:
        self.frames: list[list[bytes]] = []
        self.duration_ms: list[float] = []
        for path in wavs:
            ulaw = wire.wav_to_ulaw(path)
            bounds = wire.speech_bounds(ulaw) or (0.0, len(ulaw) / ULAW_BYTES_PER_MS)
            speech = ulaw[int(bounds[0] * ULAW_BYTES_PER_MS):int(bounds[1] * ULAW_BYTES_PER_MS)]
            self.frames.append([base64.b64encode(speech[i:i + FRAME_BYTES].ljust(FRAME_BYTES, wire.MULAW_SILENCE))
                                for i in range(0, len(speech), FRAME_BYTES)])
            self.duration_ms.append(len(speech) / ULAW_BYTES_PER_MS)


class Ticker:
    """One 20 ms clock for every call of the process, on absolute deadlines (a late tick never
    shifts the later ones; ticks missed are caught up one by one, as the faithful pump does)."""

    def __init__(self) -> None:
        self.calls: list[LeanCall] = []
        self.lags_ms: list[float] = []  # per tick: how late it ran
        self.n = 0
        self.start = 0.0
        self.stopped = False
        self.ended = 0  # calls finished since the list was last pruned

    async def run(self) -> None:
        self.start = time.monotonic()
        sleep, now = asyncio.sleep, time.monotonic
        while not self.stopped:
            deadline = self.start + self.n * FRAME_MS / 1000
            delay = deadline - now()
            await sleep(delay if delay > 0 else 0)
            self.lags_ms.append((now() - deadline) * 1000)
            n = self.n
            for call in self.calls:
                call.tick(n)
            if self.ended:
                self.ended = 0
                self.calls = [call for call in self.calls if not call.finished]
            self.n += 1

    def add(self, call: "LeanCall") -> None:
        call.first_tick = self.n  # its tick 0 is the next one
        call.stream_t0 = self.start + self.n * FRAME_MS / 1000
        self.calls.append(call)


class LeanCall(MessageListener):
    """One caller's media stream: a websocket client with Twilio's side of the protocol.

    The caller takes its steps in turn, each once OCTI has answered the previous one: by
    default it speaks (`SPEAK`); a `plan` can make a step a barge-in (`BARGE_IN`: speak
    BARGE_IN_AFTER_MS into OCTI's answer instead of waiting for it to finish) or a key press
    (`"dtmf:D"`, the digit D, as Twilio sends it), for the steps it lists; later steps speak.
    """

    def __init__(self, fleet: "Fleet", index: int, call_sid: str, account_sid: str, *, hangup_ms: int,
                 plan: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.fleet = fleet
        self.index = index
        self.call_sid, self.account_sid = call_sid, account_sid
        self.hangup_ms = hangup_ms
        self.plan = plan
        self.stream_sid = wire.new_sid("MZ")
        sid = self.stream_sid.encode()
        self.sid = sid
        self.media_prefix = b'{"event":"media","streamSid":"' + sid + b'","media":{"payload":"'
        self.mark_prefix = b'{"event": "mark", "streamSid": "' + sid + b'", "mark": {"name": "'
        self.clear_message = b'{"event":"clear","streamSid":"' + sid + b'"}'
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.first_tick = 0
        self.stream_t0: float | None = None
        self.finished = False
        self.closed_by: str | None = None
        self.close_code: int | None = None
        self.seq = 0
        self.chunk = 0
        self.violations: Counter[str] = Counter()
        self.errors: list[str] = []
        self.n_errors = 0
        self.marks_echoed = 0
        self.last_tick = 0
        # playback buffer, as counters (bytes of μ-law)
        self.queued = 0
        self.played = 0
        self.marks: deque[tuple[int, bytes]] = deque()
        self.bursts: list[list[Any]] = []  # [start_t, end_t, played_ms, underruns]
        self.current: list[Any] | None = None
        self.ran_dry = False
        self.last_audio_end_ms: float | None = None
        self.last_burst_start_ms = float("-inf")  # no burst yet
        self.clears = 0
        # speech
        self.order = [(index + k) % len(fleet.speech.frames) for k in range(len(fleet.speech.frames))]
        self.next_utt = 0
        self.speaking: list[bytes] | None = None
        self.speak_pos = 0
        self.prev_start_ms: int | None = None
        self.prev_end_ms: float | None = None
        self.utterances: list[list[Any]] = []  # [start_t, duration_ms, answer_latency_ms, step]

    # -- the connection's end
    def on_closed(self) -> None:
        if self.closed_by is None:
            self.closed_by = "server"
            self.close_code = self.close_rcvd if self.close_rcvd is not None else 1006
        self._end()

    def on_close_frame(self, code: int) -> None:
        if self.closed_by is None:
            self.closed_by, self.close_code = "server", code

    def _end(self) -> None:
        self._off_ticker()
        if not self.done.done():
            self.done.set_result(None)

    def _off_ticker(self) -> None:
        if not self.finished:
            self.finished = True
            self.fleet.ticker.ended += 1
            if self.current is not None:
                self._end_burst()

    # -- sending
    def _send_json(self, message: dict[str, Any]) -> None:
        self.send_text(json.dumps(message, separators=(",", ":")).encode())

    def start_stream(self, custom_parameters: dict[str, str]) -> None:
        self._send_json(wire.connected_message())
        self.seq += 1
        self._send_json(wire.start_message(self.seq, stream_sid=self.stream_sid, account_sid=self.account_sid,
                                           call_sid=self.call_sid, custom_parameters=custom_parameters))

    def _send_mark(self, name: bytes) -> None:
        self.seq += 1
        self.marks_echoed += 1
        self.send_text(MARK_FMT % (self.seq, self.sid, name))

    def hang_up(self) -> None:
        self.seq += 1
        self._send_json(wire.stop_message(self.seq, stream_sid=self.stream_sid, account_sid=self.account_sid,
                                          call_sid=self.call_sid))
        self.closed_by, self.close_code = "caller", 1000
        self.send_close(1000)
        self._off_ticker()  # the connection still takes the server's close
        asyncio.get_running_loop().call_later(CLOSE_WAIT_S, self.disconnect)

    # -- the 20 ms tick
    def tick(self, n: int) -> None:
        if self.finished:
            return
        tick_ms = (n - self.first_tick) * FRAME_MS
        self.last_tick = n
        if tick_ms >= self.hangup_ms:
            self.hang_up()
            return
        marks = self.marks
        while marks and marks[0][0] <= self.played:
            self._send_mark(marks.popleft()[1])
        # playback: 20 ms drained from the buffer
        backlog = self.queued - self.played
        take = FRAME_BYTES if backlog >= FRAME_BYTES else backlog
        if take:
            self.played += take
            current = self.current
            if current is None:
                current = self.current = [tick_ms / 1000, None, 0.0, 0]
                self.bursts.append(current)
                self.last_burst_start_ms = tick_ms
            elif self.ran_dry:
                current[3] += 1
            current[2] += take / ULAW_BYTES_PER_MS
            self.last_audio_end_ms = tick_ms + take / ULAW_BYTES_PER_MS
        elif self.current is not None and tick_ms - (self.last_audio_end_ms or 0) >= BURST_GAP_MS:
            self._end_burst()
        self.ran_dry = take < FRAME_BYTES
        # the caller's frame
        if self.speaking is None:
            self._next_step(tick_ms)
        if self.speaking is None:
            payload = SILENCE_B64
        else:
            payload = self.speaking[self.speak_pos]
            self.speak_pos += 1
            if self.speak_pos >= len(self.speaking):
                self.speaking = None
        self.seq += 1
        self.chunk += 1
        self.send_text(MEDIA_FMT % (self.seq, self.chunk, tick_ms, payload, self.sid))

    def _next_step(self, tick_ms: int) -> None:
        """The plan's next step, once it is due."""
        position = len(self.utterances)
        step = self.plan[position] if position < len(self.plan) else SPEAK
        if not (self._barging_in(tick_ms) if step == BARGE_IN else self._ready(tick_ms)):
            return
        duration = 0.0
        if step.startswith(DTMF_STEP):
            self.seq += 1
            self._send_json(wire.dtmf_message(self.seq, stream_sid=self.stream_sid, digit=step[len(DTMF_STEP):]))
        else:
            which = self.order[self.next_utt % len(self.order)]
            self.next_utt += 1
            self.speaking, self.speak_pos = self.fleet.speech.frames[which], 0
            duration = self.fleet.speech.duration_ms[which]
        self.prev_start_ms = tick_ms
        self.prev_end_ms = tick_ms + duration
        self.utterances.append([tick_ms / 1000, duration, None, step])

    def _barging_in(self, tick_ms: int) -> bool:
        """OCTI has been answering the previous step for BARGE_IN_AFTER_MS: time to talk over it."""
        since = self.prev_start_ms if self.prev_start_ms is not None else -1
        return (self.current is not None and self.last_burst_start_ms > since
                and tick_ms - self.last_burst_start_ms >= BARGE_IN_AFTER_MS)

    def _ready(self, tick_ms: int) -> bool:
        """As the faithful caller: OCTI spoke since the previous utterance began, its playback
        is idle and everything has been quiet for 700 ms."""
        since = self.prev_start_ms if self.prev_start_ms is not None else -1
        if self.last_burst_start_ms < since or self.queued != self.played or self.last_audio_end_ms is None:
            return False
        quiet_since = max(self.prev_end_ms or 0, self.last_audio_end_ms)
        return tick_ms - quiet_since >= SILENCE_BEFORE_REPLY_MS

    def _end_burst(self) -> None:
        assert self.current is not None
        self.current[1] = (self.last_audio_end_ms or 0) / 1000
        self.current = None
        self.ran_dry = False

    # -- server messages
    def on_binary(self, payload: bytes) -> None:
        self.violations["31950 binary_frame"] += 1

    def on_text(self, payload: bytes) -> None:
        try:
            if payload.startswith(self.media_prefix) and payload.endswith(b'"}}'):
                chars = len(payload) - len(self.media_prefix) - 3
                start = len(self.media_prefix)
                if chars and chars % 4 == 0 and payload[start:start + 4] not in (b"UklG", b"LnNu") \
                        and payload.find(b'"', start, len(payload) - 3) < 0:
                    pad = (payload[-4] == 61) + (payload[-5] == 61)
                    self._media(chars // 4 * 3 - pad)
                    return
            elif payload.startswith(self.mark_prefix) and payload.endswith(b'"}}'):
                name = payload[len(self.mark_prefix) - 1:-2]  # the name as a JSON string
                if name.count(b'"') == 2 and b"\\" not in name and len(name) > 2:
                    self._add_mark(name)
                    return
            elif payload == self.clear_message:
                self._clear()
                return
            self._checked(payload)
        except Exception as exc:  # one bad frame must not end the call; keep the trace
            self.n_errors += 1
            if len(self.errors) < 5:
                self.errors.append(f"handling a server frame: {type(exc).__name__}: {exc}")

    def _checked(self, payload: bytes) -> None:
        """Anything but the exact shapes the server sends: checked the faithful (slower) way."""
        checked = wire.check_server_frame(payload.decode("utf-8", errors="replace"), stream_sid=self.stream_sid)
        for v in checked.violations:
            self.violations[f"{v.code} {v.kind}"] += 1
        message = checked.message
        if message is None:
            return
        if message.event == "media":
            self._media(len(message.payload))
        elif message.event == "mark":
            self._add_mark(json.dumps(message.name).encode())
        else:
            self._clear()

    def _media(self, size: int) -> None:
        room = wire.PLAYBACK_LIMIT_BYTES - (self.queued - self.played)
        if size > room:
            self.violations["31931 media_discarded"] += 1
            size = max(0, room)
        self.queued += size

    def _add_mark(self, name: bytes) -> None:
        if self.queued == self.played:
            self._send_mark(name)  # nothing left to play: due at once
        else:
            self.marks.append((self.queued, name))

    def _clear(self) -> None:
        self.clears += 1
        self.queued = self.played
        for _, name in self.marks:
            self._send_mark(name)
        self.marks.clear()
        if self.current is not None:
            self._end_burst()

    # -- the result
    def summary(self, launched: float, webhook_ms: float | None, lags_ms: list[float]) -> dict[str, Any]:
        bursts = self.bursts
        for u, following in zip(self.utterances, [*self.utterances[1:], None]):
            until = following[0] if following else float("inf")
            answer = next((b for b in bursts if u[0] < b[0] < until), None)
            u[2] = round((answer[0] - (u[0] + u[1] / 1000)) * 1000, 1) if answer else None
        window = lags_ms[self.first_tick:self.last_tick + 1]
        return {
            "index": self.index, "call_sid": self.call_sid, "status": "completed", "closed_by": self.closed_by, "close_code": self.close_code,
            "violations": sum(self.violations.values()), "violation_kinds": dict(self.violations),
            "errors": self.errors[:5], "n_errors": self.n_errors, "frames_sent": self.chunk,
            "duration_s": self.chunk * FRAME_MS / 1000, "max_tick_lag_ms": max(window, default=0.0),
            "launched": launched, "stream_t0": self.stream_t0, "webhook_ms": webhook_ms, "clears": self.clears,
            "bursts": bursts, "utterances": self.utterances, "marks_echoed": self.marks_echoed,
        }


class Fleet:
    """What the calls of one process share: the ticker, the speech frames, an HTTP client."""

    def __init__(self, server_url: str, *, public_url: str | None, auth_token: str | None, duration: float,
                 speech: Utterances, webhook_path: str = WEBHOOK_PATH,
                 tunnels: dict[str, str] | None = None) -> None:
        from twilio.request_validator import RequestValidator

        self.server_url = server_url.rstrip("/")
        self.public_url = (public_url or server_url).rstrip("/")
        self.tunnels = tunnels or {}  # as place_call's
        self.webhook_path = webhook_path
        self.validator = RequestValidator(auth_token) if auth_token else None
        self.duration = duration
        self.speech = speech
        self.ticker = Ticker()
        self.http: Any = None
        self.background: set[asyncio.Task[Any]] = set()

    def sign(self, url: str, params: dict[str, str]) -> dict[str, str]:
        if self.validator is None:
            return {}
        return {"X-Twilio-Signature": self.validator.compute_signature(url, params)}

    def status_callback(self, url: str | None, call: LeanCall, event: str) -> None:
        """Twilio's stream status callback, in the background; failures do not matter here."""
        if not url:
            return
        params = {"AccountSid": call.account_sid, "CallSid": call.call_sid, "StreamSid": call.stream_sid,
                  "StreamName": call.stream_sid, "StreamEvent": event,
                  "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())}
        target = wire.map_to_server(url, server_url=self.server_url, public_url=self.public_url, websocket=False,
                                    tunnels=self.tunnels)

        async def post() -> None:
            try:
                await self.http.post(target, data=params, headers=self.sign(url, params))
            except Exception:  # noqa: BLE001 - a callback's fate does not change the call
                pass

        task = asyncio.create_task(post())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def place(self, index: int, call_sid: str, **options: Any) -> dict[str, Any]:
        """`call`, with anything it raises counted as a failed call."""
        try:
            return await self.call(index, call_sid, **options)
        except Exception as exc:  # noqa: BLE001 - counted as a failed call
            return {"index": index, "call_sid": call_sid, "status": "exception", "errors": [repr(exc)],
                    "launched": time.monotonic()}

    async def call(self, index: int, call_sid: str, *, duration: float | None = None,
                   plan: tuple[str, ...] = ()) -> dict[str, Any]:
        """One call: the signed webhook, the signed upgrade with the TwiML token, then the ticker's.

        It lasts `duration` s (default: the fleet's) and takes the steps of `plan` (see LeanCall).
        """
        duration = self.duration if duration is None else duration
        launched = time.monotonic()
        account_sid = wire.new_sid("AC")
        params = wire.inbound_call_params(call_sid=call_sid, account_sid=account_sid, from_number="+33612345678",
                                          to_number="+33198765432")
        url = self.public_url + self.webhook_path
        try:
            started = time.monotonic()
            response = await self.http.post(self.server_url + self.webhook_path, data=params,
                                            headers=self.sign(url, params))
            webhook_ms = (time.monotonic() - started) * 1000
        except Exception as exc:  # noqa: BLE001 - counted as a failed call
            return {"index": index, "status": "webhook_unreachable", "errors": [repr(exc)], "launched": launched}
        if response.status_code != 200:
            return {"index": index, "status": "refused_webhook", "errors": [f"HTTP {response.status_code}"],
                    "launched": launched}
        try:
            twiml = wire.parse_twiml(response.content)
        except wire.TwimlError as exc:
            return {"index": index, "status": "invalid_twiml", "errors": [str(exc)], "launched": launched}
        if twiml.stream is None:
            return {"index": index, "status": "spoken_only", "errors": [], "launched": launched}
        stream_url = wire.resolve_twiml_url(twiml.stream.url, document_url=url, websocket=True)
        status_url = (wire.resolve_twiml_url(twiml.stream.status_callback, document_url=url, websocket=False)
                      if twiml.stream.status_callback else None)
        target = wire.map_to_server(stream_url, server_url=self.server_url, public_url=self.public_url, websocket=True,
                                    tunnels=self.tunnels)
        headers = {"User-Agent": STREAM_USER_AGENT}
        if self.validator is not None:
            headers["X-Twilio-Signature"] = self.validator.compute_signature(stream_url, {})
        call = LeanCall(self, index, call_sid, account_sid, hangup_ms=round(duration * 1000), plan=plan)
        try:
            await asyncio.wait_for(ws_connect(lambda: call, target, extra_headers=headers, max_redirects=0,
                                              max_frame_size=MAX_MESSAGE,
                                              websocket_handshake_timeout=HANDSHAKE_TIMEOUT_S), HANDSHAKE_TIMEOUT_S)
        except WSHandshakeError as exc:
            status = int(exc.response.status) if exc.response is not None else -1
            return {"index": index, "status": "refused_stream", "errors": [f"upgrade answered {status}: {exc}"],
                    "launched": launched, "webhook_ms": webhook_ms}
        except (OSError, TimeoutError, WSError) as exc:
            call.disconnect()
            return {"index": index, "status": "stream_unreachable", "errors": [repr(exc)], "launched": launched,
                    "webhook_ms": webhook_ms}
        call.start_stream(dict(twiml.stream.parameters))
        self.ticker.add(call)
        self.status_callback(status_url, call, "stream-started")
        try:
            await asyncio.wait_for(asyncio.shield(call.done), duration + 60)
        except TimeoutError:
            call.errors.append("the call did not end in time")
            call.n_errors += 1
            if call.transport is not None:
                call.transport.disconnect(graceful=False)
        self.status_callback(status_url, call, "stream-stopped")
        return call.summary(launched, webhook_ms, self.ticker.lags_ms)


@contextlib.asynccontextmanager
async def running_fleet(server_url: str, *, duration: float, public_url: str | None = None,
                        auth_token: str | None = None, speech: Utterances | None = None,
                        wavs: list[Path] | None = None, webhook_path: str = WEBHOOK_PATH,
                        tunnels: dict[str, str] | None = None) -> AsyncIterator[Fleet]:
    """A fleet ready to place calls (`Fleet.place`): its HTTP client open and its ticker running."""
    import httpx

    if speech is None:
        speech = Utterances(wavs or sorted((REPO / "tests" / "audio").glob("*.wav")))
    fleet = Fleet(server_url, public_url=public_url, auth_token=auth_token, duration=duration, speech=speech,
                  webhook_path=webhook_path, tunnels=tunnels)
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
    async with httpx.AsyncClient(timeout=15, trust_env=False, limits=limits,
                                 headers={"User-Agent": WEBHOOK_USER_AGENT}) as http:
        fleet.http = http
        ticker = asyncio.create_task(fleet.ticker.run())
        try:
            yield fleet
        finally:
            fleet.ticker.stopped = True
            await asyncio.wait({ticker}, timeout=1)
            if not ticker.done():
                ticker.cancel()
        if fleet.background:
            await asyncio.wait(set(fleet.background), timeout=10)


async def run_fleet(server_url: str, calls: list[dict[str, Any]], *, duration: float, t0: float | None = None,
                    public_url: str | None = None, auth_token: str | None = None,
                    speech: Utterances | None = None, wavs: list[Path] | None = None,
                    webhook_path: str = WEBHOOK_PATH, tunnels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Place `calls` ({index, offset, call_sid}) at t0 + offset (time.monotonic()); each lasts `duration` s.

    Returns one summary per call, shaped like benchmarks/relay.py's for a faithful call.
    """
    t0 = time.monotonic() if t0 is None else t0
    async with running_fleet(server_url, duration=duration, public_url=public_url, auth_token=auth_token,
                             speech=speech, wavs=wavs, webhook_path=webhook_path, tunnels=tunnels) as fleet:

        async def one(spec: dict[str, Any]) -> dict[str, Any]:
            await asyncio.sleep(max(0.0, t0 + spec.get("offset", 0.0) - time.monotonic()))
            return await fleet.place(spec["index"], spec.get("call_sid") or wire.new_sid("CA"))

        results = await asyncio.gather(*(one(spec) for spec in calls))
    return list(results)


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    rt = sub.add_parser("realtime", help="serve the lean realtime peer")
    rt.add_argument("--host", default="127.0.0.1")
    rt.add_argument("--port", type=int, default=8765)
    rt.add_argument("--api-key", help="require this bearer key (default: any non-empty key)")
    rt.add_argument("--speed", type=float, default=2.0, help="streaming speed vs real time; 0 = unpaced")
    rt.add_argument("--answer-seconds", type=float, default=3.0)
    rt.add_argument("--greeting-seconds", type=float, default=2.5)
    rt.add_argument("--log-level", default="INFO")
    calls = sub.add_parser("calls", help="place lean calls to a running server and print their summaries")
    calls.add_argument("--url", default="http://127.0.0.1:8000")
    calls.add_argument("--public-url")
    calls.add_argument("--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN"))
    calls.add_argument("--calls", type=int, default=1)
    calls.add_argument("--duration", type=float, default=20.0)
    calls.add_argument("--ramp", type=float, default=1.0)
    sub.add_parser("check", help="validate the realtime peer's event templates and exit")
    args = p.parse_args(argv)
    logging.basicConfig(level=getattr(args, "log_level", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "realtime":
            run_async(serve_realtime(args))
        elif args.command == "check":
            types = validate_templates()
            print(f"{sum(types.values())} event shapes over {len(types)} types validate: {', '.join(sorted(types))}")
        else:
            specs = [{"index": i, "offset": i * args.ramp / max(1, args.calls)} for i in range(args.calls)]
            results = run_async(run_fleet(args.url, specs, duration=args.duration, public_url=args.public_url,
                                          auth_token=args.auth_token))
            for r in results:
                print(json.dumps(r))
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # typically the port is taken
        print(f"lean peers: {exc}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
