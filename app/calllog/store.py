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
* `CallEnded` completes the call (its cost is estimated from the usage when it came without
  one, or as $0 with usage, as code before unknown costs logged an unpriced model);
* a turn, event or end whose call has not started yet creates a placeholder call row,
  which the `CallStarted` fills in when it comes.

Reading implements `CallLogReader` (views.py); flags are computed at read time.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import delete, func, insert, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.calllog.cost import call_cost, estimate_cost, estimate_transcription_cost
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

_CHUNK = 500  # parameters per IN (…): well under every database's limit
T = TypeVar("T")


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def event_key(event: CallEvent) -> str:
    """What makes an event the same event when it is sent again."""
    raw = "\x1f".join((_utc(event.at).isoformat(timespec="microseconds"), event.type, event.detail))
    return hashlib.sha256(raw.encode()).hexdigest()


def _ended_begun(record: CallEnded) -> datetime:
    """When an ended call began: its answer, else its end less its duration."""
    return record.answered_at or _utc(record.ended_at) - timedelta(seconds=max(record.duration_s, 0.0))


def _chunks(items: list[T], size: int = _CHUNK) -> Iterator[list[T]]:
    """`items` in slices small enough for an IN (…) list."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _turn_values(record: TurnRecorded) -> dict[str, Any]:
    """The columns of a turn row that come from the record."""
    return {
        "role": record.role, "text": record.text, "search_text": fold(record.text),
        "start_ms": record.start_ms, "end_ms": record.end_ms, "interrupted": record.interrupted,
        "heard_ms": record.heard_ms, "retrieval_ms": record.retrieval_ms, "retrieval_outcome": record.retrieval_outcome,
        "speech_end_to_model_audio_ms": record.speech_end_to_model_audio_ms,
        "model_audio_to_caller_ms": record.model_audio_to_caller_ms,
    }


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
        """Store `records`, in order, in one transaction (all or nothing). Idempotent.

        A constant number of statements per batch, not per record: the calls, turns and
        passages the batch touches are loaded at once, the records applied to them in memory
        in order (a later version of a turn overwrites an earlier one), then written in one go."""
        if not records:
            return
        for record in records:
            if not isinstance(record, CallRecord):
                raise TypeError(f"not a call record: {record!r}")
        async with self._sessions() as session, session.begin():
            calls = await self._load_calls(session, records)
            turns: dict[tuple[int, int], TurnRecorded] = {}   # the latest version of each turn
            events: list[dict[str, Any]] = []
            recount: set[int] = set()
            for record in records:
                call = calls[record.call_sid]
                if isinstance(record, CallStarted):
                    self._apply_started(call, record)
                elif isinstance(record, TurnRecorded):
                    turns[(call.id, record.index)] = record
                    recount.add(call.id)
                elif isinstance(record, CallEvent):
                    self._placeholder_start(call, record.at)
                    events.append({"call_id": call.id, "at": _utc(record.at), "type": record.type,
                                   "detail": record.detail, "dedupe_key": event_key(record)})
                else:
                    self._apply_ended(call, record)
                    recount.add(call.id)
            await self._apply_turns(session, turns)
            if events:
                await session.execute(self._insert_ignoring_conflicts(EventRow), events)
            await self._recount(session, [call for call in calls.values() if call.id in recount])

    def _insert_ignoring_conflicts(self, table: Any) -> Any:
        """INSERT … ON CONFLICT DO NOTHING: two writers (or a replay) may race on a key."""
        # The Core table, not the mapped class: executed with a list of rows it is one executemany.
        if self.dialect == "postgresql":
            return postgresql.insert(table.__table__).on_conflict_do_nothing()
        if self.dialect == "sqlite":
            return sqlite.insert(table.__table__).on_conflict_do_nothing()
        raise RuntimeError(f"unsupported database for the call log: {self.dialect}")

    async def _load_calls(self, session: AsyncSession, records: Sequence[CallRecord]) -> dict[str, CallRow]:
        """The rows of the batch's calls by call_sid. A missing call is created as a
        placeholder, started when the first of its records in the batch says."""
        starts: dict[str, datetime] = {}
        for record in records:
            if record.call_sid not in starts:
                starts[record.call_sid] = self._record_start(record)
        calls = await self._select_calls(session, list(starts))
        missing = [sid for sid in starts if sid not in calls]
        if missing:
            await session.execute(self._insert_ignoring_conflicts(CallRow), [
                {"call_sid": sid, "placeholder": True, "started_at": _utc(starts[sid])} for sid in missing])
            calls.update(await self._select_calls(session, missing))
        return calls

    @staticmethod
    async def _select_calls(session: AsyncSession, call_sids: list[str]) -> dict[str, CallRow]:
        calls: dict[str, CallRow] = {}
        for chunk in _chunks(call_sids):
            for call in await session.scalars(select(CallRow).where(CallRow.call_sid.in_(chunk))):
                calls[call.call_sid] = call
        return calls

    @staticmethod
    def _record_start(record: CallRecord) -> datetime:
        """When a call first known from this record is taken to have started."""
        if isinstance(record, CallStarted):
            return record.started_at
        if isinstance(record, CallEvent):
            return record.at
        if isinstance(record, CallEnded):
            return _ended_begun(record)
        return datetime.now(UTC)

    def _apply_started(self, call: CallRow, record: CallStarted) -> None:
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
        call.transcription_model = record.transcription_model
        self._fill_cost(call)  # the end may have come first, without a model to price it

    @staticmethod
    def _placeholder_start(call: CallRow, at: datetime) -> None:
        """A placeholder starts no later than anything known about it."""
        if call.placeholder and _utc(at) < call.started_at:
            call.started_at = _utc(at)

    async def _apply_turns(self, session: AsyncSession, turns: dict[tuple[int, int], TurnRecorded]) -> None:
        """Write the latest version of each turn, and its passages."""
        if not turns:
            return
        rows: dict[tuple[int, int], TurnRow] = {}
        for chunk in _chunks(list(turns), _CHUNK // 2):
            for row in await session.scalars(
                    select(TurnRow).where(tuple_(TurnRow.call_id, TurnRow.turn_index).in_(chunk))):
                rows[(row.call_id, row.turn_index)] = row
        turn_ids: dict[tuple[int, int], int] = {}
        new: list[dict[str, Any]] = []
        for key, record in turns.items():
            values = _turn_values(record)
            row = rows.get(key)
            if row is None:
                new.append({"call_id": key[0], "turn_index": key[1], **values})
                continue
            turn_ids[key] = row.id
            for name, value in values.items():
                setattr(row, name, value)   # the ORM writes only what changed: a replay writes nothing
        if new:
            # Core INSERT … RETURNING: batched in one statement, where ORM inserts go one row at a
            # time on SQLite (it cannot match RETURNING rows to objects there otherwise).
            inserted = await session.execute(
                insert(TurnRow.__table__).returning(TurnRow.id, TurnRow.call_id, TurnRow.turn_index), new)
            for turn_id, call_id, turn_index in inserted:
                turn_ids[(call_id, turn_index)] = turn_id
        # Passages are updated in place by rank, so sending the same turn again changes nothing.
        # Only the turns that existed before this batch can have passages stored.
        stored: dict[int, dict[int, PassageRow]] = {}
        for chunk in _chunks([row.id for row in rows.values()]):
            for passage in await session.scalars(select(PassageRow).where(PassageRow.turn_id.in_(chunk))):
                stored.setdefault(passage.turn_id, {})[passage.rank] = passage
        new = []
        for key, record in turns.items():
            turn_id = turn_ids[key]
            existing = stored.get(turn_id, {})
            for rank, passage in enumerate(record.passages):
                values = {"passage_id": passage.id, "source": passage.source, "title": passage.title,
                          "score": float(passage.score)}
                row = existing.pop(rank, None)
                if row is None:
                    new.append({"turn_id": turn_id, "rank": rank, **values})
                    continue
                for name, value in values.items():
                    setattr(row, name, value)
            for row in existing.values():
                await session.delete(row)
        if new:
            await session.execute(insert(PassageRow.__table__), new)

    def _apply_ended(self, call: CallRow, record: CallEnded) -> None:
        self._placeholder_start(call, _ended_begun(record))
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
        call.transcription_seconds = record.transcription_seconds
        call.transcription_input_tokens = record.transcription_input_tokens
        call.transcription_input_audio_tokens = record.transcription_input_audio_tokens
        call.transcription_output_tokens = record.transcription_output_tokens
        call.transcription_cost_usd = record.transcription_cost_usd
        self._fill_cost(call)

    def _fill_cost(self, call: CallRow) -> None:
        """Price an ended call that came without a cost (None), or with $0 for some usage (how
        code before unknown costs logged a model without a price), from its stored usage. A
        part that still cannot be priced leaves the cost unknown (None), never $0."""
        if not self._prices or call.ended_at is None or call.cost_usd:
            return
        realtime_used = call.input_tokens + call.output_tokens > 0
        heard = {
            "seconds": call.transcription_seconds or 0.0,
            "input_tokens": call.transcription_input_tokens or 0,
            "input_audio_tokens": call.transcription_input_audio_tokens or 0,
            "output_tokens": call.transcription_output_tokens or 0,
        }
        transcription_used = any(heard.values())
        if call.cost_usd == 0 and not (realtime_used or transcription_used):
            return   # nothing was used: $0 is the cost
        reprice_transcription = call.transcription_cost_usd is None
        if (realtime_used and not call.model) or (
                reprice_transcription and transcription_used and not call.transcription_model):
            call.cost_usd = None   # the start, with the models, has not come yet
            return
        realtime = estimate_cost(call.model, {
            "input_tokens": call.input_tokens, "input_audio_tokens": call.input_audio_tokens,
            "cached_tokens": call.cached_tokens, "output_tokens": call.output_tokens,
            "output_audio_tokens": call.output_audio_tokens,
        }, self._prices)
        if reprice_transcription:
            call.transcription_cost_usd = estimate_transcription_cost(call.transcription_model, heard, self._prices)
        call.cost_usd = call_cost(realtime, call.transcription_cost_usd)

    @staticmethod
    async def _recount(session: AsyncSession, calls: Sequence[CallRow]) -> None:
        """Turns and barge-ins are never fewer than the stored turns show (a call still going
        on has no `CallEnded` counts yet). Stable under replays: it only ever raises them."""
        if not calls:
            return
        await session.flush()
        counts: dict[int, tuple[int, int]] = {}
        for chunk in _chunks([call.id for call in calls]):
            for call_id, total, interrupted in await session.execute(
                    select(TurnRow.call_id, func.count(TurnRow.id), func.count(TurnRow.id).filter(TurnRow.interrupted))
                    .where(TurnRow.call_id.in_(chunk)).group_by(TurnRow.call_id)):
                counts[call_id] = (total, interrupted)
        for call in calls:
            total, interrupted = counts.get(call.id, (0, 0))
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
            transcription_model=row.transcription_model, transcription_seconds=row.transcription_seconds,
            transcription_input_tokens=row.transcription_input_tokens,
            transcription_input_audio_tokens=row.transcription_input_audio_tokens,
            transcription_output_tokens=row.transcription_output_tokens,
            transcription_cost_usd=row.transcription_cost_usd,
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

