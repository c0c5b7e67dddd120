"""The call-log database: writes records idempotently, reads the list and one call.

`CallLogStore` works on SQLite (the default, a file under DATA_DIR) and PostgreSQL alike,
through async SQLAlchemy. The schema comes from the migrations (`upgrade_database`), not
from here.

Writing (`apply`) is idempotent, so a batch may be replayed after a crash or from the spool
without duplicating anything, and tolerant of order, so nothing is lost when a call's first
record arrives late:

* `CallStarted` upserts the call by `call_sid`;
* `TurnRecorded` is keyed by (call_sid, index): sent again, it replaces the previous version
  (the caller's turn is re-sent once its retrieval is known);
* `CallEvent` is appended once: a key over (at, type, detail) recognises a replay;
* `CallEnded` completes the call (its cost is estimated from the tokens when it came as 0);
* a turn, event or end whose call has not started yet creates a placeholder call row,
  which the `CallStarted` fills in when it comes.

Reading implements `CallLogReader` (views.py); flags are computed at read time.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.calllog.cost import estimate_cost
from app.calllog.models import (
    ERROR_EVENT_TYPES,
    NO_KNOWLEDGE_OUTCOMES,
    CallRow,
    EventRow,
    PassageRow,
    TurnRow,
    fold,
    make_engine,
)
from app.calllog.records import CallEnded, CallEvent, CallRecord, CallStarted, PassageUsed, TurnRecorded
from app.calllog.views import FLAG_ERROR, FLAG_INTERRUPTED, FLAG_NO_KNOWLEDGE, CallDetail, CallQuery, CallSummary

log = logging.getLogger(__name__)

_CHUNK = 500  # ids per IN (…) when deleting: well under every database's parameter limit


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def event_key(event: CallEvent) -> str:
    """What makes an event the same event when it is sent again."""
    raw = "\x1f".join((_utc(event.at).isoformat(timespec="microseconds"), event.type, event.detail))
    return hashlib.sha256(raw.encode()).hexdigest()


def _like_pattern(word: str) -> str:
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class CallLogStore:
    """The call log in a SQL database. Open with `await CallLogStore.open(url)`; close with `close()`."""

    def __init__(self, engine: AsyncEngine, *, prices: Mapping[str, Mapping[str, float]] | None = None) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._prices = prices
        self.dialect = engine.dialect.name

    @classmethod
    async def open(cls, url: str, *, prices: Mapping[str, Mapping[str, float]] | None = None) -> CallLogStore:
        """A store on `url` (sqlite+aiosqlite or postgresql+asyncpg; plain sqlite:// and
        postgresql:// are mapped to those). Does not connect yet, nor migrate: run
        `upgrade_database(url)` first. `prices` (MODEL_PRICES) lets `apply` cost calls
        that ended without a cost."""
        return cls(make_engine(url), prices=prices)

    async def close(self) -> None:
        await self._engine.dispose()

    async def ping(self) -> None:
        """Raise unless the database answers (SELECT 1)."""
        async with self._engine.connect() as connection:
            await connection.execute(select(1))

    async def __aenter__(self) -> CallLogStore:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ writing

    async def apply(self, records: Sequence[CallRecord]) -> None:
        """Store `records`, in order, in one transaction (all or nothing). Idempotent."""
        if not records:
            return
        async with self._sessions() as session, session.begin():
            calls: dict[str, CallRow] = {}
            recount: set[int] = set()
            for record in records:
                if isinstance(record, CallStarted):
                    await self._apply_started(session, calls, record)
                elif isinstance(record, TurnRecorded):
                    call = await self._call(session, calls, record.call_sid, datetime.now(UTC))
                    await self._apply_turn(session, call, record)
                    recount.add(call.id)
                elif isinstance(record, CallEvent):
                    await self._apply_event(session, calls, record)
                elif isinstance(record, CallEnded):
                    call = await self._apply_ended(session, calls, record)
                    recount.add(call.id)
                else:
                    raise TypeError(f"not a call record: {record!r}")
            for call in calls.values():
                if call.id in recount:
                    await self._recount(session, call)

    def _insert_ignoring_conflicts(self, table: Any, values: dict[str, Any]) -> Any:
        """INSERT … ON CONFLICT DO NOTHING: two writers (or a replay) may race on a key."""
        if self.dialect == "postgresql":
            return postgresql.insert(table).values(**values).on_conflict_do_nothing()
        if self.dialect == "sqlite":
            return sqlite.insert(table).values(**values).on_conflict_do_nothing()
        raise RuntimeError(f"unsupported database for the call log: {self.dialect}")

    async def _call(self, session: AsyncSession, calls: dict[str, CallRow], call_sid: str,
                    started_at: datetime) -> CallRow:
        """The call's row, created as a placeholder (started at `started_at`) when missing."""
        call = calls.get(call_sid)
        if call is None:
            query = select(CallRow).where(CallRow.call_sid == call_sid)
            call = (await session.scalars(query)).first()
            if call is None:
                await session.execute(self._insert_ignoring_conflicts(
                    CallRow, {"call_sid": call_sid, "placeholder": True, "started_at": _utc(started_at)}))
                call = (await session.scalars(query)).one()
            calls[call_sid] = call
        return call

    async def _apply_started(self, session: AsyncSession, calls: dict[str, CallRow], record: CallStarted) -> None:
        call = await self._call(session, calls, record.call_sid, record.started_at)
        call.placeholder = False
        call.stream_sid = record.stream_sid
        call.channel = record.channel
        call.caller_masked = record.caller_masked
        call.caller_hash = record.caller_hash
        call.caller_number = record.caller_number
        call.called = record.called
        call.started_at = _utc(record.started_at)
        call.codec = record.codec
        call.model = record.model
        call.rag_mode = record.rag_mode
        call.recorded = record.recorded
        self._fill_cost(call)  # the end may have come first, without a model to price it

    @staticmethod
    def _placeholder_start(call: CallRow, at: datetime) -> None:
        """A placeholder starts no later than anything known about it."""
        if call.placeholder and _utc(at) < call.started_at:
            call.started_at = _utc(at)

    async def _apply_turn(self, session: AsyncSession, call: CallRow, record: TurnRecorded) -> None:
        turn = (await session.scalars(
            select(TurnRow).where(TurnRow.call_id == call.id, TurnRow.turn_index == record.index))).first()
        if turn is None:
            turn = TurnRow(call_id=call.id, turn_index=record.index)
            session.add(turn)
        turn.role = record.role
        turn.text = record.text
        turn.search_text = fold(record.text)
        turn.start_ms = record.start_ms
        turn.end_ms = record.end_ms
        turn.interrupted = record.interrupted
        turn.heard_ms = record.heard_ms
        turn.retrieval_ms = record.retrieval_ms
        turn.retrieval_outcome = record.retrieval_outcome
        turn.speech_end_to_model_audio_ms = record.speech_end_to_model_audio_ms
        turn.model_audio_to_caller_ms = record.model_audio_to_caller_ms
        await session.flush()
        # Passages are updated in place by rank, so sending the same turn again changes nothing.
        existing = {p.rank: p for p in await session.scalars(select(PassageRow).where(PassageRow.turn_id == turn.id))}
        for rank, passage in enumerate(record.passages):
            row = existing.pop(rank, None)
            if row is None:
                row = PassageRow(turn_id=turn.id, rank=rank)
                session.add(row)
            row.passage_id = passage.id
            row.source = passage.source
            row.title = passage.title
            row.score = float(passage.score)
        for row in existing.values():
            await session.delete(row)

    async def _apply_event(self, session: AsyncSession, calls: dict[str, CallRow], record: CallEvent) -> None:
        call = await self._call(session, calls, record.call_sid, record.at)
        self._placeholder_start(call, record.at)
        await session.execute(self._insert_ignoring_conflicts(EventRow, {
            "call_id": call.id, "at": _utc(record.at), "type": record.type, "detail": record.detail,
            "dedupe_key": event_key(record),
        }))

    async def _apply_ended(self, session: AsyncSession, calls: dict[str, CallRow], record: CallEnded) -> CallRow:
        begun = record.answered_at or _utc(record.ended_at) - timedelta(seconds=max(record.duration_s, 0.0))
        call = await self._call(session, calls, record.call_sid, begun)
        self._placeholder_start(call, begun)
        call.ended_at = _utc(record.ended_at)
        call.answered_at = _utc(record.answered_at) if record.answered_at else None
        call.duration_s = record.duration_s
        call.outcome = record.outcome
        call.input_tokens = record.input_tokens
        call.output_tokens = record.output_tokens
        call.input_audio_tokens = record.input_audio_tokens
        call.output_audio_tokens = record.output_audio_tokens
        call.cached_tokens = record.cached_tokens
        call.cost_usd = record.cost_usd
        call.turns = record.turns
        call.barge_ins = record.barge_ins
        call.recording_path = record.recording_path
        self._fill_cost(call)
        return call

    def _fill_cost(self, call: CallRow) -> None:
        """Price an ended call that came without a cost, once its model is known."""
        if call.cost_usd or not self._prices or not call.model or call.ended_at is None:
            return
        if call.input_tokens + call.output_tokens == 0:
            return
        call.cost_usd = estimate_cost(call.model, {
            "input_tokens": call.input_tokens, "input_audio_tokens": call.input_audio_tokens,
            "cached_tokens": call.cached_tokens, "output_tokens": call.output_tokens,
            "output_audio_tokens": call.output_audio_tokens,
        }, self._prices)

    async def _recount(self, session: AsyncSession, call: CallRow) -> None:
        """Turns and barge-ins are never fewer than the stored turns show (a call still going
        on has no `CallEnded` counts yet). Stable under replays: it only ever raises them."""
        await session.flush()
        total, interrupted = (await session.execute(
            select(func.count(TurnRow.id), func.count(TurnRow.id).filter(TurnRow.interrupted))
            .where(TurnRow.call_id == call.id))).one()
        call.turns = max(call.turns or 0, total)
        call.barge_ins = max(call.barge_ins or 0, interrupted)

    # ------------------------------------------------------------------ reading

    @staticmethod
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
        if query.date_to:
            conditions.append(CallRow.started_at < datetime.combine(query.date_to + timedelta(days=1), time.min, UTC))
        return conditions

    async def list_calls(self, query: CallQuery) -> tuple[list[CallSummary], int]:
        """One page of calls, newest first, and the total number matching the query."""
        conditions = self._conditions(query)
        per_page = max(query.per_page, 1)
        page = max(query.page, 1)
        async with self._sessions() as session:
            total = await session.scalar(select(func.count(CallRow.id)).where(*conditions)) or 0
            rows = list(await session.scalars(
                select(CallRow).where(*conditions)
                .order_by(CallRow.started_at.desc(), CallRow.id.desc())
                .offset((page - 1) * per_page).limit(per_page)))
            flags = await self._flags(session, rows)
        return [self._summary(row, flags[row.id]) for row in rows], total

    async def _flags(self, session: AsyncSession, rows: Sequence[CallRow]) -> dict[int, tuple[str, ...]]:
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

    @staticmethod
    def _summary(row: CallRow, flags: tuple[str, ...]) -> CallSummary:
        return CallSummary(
            id=row.id, call_sid=row.call_sid, started_at=row.started_at, caller_masked=row.caller_masked,
            duration_s=row.duration_s, turns=row.turns, barge_ins=row.barge_ins, outcome=row.outcome,
            cost_usd=row.cost_usd, flags=flags, recorded=bool(row.recorded or row.recording_path),
        )

    async def find_call_id(self, call_sid: str) -> int | None:
        """The id of the call with this Twilio CallSid, if logged."""
        async with self._sessions() as session:
            return await session.scalar(select(CallRow.id).where(CallRow.call_sid == call_sid))

    async def get_call(self, call_id: int) -> CallDetail | None:
        """One call in full: turns in order with their passages by rank, events by time."""
        async with self._sessions() as session:
            row = await session.get(CallRow, call_id)
            if row is None:
                return None
            flags = await self._flags(session, [row])
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
            summary=self._summary(row, flags[row.id]),
            stream_sid=row.stream_sid, called=row.called, caller_hash=row.caller_hash, channel=row.channel,
            codec=row.codec, model=row.model, rag_mode=row.rag_mode, answered_at=row.answered_at,
            ended_at=row.ended_at, input_tokens=row.input_tokens, output_tokens=row.output_tokens,
            input_audio_tokens=row.input_audio_tokens, output_audio_tokens=row.output_audio_tokens,
            cached_tokens=row.cached_tokens,
            turns=[TurnRecorded(
                call_sid=row.call_sid, index=t.turn_index, role=t.role, text=t.text,  # type: ignore[arg-type]
                start_ms=t.start_ms, end_ms=t.end_ms, interrupted=t.interrupted, heard_ms=t.heard_ms,
                passages=tuple(passages.get(t.id, ())), retrieval_ms=t.retrieval_ms,
                retrieval_outcome=t.retrieval_outcome, speech_end_to_model_audio_ms=t.speech_end_to_model_audio_ms,
                model_audio_to_caller_ms=t.model_audio_to_caller_ms,
            ) for t in turns],
            events=[CallEvent(call_sid=row.call_sid, at=e.at, type=e.type, detail=e.detail) for e in events],
        )

    async def recording_path(self, call_id: int) -> Path | None:
        """The call's stereo WAV when it was recorded and the file still exists. A relative
        path is relative to the service's working directory, as the recorder wrote it."""
        async with self._sessions() as session:
            stored = await session.scalar(select(CallRow.recording_path).where(CallRow.id == call_id))
        if not stored:
            return None
        path = Path(stored)
        return path if await asyncio.to_thread(path.is_file) else None

    # ------------------------------------------------------------------ retention

    async def purge(self, older_than: timedelta, *, now: datetime | None = None) -> tuple[int, int]:
        """Delete the calls started more than `older_than` ago, with their turns, passages,
        events and recording files. Returns (calls deleted, recording files deleted)."""
        cutoff = (now or datetime.now(UTC)) - older_than
        async with self._sessions() as session, session.begin():
            doomed = (await session.execute(
                select(CallRow.id, CallRow.recording_path).where(CallRow.started_at < cutoff))).all()
            ids = [call_id for call_id, _ in doomed]
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start:start + _CHUNK]
                turn_ids = select(TurnRow.id).where(TurnRow.call_id.in_(chunk))
                await session.execute(delete(PassageRow).where(PassageRow.turn_id.in_(turn_ids)))
                await session.execute(delete(TurnRow).where(TurnRow.call_id.in_(chunk)))
                await session.execute(delete(EventRow).where(EventRow.call_id.in_(chunk)))
                await session.execute(delete(CallRow).where(CallRow.id.in_(chunk)))
        # Files go once the rows are gone: a failure here leaves a file, never a dangling row.
        recordings = [Path(path) for _, path in doomed if path]
        removed = await asyncio.to_thread(_remove_files, recordings)
        return len(ids), removed


def _remove_files(paths: Sequence[Path]) -> int:
    removed = 0
    for path in paths:
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not delete the recording %s: %s", path, exc)
    return removed

