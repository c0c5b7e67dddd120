"""The call-log store's write path: a batch of call records applied in one transaction.

Applying is idempotent, so a batch may be replayed after a crash or from the spool without
duplicating anything, and tolerant of order, so nothing is lost when a call's first record
arrives late:

* `CallStarted` upserts the call by `call_sid`;
* `TurnRecorded` is keyed by (call_sid, index): sent again, it replaces the previous version
  (the caller's turn is re-sent once its retrieval is known);
* `CallEvent` is appended once: a key over (at, type, detail) recognises a replay;
* `CallBackNumber` keeps the number of a caller who asked to be called back;
* `CallEnded` completes the call (its cost is estimated from the usage when it came without
  one, or as $0 with usage, as code before unknown costs logged an unpriced model);
* a turn, event or end whose call has not started yet creates a placeholder call row,
  which the `CallStarted` fills in when it comes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import func, insert, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.calllog.cost import call_cost, estimate_cost, estimate_transcription_cost
from app.calllog.models import CallRow, EventRow, PassageRow, TurnRow, fold
from app.calllog.records import CallBackNumber, CallEnded, CallEvent, CallRecord, CallStarted, TurnRecorded

IN_LIST_CHUNK = 500  # parameters per IN (…): well under every database's limit
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


def in_list_chunks(items: list[T], size: int = IN_LIST_CHUNK) -> Iterator[list[T]]:
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


class BatchApplier:
    """Applies a batch of records within a transaction the store opened.

    A constant number of statements per batch, not per record: the calls, turns and passages
    the batch touches are loaded at once, the records applied to them in memory in order (a
    later version of a turn overwrites an earlier one), then written in one go."""

    def __init__(self, dialect: str, prices: Mapping[str, Mapping[str, float]] | None) -> None:
        self.dialect = dialect
        self._prices = prices

    async def apply(self, session: AsyncSession, records: Sequence[CallRecord]) -> None:
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
            elif isinstance(record, CallBackNumber):
                self._placeholder_start(call, record.at)
                call.caller_number = record.number
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
        for chunk in in_list_chunks(call_sids):
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
        call.caller_number = record.caller_number or call.caller_number  # a call-back number stays
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
        for chunk in in_list_chunks(list(turns), IN_LIST_CHUNK // 2):
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
        for chunk in in_list_chunks([row.id for row in rows.values()]):
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
        call.recap = record.recap
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
        for chunk in in_list_chunks([call.id for call in calls]):
            for call_id, total, interrupted in await session.execute(
                    select(TurnRow.call_id, func.count(TurnRow.id), func.count(TurnRow.id).filter(TurnRow.interrupted))
                    .where(TurnRow.call_id.in_(chunk)).group_by(TurnRow.call_id)):
                counts[call_id] = (total, interrupted)
        for call in calls:
            total, interrupted = counts.get(call.id, (0, 0))
            call.turns = max(call.turns or 0, total)
            call.barge_ins = max(call.barge_ins or 0, interrupted)
