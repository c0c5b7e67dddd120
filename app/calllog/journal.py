"""The call's journal: what the session sees, turned into call-log records.

The session tells the journal about turns, events and the end of the call; the journal
builds the records (offsets on the call timeline, latencies, usage and cost, the recording)
and hands them to `submit`, which must not block (the per-process writer's queue).

A call costs what its realtime model used plus what the transcription of the caller used
(a model of its own); the cost is unknown (None) when either has usage MODEL_PRICES cannot
price.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app.calllog.cost import (
    call_cost,
    estimate_cost,
    estimate_live_cost,
    estimate_transcription_cost,
    sum_live_usage,
    sum_transcription_usage,
    sum_usage,
)
from app.calllog.records import CallEnded, CallEvent, CallRecord, CallStarted, PassageUsed, TurnRecorded
from app.calllog.recording import StereoRecorder
from app.config import kept_secret

log = logging.getLogger(__name__)


def caller_salt(secret: str | None, data_dir: Path) -> bytes:
    """The salt of caller hashes: configured, else kept in DATA_DIR so grouping survives restarts."""
    return secret.encode() if secret else kept_secret(data_dir, "caller-hash-salt")


def caller_hash(number: str, salt: bytes) -> str:
    """Groups the calls of one number without storing it."""
    digits = "".join(ch for ch in number if ch.isdigit() or ch == "+")
    return hmac.new(salt, digits.encode(), hashlib.sha256).hexdigest()[:32]


def heard_words(text: str, heard_ms: float, generated_ms: float) -> str:
    """The words of an interrupted answer the caller heard, in proportion of its audio (speech
    is about even-paced), cut at a word."""
    if generated_ms <= 0 or heard_ms >= generated_ms:
        return text
    cut = int(len(text) * max(heard_ms, 0) / generated_ms)
    space = text.rfind(" ", 0, cut + 1)
    return (text[:space] if space > 0 else text[:cut]).rstrip()


def heard_text(text: str, heard_ms: float, generated_ms: float) -> str:
    """`heard_words`, marked « … » where the answer was cut."""
    words = heard_words(text, heard_ms, generated_ms)
    return words if words == text else f"{words} …"


class CallJournal:
    def __init__(
        self,
        call_sid: str,
        submit: Callable[[CallRecord], None],
        *,
        model: str,
        prices: dict[str, dict[str, float]],
        recorder: StereoRecorder | None = None,
        recording_path: Path | None = None,
        transcription_model: str = "",
    ) -> None:
        self.call_sid = call_sid
        self._submit = submit
        self._model = model
        self._transcription_model = transcription_model
        self._prices = prices
        self.recorder = recorder
        self._recording_path = recording_path
        self.started_at = datetime.now(UTC)

    def started(self, **fields: Any) -> None:
        self.started_at = fields.setdefault("started_at", datetime.now(UTC))
        fields.setdefault("transcription_model", self._transcription_model)
        self._submit(CallStarted(call_sid=self.call_sid, recorded=self.recorder is not None, **fields))

    def turn(self, index: int, role: str, text: str, *, start_ms: float | None, end_ms: float | None,
             interrupted: bool = False, heard_ms: float | None = None, passages: tuple[PassageUsed, ...] = (),
             retrieval_ms: float | None = None, retrieval_outcome: str | None = None,
             speech_end_to_model_audio_ms: float | None = None,
             model_audio_to_caller_ms: float | None = None) -> None:
        self._submit(TurnRecorded(
            call_sid=self.call_sid, index=index, role=role, text=text, start_ms=start_ms, end_ms=end_ms,
            interrupted=interrupted, heard_ms=heard_ms, passages=passages, retrieval_ms=retrieval_ms,
            retrieval_outcome=retrieval_outcome, speech_end_to_model_audio_ms=speech_end_to_model_audio_ms,
            model_audio_to_caller_ms=model_audio_to_caller_ms,
        ))

    def event(self, type_: str, detail: str = "", at_ms: float | None = None) -> None:
        at = self.started_at + timedelta(milliseconds=at_ms) if at_ms is not None else datetime.now(UTC)
        self._submit(CallEvent(call_sid=self.call_sid, at=at, type=type_, detail=detail))

    async def ended(self, outcome: str, usages: list[dict[str, Any]], *, turns: int, barge_ins: int,
                    transcription_usages: Sequence[dict[str, Any] | None] = (), recap: str | None = None) -> None:
        """The call's end: `usages` are the `usage` objects of the model's `response.done`
        events, `transcription_usages` those of the caller's transcription events
        (`conversation.item.input_audio_transcription.completed`)."""
        recording = None
        if self.recorder is not None and self._recording_path is not None:
            try:
                recording = str(await self.recorder.write(self._recording_path))
            except OSError as exc:
                log.error("could not write the call recording: %s", exc)
                self.event("error", f"recording not written: {exc}")
        totals = sum_usage(usages)
        heard = sum_transcription_usage(transcription_usages)
        transcription_cost = estimate_transcription_cost(self._transcription_model, heard, self._prices)
        ended_at = datetime.now(UTC)
        self._submit(CallEnded(
            call_sid=self.call_sid, ended_at=ended_at, outcome=outcome, answered_at=self.started_at,
            duration_s=(ended_at - self.started_at).total_seconds(),
            input_tokens=totals.get("input_tokens", 0), output_tokens=totals.get("output_tokens", 0),
            input_audio_tokens=totals.get("input_audio_tokens", 0),
            output_audio_tokens=totals.get("output_audio_tokens", 0),
            cached_tokens=totals.get("cached_tokens", 0),
            cost_usd=call_cost(call_cost(estimate_cost(self._model, totals, self._prices),
                                         estimate_live_cost(self._model, sum_live_usage(usages), self._prices)),
                               transcription_cost),
            turns=turns, barge_ins=barge_ins, recording_path=recording,
            transcription_seconds=heard["seconds"], transcription_input_tokens=heard["input_tokens"],
            transcription_input_audio_tokens=heard["input_audio_tokens"],
            transcription_output_tokens=heard["output_tokens"], transcription_cost_usd=transcription_cost,
            recap=recap,
        ))
