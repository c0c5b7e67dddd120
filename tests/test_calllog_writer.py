"""The call-log writer: records reach the database, and none is lost or doubled when it is away.

"Unavailable" databases are real ones: a SQLite file whose directory cannot exist (its
parent is a regular file; removing that file brings the same URL back), and PostgreSQL on
a closed port (127.0.0.1:9).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from app.calllog.models import make_engine
from app.calllog.records import CallEvent, CallRecord, from_dict, to_dict
from app.calllog.store import CallLogStore
from app.calllog.views import CallQuery
from app.calllog.writer import SPOOL_NAME, CallLogWriter
from app.config import Settings
from tests.test_calllog_store import (
    T0,
    _admin,
    _pg_url,
    caller,
    create_pg_database,
    drop_pg_database,
    ended,
    full_call,
    octi,
    started,
)

CLOSED_PORT_URL = "postgresql+asyncpg://postgres@127.0.0.1:9/octi"


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until `predicate()` holds; fail after `timeout` seconds (a deadline, not a measure)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.01)


async def counts(url: str) -> dict[str, int]:
    engine = make_engine(url, pooled=False)
    try:
        async with engine.connect() as connection:
            return {table: (await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
                    for table in ("calls", "turns", "turn_passages", "call_events")}
    finally:
        await engine.dispose()


def spool_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def calls_of(n: int) -> list[CallRecord]:
    records: list[CallRecord] = []
    for i in range(n):
        records += full_call(f"CA{i:03d}", T0 + timedelta(minutes=i))
    return records


@pytest.fixture
def make_writer(tmp_path: Path) -> Callable[..., CallLogWriter]:
    """Writers sharing tmp_path/data as DATA_DIR (SQLite there by default), retrying quickly."""
    def make(url: str | None = None, **options: Any) -> CallLogWriter:
        options.setdefault("retry_initial", 0.02)
        options.setdefault("retry_max", 0.1)
        return CallLogWriter(url or sqlite_url(tmp_path / "data" / "calls.sqlite3"),
                             tmp_path / "data" / SPOOL_NAME, prices=Settings().model_prices, **options)

    return make


@pytest.fixture
async def reader(tmp_path: Path) -> AsyncIterator[Callable[[str], Any]]:
    stores: list[CallLogStore] = []

    async def open_reader(url: str) -> CallLogStore:
        store = await CallLogStore.open(url)
        stores.append(store)
        return store

    yield open_reader
    for store in stores:
        await store.close()


async def test_records_reach_the_database(make_writer, reader, tmp_path: Path) -> None:
    writer = make_writer()
    await writer.start()
    records = full_call("CA1")
    for record in records:
        assert writer.submit(record) is None
    assert await writer.flush(timeout=10)
    status = writer.status()
    assert (status["state"], status["database"], status["written"], status["spooled"], status["queued"]) == \
           ("running", "up", len(records), 0, 0)

    store = await reader(writer.url)
    detail = await store.get_call(1)
    assert detail is not None and detail.turns == [records[1], records[2]] and len(detail.events) == 2
    await writer.close()
    assert writer.status()["state"] == "closed"
    assert not (tmp_path / "data" / SPOOL_NAME).exists()


async def test_database_down_spools_then_replays_exactly_once(make_writer, reader, tmp_path: Path) -> None:
    blocker = tmp_path / "db"
    blocker.write_text("a file where the database directory should be")
    url = sqlite_url(blocker / "calls.sqlite3")
    writer = make_writer(url)
    spool = tmp_path / "data" / SPOOL_NAME
    await writer.start()

    first = calls_of(3)
    for record in first:
        writer.submit(record)
    await wait_until(lambda: writer.status()["spooled"] == len(first) and writer.status()["queued"] == 0)
    assert writer.status()["database"] == "down" and writer.status()["last_error"]
    assert not await writer.flush(timeout=0.2)               # cannot settle while the database is away
    lines = spool_lines(spool)
    assert [from_dict(line) for line in lines] == first      # in order, as to_dict records

    blocker.unlink()                                         # the database comes back, same URL
    assert await writer.flush(timeout=10)
    status = writer.status()
    assert (status["database"], status["replayed"], status["written"], status["spool_pending"]) == \
           ("up", len(first), 0, 0)
    assert spool.read_text() == ""

    later = full_call("CA100", T0 + timedelta(hours=1))
    for record in later:                                     # straight to the database again
        writer.submit(record)
    assert await writer.flush(timeout=10)
    assert writer.status()["written"] == len(later)
    await writer.close()

    assert await counts(url) == {"calls": 4, "turns": 8, "turn_passages": 8, "call_events": 8}
    summaries, total = await (await reader(url)).list_calls(CallQuery())
    assert total == 4 and [s.call_sid for s in summaries] == ["CA100", "CA002", "CA001", "CA000"]


async def test_unreachable_postgresql_then_a_working_database(make_writer, reader, tmp_path: Path) -> None:
    writer = make_writer(CLOSED_PORT_URL)
    await writer.start()
    records = calls_of(2)
    for record in records:
        writer.submit(record)
    await wait_until(lambda: writer.status()["spooled"] == len(records))
    assert writer.status()["database"] == "down"

    writer.url = sqlite_url(tmp_path / "elsewhere" / "calls.sqlite3")   # the next retry reconnects there
    assert await writer.flush(timeout=10)
    assert writer.status()["replayed"] == len(records)
    await writer.close()
    assert await counts(writer.url) == {"calls": 2, "turns": 4, "turn_passages": 4, "call_events": 4}


async def test_close_flushes_the_queue_to_the_database(make_writer, reader) -> None:
    writer = make_writer(batch_size=7)
    await writer.start()
    records = calls_of(20)
    for record in records:
        writer.submit(record)
    await writer.close()                                     # no flush() first
    assert writer.status()["written"] == len(records)
    assert await counts(writer.url) == {"calls": 20, "turns": 40, "turn_passages": 40, "call_events": 40}


async def test_close_with_the_database_down_spools_everything_for_the_next_run(make_writer, tmp_path: Path) -> None:
    blocker = tmp_path / "db"
    blocker.write_text("not a directory")
    url = sqlite_url(blocker / "calls.sqlite3")
    writer = make_writer(url, retry_initial=60, retry_max=60)     # no retry before closing
    # Some records before start (queued), some after.
    records = calls_of(4)
    for record in records[:5]:
        writer.submit(record)
    await writer.start()
    for record in records[5:]:
        writer.submit(record)
    await writer.close(timeout=5)
    spool = tmp_path / "data" / SPOOL_NAME
    assert [from_dict(line) for line in spool_lines(spool)] == records

    blocker.unlink()
    successor = make_writer(url)                             # the next run, same DATA_DIR
    await successor.start()
    assert await successor.flush(timeout=10)
    assert successor.status()["replayed"] == len(records)
    await successor.close()
    assert await counts(url) == {"calls": 4, "turns": 8, "turn_passages": 8, "call_events": 8}
    assert spool.read_text() == ""


async def test_a_spool_left_by_a_previous_run_is_replayed_at_start(make_writer, reader, tmp_path: Path) -> None:
    records = full_call("CA1")
    spool = tmp_path / "data" / SPOOL_NAME
    spool.parent.mkdir(parents=True)
    lines = [json.dumps(to_dict(record), ensure_ascii=False) for record in records]
    # A garbled line in the middle, a blank line, and a last line cut short by a crash.
    spool.write_text("\n".join([*lines[:2], "{not json", "", *lines[2:], '{"kind": "ev']), encoding="utf-8")

    writer = make_writer()
    await writer.start()
    writer.submit(CallEvent("CA1", T0 + timedelta(seconds=30), "dtmf", "9"))   # after the spool
    assert await writer.flush(timeout=10)
    status = writer.status()
    # The spool first, then what came after it, straight to the database.
    assert (status["replayed"], status["written"], status["rejected"], status["spool_pending"]) == \
           (len(records), 1, 2, 0)
    await writer.close()

    detail = await (await reader(writer.url)).get_call(1)
    assert detail is not None and detail.turns == [records[1], records[2]]
    assert [e.detail for e in detail.events] == ["late mark", "5", "9"]
    rejected = spool_lines(writer.rejected_path)
    assert [entry["line"] for entry in rejected] == ["{not json", '{"kind": "ev']
    assert spool.read_text() == ""


async def test_submit_never_blocks_nor_raises_when_the_queue_is_full(make_writer, reader, tmp_path: Path) -> None:
    writer = make_writer(queue_size=3)
    # Not started: nothing drains the queue. The first version of a turn, many records, then
    # its second version: order must survive the overflow, or the old version would win.
    records: list[CallRecord] = [started("CA1"), caller("CA1", 0, "première version")]
    records += calls_of(10)
    records += [caller("CA1", 0, "seconde version", retrieval_outcome="empty"), octi("CA1", 1, "Réponse")]
    for record in records:
        assert writer.submit(record) is None
    assert writer.status()["queued"] <= 3
    assert writer.status()["spooled"] >= len(records) - 3

    await writer.start()
    assert await writer.flush(timeout=10)
    await writer.close()
    status = writer.status()
    assert status["written"] + status["replayed"] == len(records) and status["lost"] == 0

    store = await reader(writer.url)
    detail = await store.get_call(await store.find_call_id("CA1"))
    assert detail is not None and [t.text for t in detail.turns] == ["seconde version", "Réponse"]
    assert await counts(writer.url) == {"calls": 11, "turns": 22, "turn_passages": 20, "call_events": 20}


async def test_a_record_the_database_refuses_is_set_aside(make_writer, reader) -> None:
    writer = make_writer()
    await writer.start()
    broken = CallEvent("CA1", None, "error", "no time")  # type: ignore[arg-type]
    for record in [started("CA1"), broken, ended("CA1")]:
        writer.submit(record)
    assert await writer.flush(timeout=10)
    await writer.close()
    status = writer.status()
    assert (status["written"], status["rejected"]) == (2, 1)
    [entry] = spool_lines(writer.rejected_path)
    assert entry["record"]["type"] == "error" and entry["record"]["at"] is None and entry["error"]
    detail = await (await reader(writer.url)).get_call(1)
    assert detail is not None and detail.summary.outcome == "caller_hung_up" and detail.events == []


async def test_submit_after_close_goes_to_the_spool(make_writer, tmp_path: Path) -> None:
    writer = make_writer()
    await writer.start()
    await writer.close()
    late = ended("CA1")
    writer.submit(late)                                      # a call that ended during shutdown
    spool = tmp_path / "data" / SPOOL_NAME
    await wait_until(lambda: bool(spool_lines(spool)))
    assert [from_dict(line) for line in spool_lines(spool)] == [late]

    successor = make_writer()
    await successor.start()
    assert await successor.flush(timeout=10)
    await successor.close()
    assert (await counts(successor.url))["calls"] == 1


async def test_postgresql_going_away_mid_run_and_coming_back(make_writer) -> None:
    name = create_pg_database()   # skipped without a server (failed in CI)
    url = _pg_url(name)
    try:
        writer = make_writer(url)
        await writer.start()
        before = full_call("CA1")
        for record in before:
            writer.submit(record)
        assert await writer.flush(timeout=10) and writer.status()["written"] == len(before)

        # The server refuses the database and drops the writer's connections.
        await _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await _admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        during = full_call("CA2", T0 + timedelta(hours=1))
        for record in during:
            writer.submit(record)
        await wait_until(lambda: writer.status()["spooled"] == len(during) and writer.status()["queued"] == 0)
        assert writer.status()["database"] == "down" and writer.status()["rejected"] == 0

        await _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert await writer.flush(timeout=10)
        await writer.close()
        status = writer.status()
        assert (status["written"], status["replayed"], status["rejected"]) == (len(before), len(during), 0)
        assert await counts(url) == {"calls": 2, "turns": 4, "turn_passages": 4, "call_events": 4}
    finally:
        await _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        drop_pg_database(name)


# ---------------------------------------------------------------------- lingering for larger batches

@pytest.fixture
def applied(monkeypatch: pytest.MonkeyPatch) -> list[list[CallRecord]]:
    """The batches committed by `CallLogStore.apply`, in order: one entry per transaction."""
    batches: list[list[CallRecord]] = []
    original = CallLogStore.apply

    async def apply(self: CallLogStore, records: Any) -> None:
        await original(self, records)
        batches.append(list(records))

    monkeypatch.setattr(CallLogStore, "apply", apply)
    return batches


async def submit_one_at_a_time(writer: CallLogWriter, records: list[CallRecord]) -> None:
    """Submit with a pause after each record, so an idle writer would take each on its own."""
    for record in records:
        writer.submit(record)
        await asyncio.sleep(0.02)


async def test_without_a_linger_records_trickling_in_make_many_transactions(make_writer, applied) -> None:
    writer = make_writer(linger=0)
    await writer.start()
    records = full_call("CA1")
    await submit_one_at_a_time(writer, records)
    assert await writer.flush(timeout=10)
    await writer.close()
    assert len(applied) > 1 and [r for batch in applied for r in batch] == records


async def test_a_linger_gathers_records_trickling_in_and_flush_cuts_it_short(make_writer, applied) -> None:
    writer = make_writer(linger=30)
    await writer.start()
    records = calls_of(3)
    await submit_one_at_a_time(writer, records)
    assert applied == [] and writer.status()["queued"] == len(records)   # still lingering

    assert await writer.flush(timeout=5)                     # well under the linger
    assert applied == [records]                              # one transaction, in order
    status = writer.status()
    assert (status["written"], status["spooled"], status["queued"]) == (len(records), 0, 0)
    assert await counts(writer.url) == {"calls": 3, "turns": 6, "turn_passages": 6, "call_events": 6}

    await writer.close()


async def test_a_linger_ends_by_itself(make_writer, applied) -> None:
    writer = make_writer(linger=0.2)
    await writer.start()
    records = full_call("CA1")
    await submit_one_at_a_time(writer, records)
    await wait_until(lambda: writer.status()["written"] == len(records))   # no flush, no close
    assert [r for batch in applied for r in batch] == records
    await writer.close()


async def test_a_full_batch_does_not_linger(make_writer, applied) -> None:
    writer = make_writer(linger=30, batch_size=5)
    await writer.start()
    records = calls_of(2)[:12]
    await submit_one_at_a_time(writer, records)
    await wait_until(lambda: writer.status()["written"] == 10)
    await asyncio.sleep(0.1)
    assert applied == [records[:5], records[5:10]]           # the last two still linger
    assert await writer.flush(timeout=5)
    assert applied == [records[:5], records[5:10], records[10:]]
    await writer.close()


async def test_close_does_not_wait_for_the_linger(make_writer, applied, tmp_path: Path) -> None:
    writer = make_writer(linger=30)
    await writer.start()
    records = calls_of(4)
    await submit_one_at_a_time(writer, records)
    assert applied == []
    await asyncio.wait_for(writer.close(timeout=20), 5)      # close's own timeout would spool
    assert applied == [records]
    status = writer.status()
    assert (status["state"], status["written"], status["spooled"]) == ("closed", len(records), 0)
    assert not (tmp_path / "data" / SPOOL_NAME).exists()
    assert await counts(writer.url) == {"calls": 4, "turns": 8, "turn_passages": 8, "call_events": 8}


async def test_records_behind_the_spool_do_not_linger(make_writer, applied, tmp_path: Path) -> None:
    blocker = tmp_path / "db"
    blocker.write_text("a file where the database directory should be")
    url = sqlite_url(blocker / "calls.sqlite3")
    writer = make_writer(url, linger=30)
    spool = tmp_path / "data" / SPOOL_NAME
    await writer.start()
    records = calls_of(2)
    writer.submit(records[0])
    assert not await writer.flush(timeout=1)                 # ends the linger: the database is down
    await wait_until(lambda: writer.status()["spooled"] == 1)

    await submit_one_at_a_time(writer, records[1:])          # straight behind it, to the spool
    await wait_until(lambda: writer.status()["spooled"] == len(records) and writer.status()["queued"] == 0)
    assert [from_dict(line) for line in spool_lines(spool)] == records

    blocker.unlink()
    assert await writer.flush(timeout=10)                    # replayed, in order
    await writer.close()
    status = writer.status()
    assert (status["replayed"], status["written"], status["spool_pending"]) == (len(records), 0, 0)
    assert [r for batch in applied for r in batch] == records
    assert await counts(url) == {"calls": 2, "turns": 4, "turn_passages": 4, "call_events": 4}


async def test_a_batch_stuck_in_the_database_at_close_is_spooled_ahead_of_the_queue(make_writer, tmp_path: Path) -> None:
    name = create_pg_database()   # skipped without a server (failed in CI)
    url = _pg_url(name)
    spool = tmp_path / "data" / SPOOL_NAME
    locker = make_engine(url, pooled=False)
    try:
        writer = make_writer(url, linger=0, batch_size=6)
        await writer.start()
        writer.submit(started("CA0"))
        assert await writer.flush(timeout=10)                # connected and migrated

        records = calls_of(2)
        async with locker.connect() as connection:
            transaction = await connection.begin()
            await connection.execute(text("LOCK TABLE calls IN ACCESS EXCLUSIVE MODE"))   # the database hangs
            for record in records:
                writer.submit(record)
            await wait_until(lambda: writer.status()["queued"] == len(records) - 6)   # the first batch is stuck
            await writer.close(timeout=0.5)
            await transaction.rollback()
        # The stuck batch (maybe committed, maybe not) first, then what was still queued.
        assert [from_dict(line) for line in spool_lines(spool)] == records
        assert writer.status()["lost"] == 0

        successor = make_writer(url)
        await successor.start()
        assert await successor.flush(timeout=10)
        await successor.close()
        assert successor.status()["replayed"] == len(records)
        assert await counts(url) == {"calls": 3, "turns": 4, "turn_passages": 4, "call_events": 4}
    finally:
        await locker.dispose()
        drop_pg_database(name)
