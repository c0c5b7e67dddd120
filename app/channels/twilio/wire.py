"""Pure translation of the Twilio Media Streams wire protocol (no sockets here).

Inbound messages become small typed records; outbound ones are built as JSON text.
Parsing is length-agnostic and strict about shape: anything malformed raises
`MalformedMessage`, whose `reason` names its kind; the caller logs and drops it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field

import orjson


class MalformedMessage(ValueError):
    """A Twilio message we cannot use; never fatal to the call. `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


# The kinds of malformed message the parser tells apart (the channel adds "oversized").
REASONS = ("binary", "not_json", "not_object", "no_event", "bad_field", "bad_base64", "wrong_stream")


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    custom_parameters: dict[str, str] = field(default_factory=dict)
    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000


@dataclass(slots=True)  # not frozen: 50 a second per call, and a frozen __init__ costs 2.5x
class Media:
    payload: bytes
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Mark:
    name: str


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class Stop:
    call_sid: str


InboundMessage = Connected | Start | Media | Mark | Dtmf | Stop

_SID = re.compile(r"^[A-Za-z0-9]{2,64}$")
# Events that belong to a stream once it started: they must name it. A tuple, not a set: the
# event may be any JSON value, and a list or object cannot be hashed.
_STREAM_EVENTS = ("media", "mark", "dtmf", "stop")


def _section(message: dict, key: str) -> dict:
    value = message.get(key)
    if not isinstance(value, dict):
        raise MalformedMessage("bad_field", f"'{message.get('event')}' without a '{key}' object")
    return value


def _text(section: dict, key: str, event: str) -> str:
    value = section.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedMessage("bad_field", f"'{event}' without '{key}'")
    return value


def parse_inbound(raw: str | bytes, stream_sid: str | None = None) -> InboundMessage | None:
    """Parse one message from Twilio. Returns None for an event we do not use.

    With `stream_sid` (the stream has started), a media, mark, dtmf or stop message must name
    that stream: Twilio always does, and a stop for another stream must not end this call.
    """
    if isinstance(raw, bytes):
        raise MalformedMessage("binary", "binary frame")
    try:
        message = orjson.loads(raw)
    except ValueError as exc:
        raise MalformedMessage("not_json", f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise MalformedMessage("not_object", "not a JSON object")
    event = message.get("event")
    if stream_sid is not None and event in _STREAM_EVENTS and message.get("streamSid") != stream_sid:
        raise MalformedMessage("wrong_stream", f"'{event}' for another stream")
    if event == "media":
        media = _section(message, "media")
        payload = media.get("payload")
        if not isinstance(payload, str):
            raise MalformedMessage("bad_field", "'media' without a payload")
        try:
            # Strict: anything but the base64 alphabet and proper padding is refused.
            audio = binascii.a2b_base64(payload, strict_mode=True)
        except (binascii.Error, ValueError):
            raise MalformedMessage("bad_base64", "media payload is not base64") from None
        try:
            timestamp = int(media.get("timestamp", 0))
        except (TypeError, ValueError):
            raise MalformedMessage("bad_field", "media timestamp is not a number") from None
        return Media(audio, timestamp)
    if event == "mark":
        return Mark(_text(_section(message, "mark"), "name", "mark"))
    if event == "start":
        start = _section(message, "start")
        stream_sid = _text(start, "streamSid", "start")
        if not _SID.match(stream_sid):
            raise MalformedMessage("bad_field", "start with an invalid streamSid")
        params = start.get("customParameters") or {}
        if not isinstance(params, dict):
            raise MalformedMessage("bad_field", "start with invalid customParameters")
        media_format = start.get("mediaFormat") or {}
        if not isinstance(media_format, dict):
            raise MalformedMessage("bad_field", "start with an invalid mediaFormat")
        try:
            sample_rate = int(media_format.get("sampleRate", 8000))
        except (TypeError, ValueError):
            raise MalformedMessage("bad_field", "start with an invalid mediaFormat sampleRate") from None
        return Start(
            stream_sid=stream_sid,
            call_sid=_text(start, "callSid", "start"),
            account_sid=str(start.get("accountSid", "")),
            custom_parameters={str(k): str(v) for k, v in params.items()},
            encoding=str(media_format.get("encoding", "audio/x-mulaw")),
            sample_rate=sample_rate,
        )
    if event == "dtmf":
        return Dtmf(_text(_section(message, "dtmf"), "digit", "dtmf"))
    if event == "stop":
        stop = message.get("stop")
        return Stop(str(stop.get("callSid", "")) if isinstance(stop, dict) else "")
    if event == "connected":
        return Connected(str(message.get("protocol", "")))
    if isinstance(event, str):
        return None
    raise MalformedMessage("no_event", "message without an event")


# Outbound messages are built by hand: they are sent ~50 times a second per call and the
# stream SID was checked against _SID, so no escaping is needed.


def media_message(stream_sid: str, audio: bytes) -> str:
    payload = base64.b64encode(audio).decode("ascii")
    return f'{{"event":"media","streamSid":"{stream_sid}","media":{{"payload":"{payload}"}}}}'


def mark_message(stream_sid: str, name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear_message(stream_sid: str) -> str:
    return f'{{"event":"clear","streamSid":"{stream_sid}"}}'
