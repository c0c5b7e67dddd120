"""What one simulated call observed: the bursts of OCTI audio heard, the clears, the marks echoed,
the caller's utterances, and the whole `CallResult` with its timeline."""

from __future__ import annotations

import json
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.simulators import twilio_wire as wire
from app.simulators.twilio_caller.summary import describe
from app.simulators.twilio_wire import BYTES_PER_MS


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
    noise: bool = False  # a noise burst, not speech
    speech_start_t: float = 0.0  # where the voice starts and ends inside the recording
    speech_end_t: float = 0.0  # (leading/trailing near-silence excluded)
    burst: int | None = None  # the burst talked over, if any
    # End of the caller's speech → first OCTI burst that started after this utterance began
    # (and before the next one); negative when OCTI started before the caller had finished.
    answer_latency_ms: float | None = None
    # Utterance start → the server's first clear before the next utterance (barge-in reaction).
    clear_after_ms: float | None = None


@dataclass(slots=True)
class StreamSegment:
    """One <Connect><Stream> of the call, from its upgrade to its end."""

    stream_url: str
    stream_sid: str | None
    ended_by: str  # "caller" (hung up) | "server" (closed it) | "rest_hang_up" | "rest_redirect" | "not_opened"
    duration_s: float = 0.0
    # The loop time (time.monotonic()) the stream started: puts what happened elsewhere, e.g. a
    # double's events, on the call's timeline.
    started_at: float | None = None
    utterances: list[str] = field(default_factory=list)  # labels of what the caller said in it
    heard_ms: float = 0.0  # OCTI audio played to the caller


@dataclass(slots=True)
class DialRecord:
    """One <Dial>: the number rung, what its whisper told the advisor, and how it ended."""

    number: str
    caller_id: str | None
    dial_call_sid: str
    status: str = ""  # DialCallStatus: "completed" | "no-answer" | "busy" | "canceled" | "failed"
    duration_s: int = 0
    whisper_url: str | None = None
    whisper_texts: list[str] = field(default_factory=list)  # the <Say>s the advisor heard before connecting
    action_url: str | None = None
    action_http_status: int | None = None


@dataclass(slots=True)
class RecordingRecord:
    """A voicemail the caller left at a <Record>: which utterance, and where Twilio said it is."""

    recording_sid: str
    url: str
    duration_s: int
    utterance: str
    action_url: str | None = None
    action_http_status: int | None = None


@dataclass(slots=True)
class TwimlRun:
    """A TwiML document the call ran, and where it came from."""

    source: str  # "webhook" | "rest_twiml" | "rest_url" | "dial_action" | "connect_action"
    url: str | None
    verbs: list[str] = field(default_factory=list)
    say_texts: list[str] = field(default_factory=list)
    hangup: bool = False
    error: str | None = None


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
    tunnels: dict[str, str] = field(default_factory=dict)  # map_to_server's: other public URLs → servers
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
    after_stream: dict[str, Any] | None = None  # what Twilio ran after the server closed the first stream
    # Legs of a call that Twilio's REST API acted on (see twilio_caller/live.py): every media
    # stream, every <Dial>, the TwiML documents run, and whether a REST update hung it up.
    streams: list[StreamSegment] = field(default_factory=list)
    dials: list[DialRecord] = field(default_factory=list)
    recordings: list[RecordingRecord] = field(default_factory=list)
    documents: list[TwimlRun] = field(default_factory=list)
    hung_up_by_rest: bool = False
    direction: str = "inbound"  # "outbound-api" for a call placed through the REST API
    errors: list[str] = field(default_factory=list)
    played_audio: bytes = b""  # μ-law 8 kHz heard by the caller, one byte per sample of the stream
    sent_audio: bytes = b""  # μ-law 8 kHz the caller sent, same length

    @property
    def greeting_latency_ms(self) -> float | None:
        """Stream start → first OCTI audio heard."""
        return self.bursts[0].start_t * 1000 if self.bursts else None

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
        return describe(self)
