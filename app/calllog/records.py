"""What the phone line reports about a call, as it happens.

The call session emits these records; a writer task stores them without ever blocking
the audio path. They are plain data (JSON-serialisable through `to_dict`) so they can be
spooled to disk while the database is away and replayed when it returns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Outcome = Literal["caller_hung_up", "agent_ended", "transferred", "error", "timeout"]


@dataclass(frozen=True, slots=True)
class CallStarted:
    call_sid: str
    stream_sid: str
    channel: str                 # "twilio" (later "browser")
    caller_masked: str           # for display, e.g. "+336••••••78"
    caller_hash: str             # salted hash: groups the calls of one number without storing it
    caller_number: str | None    # only when STORE_CALLER_NUMBER=true
    called: str
    started_at: datetime         # UTC, when the stream started (the call timeline's zero)
    codec: str                   # AUDIO_CODEC
    model: str
    rag_mode: str
    recorded: bool = False
    transcription_model: str = ""  # OPENAI_TRANSCRIBE_MODEL ("" in records written before it was kept)
    kind: Literal["call_started"] = "call_started"


@dataclass(frozen=True, slots=True)
class PassageUsed:
    id: str
    source: str
    title: str
    score: float


@dataclass(frozen=True, slots=True)
class TurnRecorded:
    call_sid: str
    index: int                   # order in the call, from 0
    role: Literal["caller", "assistant"]
    text: str                    # the assistant's is cut to what was heard when interrupted
    start_ms: float | None       # offsets on the call timeline (ms since the stream started)
    end_ms: float | None
    interrupted: bool = False
    heard_ms: float | None = None
    passages: tuple[PassageUsed, ...] = ()
    retrieval_ms: float | None = None
    retrieval_outcome: str | None = None     # ok, empty, timeout, error, cancelled, unavailable
    # Latencies of an assistant turn: caller speech end → first model audio → first frame sent.
    speech_end_to_model_audio_ms: float | None = None
    model_audio_to_caller_ms: float | None = None
    kind: Literal["turn"] = "turn"


@dataclass(frozen=True, slots=True)
class CallEvent:
    call_sid: str
    at: datetime
    type: str                    # error, upstream_failure, dtmf, signature_refused, stream_error, …
    detail: str = ""
    kind: Literal["event"] = "event"

    @classmethod
    def now(cls, call_sid: str, type_: str, detail: str = "") -> CallEvent:
        """An event that happens as it is recorded (outside a call's journal)."""
        return cls(call_sid, datetime.now(UTC), type_, detail)


@dataclass(frozen=True, slots=True)
class CallEnded:
    call_sid: str
    ended_at: datetime
    outcome: Outcome
    answered_at: datetime | None
    duration_s: float
    input_tokens: int = 0
    output_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    cached_tokens: int = 0
    # USD, the realtime model and the transcription together; None: unknown (a model without a
    # price in MODEL_PRICES), never $0. Older records always carry a number.
    cost_usd: float | None = None
    turns: int = 0
    barge_ins: int = 0
    recording_path: str | None = None
    # The transcription of the caller (a model of its own, billed by the minute or by the
    # token) and its part of cost_usd (None: unknown). Absent from older records: 0 and None.
    transcription_seconds: float = 0.0
    transcription_input_tokens: int = 0
    transcription_input_audio_tokens: int = 0
    transcription_output_tokens: int = 0
    transcription_cost_usd: float | None = None
    # What OCTI advised, summarised after the call (with the fiches it came from); None: none.
    recap: str | None = None
    kind: Literal["call_ended"] = "call_ended"


@dataclass(frozen=True, slots=True)
class CallBackNumber:
    """The caller asked to be called back (a voicemail): the number a call-back dials, kept
    even without STORE_CALLER_NUMBER when KEEP_CALL_BACK_NUMBERS is on."""

    call_sid: str
    number: str
    at: datetime
    kind: Literal["call_back_number"] = "call_back_number"


CallRecord = CallStarted | TurnRecorded | CallEvent | CallEnded | CallBackNumber


def to_dict(record: CallRecord) -> dict[str, Any]:
    data = dataclasses.asdict(record)
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = value.isoformat()
    return data


_KINDS = {cls.__dataclass_fields__["kind"].default: cls
          for cls in (CallStarted, TurnRecorded, CallEvent, CallEnded, CallBackNumber)}


def from_dict(data: dict[str, Any]) -> CallRecord:
    cls = _KINDS[data["kind"]]
    values = dict(data)
    for name, spec in cls.__dataclass_fields__.items():
        if spec.type in ("datetime", "datetime | None") and isinstance(values.get(name), str):
            values[name] = datetime.fromisoformat(values[name])
    if cls is TurnRecorded:
        values["passages"] = tuple(PassageUsed(**p) for p in values.get("passages", ()))
    return cls(**values)
