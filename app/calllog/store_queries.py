"""The call-log store's read path, for the review pages and `octi calls`: one page of calls
and one call in full. Flags are computed at read time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.calllog.models import ERROR_EVENT_TYPES, NO_KNOWLEDGE_OUTCOMES, CallRow, EventRow, PassageRow, TurnRow, fold
from app.calllog.records import CallEvent, PassageUsed, TurnRecorded
from app.calllog.views import FLAG_ERROR, FLAG_INTERRUPTED, FLAG_NO_KNOWLEDGE, CallDetail, CallQuery, CallSummary


# The ids are the database's INTEGER: 32 bits on PostgreSQL, which fails a query past that
# rather than finding nothing; SQLite's are wider but come from the same count.
MAX_CALL_ID = 2**31 - 1
# The days a filter may name (the review and `octi calls` refuse others, with a message): the
# calls are all within these years, and far dates overflow date arithmetic (9999-12-31 has no
# next day; the store itself copes with that one).
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2999, 12, 31)


def call_number(text: str) -> int | None:
    """The call number `text` names (a URL, a form, `octi calls show`), or None for no call:
    ASCII digits only (str.isdigit accepts "²", which int refuses), within MAX_CALL_ID."""
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        return None
    number = int(text)
    return number if 0 < number <= MAX_CALL_ID else None


def _like_pattern(word: str) -> str:
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _conditions(query: CallQuery) -> list[Any]:
    conditions: list[Any] = []
    if query.text:
        # Every word must appear in the call's transcripts (in any turn), accents and case aside.
        for word in dict.fromkeys(fold(query.text).split()):
            conditions.append(CallRow.id.in_(
                select(TurnRow.call_id).where(TurnRow.search_text.like(_like_pattern(word), escape="\\"))))
    if query.outcome:
        conditions.append(CallRow.outcome == query.outcome)
    if query.date_from:
        conditions.append(CallRow.started_at >= datetime.combine(query.date_from, time.min, UTC))
    if query.date_to and query.date_to < date.max:   # the last day there is bounds nothing
        conditions.append(CallRow.started_at < datetime.combine(query.date_to + timedelta(days=1), time.min, UTC))
    return conditions


async def call_page(session: AsyncSession, query: CallQuery) -> tuple[list[CallSummary], int]:
    """One page of calls, newest first, and the total number matching the query."""
    conditions = _conditions(query)
    per_page = max(query.per_page, 1)
    page = max(query.page, 1)
    total = await session.scalar(select(func.count(CallRow.id)).where(*conditions)) or 0
    rows = list(await session.scalars(
        select(CallRow).where(*conditions)
        .order_by(CallRow.started_at.desc(), CallRow.id.desc())
        .offset((page - 1) * per_page).limit(per_page)))
    flags = await _flags(session, rows)
    return [_summary(row, flags[row.id]) for row in rows], total


async def _flags(session: AsyncSession, rows: Sequence[CallRow]) -> dict[int, tuple[str, ...]]:
    ids = [row.id for row in rows]
    no_knowledge: set[int] = set()
    errors: set[int] = set()
    if ids:
        no_knowledge = set(await session.scalars(
            select(TurnRow.call_id).distinct().where(
                TurnRow.call_id.in_(ids), TurnRow.role == "caller",
                TurnRow.retrieval_outcome.in_(NO_KNOWLEDGE_OUTCOMES))))
        errors = set(await session.scalars(
            select(EventRow.call_id).distinct().where(
                EventRow.call_id.in_(ids), EventRow.type.in_(ERROR_EVENT_TYPES))))
    flags: dict[int, tuple[str, ...]] = {}
    for row in rows:
        found = []
        if row.barge_ins > 0:
            found.append(FLAG_INTERRUPTED)
        if row.id in no_knowledge:
            found.append(FLAG_NO_KNOWLEDGE)
        if row.outcome == "error" or row.id in errors:
            found.append(FLAG_ERROR)
        flags[row.id] = tuple(found)
    return flags


def _summary(row: CallRow, flags: tuple[str, ...]) -> CallSummary:
    return CallSummary(
        id=row.id, call_sid=row.call_sid, started_at=row.started_at, caller_masked=row.caller_masked,
        duration_s=row.duration_s, turns=row.turns, barge_ins=row.barge_ins, outcome=row.outcome,
        cost_usd=row.cost_usd, flags=flags, recorded=bool(row.recorded or row.recording_path), channel=row.channel,
    )


async def call_detail(session: AsyncSession, call_id: int) -> CallDetail | None:
    """One call in full: turns in order with their passages by rank, events by time."""
    if not 0 < call_id <= MAX_CALL_ID:
        return None   # no such call, without asking a database that may not take the number
    row = await session.get(CallRow, call_id)
    if row is None:
        return None
    flags = await _flags(session, [row])
    turns = list(await session.scalars(
        select(TurnRow).where(TurnRow.call_id == call_id).order_by(TurnRow.turn_index)))
    passages: dict[int, list[PassageUsed]] = {}
    if turns:
        for passage in await session.scalars(
                select(PassageRow).where(PassageRow.turn_id.in_([t.id for t in turns]))
                .order_by(PassageRow.turn_id, PassageRow.rank)):
            passages.setdefault(passage.turn_id, []).append(
                PassageUsed(id=passage.passage_id, source=passage.source, title=passage.title,
                            score=passage.score))
    events = list(await session.scalars(
        select(EventRow).where(EventRow.call_id == call_id).order_by(EventRow.at, EventRow.id)))
    return CallDetail(
        summary=_summary(row, flags[row.id]),
        stream_sid=row.stream_sid, called=row.called, caller_hash=row.caller_hash, channel=row.channel,
        codec=row.codec, model=row.model, rag_mode=row.rag_mode, answered_at=row.answered_at,
        ended_at=row.ended_at, input_tokens=row.input_tokens, output_tokens=row.output_tokens,
        input_audio_tokens=row.input_audio_tokens, output_audio_tokens=row.output_audio_tokens,
        cached_tokens=row.cached_tokens,
        transcription_model=row.transcription_model, transcription_seconds=row.transcription_seconds,
        transcription_input_tokens=row.transcription_input_tokens,
        transcription_input_audio_tokens=row.transcription_input_audio_tokens,
        transcription_output_tokens=row.transcription_output_tokens,
        transcription_cost_usd=row.transcription_cost_usd, recap=row.recap, caller_number=row.caller_number,
        turns=[TurnRecorded(
            call_sid=row.call_sid, index=t.turn_index, role=t.role, text=t.text,  # type: ignore[arg-type]
            start_ms=t.start_ms, end_ms=t.end_ms, interrupted=t.interrupted, heard_ms=t.heard_ms,
            passages=tuple(passages.get(t.id, ())), retrieval_ms=t.retrieval_ms,
            retrieval_outcome=t.retrieval_outcome, speech_end_to_model_audio_ms=t.speech_end_to_model_audio_ms,
            model_audio_to_caller_ms=t.model_audio_to_caller_ms,
        ) for t in turns],
        events=[CallEvent(call_sid=row.call_sid, at=e.at, type=e.type, detail=e.detail) for e in events],
    )

