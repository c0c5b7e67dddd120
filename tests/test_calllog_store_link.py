"""The writer's link to its database, on its own: real SQLite files and PostgreSQL.

An unavailable database is a real one, as in test_calllog_writer.py: a SQLite file whose
directory cannot exist (its parent is a regular file), PostgreSQL on a closed port.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc

from app.calllog.records import CallEvent, CallRecord
from app.calllog.store_link import Batch, StoreLink, is_unavailable
from tests.test_calllog_store import _pg_url, create_pg_database, drop_pg_database, ended, full_call, started
from tests.test_calllog_writer import CLOSED_PORT_URL, calls_of, counts, sqlite_url


class SetAside:
    """What the link hands over as refused, in order."""

    def __init__(self) -> None:
        self.records: list[CallRecord] = []
        self.reasons: list[BaseException] = []

    def __call__(self, records: Sequence[CallRecord], exc: BaseException) -> None:
        self.records += records
        self.reasons.append(exc)


def link_to(url: str, set_aside: SetAside | None = None, *, retry_initial: float = 0.02,
            retry_max: float = 0.1) -> StoreLink:
    return StoreLink(url, set_aside=set_aside or SetAside(), migrate=True,
                     retry_initial=retry_initial, retry_max=retry_max)


def blocked_url(tmp_path: Path) -> tuple[str, Path]:
    blocker = tmp_path / "db"
    blocker.write_text("a file where the database directory should be")
    return sqlite_url(blocker / "calls.sqlite3"), blocker


async def test_a_batch_is_stored_and_the_schema_created_on_first_use(tmp_path: Path) -> None:
    link = link_to(sqlite_url(tmp_path / "fresh" / "calls.sqlite3"))
    batch = Batch(calls_of(2))
    await link.apply(batch)
    await link.close()
    assert (batch.complete, batch.done, batch.stored, batch.rest) == (True, 12, 12, [])
    assert await counts(link.url) == {"calls": 2, "turns": 4, "turn_passages": 4, "call_events": 4}
    assert link.state == "unknown"              # up only when the writer says records go straight in
    link.answering()
    assert link.state == "up"


async def test_records_the_database_refuses_are_set_aside_and_the_others_stored(tmp_path: Path) -> None:
    set_aside = SetAside()
    link = link_to(sqlite_url(tmp_path / "calls.sqlite3"), set_aside)
    broken = CallEvent("CA1", None, "error", "no time")  # type: ignore[arg-type]
    batch = Batch([started("CA1"), broken, ended("CA1")])
    await link.apply(batch)
    await link.close()
    assert (batch.complete, batch.stored) == (True, 2)
    assert set_aside.records == [broken] and len(set_aside.reasons) == 1
    assert link.state == "unknown" and link.last_error is None
    assert (await counts(link.url))["calls"] == 1


async def test_an_unavailable_database_stops_the_batch_and_backs_off(tmp_path: Path) -> None:
    url, blocker = blocked_url(tmp_path)
    set_aside = SetAside()
    link = link_to(url, set_aside, retry_initial=0.5, retry_max=1.5)
    records = full_call("CA1")

    delays = []
    for _attempt in range(4):
        batch = Batch(records)
        await link.apply(batch)
        assert (batch.done, batch.stored, batch.rest) == (0, 0, records)
        delays.append(link.seconds_to_retry())
    assert link.state == "down" and str(blocker) in (link.last_error or "")
    assert set_aside.records == []              # an outage is never blamed on the records
    assert [round(delay, 1) for delay in delays] == [0.5, 1.0, 1.5, 1.5]
    assert not await link.reachable()

    blocker.unlink()                            # the same URL answers again
    assert await link.reachable()
    link.answering()
    assert (link.state, link.seconds_to_retry()) == ("up", 0)
    batch = Batch(records)
    await link.apply(batch)
    await link.close()
    assert batch.complete and (await counts(url))["calls"] == 1


async def test_retries_can_be_brought_forward_or_put_off(tmp_path: Path) -> None:
    url, _ = blocked_url(tmp_path)
    link = link_to(url, retry_initial=5, retry_max=5)
    assert not await link.reachable()
    assert link.seconds_to_retry() > 4
    link.retry_now()
    assert link.seconds_to_retry() == 0
    link.retry_later()
    assert 4 < link.seconds_to_retry() <= 5


async def test_a_new_url_is_used_from_the_next_batch(tmp_path: Path) -> None:
    link = link_to(CLOSED_PORT_URL)
    batch = Batch(full_call("CA1"))
    await link.apply(batch)
    assert batch.done == 0 and link.state == "down"

    link.url = sqlite_url(tmp_path / "elsewhere" / "calls.sqlite3")
    await link.apply(batch)
    await link.close()
    assert batch.complete and (await counts(link.url))["calls"] == 1


async def test_postgresql_refusing_data_is_told_apart_from_postgresql_going_away() -> None:
    name = create_pg_database()   # skipped without a server (failed in CI)
    url = _pg_url(name)
    set_aside = SetAside()
    link = link_to(url, set_aside)
    try:
        too_long = started("CA2", codec="x" * 100)          # the column holds 16 characters
        batch = Batch([*full_call("CA1"), too_long])
        await link.apply(batch)
        assert (batch.complete, batch.stored, set_aside.records) == (True, 6, [too_long])
        assert link.state == "unknown"
    finally:
        await link.close()
        await asyncio.to_thread(drop_pg_database, name)

    batch = Batch(full_call("CA3"))
    await link.apply(batch)                     # the database no longer exists
    assert batch.done == 0 and link.state == "down" and set_aside.records == [too_long]


@pytest.mark.parametrize(("error", "unavailable"), [
    (ConnectionRefusedError(), True),
    (TimeoutError(), True),
    (sa_exc.OperationalError("SELECT 1", {}, Exception("database is locked")), True),
    (sa_exc.DBAPIError("SELECT 1", {}, ConnectionResetError(), connection_invalidated=False), True),
    (sa_exc.DBAPIError("SELECT 1", {}, Exception("lost"), connection_invalidated=True), True),
    (sa_exc.IntegrityError("INSERT", {}, Exception("NOT NULL constraint failed")), False),
    (sa_exc.DBAPIError("INSERT", {}, Exception("value too long")), False),
    (TypeError("not a call record"), False),
])
def test_errors_that_surely_mean_the_database_is_away(error: BaseException, unavailable: bool) -> None:
    assert is_unavailable(error) is unavailable
