"""Media Streams messages: what the caller sends (`connected`, `start`, `media`, `dtmf`, `mark`,
`stop`) and how Twilio checks what the server sends back (warnings 31950/31951).

The field shapes follow shared/protocols/twilio.md: numeric-looking fields (`sequenceNumber`,
`chunk`, `timestamp`) are strings, `mediaFormat` numbers are numbers.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from app.simulators.twilio_wire.audio import SAMPLE_RATE

MEDIA_FORMAT = {"encoding": "audio/x-mulaw", "sampleRate": SAMPLE_RATE, "channels": 1}


# --------------------------------------------------------------------------- caller → server messages


def connected_message() -> dict[str, Any]:
    return {"event": "connected", "protocol": "Call", "version": "1.0.0"}


def start_message(seq: int, *, stream_sid: str, account_sid: str, call_sid: str,
                  custom_parameters: dict[str, str]) -> dict[str, Any]:
    return {
        "event": "start",
        "sequenceNumber": str(seq),
        "start": {
            "accountSid": account_sid,
            "streamSid": stream_sid,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "mediaFormat": dict(MEDIA_FORMAT),
            "customParameters": dict(custom_parameters),
        },
        "streamSid": stream_sid,
    }


def media_message(seq: int, *, stream_sid: str, chunk: int, timestamp_ms: int, payload: bytes) -> dict[str, Any]:
    return {
        "event": "media",
        "sequenceNumber": str(seq),
        "media": {
            "track": "inbound",
            "chunk": str(chunk),
            "timestamp": str(timestamp_ms),
            "payload": base64.b64encode(payload).decode("ascii"),
        },
        "streamSid": stream_sid,
    }


def dtmf_message(seq: int, *, stream_sid: str, digit: str) -> dict[str, Any]:
    return {
        "event": "dtmf",
        "streamSid": stream_sid,
        "sequenceNumber": str(seq),
        "dtmf": {"track": "inbound_track", "digit": digit},
    }


def mark_message(seq: int, *, stream_sid: str, name: str) -> dict[str, Any]:
    return {"event": "mark", "sequenceNumber": str(seq), "streamSid": stream_sid, "mark": {"name": name}}


def stop_message(seq: int, *, stream_sid: str, account_sid: str, call_sid: str) -> dict[str, Any]:
    return {
        "event": "stop",
        "sequenceNumber": str(seq),
        "streamSid": stream_sid,
        "stop": {"accountSid": account_sid, "callSid": call_sid},
    }


# --------------------------------------------------------------------------- server → caller messages

# What a <Connect><Stream> accepts from the server: the top-level keys, then the keys of the
# nested object. Anything else is Twilio warning 31951 ("extra field").
_ALLOWED: dict[str, tuple[frozenset[str], str | None, frozenset[str]]] = {
    "media": (frozenset({"event", "streamSid", "media"}), "media", frozenset({"payload"})),
    "mark": (frozenset({"event", "streamSid", "mark"}), "mark", frozenset({"name"})),
    "clear": (frozenset({"event", "streamSid"}), None, frozenset()),
}


@dataclass(frozen=True, slots=True)
class Violation:
    """Something Twilio would log as a warning. `code` is Twilio's number when it has one."""

    code: str
    kind: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "kind": self.kind, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class ServerMessage:
    """A server message the caller acts on: media (decoded payload), mark (name) or clear."""

    event: str
    payload: bytes = b""
    name: str = ""


@dataclass(slots=True)
class CheckedFrame:
    event: str | None  # the event name when one could be read, even if the frame is dropped
    message: ServerMessage | None  # None: dropped, as Twilio drops what it cannot use
    violations: list[Violation] = field(default_factory=list)


def _header_of(payload: bytes) -> str | None:
    if payload[:4] == b"RIFF" and payload[8:12] == b"WAVE":
        return "WAV/RIFF"
    if payload[:4] == b".snd":
        return "AU"
    return None


def check_server_frame(frame: str | bytes, *, stream_sid: str | None) -> CheckedFrame:
    """Validate one frame from the server the way Twilio does; never raises.

    `stream_sid` is None until the caller has sent `start` (the server cannot know it yet).
    Extra fields and audio file headers are reported but the message is still used (Twilio
    plays a header as noise); every other violation drops the message.
    """
    if isinstance(frame, (bytes, bytearray, memoryview)):
        return CheckedFrame(None, None, [Violation("31950", "binary_frame", f"binary frame of {len(frame)} bytes")])
    try:
        data = json.loads(frame)
    except ValueError:
        return CheckedFrame(None, None, [Violation("31951", "non_json", f"not JSON: {frame[:80]!r}")])
    if not isinstance(data, dict):
        return CheckedFrame(None, None, [Violation("31951", "non_json", f"JSON {type(data).__name__}, not an object")])
    event = data.get("event")
    if not isinstance(event, str):
        return CheckedFrame(None, None, [Violation("31951", "missing_field", "no 'event' string")])
    if stream_sid is None:
        return CheckedFrame(event, None, [Violation("31951", "before_start", f"'{event}' sent before 'start'")])
    if event not in _ALLOWED:
        return CheckedFrame(event, None, [Violation("31951", "unknown_event", f"unknown event {event!r}")])

    top, section_key, section_keys = _ALLOWED[event]
    violations: list[Violation] = []
    extra = sorted(set(data) - top)
    if extra:
        violations.append(Violation("31951", "extra_field", f"'{event}' has extra field(s) {extra}"))
    sid = data.get("streamSid")
    if sid is None:
        violations.append(Violation("31951", "missing_field", f"'{event}' without 'streamSid'"))
        return CheckedFrame(event, None, violations)
    if sid != stream_sid:
        violations.append(Violation("31951", "wrong_stream_sid", f"'{event}' for streamSid {sid!r}"))
        return CheckedFrame(event, None, violations)
    if section_key is None:
        return CheckedFrame(event, ServerMessage(event), violations)

    section = data.get(section_key)
    if not isinstance(section, dict):
        kind = "mark_without_name" if event == "mark" else "missing_field"
        violations.append(Violation("31951", kind, f"'{event}' without a '{section_key}' object"))
        return CheckedFrame(event, None, violations)
    extra = sorted(set(section) - section_keys)
    if extra:
        violations.append(Violation("31951", "extra_field", f"'{event}.{section_key}' has extra field(s) {extra}"))

    if event == "mark":
        name = section.get("name")
        if not isinstance(name, str) or not name:
            violations.append(Violation("31951", "mark_without_name", "'mark' without a 'mark.name' string"))
            return CheckedFrame(event, None, violations)
        return CheckedFrame(event, ServerMessage("mark", name=name), violations)

    payload_b64 = section.get("payload")
    if not isinstance(payload_b64, str):
        violations.append(Violation("31951", "missing_field", "'media' without a 'media.payload' string"))
        return CheckedFrame(event, None, violations)
    try:
        payload = base64.b64decode(payload_b64, validate=True)
    except (binascii.Error, ValueError):
        violations.append(Violation("31951", "invalid_base64", f"payload is not base64: {payload_b64[:40]!r}"))
        return CheckedFrame(event, None, violations)
    header = _header_of(payload)
    if header:
        violations.append(Violation("payload-header", "wav_header",
                                    f"media payload starts with a {header} header; Twilio plays it as noise"))
    return CheckedFrame(event, ServerMessage("media", payload=payload), violations)
