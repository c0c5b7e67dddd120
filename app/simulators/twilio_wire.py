"""Pure pieces of the simulated Twilio caller: ids, Media Streams messages, TwiML, URLs, audio.

Nothing here touches a socket, so every rule about what Twilio sends and accepts can be
unit-tested on its own. The field shapes follow shared/protocols/twilio.md: numeric-looking
fields (`sequenceNumber`, `chunk`, `timestamp`) are strings, `mediaFormat` numbers are numbers.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import warnings
import wave
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import numpy as np

with warnings.catch_warnings():
    # Deprecated on 3.11/3.12 only; the audioop-lts package provides it from 3.13 on.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_BYTES = SAMPLE_RATE * FRAME_MS // 1000  # 160 μ-law bytes = 20 ms
BYTES_PER_MS = SAMPLE_RATE // 1000
MULAW_SILENCE = b"\xff"
SILENCE_FRAME = MULAW_SILENCE * FRAME_BYTES
TWIML_MAX_BYTES = 64_000  # Twilio rejects bigger documents (error 11750)
PLAYBACK_LIMIT_BYTES = 10 * 60 * SAMPLE_RATE  # about 10 minutes of buffered audio (warning 31931)
MEDIA_FORMAT = {"encoding": "audio/x-mulaw", "sampleRate": SAMPLE_RATE, "channels": 1}


def new_sid(prefix: str) -> str:
    """A Twilio-shaped id: two-letter prefix and 32 hex digits (34 characters)."""
    return prefix + secrets.token_hex(16)


# --------------------------------------------------------------------------- webhook parameters


def _country(number: str) -> str:
    # Only the prefixes our callers use; Twilio leaves unknown geo fields empty.
    for prefix, country in (("+33", "FR"), ("+32", "BE"), ("+41", "CH"), ("+352", "LU")):
        if number.startswith(prefix):
            return country
    return ""


def inbound_call_params(*, call_sid: str, account_sid: str, from_number: str, to_number: str,
                        call_status: str = "ringing") -> dict[str, str]:
    """The form fields of Twilio's inbound voice request (geo fields empty, as Twilio often sends them)."""
    from_country, to_country = _country(from_number), _country(to_number)
    return {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": call_status,
        "Called": to_number,
        "CalledCity": "",
        "CalledCountry": to_country,
        "CalledState": "",
        "CalledZip": "",
        "Caller": from_number,
        "CallerCity": "",
        "CallerCountry": from_country,
        "CallerState": "",
        "CallerZip": "",
        "Direction": "inbound",
        "From": from_number,
        "FromCity": "",
        "FromCountry": from_country,
        "FromState": "",
        "FromZip": "",
        "To": to_number,
        "ToCity": "",
        "ToCountry": to_country,
        "ToState": "",
        "ToZip": "",
    }


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


# --------------------------------------------------------------------------- TwiML


class TwimlError(ValueError):
    """The webhook answer is not TwiML Twilio could execute."""


@dataclass(slots=True)
class StreamSpec:
    url: str
    name: str | None = None
    status_callback: str | None = None
    status_callback_method: str = "POST"
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Twiml:
    verbs: list[str] = field(default_factory=list)
    says: list[str] = field(default_factory=list)  # every <Say>, in document order
    says_after_connect: list[str] = field(default_factory=list)
    hangup: bool = False
    hangup_after_connect: bool = False
    stream: StreamSpec | None = None
    connect_action: str | None = None
    connect_method: str = "POST"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_twiml(text: str | bytes) -> Twiml:
    """Read the verbs the simulator executes: Say, Hangup, Connect/Stream/Parameter."""
    if len(text) > TWIML_MAX_BYTES:
        raise TwimlError(f"TwiML of {len(text)} bytes is over Twilio's 64 kB limit (error 11750)")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise TwimlError(f"not XML: {exc}") from None
    if _local(root.tag) != "Response":
        raise TwimlError(f"root element is <{_local(root.tag)}>, not <Response>")
    result = Twiml()
    after_connect = False
    for verb in root:
        name = _local(verb.tag)
        result.verbs.append(name)
        if name == "Say":
            said = "".join(verb.itertext()).strip()
            result.says.append(said)
            if after_connect:
                result.says_after_connect.append(said)
        elif name == "Hangup":
            result.hangup = True
            result.hangup_after_connect = result.hangup_after_connect or after_connect
        elif name == "Connect" and result.stream is None:
            for child in verb:
                if _local(child.tag) != "Stream":
                    continue
                url = child.get("url")
                if not url:
                    raise TwimlError("<Stream> without a url")
                params = {}
                for p in child:
                    if _local(p.tag) == "Parameter" and p.get("name") is not None:
                        params[p.get("name")] = p.get("value", "")
                result.stream = StreamSpec(
                    url=url,
                    name=child.get("name"),
                    status_callback=child.get("statusCallback"),
                    status_callback_method=(child.get("statusCallbackMethod") or "POST").upper(),
                    parameters=params,
                )
                result.connect_action = verb.get("action")
                result.connect_method = (verb.get("method") or "POST").upper()
                after_connect = True
                break
    return result


def stream_url_warnings(url: str, parameters: dict[str, str]) -> list[Violation]:
    """What Twilio would refuse or alter in a <Stream>; the simulator reports it and goes on."""
    found = []
    parts = urlsplit(url)
    if parts.scheme != "wss":
        found.append(Violation("31922", "stream_url_scheme",
                               f"Twilio only accepts wss:// stream URLs, got {parts.scheme}://"))
    if parts.query:
        found.append(Violation("stream-url-query", "stream_url_query",
                               "query strings on <Stream url> are reported to be stripped by Twilio"))
    for name, value in parameters.items():
        if len(name) + len(value) >= 500:
            found.append(Violation("stream-parameter", "parameter_too_long",
                                   f"<Parameter name={name!r}> is {len(name) + len(value)} characters (limit 500)"))
    return found


# --------------------------------------------------------------------------- URLs


def resolve_twiml_url(url: str, *, document_url: str, websocket: bool) -> str:
    """The absolute URL Twilio would use (and sign) for a possibly relative TwiML URL."""
    if urlsplit(url).scheme:
        return url
    absolute = urlsplit(urljoin(document_url, url))
    scheme = absolute.scheme
    if websocket:
        # A relative stream URL inherits the document's host, on the websocket scheme.
        scheme = "wss" if scheme == "https" else "ws"
    return urlunsplit((scheme, absolute.netloc, absolute.path, absolute.query, ""))


def map_to_server(url: str, *, server_url: str, public_url: str, websocket: bool) -> str:
    """Where a public URL really lands: the server's address, as a tunnel like ngrok maps it.

    The host and scheme come from `server_url` (https/wss when it is https); a path prefix of
    the public base URL is swapped for the server's own prefix.
    """
    target, server, public = urlsplit(url), urlsplit(server_url), urlsplit(public_url)
    secure = server.scheme == "https"
    scheme = ("wss" if secure else "ws") if websocket else ("https" if secure else "http")
    path = target.path or "/"
    public_prefix, server_prefix = public.path.rstrip("/"), server.path.rstrip("/")
    if public_prefix and (path == public_prefix or path.startswith(public_prefix + "/")):
        path = server_prefix + path[len(public_prefix):]
    return urlunsplit((scheme, server.netloc, path, target.query, ""))


# --------------------------------------------------------------------------- audio


def _lowpass(pcm16: bytes, rate: int, cutoff_hz: float = 3600.0, taps: int = 101) -> bytes:
    # ratecv interpolates without an anti-alias filter, so content above 4 kHz would fold
    # into the telephone band; a windowed-sinc FIR removes it first.
    samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float64)
    if samples.size == 0:
        return pcm16
    n = np.arange(taps) - (taps - 1) / 2
    kernel = np.sinc(2 * cutoff_hz / rate * n) * np.hamming(taps)
    kernel /= kernel.sum()
    filtered = np.convolve(samples, kernel, mode="same")
    return np.clip(np.rint(filtered), -32768, 32767).astype("<i2").tobytes()


def wav_to_ulaw(path: str | Path) -> bytes:
    """Any PCM WAV (rate, width, channels) → μ-law 8 kHz mono, what a phone line carries."""
    with wave.open(str(path), "rb") as wav:
        width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
        raw = wav.readframes(wav.getnframes())
    if width == 1:
        raw = audioop.bias(raw, 1, -128)  # 8-bit WAV is unsigned, audioop expects signed
    pcm = audioop.lin2lin(raw, width, 2) if width != 2 else raw
    if channels == 2:
        pcm = audioop.tomono(pcm, 2, 0.5, 0.5)
    elif channels > 2:
        frames = np.frombuffer(pcm, dtype="<i2").reshape(-1, channels).astype(np.int32)
        pcm = frames.mean(axis=1).round().astype("<i2").tobytes()
    if rate != SAMPLE_RATE:
        if rate > SAMPLE_RATE:
            pcm = _lowpass(pcm, rate)
        state = None
        out = bytearray()
        block = rate * 2  # one second of PCM16 per call, the converter state carried across
        for offset in range(0, len(pcm), block):
            converted, state = audioop.ratecv(pcm[offset:offset + block], 2, 1, rate, SAMPLE_RATE, state)
            out += converted
        pcm = bytes(out)
    return audioop.lin2ulaw(pcm, 2)


def speech_bounds(ulaw: bytes) -> tuple[float, float] | None:
    """Where the voice starts and ends in a recording (ms), ignoring leading/trailing near-silence.

    Recordings carry some silence around the words; latency is felt from the last word, not
    from the end of the file. None when the whole recording is quiet.
    """
    step = 10 * BYTES_PER_MS  # 10 ms of samples
    pcm = np.frombuffer(audioop.ulaw2lin(ulaw, 2), dtype="<i2").astype(np.float64)
    usable = pcm.size // step * step
    if usable == 0:
        return None
    rms = np.sqrt(np.mean(pcm[:usable].reshape(-1, step) ** 2, axis=1))
    if rms.max() < 100:  # about -50 dBFS: nothing a VAD would call speech
        return None
    loud = np.flatnonzero(rms >= max(rms.max() * 0.05, 100))  # within 26 dB of the loudest frame
    return float(loud[0] * 10), float((loud[-1] + 1) * 10)


def ulaw_to_pcm16(ulaw: bytes) -> bytes:
    return audioop.ulaw2lin(ulaw, 2)


def pcm16_to_ulaw(pcm16: bytes) -> bytes:
    return audioop.lin2ulaw(pcm16, 2)


def comfort_noise_frame(rng: np.random.Generator, dbfs: float) -> bytes:
    """20 ms of faint white noise, like the hiss of a real line rather than digital silence."""
    rms = 32767 * 10 ** (dbfs / 20)
    samples = np.clip(rng.normal(0.0, rms, FRAME_BYTES), -32768, 32767).astype("<i2")
    return audioop.lin2ulaw(samples.tobytes(), 2)
