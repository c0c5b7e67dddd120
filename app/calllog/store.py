"""The call-log database: writes records idempotently, reads the list and one call.

`CallLogStore` works on SQLite (the default, a file under DATA_DIR) and PostgreSQL alike,
through async SQLAlchemy. The schema comes from the migrations (`upgrade_database`), not
from here.

The store owns the engine, the sessions and retention; what a write does to the rows is in
store_apply.py (idempotent, tolerant of order), how the review reads them in store_queries.py.
Reading implements `CallLogReader` (views.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from app.calllog.kpis import KpiRows, answer_latencies, period_counts
from app.calllog.models import CallRow, EventRow, PassageRow, TurnRow, make_engine
from app.calllog.records import CallRecord
from app.calllog.store_apply import BatchApplier, in_list_chunks
from app.calllog.store_queries import call_detail, call_page
from app.calllog.views import CallDetail, CallQuery, CallSummary

log = logging.getLogger(__name__)


class CallLogStore:
    """The call log in a SQL database. Open with `await CallLogStore.open(url)`; close with `close()`."""

    def __init__(self, engine: AsyncEngine, *, prices: Mapping[str, Mapping[str, float]] | None = None) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.dialect = engine.dialect.name
        self._applier = BatchApplier(self.dialect, prices)

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
        """Store `records`, in order, in one transaction (all or nothing). Idempotent; a
        constant number of statements per batch (see `BatchApplier`)."""
        if not records:
            return
        for record in records:
            if not isinstance(record, CallRecord):
                raise TypeError(f"not a call record: {record!r}")
        async with self._sessions() as session, session.begin():
            await self._applier.apply(session, records)

    # ------------------------------------------------------------------ reading

    async def list_calls(self, query: CallQuery) -> tuple[list[CallSummary], int]:
        """One page of calls, newest first, and the total number matching the query."""
        async with self._sessions() as session:
            return await call_page(session, query)

    async def find_call_id(self, call_sid: str) -> int | None:
        """The id of the call with this Twilio CallSid, if logged."""
        async with self._sessions() as session:
            return await session.scalar(select(CallRow.id).where(CallRow.call_sid == call_sid))

    async def kpi_rows(self, periodisations: Sequence[Sequence[datetime]]) -> list[KpiRows]:
        """The KPI counts and answer latencies for each set of period boundaries (days, weeks,
        months, …), read in one session."""
        async with self._sessions() as session:
            return [KpiRows(await period_counts(session, boundaries), await answer_latencies(session, boundaries))
                    for boundaries in periodisations]

    async def get_call(self, call_id: int) -> CallDetail | None:
        """One call in full: turns in order with their passages by rank, events by time."""
        async with self._sessions() as session:
            return await call_detail(session, call_id)

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

    async def purge(self, older_than: timedelta, *, now: datetime | None = None,
                    recordings_dir: Path | None = None) -> tuple[int, int]:
        """Delete the calls started more than `older_than` ago, with their turns, passages,
        events and recording files. Returns (calls deleted, recording files deleted).

        Older versions stored a recording's path relative to the service's working directory,
        which need not be the caller's: one not found as stored is looked for by its name in
        `recordings_dir` (DATA_DIR/recordings, where the journals wrote it)."""
        cutoff = (now or datetime.now(UTC)) - older_than
        async with self._sessions() as session, session.begin():
            doomed = (await session.execute(
                select(CallRow.id, CallRow.recording_path).where(CallRow.started_at < cutoff))).all()
            ids = [call_id for call_id, _ in doomed]
            for chunk in in_list_chunks(ids):
                turn_ids = select(TurnRow.id).where(TurnRow.call_id.in_(chunk))
                await session.execute(delete(PassageRow).where(PassageRow.turn_id.in_(turn_ids)))
                await session.execute(delete(TurnRow).where(TurnRow.call_id.in_(chunk)))
                await session.execute(delete(EventRow).where(EventRow.call_id.in_(chunk)))
                await session.execute(delete(CallRow).where(CallRow.id.in_(chunk)))
        # Files go once the rows are gone: a failure here leaves a file, never a dangling row.
        recordings = [Path(path) for _, path in doomed if path]
        removed = await asyncio.to_thread(_remove_files, recordings, recordings_dir)
        return len(ids), removed


def _remove_files(paths: Sequence[Path], recordings_dir: Path | None) -> int:
    removed = 0
    for path in paths:
        if not path.is_absolute() and recordings_dir is not None and not path.exists():
            path = recordings_dir / path.name
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not delete the recording %s: %s", path, exc)
    return removed
