"""A simulated phone caller that behaves exactly as Twilio does towards our server (`octi call`).

It sends the signed voice webhook, executes the TwiML answer (records `<Say>`, honours
`<Hangup/>`, opens the `<Connect><Stream>`), then plays the Twilio side of a bidirectional
Media Stream in real time: a `media` frame every 20 ms for the whole call, scripted caller
speech from WAV files, DTMF, and a playback buffer with Twilio's mark/clear semantics, so
what the caller *hears* (and when) is recorded sample-accurately. Everything the server sends
is validated like Twilio would (warnings 31950/31951) and recorded, never fatal.

Used by people (no phone needed), by tests and by benchmarks, through the server's real sockets.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
import wave
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import click
import httpx
import numpy as np
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State

from app.cli_support import HELP_OPTIONS, ParsedBy, run_coroutine
from app.simulators import twilio_wire as wire
from app.simulators.twilio_wire import BYTES_PER_MS, FRAME_BYTES, FRAME_MS, SILENCE_FRAME, Violation

__all__ = [
    "BURST_GAP_MS",
    "SKIP",
    "Burst",
    "CallResult",
    "CallScript",
    "Clear",
    "MarkEcho",
    "Playback",
    "Utterance",
    "UtteranceRecord",
    "cli",
    "place_call",
]

WEBHOOK_PATH = "/voice/incoming"
# A burst survives underruns shorter than this: a server pacing audio in real time leaves
# the queue empty for a frame or two now and then, and that is still the same answer.
BURST_GAP_MS = 200
DEFAULT_SILENCE_BEFORE_REPLY_MS = 700
WEBHOOK_USER_AGENT = "TwilioProxy/1.1"
STREAM_USER_AGENT = "Twilio.TmeWs/1.0"
MAX_VIOLATIONS = 1000  # keep a misbehaving server from growing the result without bound


class _Skip:
    def __repr__(self) -> str:
        return "SKIP"


SKIP: Any = _Skip()
"""Return this from a `send_hook` to drop the message (its sequence number stays used)."""

SendHook = Callable[[dict[str, Any]], "dict[str, Any] | str | bytes | None | Awaitable[Any]"]


# --------------------------------------------------------------------------- the script


@dataclass(slots=True)
class Utterance:
    """One thing the caller says.

    - `at`: seconds since stream start.
    - neither `at` nor `after_answer_starts_ms` (default): speak once OCTI has spoken since the
      previous utterance began (for the first: since the stream started, i.e. the greeting)
      and its playback has then been idle for `CallScript.silence_before_reply_ms`.
    - `after_answer_starts_ms`: barge in, that many ms after the next playback burst (OCTI's
      answer) started playing.
    Utterances never overlap: each one also waits for its predecessor to finish.
    """

    wav: Path
    at: float | None = None
    after_answer_starts_ms: float | None = None
    label: str = ""

    def __post_init__(self) -> None:
        self.wav = Path(self.wav)
        if self.at is not None and self.after_answer_starts_ms is not None:
            raise ValueError("an utterance has either `at` or `after_answer_starts_ms`, not both")
        if not self.label:
            self.label = self.wav.stem


@dataclass(slots=True)
class CallScript:
    """What the caller does during the stream; times are seconds since stream start."""

    utterances: list[Utterance] = field(default_factory=list)
    dtmf: list[tuple[float, str]] = field(default_factory=list)
    hangup_after: float = 30.0
    # Hang up this long after the last utterance finished and playback went idle.
    hangup_when_done_after_s: float | None = None
    # Sent verbatim (text or binary frame) at those times; they take no sequence number.
    raw_messages: list[tuple[float, str | bytes]] = field(default_factory=list)
    silence_before_reply_ms: float = DEFAULT_SILENCE_BEFORE_REPLY_MS
    # Faint line noise instead of digital silence between utterances (e.g. -60 dBFS).
    comfort_noise_dbfs: float | None = None


# --------------------------------------------------------------------------- records


@dataclass(slots=True)
class Burst:
    """A stretch of OCTI audio heard without a pause of BURST_GAP_MS or more.

    Times are on the media clock (seconds since stream start, 20 ms ticks); `played_ms` counts
    audio actually played, so silence from underruns inside the burst is not included.
    """

    index: int
    start_t: float
    played_ms: float = 0.0
    end_t: float | None = None
    ended_by: str | None = None  # "drained" | "clear" | "hangup" | "server_close"
    underruns: int = 0


@dataclass(slots=True)
class Clear:
    """A `clear` from the server: what had been heard of the burst, and what was thrown away."""

    t: float  # wire time of the clear
    burst: int | None  # index of the burst it cut, None when nothing was playing
    played_ms: float  # of that burst, up to the last 20 ms tick
    flushed_ms: float  # queued audio discarded
    marks: list[str] = field(default_factory=list)  # pending marks echoed at once


@dataclass(slots=True)
class MarkEcho:
    name: str
    t: float
    played: bool  # False when echoed because a clear flushed its audio


@dataclass(slots=True)
class UtteranceRecord:
    index: int
    label: str
    wav: str
    start_t: float
    end_t: float
    duration_ms: float
    barge_in: bool
    over_playback: bool  # OCTI audio was playing when the caller started
    speech_start_t: float = 0.0  # where the voice starts and ends inside the recording
    speech_end_t: float = 0.0  # (leading/trailing near-silence excluded)
    burst: int | None = None  # the burst talked over, if any
    # End of the caller's speech → first OCTI burst that started after this utterance began
    # (and before the next one); negative when OCTI started before the caller had finished.
    answer_latency_ms: float | None = None
    # Utterance start → the server's first clear before the next utterance (barge-in reaction).
    clear_after_ms: float | None = None


# --------------------------------------------------------------------------- playback buffer


class Playback:
    """Twilio's outbound audio buffer, advanced one 20 ms tick at a time.

    Payloads queue up; each tick plays up to 160 bytes (silence pads a short frame). A mark
    is due once every byte queued before it has been played (immediately if nothing is
    queued); `clear` drops the queue and releases every pending mark.
    """

    def __init__(self, gap_ms: float = BURST_GAP_MS) -> None:
        self._buf = bytearray()
        self._head = 0
        self.queued_total = 0
        self.played_total = 0
        self._marks: deque[tuple[int, str]] = deque()
        self.bursts: list[Burst] = []
        self.clears: list[Clear] = []
        self.current: Burst | None = None
        self.last_audio_end_ms: float | None = None
        self.discarded_bytes = 0
        self._gap_ms = gap_ms
        self._ran_dry = False

    @property
    def backlog(self) -> int:
        return self.queued_total - self.played_total

    @property
    def idle(self) -> bool:
        return self.backlog == 0

    def append(self, payload: bytes) -> int:
        """Queue audio; returns how many bytes were refused for exceeding Twilio's ~10 min buffer."""
        room = max(0, wire.PLAYBACK_LIMIT_BYTES - self.backlog)
        accepted = payload[:room]
        self._buf += accepted
        self.queued_total += len(accepted)
        refused = len(payload) - len(accepted)
        self.discarded_bytes += refused
        return refused

    def add_mark(self, name: str) -> bool:
        """Queue a mark; True when it is due right away (nothing left to play)."""
        if self.idle:
            return True
        self._marks.append((self.queued_total, name))
        return False

    def due_marks(self) -> list[str]:
        due = []
        while self._marks and self._marks[0][0] <= self.played_total:
            due.append(self._marks.popleft()[1])
        return due

    def play(self, tick_ms: int) -> bytes:
        """The 160 bytes heard during the tick starting at `tick_ms`."""
        n = min(FRAME_BYTES, self.backlog)
        chunk = bytes(self._buf[self._head:self._head + n])
        self._head += n
        if self._head > 65536 and self._head * 2 > len(self._buf):
            del self._buf[:self._head]  # compact now and then rather than on every tick
            self._head = 0
        self.played_total += n
        if n:
            if self.current is None:
                self.current = Burst(index=len(self.bursts), start_t=tick_ms / 1000)
                self.bursts.append(self.current)
            elif self._ran_dry:
                self.current.underruns += 1
            self.current.played_ms += n / BYTES_PER_MS
            self.last_audio_end_ms = tick_ms + n / BYTES_PER_MS
        elif self.current is not None and tick_ms - (self.last_audio_end_ms or 0) >= self._gap_ms:
            self._end_burst("drained")
        self._ran_dry = n < FRAME_BYTES
        return chunk + SILENCE_FRAME[n:]

    def clear(self, t: float) -> Clear:
        flushed = self.backlog
        self._buf.clear()
        self._head = 0
        self.queued_total = self.played_total
        marks = [name for _, name in self._marks]
        self._marks.clear()
        burst = self.current
        record = Clear(t=t, burst=burst.index if burst else None,
                       played_ms=burst.played_ms if burst else 0.0,
                       flushed_ms=flushed / BYTES_PER_MS, marks=marks)
        if burst is not None:
            self._end_burst("clear")
        self.clears.append(record)
        return record

    def finish(self, reason: str) -> None:
        """The stream ended: close the burst in progress."""
        if self.current is not None:
            self._end_burst(reason if self.backlog else "drained")

    def _end_burst(self, reason: str) -> None:
        assert self.current is not None
        self.current.end_t = (self.last_audio_end_ms or 0) / 1000
        self.current.ended_by = reason
        self.current = None
        self._ran_dry = False


# --------------------------------------------------------------------------- the result


@dataclass
class CallResult:
    """Everything observed during one simulated call.

    Timeline `t` values are seconds since the stream started (media timestamp 0); entries
    before it (webhook, upgrade) are negative. When no stream started, `t` counts from the
    webhook request instead.
    """

    status: str = "pending"
    # "completed" | "spoken_only" | "refused_webhook" | "webhook_unreachable" | "invalid_twiml"
    # | "refused_stream" | "stream_unreachable"
    server_url: str = ""
    public_url: str = ""
    call_sid: str = ""
    account_sid: str = ""
    stream_sid: str | None = None
    http_status: int | None = None
    webhook_ms: float | None = None
    twiml: str = ""
    verbs: list[str] = field(default_factory=list)
    say_texts: list[str] = field(default_factory=list)
    hangup: bool = False
    stream_url: str | None = None  # exactly as Twilio would use (and sign) it
    stream_connect_url: str | None = None  # where the simulator actually connected
    stream_http_status: int | None = None  # 101 when accepted
    custom_parameters: dict[str, str] = field(default_factory=dict)
    status_callback: str | None = None
    connect_action: str | None = None
    timeline: list[dict[str, Any]] = field(default_factory=list)
    utterances: list[UtteranceRecord] = field(default_factory=list)
    bursts: list[Burst] = field(default_factory=list)
    clears: list[Clear] = field(default_factory=list)
    marks_echoed: list[MarkEcho] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    closed_by: str | None = None  # "caller" | "server"
    duration_s: float = 0.0
    media_frames_sent: int = 0
    max_tick_lag_ms: float = 0.0  # how late the simulator's own pacing ran at worst
    status_callbacks: list[dict[str, Any]] = field(default_factory=list)
    after_stream: dict[str, Any] | None = None  # what Twilio ran after the server closed the stream
    errors: list[str] = field(default_factory=list)
    played_audio: bytes = b""  # μ-law 8 kHz heard by the caller, one byte per sample of the stream
    sent_audio: bytes = b""  # μ-law 8 kHz the caller sent, same length

    @property
    def greeting_latency_ms(self) -> float | None:
        """Stream start → first OCTI audio heard."""
        return self.bursts[0].start_t * 1000 if self.bursts else None

    @property
    def first_audio_latencies_ms(self) -> list[float | None]:
        """Per utterance: its end → the first OCTI burst heard after it."""
        return [u.answer_latency_ms for u in self.utterances]

    def to_json_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["played_audio"], data["sent_audio"]
        data["played_audio_ms"] = len(self.played_audio) / BYTES_PER_MS
        data["greeting_latency_ms"] = self.greeting_latency_ms
        return data

    def write_timeline(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json_dict(), indent=2, ensure_ascii=False), encoding="utf-8")

    def write_wav(self, path: str | Path, *, stereo: bool = False) -> None:
        """What the caller heard as 8 kHz PCM16; `stereo` puts the caller left and OCTI right."""
        heard = wire.ulaw_to_pcm16(self.played_audio)
        with wave.open(str(path), "wb") as out:
            out.setnchannels(2 if stereo else 1)
            out.setsampwidth(2)
            out.setframerate(wire.SAMPLE_RATE)
            if stereo:
                said = wire.ulaw_to_pcm16(self.sent_audio.ljust(len(self.played_audio), b"\xff"))
                frames = np.empty((len(heard) // 2, 2), dtype="<i2")
                frames[:, 0] = np.frombuffer(said[:len(heard)], dtype="<i2")
                frames[:, 1] = np.frombuffer(heard, dtype="<i2")
                out.writeframes(frames.tobytes())
            else:
                out.writeframes(heard)

    def summary(self) -> str:
        return _summary(self)


# --------------------------------------------------------------------------- the call


class _Call:
    def __init__(self, server_url: str, *, script: CallScript, public_url: str | None, auth_token: str | None,
                 call_sid: str | None, account_sid: str | None, from_number: str, to_number: str,
                 realtime: bool, sign_stream: bool, extra_stream_headers: dict[str, str] | None,
                 send_hook: SendHook | None) -> None:
        self.server_url = server_url.rstrip("/")
        self.public_url = (public_url or server_url).rstrip("/")
        self.script = script
        self.validator = RequestValidator(auth_token) if auth_token else None
        self.realtime = realtime
        self.sign_stream = sign_stream
        self.extra_stream_headers = dict(extra_stream_headers or {})
        self.send_hook = send_hook
        self.r = CallResult(server_url=self.server_url, public_url=self.public_url,
                            call_sid=call_sid or wire.new_sid("CA"), account_sid=account_sid or wire.new_sid("AC"))
        self.params = wire.inbound_call_params(call_sid=self.r.call_sid, account_sid=self.r.account_sid,
                                               from_number=from_number, to_number=to_number)
        self.loop = asyncio.get_running_loop()
        self.origin = self.loop.time()
        self.t0: float | None = None  # loop time of the `start` message
        self.vt_ms = 0  # media clock (virtual time when not realtime)
        self.pump_end: tuple[float, float] | None = None  # (media t, loop time) when the stream ended
        self.playback = Playback()
        self.ws: ClientConnection | None = None
        self.send_lock = asyncio.Lock()
        self.seq = 0
        self.chunk = 0
        self.caller_closing = False
        self.server_closed = asyncio.Event()
        self.background: set[asyncio.Task[None]] = set()
        self.played = bytearray()
        self.sent = bytearray()
        self.rng = np.random.default_rng(0x0C71)
        self.http: httpx.AsyncClient | None = None
        self.twiml = wire.Twiml()
        self.stream_name: str | None = None
        self.violation_count = 0
        # utterance state
        self.audio: list[bytes] = []
        self.speech: list[tuple[float, float] | None] = []
        self.next_utt = 0
        self.speaking: tuple[int, int, int] | None = None  # (index, offset, start_ms)
        self.prev_start_ms: int | None = None
        self.prev_end_ms: float | None = None

    # ----- clock and records

    def now(self) -> float:
        if self.t0 is None:
            return self.loop.time()  # rebased once the stream starts (see _rebase)
        if self.pump_end is not None:
            return self.pump_end[0] + (self.loop.time() - self.pump_end[1])
        if self.realtime:
            return self.loop.time() - self.t0
        return self.vt_ms / 1000

    def _rebase(self, origin: float) -> None:
        for entry in self.r.timeline:
            entry["t"] = round(entry["t"] - origin, 4)
        for v in self.r.violations:
            v["t"] = round(v["t"] - origin, 4)

    def log(self, direction: str, event: str, **details: Any) -> None:
        t = self.now()
        self.r.timeline.append({"t": round(t, 4) if self.t0 is not None else t, "direction": direction,
                                "event": event, **details})

    def violation(self, v: Violation, event: str | None = None) -> None:
        self.violation_count += 1
        if len(self.r.violations) < MAX_VIOLATIONS:
            t = self.now()
            self.r.violations.append({**v.as_dict(), "event": event,
                                      "t": round(t, 4) if self.t0 is not None else t})

    # ----- HTTP side

    def _sign(self, url: str, params: dict[str, str]) -> dict[str, str]:
        if self.validator is None:
            return {}
        return {"X-Twilio-Signature": self.validator.compute_signature(url, params)}

    async def _twilio_request(self, public: str, method: str, params: dict[str, str]) -> httpx.Response:
        """A signed request to a public URL, delivered to the server's real address."""
        assert self.http is not None
        target = wire.map_to_server(public, server_url=self.server_url, public_url=self.public_url, websocket=False)
        if method == "GET":
            sep = "&" if "?" in public else "?"
            signed_url = public + sep + urlencode(params)
            return await self.http.get(target + ("&" if "?" in target else "?") + urlencode(params),
                                       headers=self._sign(signed_url, {}))
        return await self.http.post(target, data=params, headers=self._sign(public, params))

    async def webhook(self) -> bool:
        assert self.http is not None
        url = self.public_url + WEBHOOK_PATH
        target = self.server_url + WEBHOOK_PATH
        self.log("sent", "webhook", url=url)
        started = self.loop.time()
        try:
            response = await self.http.post(target, data=self.params, headers=self._sign(url, self.params))
        except httpx.HTTPError as exc:
            self.r.status = "webhook_unreachable"
            self.r.errors.append(f"webhook {target}: {type(exc).__name__}: {exc}")
            return False
        self.r.webhook_ms = (self.loop.time() - started) * 1000
        self.r.http_status = response.status_code
        self.r.twiml = response.text
        self.log("received", "webhook_response", http_status=response.status_code,
                 content_type=response.headers.get("content-type", ""))
        if response.status_code != 200:
            self.r.status = "refused_webhook"
            return False
        try:
            self.twiml = wire.parse_twiml(response.content)
        except wire.TwimlError as exc:
            self.r.status = "invalid_twiml"
            self.r.errors.append(str(exc))
            return False
        self.r.verbs, self.r.say_texts, self.r.hangup = self.twiml.verbs, self.twiml.says, self.twiml.hangup
        stream = self.twiml.stream
        if stream is None:
            self.r.status = "spoken_only"
            return False
        self.r.stream_url = wire.resolve_twiml_url(stream.url, document_url=url, websocket=True)
        self.r.custom_parameters = dict(stream.parameters)
        if stream.status_callback:
            self.r.status_callback = wire.resolve_twiml_url(stream.status_callback, document_url=url, websocket=False)
        if self.twiml.connect_action:
            self.r.connect_action = wire.resolve_twiml_url(self.twiml.connect_action, document_url=url,
                                                           websocket=False)
        for v in wire.stream_url_warnings(self.r.stream_url, stream.parameters):
            self.violation(v, "twiml")
        return True

    def status_callback(self, event: str, error: str | None = None) -> None:
        """Post a stream status callback in the background; failures are recorded, not raised."""
        if not self.r.status_callback:
            return
        params = {"AccountSid": self.r.account_sid, "CallSid": self.r.call_sid,
                  "StreamSid": self.r.stream_sid or "", "StreamName": self.stream_name or self.r.stream_sid or "",
                  "StreamEvent": event,
                  "Timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")}
        if error:
            params["StreamError"] = error
        method = self.twiml.stream.status_callback_method if self.twiml.stream else "POST"

        async def post() -> None:
            record: dict[str, Any] = {"event": event, "url": self.r.status_callback}
            try:
                response = await self._twilio_request(self.r.status_callback or "", method, params)
                record["http_status"] = response.status_code
            except httpx.HTTPError as exc:
                record["error"] = f"{type(exc).__name__}: {exc}"
            self.r.status_callbacks.append(record)
            self.log("sent", "status_callback", stream_event=event, **{k: v for k, v in record.items()
                                                                       if k in ("http_status", "error")})

        task = asyncio.create_task(post())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def after_stream(self) -> None:
        """The server closed the stream: Twilio requests the Connect action, or runs the next verbs."""
        if not self.r.connect_action:
            self.r.after_stream = {"source": "twiml", "say_texts": list(self.twiml.says_after_connect),
                                   "hangup": self.twiml.hangup_after_connect}
            return
        method = self.twiml.connect_method if self.twiml.connect_method in ("GET", "POST") else "POST"
        record: dict[str, Any] = {"source": "action", "url": self.r.connect_action, "say_texts": [], "hangup": False}
        self.r.after_stream = record
        try:
            response = await self._twilio_request(self.r.connect_action, method,
                                                  {**self.params, "CallStatus": "in-progress"})
        except httpx.HTTPError as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
            return
        record["http_status"] = response.status_code
        record["twiml"] = response.text
        self.log("sent", "connect_action", http_status=response.status_code)
        if response.status_code == 200:
            try:
                doc = wire.parse_twiml(response.content)
            except wire.TwimlError as exc:
                record["error"] = str(exc)
                return
            record["say_texts"], record["hangup"] = doc.says, doc.hangup

    # ----- websocket side

    async def send(self, build: Callable[[int], dict[str, Any]] | dict[str, Any] | str | bytes, *,
                   numbered: bool = True, verbatim: bool = False) -> int | None:
        """Send one message; returns its sequence number (0 when unnumbered), None when the hook dropped it.

        Sequence numbers are taken under the lock so that the wire order matches them.
        """
        assert self.ws is not None
        async with self.send_lock:
            if numbered:
                self.seq += 1
            seq = self.seq if numbered else 0
            out: Any = build(self.seq) if callable(build) else build
            if self.send_hook is not None and not verbatim:
                hooked = self.send_hook(out)
                if inspect.isawaitable(hooked):
                    hooked = await hooked
                if hooked is SKIP:
                    return None
                if hooked is not None:
                    out = hooked
            await self.ws.send(out if isinstance(out, (str, bytes)) else json.dumps(out, separators=(",", ":")))
            return seq

    async def open_stream(self) -> bool:
        assert self.r.stream_url is not None
        url = wire.map_to_server(self.r.stream_url, server_url=self.server_url, public_url=self.public_url,
                                 websocket=True)
        self.r.stream_connect_url = url
        headers: dict[str, str] = {}
        if self.sign_stream and self.validator is not None:
            headers["X-Twilio-Signature"] = self.validator.compute_signature(self.r.stream_url, {})
        headers.update(self.extra_stream_headers)
        self.log("sent", "stream_connect", url=self.r.stream_url, connect_url=url)
        try:
            # No proxy from the environment, no compression: Twilio talks straight to the host.
            self.ws = await connect(url, additional_headers=headers, user_agent_header=STREAM_USER_AGENT,
                                    compression=None, proxy=None, max_size=2**24, open_timeout=10,
                                    close_timeout=2)
        except InvalidStatus as exc:
            self.r.status = "refused_stream"
            self.r.stream_http_status = exc.response.status_code
            self.log("received", "stream_refused", http_status=exc.response.status_code)
            self.status_callback("stream-error", f"31920: stream handshake answered HTTP {exc.response.status_code}")
            return False
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            self.r.status = "stream_unreachable"
            self.r.errors.append(f"stream {url}: {type(exc).__name__}: {exc}")
            self.status_callback("stream-error", f"31901: {type(exc).__name__}")
            return False
        self.r.stream_http_status = self.ws.response.status_code if self.ws.response else 101
        return True

    async def run_stream(self) -> None:
        assert self.ws is not None and self.twiml.stream is not None
        self.r.stream_sid = wire.new_sid("MZ")
        self.stream_name = self.twiml.stream.name
        reader = asyncio.create_task(self.reader())
        try:
            await self.send(wire.connected_message(), numbered=False)
            self.log("sent", "connected")
            seq = await self.send(lambda seq: wire.start_message(
                seq, stream_sid=self.r.stream_sid or "", account_sid=self.r.account_sid, call_sid=self.r.call_sid,
                custom_parameters=self.r.custom_parameters))
            origin = self.loop.time()
            self._rebase(origin)
            self.t0 = origin
            self.log("sent", "start", seq=seq, streamSid=self.r.stream_sid)
            self.status_callback("stream-started")
            await self.pump()
        except ConnectionClosed:
            pass  # the server went away mid-send; the reader records how
        finally:
            if self.t0 is None:
                self._rebase(self.origin)
                self.t0 = self.origin
            self.pump_end = (self.now(), self.loop.time())
            if self.server_closed.is_set() or self.ws.state is not State.OPEN:
                self.playback.finish("server_close")
            else:
                self.playback.finish("hangup")
                await self.hang_up()
            await asyncio.wait({reader}, timeout=5)
            if not reader.done():
                reader.cancel()
            if self.r.closed_by is None:
                self._record_server_close()
        self.r.duration_s = self.chunk * FRAME_MS / 1000
        self.status_callback("stream-stopped")
        if self.r.closed_by == "server":
            await self.after_stream()

    async def hang_up(self) -> None:
        assert self.ws is not None
        self.caller_closing = True
        try:
            seq = await self.send(lambda seq: wire.stop_message(seq, stream_sid=self.r.stream_sid or "",
                                                                account_sid=self.r.account_sid,
                                                                call_sid=self.r.call_sid))
            self.log("sent", "stop", seq=seq, media_frames=self.chunk)
            await self.ws.close(1000)
        except ConnectionClosed:
            self.caller_closing = False  # the server closed first: it is the one who ended the stream
            return
        self.r.closed_by = "caller"
        self.r.close_code, self.r.close_reason = 1000, ""
        self.log("sent", "close", code=1000)

    def _record_server_close(self) -> None:
        assert self.ws is not None
        received = getattr(self.ws.protocol, "close_rcvd", None)
        self.r.closed_by = "server"
        self.r.close_code = received.code if received else 1006  # 1006: the TCP connection just dropped
        self.r.close_reason = received.reason if received else ""
        self.log("received", "close", code=self.r.close_code, reason=self.r.close_reason)

    async def reader(self) -> None:
        assert self.ws is not None
        try:
            async for frame in self.ws:
                try:
                    await self.on_frame(frame)
                except ConnectionClosed:
                    raise
                except Exception as exc:  # one bad frame must not stop the call; keep the trace
                    self.r.errors.append(f"handling a server frame: {type(exc).__name__}: {exc}")
        except ConnectionClosed:
            pass
        finally:
            if not self.caller_closing and self.r.closed_by is None:
                self._record_server_close()
                self.server_closed.set()

    async def on_frame(self, frame: str | bytes) -> None:
        checked = wire.check_server_frame(frame, stream_sid=self.r.stream_sid if self.t0 is not None else None)
        for v in checked.violations:
            self.violation(v, checked.event)
        message = checked.message
        if message is None:
            self.log("received", checked.event or "invalid", dropped=True,
                     violations=[v.kind for v in checked.violations],
                     bytes=len(frame) if isinstance(frame, bytes) else len(frame.encode()))
            return
        flags = {"violations": [v.kind for v in checked.violations]} if checked.violations else {}
        if message.event == "media":
            refused = self.playback.append(message.payload)
            if refused:
                if self.playback.discarded_bytes == refused:  # Twilio logs it once per stream
                    self.violation(Violation("31931", "media_discarded",
                                             "over ~10 minutes of audio buffered; media dropped"), "media")
                flags["discarded_bytes"] = refused
            self.log("received", "media", bytes=len(message.payload),
                     backlog_ms=self.playback.backlog / BYTES_PER_MS, **flags)
        elif message.event == "mark":
            self.log("received", "mark", name=message.name, **flags)
            if self.playback.add_mark(message.name):
                await self.echo_mark(message.name, played=True)
        else:  # clear
            record = self.playback.clear(round(self.now(), 4))
            self.log("received", "clear", burst=record.burst, played_ms=record.played_ms,
                     flushed_ms=record.flushed_ms, marks=record.marks, **flags)
            for name in record.marks:
                await self.echo_mark(name, played=False)

    async def echo_mark(self, name: str, *, played: bool) -> None:
        seq = await self.send(lambda seq: wire.mark_message(seq, stream_sid=self.r.stream_sid or "", name=name))
        self.r.marks_echoed.append(MarkEcho(name=name, t=round(self.now(), 4), played=played))
        self.log("sent", "mark", name=name, seq=seq, played=played, **({} if seq else {"skipped": True}))

    # ----- the 20 ms pump

    async def pump(self) -> None:
        assert self.t0 is not None
        script = self.script
        hangup_ms = round(script.hangup_after * 1000)
        dtmf = deque(sorted((round(t * 1000), d) for t, d in script.dtmf))
        raw = deque(sorted(((round(t * 1000), m) for t, m in script.raw_messages), key=lambda x: x[0]))
        n = 0
        while True:
            tick_ms = n * FRAME_MS
            if self.realtime:
                # Absolute deadlines on the loop clock: a late wake-up never shifts later ticks.
                deadline = self.t0 + tick_ms / 1000
                # sleep(0) when behind still lets the reader in while catching up.
                await asyncio.sleep(max(0.0, deadline - self.loop.time()))
                self.r.max_tick_lag_ms = max(self.r.max_tick_lag_ms, (self.loop.time() - deadline) * 1000)
            else:
                await asyncio.sleep(0)
            if self.server_closed.is_set():
                return
            self.vt_ms = tick_ms
            if tick_ms >= hangup_ms or self._done(tick_ms, dtmf, raw):
                return
            for name in self.playback.due_marks():
                await self.echo_mark(name, played=True)
            self.played += self.playback.play(tick_ms)
            while dtmf and dtmf[0][0] <= tick_ms:
                digit = dtmf.popleft()[1]
                seq = await self.send(lambda seq: wire.dtmf_message(seq, stream_sid=self.r.stream_sid or "",
                                                                    digit=digit))
                self.log("sent", "dtmf", digit=digit, seq=seq)
            while raw and raw[0][0] <= tick_ms:
                message = raw.popleft()[1]
                await self.send(message, numbered=False, verbatim=True)
                self.log("sent", "raw", binary=isinstance(message, bytes), bytes=len(message))
            frame = self._caller_frame(tick_ms)
            self.sent += frame
            self.chunk += 1
            chunk = self.chunk
            await self.send(lambda seq: wire.media_message(seq, stream_sid=self.r.stream_sid or "", chunk=chunk,
                                                           timestamp_ms=tick_ms, payload=frame))
            self.r.media_frames_sent = self.chunk
            n += 1

    def _done(self, tick_ms: int, dtmf: deque, raw: deque) -> bool:
        after = self.script.hangup_when_done_after_s
        if after is None or dtmf or raw or self.speaking or self.next_utt < len(self.audio):
            return False
        if not self.playback.idle:
            return False
        quiet_since = max(self.prev_end_ms or 0, self.playback.last_audio_end_ms or 0)
        return tick_ms - quiet_since >= after * 1000

    def _ready(self, utt: Utterance, tick_ms: int) -> bool:
        if utt.at is not None:
            return tick_ms >= round(utt.at * 1000)
        since = self.prev_start_ms if self.prev_start_ms is not None else -1
        answer = next((b for b in self.playback.bursts if b.start_t * 1000 >= since), None)
        if answer is None:
            return False
        if utt.after_answer_starts_ms is not None:
            return tick_ms >= answer.start_t * 1000 + utt.after_answer_starts_ms
        if not self.playback.idle or self.playback.last_audio_end_ms is None:
            return False
        quiet_since = max(self.prev_end_ms or 0, self.playback.last_audio_end_ms)
        return tick_ms - quiet_since >= self.script.silence_before_reply_ms

    def _caller_frame(self, tick_ms: int) -> bytes:
        if self.speaking is None and self.next_utt < len(self.audio):
            utt = self.script.utterances[self.next_utt]
            if self._ready(utt, tick_ms):
                self.speaking = (self.next_utt, 0, tick_ms)
                self.next_utt += 1
                self.prev_start_ms = tick_ms
                burst = self.playback.current
                duration_ms = len(self.audio[self.speaking[0]]) / BYTES_PER_MS
                voice_start, voice_end = self.speech[self.speaking[0]] or (0.0, duration_ms)
                self.r.utterances.append(UtteranceRecord(
                    index=len(self.r.utterances), label=utt.label, wav=str(utt.wav), start_t=tick_ms / 1000,
                    end_t=(tick_ms + duration_ms) / 1000, duration_ms=duration_ms,
                    barge_in=utt.after_answer_starts_ms is not None, over_playback=not self.playback.idle,
                    speech_start_t=(tick_ms + voice_start) / 1000, speech_end_t=(tick_ms + voice_end) / 1000,
                    burst=burst.index if burst else None))
                self.log("sent", "media", utterance=utt.label, boundary="start", chunk=str(self.chunk + 1),
                         timestamp=str(tick_ms))
        if self.speaking is None:
            if self.script.comfort_noise_dbfs is not None:
                return wire.comfort_noise_frame(self.rng, self.script.comfort_noise_dbfs)
            return SILENCE_FRAME
        index, offset, start_ms = self.speaking
        audio = self.audio[index]
        frame = audio[offset:offset + FRAME_BYTES]
        offset += len(frame)
        if offset >= len(audio):
            self.speaking = None
            end_ms = start_ms + len(audio) / BYTES_PER_MS
            self.prev_end_ms = end_ms
            self.log("sent", "media", utterance=self.script.utterances[index].label, boundary="end",
                     chunk=str(self.chunk + 1), timestamp=str(tick_ms), audio_end_t=end_ms / 1000)
        else:
            self.speaking = (index, offset, start_ms)
        return frame + SILENCE_FRAME[len(frame):]

    # ----- wrap-up

    def finish(self) -> CallResult:
        r = self.r
        if self.t0 is None:
            self._rebase(self.origin)
        r.bursts = self.playback.bursts
        r.clears = self.playback.clears
        r.played_audio = bytes(self.played)
        r.sent_audio = bytes(self.sent)
        if self.violation_count > len(r.violations):
            r.errors.append(f"{self.violation_count - len(r.violations)} further violations not recorded")
        for u, following in zip(r.utterances, [*r.utterances[1:], None]):
            until = following.start_t if following else float("inf")
            answer = next((b for b in r.bursts if u.start_t < b.start_t < until), None)
            u.answer_latency_ms = round((answer.start_t - u.speech_end_t) * 1000, 1) if answer else None
            cleared = next((c for c in r.clears if u.start_t <= c.t < until), None)
            u.clear_after_ms = round((cleared.t - u.start_t) * 1000, 1) if cleared else None
        return r


async def place_call(server_url: str, *, script: CallScript, public_url: str | None = None,
                     auth_token: str | None = None, call_sid: str | None = None,
                     from_number: str = "+33612345678", to_number: str = "+33198765432", realtime: bool = True,
                     sign_stream: bool = True, extra_stream_headers: dict[str, str] | None = None,
                     send_hook: SendHook | None = None, account_sid: str | None = None) -> CallResult:
    """Call `server_url` as Twilio would and return what happened. Never raises for server misbehaviour.

    `public_url` is the base URL Twilio believes it is calling (what gets signed); requests
    still go to `server_url`, like through a tunnel. `realtime=False` runs the media clock as
    fast as the event loop allows (one loop turn per 20 ms tick): the exchange is complete but
    its timings mean nothing. `send_hook(message)` sees every protocol message before it is sent
    and may return a replacement (dict, or raw str/bytes), SKIP to drop it, or None to keep it.
    """
    call = _Call(server_url, script=script, public_url=public_url, auth_token=auth_token, call_sid=call_sid,
                 account_sid=account_sid, from_number=from_number, to_number=to_number, realtime=realtime,
                 sign_stream=sign_stream, extra_stream_headers=extra_stream_headers, send_hook=send_hook)
    # Decoding and resampling WAVs is CPU work: keep it off the event loop.
    call.audio = await asyncio.gather(*(asyncio.to_thread(wire.wav_to_ulaw, u.wav) for u in script.utterances))
    call.speech = await asyncio.gather(*(asyncio.to_thread(wire.speech_bounds, a) for a in call.audio))
    async with httpx.AsyncClient(timeout=15, trust_env=False, headers={"User-Agent": WEBHOOK_USER_AGENT}) as http:
        call.http = http
        if await call.webhook() and await call.open_stream():
            call.r.status = "completed"
            await call.run_stream()
        if call.background:
            await asyncio.wait(set(call.background), timeout=10)
    return call.finish()


# --------------------------------------------------------------------------- summary and CLI


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def _summary(r: CallResult) -> str:
    lines = [f"Call {r.call_sid} → {r.server_url}: {r.status}"]
    if r.http_status is None:
        lines.append("Webhook: no answer (" + "; ".join(r.errors) + ")")
        return "\n".join(lines)
    lines.append(f"Webhook: HTTP {r.http_status} in {_ms(r.webhook_ms)}; TwiML verbs: {', '.join(r.verbs) or 'none'}")
    for text in r.say_texts:
        lines.append(f'  <Say>: "{text}"')
    if r.stream_url:
        lines.append(f"Media stream: {r.stream_url} → {r.stream_connect_url} (HTTP {r.stream_http_status}), "
                     f"{len(r.custom_parameters)} custom parameter(s)")
    if r.status in ("refused_stream", "stream_unreachable"):
        lines.extend(f"  error: {e}" for e in r.errors)
        return "\n".join(lines)
    if r.status != "completed":
        lines.extend(f"  error: {e}" for e in r.errors)
        return "\n".join(lines)
    if r.bursts:
        first = r.bursts[0]
        lines.append(f"Greeting heard after {_ms(r.greeting_latency_ms)} ({first.played_ms / 1000:.2f} s of audio)")
    else:
        lines.append("OCTI never spoke")
    for u in r.utterances:
        head = f'Utterance "{u.label}": {u.start_t:.2f}–{u.end_t:.2f} s'
        if u.barge_in:
            head += " (barge-in" + (f" over burst {u.burst}" if u.burst is not None else ", nothing playing") + ")"
        tail = [f"first answer audio {_ms(u.answer_latency_ms)} after the end of speech"]
        if u.clear_after_ms is not None:
            tail.append(f"OCTI cleared its audio {_ms(u.clear_after_ms)} after the caller started")
        lines.append(head + " → " + "; ".join(tail))
    for c in r.clears:
        lines.append(f"Clear at {c.t:.2f} s: {c.played_ms:.0f} ms of burst {c.burst} played, "
                     f"{c.flushed_ms:.0f} ms flushed, {len(c.marks)} mark(s) released")
    underruns = sum(b.underruns for b in r.bursts)
    lines.append(f"OCTI audio: {len(r.bursts)} burst(s), {sum(b.played_ms for b in r.bursts) / 1000:.2f} s heard, "
                 f"{underruns} underrun(s); {len(r.marks_echoed)} mark(s) echoed")
    if r.violations:
        lines.append(f"Violations: {len(r.violations)}")
        lines.extend(f"  [{v['code']}] {v['kind']}: {v['detail']}" for v in r.violations[:10])
    else:
        lines.append("Violations: none")
    if r.closed_by == "server":
        lines.append(f"Ended: the server closed the stream (code {r.close_code}) after {r.duration_s:.1f} s")
        if r.after_stream:
            after = r.after_stream
            what = [f'<Say> "{t}"' for t in after.get("say_texts", [])] + (["<Hangup/>"] if after.get("hangup") else [])
            via = f"action {after.get('url')} (HTTP {after.get('http_status')})" if after["source"] == "action" \
                else "the verbs after <Connect>"
            lines.append(f"  then Twilio ran {via}: {', '.join(what) or 'nothing'}")
    else:
        lines.append(f"Ended: the caller hung up after {r.duration_s:.1f} s")
    for cb in r.status_callbacks:
        lines.append(f"Status callback {cb['event']}: " + (f"HTTP {cb['http_status']}" if "http_status" in cb
                                                           else cb.get("error", "")))
    lines.extend(f"Error: {e}" for e in r.errors)
    if r.max_tick_lag_ms > 60:
        lines.append(f"Note: the simulator's own pacing ran up to {r.max_tick_lag_ms:.0f} ms late")
    return "\n".join(lines)


def _dtmf(value: str) -> tuple[float, str]:
    seconds, _, digit = value.partition(":")
    if not digit or len(digit) != 1 or digit not in "0123456789*#":
        raise ValueError(f"expected SECONDS:DIGIT, got {value!r}")
    return float(seconds), digit


WAV_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
OUTPUT_FILE = click.Path(dir_okay=False, path_type=Path)


@click.command(name="call", context_settings=HELP_OPTIONS)
@click.option("--url", default="http://127.0.0.1:8000", help="the server's real address")
@click.option("--public-url", help="the public base URL Twilio would use (what gets signed); default --url")
@click.option("--auth-token", envvar="TWILIO_AUTH_TOKEN",
              help="Twilio auth token to sign with (default $TWILIO_AUTH_TOKEN; none: unsigned)")
@click.option("--wav", "wavs", multiple=True, type=WAV_FILE,
              help="a caller utterance, spoken once OCTI falls silent; repeat for more turns")
@click.option("--barge-in-wav", type=WAV_FILE, help="an utterance spoken over OCTI's next answer")
@click.option("--barge-in-after-ms", type=float, default=1000.0,
              help="how far into OCTI's answer the barge-in starts (default 1000)")
@click.option("--dtmf", multiple=True, type=ParsedBy(_dtmf, "dtmf"), metavar="SECONDS:DIGIT")
@click.option("--duration", type=float, default=60.0, help="hang up after this many seconds (default 60)")
@click.option("--hangup-when-done", type=float, metavar="SECONDS",
              help="hang up this long after the last utterance once OCTI is silent")
@click.option("--out-wav", type=OUTPUT_FILE, help="write what the caller heard (8 kHz WAV)")
@click.option("--stereo", is_flag=True, help="--out-wav with the caller left and OCTI right")
@click.option("--timeline", type=OUTPUT_FILE, help="write the full call record as JSON")
@click.option("--from", "from_number", default="+33612345678")
@click.option("--to", "to_number", default="+33198765432")
def cli(url: str, public_url: str | None, auth_token: str | None, wavs: tuple[Path, ...], barge_in_wav: Path | None,
        barge_in_after_ms: float, dtmf: tuple[tuple[float, str], ...], duration: float,
        hangup_when_done: float | None, out_wav: Path | None, stereo: bool, timeline: Path | None,
        from_number: str, to_number: str) -> None:
    """Call the OCTI phone line as Twilio would, without a phone."""
    utterances = [Utterance(wav) for wav in wavs]
    if barge_in_wav:
        utterances.append(Utterance(barge_in_wav, after_answer_starts_ms=barge_in_after_ms))
    script = CallScript(utterances=utterances, dtmf=list(dtmf), hangup_after=duration,
                        hangup_when_done_after_s=hangup_when_done)
    try:
        result = run_coroutine(place_call(url, script=script, public_url=public_url, auth_token=auth_token or None,
                                          from_number=from_number, to_number=to_number))
    except (wave.Error, EOFError) as exc:
        click.echo(f"error: unreadable WAV: {exc}", err=True)
        sys.exit(2)
    click.echo(result.summary())
    if out_wav:
        result.write_wav(out_wav, stereo=stereo)
        click.echo(f"Heard audio written to {out_wav}")
    if timeline:
        result.write_timeline(timeline)
        click.echo(f"Timeline written to {timeline}")
    sys.exit(0 if result.status in ("completed", "spoken_only") else 1)


if __name__ == "__main__":
    cli()
