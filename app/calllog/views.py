"""What reviewers read: the call list and one call in full, whatever database holds them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Protocol

from app.calllog.records import CallEvent, TurnRecorded

# Flags shown in the list, computed by the store from a call's turns and events.
FLAG_INTERRUPTED = "interrupted"      # at least one barge-in
FLAG_NO_KNOWLEDGE = "no_knowledge"    # a caller turn whose retrieval found nothing or failed
FLAG_ERROR = "error"                  # the call ended on an error, or error events were logged


@dataclass(frozen=True, slots=True)
class CallSummary:
    id: int
    call_sid: str
    started_at: datetime
    caller_masked: str
    duration_s: float | None          # None while the call is still going
    turns: int
    barge_ins: int
    outcome: str | None
    cost_usd: float | None            # None: unknown (a model without a price), never shown as $0
    flags: tuple[str, ...] = ()
    recorded: bool = False
    channel: str = ""                 # "twilio" (a phone call) or "web" (a browser conversation)


@dataclass(frozen=True, slots=True)
class CallDetail:
    summary: CallSummary
    stream_sid: str
    called: str
    caller_hash: str
    channel: str
    codec: str
    model: str
    rag_mode: str
    answered_at: datetime | None
    ended_at: datetime | None
    input_tokens: int
    output_tokens: int
    input_audio_tokens: int
    output_audio_tokens: int
    cached_tokens: int
    turns: list[TurnRecorded] = field(default_factory=list)
    events: list[CallEvent] = field(default_factory=list)
    # The caller's transcription: its model ("" for calls logged before it was kept), what it
    # was billed on, and its part of cost_usd (None: unknown, or never priced).
    transcription_model: str = ""
    transcription_seconds: float = 0.0
    transcription_input_tokens: int = 0
    transcription_input_audio_tokens: int = 0
    transcription_output_tokens: int = 0
    transcription_cost_usd: float | None = None
    recap: str | None = None                  # OCTI's advice, summarised after the call
    caller_number: str | None = None          # only with STORE_CALLER_NUMBER=true: what a call-back dials

    @property
    def transcribed(self) -> bool:
        """Whether the call has a transcription part to show: it has ended (a call going on
        has no cost yet), and its transcription model or usage is known (calls logged before
        transcription was priced know neither)."""
        return self.ended_at is not None and bool(
            self.transcription_model or self.transcription_seconds or self.transcription_input_tokens
            or self.transcription_output_tokens)


@dataclass(frozen=True, slots=True)
class CallQuery:
    text: str | None = None           # searched across transcripts (caller and assistant)
    outcome: str | None = None
    date_from: date | None = None     # inclusive, on started_at (UTC)
    date_to: date | None = None       # inclusive
    page: int = 1
    per_page: int = 25


class CallLogReader(Protocol):
    async def list_calls(self, query: CallQuery) -> tuple[list[CallSummary], int]:
        """One page of calls, newest first, and the total number matching the query."""
        ...

    async def get_call(self, call_id: int) -> CallDetail | None: ...

    async def recording_path(self, call_id: int) -> Path | None:
        """The call's stereo WAV when it was recorded and the file still exists."""
        ...
