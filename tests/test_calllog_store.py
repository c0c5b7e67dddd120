"""The call-log store on SQLite and PostgreSQL: migrations, idempotent writes, reading, purge.

Every store test runs twice: on a SQLite file under tmp_path, and on PostgreSQL at
127.0.0.1:5432 (user postgres, database `test`), in a database of its own created for the
run (`octi_test_<random>`) and dropped afterwards. Without a reachable PostgreSQL the
PostgreSQL cases are skipped, except in CI (CI=true) where they fail.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.calllog.migrate import current_revision, downgrade_database, head_revision, upgrade_database
from app.calllog.models import Base, make_engine
from app.calllog.records import CallEnded, CallEvent, CallRecord, CallStarted, PassageUsed, TurnRecorded
from app.calllog.store import CallLogStore
from app.calllog.views import FLAG_ERROR, FLAG_INTERRUPTED, FLAG_NO_KNOWLEDGE, CallQuery
from app.config import Settings

PG_SERVER = os.environ.get("OCTI_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
CALL_TABLES = ("calls", "turns", "turn_passages", "call_events")
TABLES = (*CALL_TABLES, "web_users")
T = TypeVar("T")

T0 = datetime(2025, 11, 20, 9, 30, tzinfo=UTC)


def run_in_thread(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion on its own loop in another thread (safe from any test)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, make()).result()  # type: ignore[arg-type]


def _pg_url(database: str) -> str:
    return PG_SERVER.rsplit("/", 1)[0] + "/" + database


async def _admin(statement: str) -> None:
    engine = create_async_engine(PG_SERVER, isolation_level="AUTOCOMMIT", poolclass=NullPool,
                                 connect_args={"timeout": 3})
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


def create_pg_database() -> str:
    """A new, empty database on the test server; skip (fail in CI) when there is no server."""
    name = f"octi_test_{secrets.token_hex(5)}"
    try:
        run_in_thread(lambda: _admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        server = make_url(PG_SERVER)
        where = f"{server.host}:{server.port or 5432}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI at {where} (user {server.username}, database "
                        f"{server.database}): {reason}", pytrace=False)
        pytest.skip(f"PostgreSQL not reachable at {where}, PostgreSQL cases skipped: {reason}")
    return name


def drop_pg_database(name: str) -> None:
    run_in_thread(lambda: _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A migrated PostgreSQL database for this test run."""
    name = create_pg_database()
    url = _pg_url(name)
    try:
        run_in_thread(lambda: upgrade_database(url))
        yield url
    finally:
        drop_pg_database(name)


async def _clear(url: str) -> None:
    engine = make_engine(url, pooled=False)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty call-log database."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'calls.sqlite3'}"
        run_in_thread(lambda: upgrade_database(url))
        return url
    url = request.getfixturevalue("pg_url")
    run_in_thread(lambda: _clear(url))
    return url


@pytest.fixture
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database that has never been migrated, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh' / 'calls.sqlite3'}"
        return
    name = create_pg_database()
    try:
        yield _pg_url(name)
    finally:
        drop_pg_database(name)


PRICES = Settings().model_prices


@pytest.fixture
async def store(database_url: str) -> CallLogStore:
    opened = await CallLogStore.open(database_url, prices=PRICES)
    yield opened
    await opened.close()


# ---------------------------------------------------------------------------- records


def started(sid: str, at: datetime = T0, **fields: Any) -> CallStarted:
    values: dict[str, Any] = dict(
        call_sid=sid, stream_sid=f"MZ{sid}", channel="twilio", caller_masked="+336••••••78",
        caller_hash="h" * 32, caller_number=None, called="+33900000000", started_at=at, codec="pcm16",
        model="gpt-realtime", rag_mode="inject")
    values.update(fields)
    return CallStarted(**values)


def ended(sid: str, at: datetime = T0, *, seconds: float = 90.0, **fields: Any) -> CallEnded:
    values: dict[str, Any] = dict(call_sid=sid, ended_at=at + timedelta(seconds=seconds), outcome="caller_hung_up",
                                  answered_at=at, duration_s=seconds, turns=2, cost_usd=0.01)
    values.update(fields)
    return CallEnded(**values)


def caller(sid: str, index: int, words: str, **fields: Any) -> TurnRecorded:
    return TurnRecorded(call_sid=sid, index=index, role="caller", text=words, start_ms=index * 4000.0,
                        end_ms=index * 4000.0 + 2500, **fields)


def octi(sid: str, index: int, words: str, **fields: Any) -> TurnRecorded:
    return TurnRecorded(call_sid=sid, index=index, role="assistant", text=words, start_ms=index * 4000.0,
                        end_ms=index * 4000.0 + 3000, **fields)


PASSAGES = (PassageUsed("vent-3", "sample_pack/ventilation.md", "Ventilation minimale", 0.91),
            PassageUsed("vent-7", "sample_pack/ventilation.md", "Coup de chaleur", 0.64))


def full_call(sid: str = "CA1", at: datetime = T0) -> list[CallRecord]:
    return [
        started(sid, at),
        caller(sid, 0, "Mes poulets halètent, il fait trop chaud dans le bâtiment",
               passages=PASSAGES, retrieval_ms=42.0, retrieval_outcome="ok"),
        octi(sid, 1, "Augmentez la ventilation et vérifiez les abreuvoirs.",
             speech_end_to_model_audio_ms=480.0, model_audio_to_caller_ms=35.0),
        CallEvent(sid, at + timedelta(seconds=20), "dtmf", "5"),
        CallEvent(sid, at + timedelta(seconds=5), "stream_error", "late mark"),
        ended(sid, at, input_tokens=1200, output_tokens=800, input_audio_tokens=900, output_audio_tokens=700,
              cached_tokens=300),
    ]


async def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in id order."""
    engine = make_engine(url, pooled=False)
    try:
        async with engine.connect() as connection:
            return {table: [tuple(row) for row in await connection.execute(text(f"SELECT * FROM {table} ORDER BY id"))]
                    for table in CALL_TABLES}
    finally:
        await engine.dispose()


# ---------------------------------------------------------------------------- migrations


def _schema_differences(sync_connection: Any) -> list[Any]:
    context = MigrationContext.configure(sync_connection, opts={
        "compare_type": True,
        "include_object": lambda obj, name, type_, reflected, compare_to: name != "ix_turns_search_text_trgm",
    })
    return compare_metadata(context, Base.metadata)


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgresql"], indirect=True)
async def test_migrations_apply_on_an_empty_database(empty_database_url: str) -> None:
    url = empty_database_url
    if url.startswith("sqlite"):
        assert not Path(url.split("///", 1)[1]).exists()   # even its directory is missing
    assert await current_revision(url) is None

    # Start-up and the writer may both migrate at once: they must not trip over each other.
    await asyncio.gather(upgrade_database(url), upgrade_database(url), upgrade_database(url))
    assert await current_revision(url) == head_revision() == "0004"
    engine = make_engine(url, pooled=False)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
            assert set(TABLES) <= tables
            # The models and the hand-written migration describe the same schema.
            assert await connection.run_sync(_schema_differences) == []
    finally:
        await engine.dispose()

    await upgrade_database(url)                # already at head: nothing to do
    await downgrade_database(url)              # and the way back works too
    assert await current_revision(url) is None
    await upgrade_database(url)
    assert await current_revision(url) == "0004"


async def _execute(url: str, *statements: str) -> None:
    engine = make_engine(url, pooled=False)   # foreign keys on, as the service has them
    try:
        async with engine.begin() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    engine = make_engine(url, pooled=False)
    try:
        async with engine.connect() as connection:
            return [tuple(row) for row in await connection.execute(text(query))]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgresql"], indirect=True)
async def test_migration_0002_keeps_the_calls_logged_before_it(empty_database_url: str) -> None:
    url = empty_database_url
    await upgrade_database(url, "0001")
    # A database as 0001's code left it: a call with its turn, passage and event, a call
    # logged at $0 (how an unpriced model was logged), and a purged call (id 3).
    await _execute(
        url,
        "INSERT INTO calls (call_sid, started_at, model, input_tokens, output_tokens, cost_usd, turns) "
        "VALUES ('CAOLD', '2025-11-20 09:30:00', 'gpt-realtime', 1200, 800, 0.5, 1)",
        "INSERT INTO calls (call_sid, started_at, model, input_tokens, cost_usd) "
        "VALUES ('CAZERO', '2025-11-20 09:40:00', 'my-deployment', 50, 0)",
        "INSERT INTO calls (call_sid, started_at) VALUES ('CAGONE', '2025-11-20 09:50:00')",
        "DELETE FROM calls WHERE call_sid = 'CAGONE'",
        "INSERT INTO turns (call_id, turn_index, role, text, search_text) "
        "VALUES (1, 0, 'caller', 'Mes poules toussent', 'mes poules toussent')",
        "INSERT INTO turn_passages (turn_id, rank, passage_id, source, title, score) "
        "VALUES (1, 0, 'resp-1', 'sample_pack/respiratoire.md', 'Troubles respiratoires', 0.8)",
        "INSERT INTO call_events (call_id, at, type, detail, dedupe_key) "
        "VALUES (1, '2025-11-20 09:30:05', 'dtmf', '5', 'k1')",
    )
    before = await dump(url)

    await upgrade_database(url)
    assert await current_revision(url) == "0004"
    after = await dump(url)
    # Every row is still there (rebuilding the table on SQLite must not cascade), the old
    # columns keep their values, and the new ones come after them with their defaults.
    for table in ("turns", "turn_passages", "call_events"):
        assert after[table] == before[table], table
    assert [row[:len(before["calls"][0])] for row in after["calls"]] == before["calls"]
    # 0002's transcription columns, then 0004's recap
    assert [row[len(before["calls"][0]):] for row in after["calls"]] == [("", 0, 0, 0, 0, None, None)] * 2
    engine = make_engine(url, pooled=False)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_schema_differences) == []
    finally:
        await engine.dispose()

    store = await CallLogStore.open(url, prices=PRICES)
    try:
        old = await store.get_call(1)
        assert old is not None and old.summary.cost_usd == 0.5 and old.transcription_cost_usd is None
        assert old.turns[0].passages[0].title == "Troubles respiratoires" and old.events[0].detail == "5"
        assert not old.transcribed                       # nothing known of its transcription
        # A new call may have an unknown cost; the purged call's id is still not handed out.
        await store.apply([started("CANEW", model="my-deployment"), ended("CANEW", cost_usd=None, input_tokens=10)])
        assert await store.find_call_id("CANEW") == 4
        new = await store.get_call(4)
        assert new is not None and new.summary.cost_usd is None
    finally:
        await store.close()

    # The way back: an unknown cost becomes 0 again (0001's column cannot hold NULL).
    await downgrade_database(url, "0001")
    assert await _rows(url, "SELECT call_sid, cost_usd FROM calls ORDER BY id") == \
        [("CAOLD", 0.5), ("CAZERO", 0.0), ("CANEW", 0.0)]
    assert len(await _rows(url, "SELECT * FROM turns")) == 1
    await upgrade_database(url)
    assert await current_revision(url) == "0004"


# ---------------------------------------------------------------------------- writing


async def test_apply_is_idempotent(store: CallLogStore, database_url: str) -> None:
    records = full_call()
    await store.apply(records)
    first = await dump(database_url)
    assert [len(first[table]) for table in CALL_TABLES] == [1, 2, 2, 2]

    await store.apply(records)                              # the same batch again
    for record in records:                                  # and one by one, as a replay might
        await store.apply([record])
    assert await dump(database_url) == first


async def test_a_batch_of_many_calls_keeps_the_last_version_of_each_turn(store: CallLogStore,
                                                                         database_url: str) -> None:
    # Interleaved as a live server sends them: six calls (three not started yet), each caller
    # turn sent twice or three times, the last time sometimes with fewer passages.
    sids = [f"CA{n}" for n in range(6)]
    records: list[CallRecord] = [started(sid, T0 + timedelta(minutes=n)) for n, sid in enumerate(sids) if n % 2 == 0]
    latest: dict[tuple[str, int], TurnRecorded] = {}
    for index in range(4):
        versions: dict[str, list[TurnRecorded]] = {}
        for n, sid in enumerate(sids):
            if index % 2:
                versions[sid] = [octi(sid, index, f"Réponse {index}", interrupted=n % 2 == 1,
                                      heard_ms=1200.0 if n % 2 else None)]
                continue
            words = f"Question {index} de {sid}"
            versions[sid] = [caller(sid, index, words),
                             caller(sid, index, words, passages=PASSAGES, retrieval_ms=40.0, retrieval_outcome="ok")]
            if n % 3 == 0:
                versions[sid].append(caller(sid, index, words + " (corrigée)", passages=PASSAGES[1:],
                                            retrieval_ms=55.0, retrieval_outcome="ok"))
        for round_ in range(3):
            for sid in sids:
                if round_ < len(versions[sid]):
                    records.append(versions[sid][round_])
                    latest[(sid, index)] = versions[sid][round_]
        records.append(CallEvent(sids[index], T0 + timedelta(seconds=index), "dtmf", str(index)))
        records.append(CallEvent(sids[index], T0 + timedelta(seconds=index), "dtmf", str(index)))  # in-batch replay
    records += [ended(sid, T0 + timedelta(minutes=n), turns=0, barge_ins=0) for n, sid in enumerate(sids) if n < 3]

    await store.apply(records)
    for n, sid in enumerate(sids):
        detail = await store.get_call(await store.find_call_id(sid))
        assert detail is not None
        assert detail.turns == [latest[(sid, index)] for index in range(4)]
        assert (detail.summary.turns, detail.summary.barge_ins) == (4, 2 if n % 2 else 0)
        assert len(detail.events) == (1 if n < 4 else 0)
    first = await dump(database_url)
    assert [len(first[table]) for table in CALL_TABLES] == [6, 24, 2 * 12 - 4, 4]

    await store.apply(records)                              # the whole batch again changes nothing
    assert await dump(database_url) == first
    for start in range(0, len(records), 7):                 # nor does it in smaller batches, as a replay
        await store.apply(records[start:start + 7])         # might: an earlier version is then applied
    again = await dump(database_url)                        # again for a while, so only the ids of
    for stored in (first, again):                           # passages re-added in between may change
        stored["turn_passages"] = sorted(row[1:] for row in stored["turn_passages"])
    assert again == first


async def test_a_turn_sent_again_replaces_the_previous_version(store: CallLogStore) -> None:
    await store.apply([started("CA1"), caller("CA1", 0, "Mes poules ne pondent plus")])
    await store.apply([caller("CA1", 0, "Mes poules ne pondent plus", passages=PASSAGES[:1],
                              retrieval_ms=12.5, retrieval_outcome="ok")])
    detail = await store.get_call(1)
    assert detail is not None and len(detail.turns) == 1
    assert detail.turns[0].passages == PASSAGES[:1] and detail.turns[0].retrieval_outcome == "ok"

    await store.apply([caller("CA1", 0, "Mes poules ne pondent plus", retrieval_outcome="timeout")])
    detail = await store.get_call(1)
    assert detail is not None and detail.turns[0].passages == () and detail.turns[0].retrieval_outcome == "timeout"


async def test_records_before_the_start_are_kept_and_the_start_fills_the_call(store: CallLogStore) -> None:
    records = full_call("CA9")
    start, rest = records[0], records[1:]
    await store.apply(rest[:1])                      # a turn of a call we have not seen start
    summaries, total = await store.list_calls(CallQuery())
    assert total == 1 and summaries[0].call_sid == "CA9" and summaries[0].caller_masked == ""

    await store.apply(rest[1:])                      # then events and the end
    await store.apply([start])                       # and the start, last
    summaries, total = await store.list_calls(CallQuery())
    assert total == 1
    summary = summaries[0]
    assert (summary.started_at, summary.caller_masked, summary.outcome, summary.turns) == \
           (T0, "+336••••••78", "caller_hung_up", 2)
    detail = await store.get_call(summary.id)
    assert detail is not None
    assert (detail.model, detail.stream_sid, detail.codec) == ("gpt-realtime", "MZCA9", "pcm16")
    assert [t.index for t in detail.turns] == [0, 1] and len(detail.events) == 2


async def test_an_ended_call_without_cost_is_priced_from_its_tokens(store: CallLogStore) -> None:
    async def cost(sid: str) -> float | None:
        detail = await store.get_call(await store.find_call_id(sid))
        assert detail is not None
        return detail.summary.cost_usd

    # gpt-realtime: 1000 text tokens in at $4/M, 1000 audio tokens out at $64/M.
    await store.apply([started("CA1"), ended("CA1", cost_usd=None, input_tokens=1000, input_audio_tokens=0,
                                             output_tokens=1000, output_audio_tokens=1000)])
    assert await cost("CA1") == pytest.approx((1000 * 4.0 + 1000 * 64.0) / 1_000_000)
    # A cost given by the journal is kept as it is.
    await store.apply([started("CA3"), ended("CA3", cost_usd=0.5, input_tokens=1000, output_tokens=1000)])
    assert await cost("CA3") == 0.5
    # $0 for tokens is how code before unknown costs logged a model without a price: priced again.
    await store.apply([started("CA4"), ended("CA4", cost_usd=0.0, input_tokens=0, output_tokens=1000,
                                             output_audio_tokens=0)])
    assert await cost("CA4") == pytest.approx(1000 * 16.0 / 1_000_000)
    # $0 without any usage is a known $0.
    await store.apply([started("CA5"), ended("CA5", cost_usd=0.0)])
    assert await cost("CA5") == 0.0

    # The end arriving before the start: unknown until the model is known, then priced.
    await store.apply([ended("CA2", cost_usd=None, input_tokens=0, output_tokens=1000, output_audio_tokens=0)])
    assert await cost("CA2") is None
    await store.apply([started("CA2", T0 + timedelta(hours=1))])
    assert await cost("CA2") == pytest.approx(1000 * 16.0 / 1_000_000)


async def test_an_unknown_cost_stays_unknown_and_round_trips(store: CallLogStore) -> None:
    # A model MODEL_PRICES does not know: the journal could not price it, nor can the store.
    await store.apply([started("CAX", model="my-azure-deployment", transcription_model="gpt-realtime-whisper"),
                       ended("CAX", cost_usd=None, input_tokens=500, output_tokens=700, output_audio_tokens=600,
                             transcription_seconds=42.5, transcription_cost_usd=0.012042)])
    detail = await store.get_call(await store.find_call_id("CAX"))
    assert detail is not None
    assert detail.summary.cost_usd is None                      # never $0
    assert (detail.transcription_model, detail.transcription_seconds, detail.transcription_cost_usd) == \
           ("gpt-realtime-whisper", 42.5, 0.012042)             # the part that could be priced is kept
    summaries, _ = await store.list_calls(CallQuery())
    assert [s.cost_usd for s in summaries] == [None]
    await store.apply([started("CAX", model="my-azure-deployment", transcription_model="gpt-realtime-whisper")])
    assert (await store.get_call(detail.summary.id)).summary.cost_usd is None   # a replay changes nothing


async def test_the_transcription_part_is_stored_and_priced_with_the_call(store: CallLogStore) -> None:
    # Sent without a cost (as a record from before transcription pricing would be replayed
    # with a cost of None): both parts priced from what was stored.
    await store.apply([started("CAT", transcription_model="gpt-transcribe"),
                       ended("CAT", cost_usd=None, input_tokens=1000, output_tokens=0, transcription_seconds=90.0,
                             transcription_cost_usd=None)])
    detail = await store.get_call(await store.find_call_id("CAT"))
    assert detail is not None and detail.transcribed
    assert detail.transcription_cost_usd == pytest.approx(1.5 * 0.0045)
    assert detail.summary.cost_usd == pytest.approx(1000 * 4.0 / 1_000_000 + 1.5 * 0.0045)
    # Transcription usage its model has no price for: the call's cost is unknown.
    await store.apply([started("CAU", transcription_model="unpriced-asr"),
                       ended("CAU", cost_usd=None, input_tokens=1000, transcription_input_tokens=300,
                             transcription_input_audio_tokens=280, transcription_output_tokens=20)])
    detail = await store.get_call(await store.find_call_id("CAU"))
    assert detail is not None
    assert (detail.transcription_input_tokens, detail.transcription_input_audio_tokens,
            detail.transcription_output_tokens) == (300, 280, 20)
    assert detail.transcription_cost_usd is None and detail.summary.cost_usd is None

    # The end before the start: unknown until the start names the models, then both parts priced.
    await store.apply([ended("CAL", cost_usd=None, output_tokens=1000, transcription_seconds=30.0)])
    call_id = await store.find_call_id("CAL")
    assert (await store.get_call(call_id)).summary.cost_usd is None
    await store.apply([started("CAL", transcription_model="gpt-realtime-whisper")])
    detail = await store.get_call(call_id)
    assert detail.transcription_cost_usd == pytest.approx(0.5 * 0.017)
    assert detail.summary.cost_usd == pytest.approx(1000 * 16.0 / 1_000_000 + 0.5 * 0.017)


# ---------------------------------------------------------------------------- reading


async def test_list_is_newest_first_with_pagination_and_total(store: CallLogStore) -> None:
    sids = [f"CA{n:02d}" for n in range(7)]
    # Stored out of order; the start times alone decide.
    for n in (3, 0, 6, 1, 5, 2, 4):
        await store.apply([started(sids[n], T0 + timedelta(minutes=n))])
    page1, total = await store.list_calls(CallQuery(per_page=3))
    page2, _ = await store.list_calls(CallQuery(per_page=3, page=2))
    page3, _ = await store.list_calls(CallQuery(per_page=3, page=3))
    page4, total4 = await store.list_calls(CallQuery(per_page=3, page=4))
    assert total == total4 == 7
    assert [s.call_sid for s in page1 + page2 + page3] == sids[::-1]
    assert (len(page1), len(page2), len(page3), page4) == (3, 3, 1, [])
    ongoing = page1[0]
    assert (ongoing.duration_s, ongoing.outcome, ongoing.flags) == (None, None, ())


async def test_text_search_covers_both_sides_ignoring_case_and_accents(store: CallLogStore) -> None:
    await store.apply(full_call("CA1", T0))
    await store.apply([started("CA2", T0 + timedelta(hours=1)),
                       caller("CA2", 0, "Des ŒUFS fêlés, 15% de casse ce matin"),
                       octi("CA2", 1, "Vérifiez le ramassage des oeufs.")])
    await store.apply([started("CA3", T0 + timedelta(hours=2)), caller("CA3", 0, "Bonjour")])

    async def found(words: str) -> list[str]:
        summaries, total = await store.list_calls(CallQuery(text=words))
        assert total == len(summaries)
        return [s.call_sid for s in summaries]

    assert await found("ventilation") == ["CA1"]                 # OCTI's words
    assert await found("HALÈTENT") == ["CA1"]                    # the caller's, in capitals
    assert await found("batiment") == ["CA1"]                    # without the accent
    assert await found("oeufs") == ["CA2"]                       # "ŒUFS" and "oeufs" alike
    assert await found("œufs felés") == ["CA2"]                  # every word, in any turn
    assert await found("œufs ventilation") == []
    assert await found("15%") == ["CA2"]                         # LIKE wildcards are plain text
    assert await found("1_%") == []
    assert await found("bâtiment  chaud") == ["CA1"]
    assert await found("tracteur") == []
    summaries, total = await store.list_calls(CallQuery(text="  "))
    assert total == 3


async def test_outcome_and_date_filters(store: CallLogStore) -> None:
    paris = timezone(timedelta(hours=1))
    await store.apply([started("CA1", datetime(2025, 11, 18, 23, 59, 59, tzinfo=UTC)),
                       ended("CA1", datetime(2025, 11, 18, 23, 59, 59, tzinfo=UTC), outcome="error")])
    # 00:30 in Paris on the 19th is 23:30 UTC on the 18th: dates are UTC dates.
    await store.apply([started("CA2", datetime(2025, 11, 19, 0, 30, tzinfo=paris))])
    await store.apply([started("CA3", datetime(2025, 11, 19, 0, 0, tzinfo=UTC)), ended("CA3", T0)])
    await store.apply([started("CA4", datetime(2025, 11, 20, 12, 0, tzinfo=UTC)), ended("CA4", T0)])

    async def found(**filters: Any) -> list[str]:
        summaries, total = await store.list_calls(CallQuery(**filters))
        assert total == len(summaries)
        return sorted(s.call_sid for s in summaries)

    assert await found(outcome="error") == ["CA1"]
    assert await found(outcome="caller_hung_up") == ["CA3", "CA4"]
    assert await found(date_from=date(2025, 11, 19)) == ["CA3", "CA4"]
    assert await found(date_to=date(2025, 11, 18)) == ["CA1", "CA2"]
    assert await found(date_from=date(2025, 11, 19), date_to=date(2025, 11, 19)) == ["CA3"]
    assert await found(date_from=date(2025, 11, 18), date_to=date(2025, 11, 19), outcome="caller_hung_up") == ["CA3"]
    assert await found(date_from=date(2025, 11, 21)) == []
    summaries, _ = await store.list_calls(CallQuery(date_to=date(2025, 11, 18)))
    assert [s.started_at for s in summaries] == [datetime(2025, 11, 18, 23, 59, 59, tzinfo=UTC),
                                                 datetime(2025, 11, 18, 23, 30, tzinfo=UTC)]  # read back in UTC


async def test_flags(store: CallLogStore) -> None:
    at = [T0 + timedelta(minutes=n) for n in range(6)]
    await store.apply([started("CLEAN", at[0]), caller("CLEAN", 0, "a", retrieval_outcome="ok"),
                       octi("CLEAN", 1, "b"), CallEvent("CLEAN", at[0], "dtmf", "1"), ended("CLEAN", at[0])])
    await store.apply([started("BARGE", at[1]), ended("BARGE", at[1], barge_ins=2)])
    await store.apply([started("EMPTY", at[2]), caller("EMPTY", 0, "a", retrieval_outcome="empty"),
                       caller("EMPTY", 1, "b", retrieval_outcome="ok")])
    await store.apply([started("SLOW", at[3]), caller("SLOW", 0, "a", retrieval_outcome="timeout")])
    # A failed retrieval only counts on the caller's side; "cancelled" is not a lack of knowledge.
    await store.apply([started("OTHER", at[4]), octi("OTHER", 0, "a", retrieval_outcome="error"),
                       caller("OTHER", 1, "b", retrieval_outcome="cancelled")])
    await store.apply([started("FAIL", at[5]), CallEvent("FAIL", at[5], "upstream_failure", "closed 1011"),
                       octi("FAIL", 0, "a", interrupted=True, heard_ms=300.0)])
    await store.apply([started("ERR", T0 - timedelta(hours=1)), ended("ERR", T0, outcome="error")])

    summaries, _ = await store.list_calls(CallQuery())
    flags = {s.call_sid: s.flags for s in summaries}
    assert flags == {
        "CLEAN": (), "BARGE": (FLAG_INTERRUPTED,), "EMPTY": (FLAG_NO_KNOWLEDGE,), "SLOW": (FLAG_NO_KNOWLEDGE,),
        "OTHER": (), "FAIL": (FLAG_INTERRUPTED, FLAG_ERROR), "ERR": (FLAG_ERROR,),
    }
    fail = next(s for s in summaries if s.call_sid == "FAIL")
    assert (fail.turns, fail.barge_ins) == (1, 1)   # counted from the turns while the call goes on
    detail = await store.get_call(fail.id)
    assert detail is not None and detail.summary.flags == (FLAG_INTERRUPTED, FLAG_ERROR)


async def test_get_call_returns_everything_in_order(store: CallLogStore) -> None:
    await store.apply([started("CA0", T0 - timedelta(days=1))])
    records = full_call("CA1")
    # The turns arrive out of order (an assistant turn is journaled once it was heard).
    await store.apply([records[0], records[2], records[1], *records[3:]])
    call_id = await store.find_call_id("CA1")
    assert call_id == 2 and await store.find_call_id("CA404") is None
    detail = await store.get_call(call_id)
    assert detail is not None
    assert (detail.summary.call_sid, detail.summary.duration_s, detail.summary.turns) == ("CA1", 90.0, 2)
    assert (detail.caller_hash, detail.called, detail.channel, detail.rag_mode) == \
           ("h" * 32, "+33900000000", "twilio", "inject")
    assert (detail.answered_at, detail.ended_at) == (T0, T0 + timedelta(seconds=90))
    assert (detail.input_tokens, detail.output_tokens, detail.input_audio_tokens, detail.output_audio_tokens,
            detail.cached_tokens) == (1200, 800, 900, 700, 300)
    assert detail.turns == [records[1], records[2]]           # the very records, passages by rank
    assert detail.turns[0].passages == PASSAGES
    assert detail.turns[1].speech_end_to_model_audio_ms == 480.0
    assert [(e.type, e.detail) for e in detail.events] == [("stream_error", "late mark"), ("dtmf", "5")]
    assert detail.events[0].at == T0 + timedelta(seconds=5) and detail.events[0].at.tzinfo is not None
    assert await store.get_call(999) is None


async def test_recording_path_only_when_the_file_exists(store: CallLogStore, tmp_path: Path) -> None:
    wav = tmp_path / "recordings" / "CA1.wav"
    wav.parent.mkdir()
    wav.write_bytes(b"RIFF")
    await store.apply([started("CA1", recorded=True), ended("CA1", recording_path=str(wav))])
    await store.apply([started("CA2"), ended("CA2")])
    summaries, _ = await store.list_calls(CallQuery())
    recorded = {s.call_sid: s.recorded for s in summaries}
    assert recorded == {"CA1": True, "CA2": False}
    ids = {s.call_sid: s.id for s in summaries}
    assert await store.recording_path(ids["CA1"]) == wav
    assert await store.recording_path(ids["CA2"]) is None
    wav.unlink()
    assert await store.recording_path(ids["CA1"]) is None


async def test_purge_deletes_old_calls_with_their_rows_and_recordings(store: CallLogStore, database_url: str,
                                                                      tmp_path: Path) -> None:
    now = datetime(2025, 11, 21, 12, 0, tzinfo=UTC)
    old_wav, new_wav = tmp_path / "old.wav", tmp_path / "new.wav"
    old_wav.write_bytes(b"RIFF")
    new_wav.write_bytes(b"RIFF")
    old, recent = now - timedelta(days=31), now - timedelta(days=29)
    await store.apply(full_call("NEW", recent) + [ended("NEW", recent, recording_path=str(new_wav))])
    await store.apply(full_call("OLD", old) + [ended("OLD", old, recording_path=str(old_wav))])
    await store.apply(full_call("GONE", old) + [ended("GONE", old, recording_path=str(tmp_path / "missing.wav"))])

    assert await store.purge(timedelta(days=30), now=now) == (2, 1)
    assert not old_wav.exists() and new_wav.exists()
    summaries, total = await store.list_calls(CallQuery())
    assert total == 1 and summaries[0].call_sid == "NEW"
    rows = await dump(database_url)
    assert [len(rows[table]) for table in CALL_TABLES] == [1, 2, 2, 2]   # nothing left of the old calls
    assert await store.purge(timedelta(days=30), now=now) == (0, 0)

    await store.apply(full_call("OLD", old))                        # a purged call's id is not reused
    assert await store.find_call_id("OLD") == 4


async def test_a_reader_of_the_sqlite_file_never_holds_up_the_services_writes(tmp_path: Path) -> None:
    """`octi calls`, the review or another worker reading the SQLite file while the service
    writes: the write goes through (write-ahead log), where a rollback journal would make it wait
    for the reader, then fail with « database is locked »."""
    path = tmp_path / "calls.sqlite3"
    url = f"sqlite+aiosqlite:///{path}"
    await upgrade_database(url)
    async with await CallLogStore.open(url, prices=PRICES) as store:
        await store.apply([started("CA1")])
        reader = sqlite3.connect(path)
        try:
            reader.execute("BEGIN")
            assert reader.execute("SELECT count(*) FROM calls").fetchone() == (1,)  # a read under way
            await store.apply([started("CA2")])
            assert reader.execute("SELECT count(*) FROM calls").fetchone() == (1,)  # its snapshot holds
        finally:
            reader.rollback()
            reader.close()
        calls, total = await store.list_calls(CallQuery())
    assert total == 2 and {call.call_sid for call in calls} == {"CA1", "CA2"}
