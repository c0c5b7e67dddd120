"""The spool on its own: real files under tmp_path, and a real SQLite store for the replays."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from app.calllog.migrate import upgrade_database
from app.calllog.records import CallEvent, from_dict, to_dict
from app.calllog.spool import SPOOL_NAME, Spool
from app.calllog.store import CallLogStore
from tests.test_calllog_store import T0, full_call, started
from tests.test_calllog_writer import calls_of, counts, spool_lines, sqlite_url


def spool_in(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "data" / SPOOL_NAME)


async def test_appends_are_on_disk_in_order(tmp_path: Path) -> None:
    spool = spool_in(tmp_path)
    first, second = calls_of(2)[:6], calls_of(2)[6:]
    await spool.append(first)
    spool.append_in_background(second)          # from `submit`: does not wait
    await spool.wait_idle()
    assert not spool.busy
    assert [from_dict(line) for line in spool_lines(spool.path)] == first + second
    assert spool.counts() == {"spooled": 12, "spool_pending": 12, "rejected": 0, "lost": 0}


async def test_a_prepended_batch_goes_ahead_of_the_file(tmp_path: Path) -> None:
    spool = spool_in(tmp_path)
    older, newer = full_call("CA1"), full_call("CA2")
    await spool.append(newer)
    await spool.append(older, prepend=True)
    assert [from_dict(line) for line in spool_lines(spool.path)] == older + newer


async def test_read_gives_entries_in_order_and_consume_keeps_what_came_after(tmp_path: Path) -> None:
    spool = spool_in(tmp_path)
    records = calls_of(2)
    await spool.append(records[:8])

    head = await spool.read(0, 5)
    assert [entry.record for entry in head] == records[:5]
    tail = await spool.read(head[-1].end, 5)
    assert [entry.record for entry in tail] == records[5:8]

    await spool.append(records[8:])             # appended while the first five were replayed
    assert await spool.consume(head[-1].end, len(head)) == 5
    assert [from_dict(line) for line in spool_lines(spool.path)] == records[5:]
    assert spool.pending == len(records) - 5

    rest = await spool.read(0, 100)
    assert await spool.consume(rest[-1].end, len(rest)) == len(rest)
    assert spool.path.read_bytes() == b"" and spool.pending == 0


async def test_a_torn_last_line_is_ended_read_back_unreadable_and_set_aside(tmp_path: Path) -> None:
    records = full_call("CA1")
    path = tmp_path / "data" / SPOOL_NAME
    path.parent.mkdir(parents=True)
    whole = "".join(json.dumps(to_dict(record), ensure_ascii=False) + "\n" for record in records[:3])
    path.write_text(whole + '{"kind": "turn", "call_s', encoding="utf-8")   # the crash cut the write short

    spool = Spool(path)
    assert await spool.recount() == 4           # left by the previous run, the torn line included
    late = CallEvent("CA1", T0 + timedelta(seconds=40), "dtmf", "1")
    await spool.append([late])                  # lands on a line of its own

    entries = await spool.read(0, 100)
    assert [entry.record for entry in entries] == [*records[:3], None, late]
    torn = entries[3]
    assert torn.line == '{"kind": "turn", "call_s' and torn.error.startswith("JSONDecodeError")

    spool.set_aside_line(torn)
    await spool.wait_idle()
    assert spool_lines(spool.rejected_path) == [{"error": torn.error, "line": torn.line}]
    assert spool.counts()["rejected"] == 1


async def test_a_recount_adds_only_what_was_not_known(tmp_path: Path) -> None:
    spool = spool_in(tmp_path)
    await spool.append(full_call("CA1"))
    assert await spool.recount() == 0           # a restart of the same writer: nothing new
    assert spool.pending == 6


async def test_replaying_twice_stores_each_record_once(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "data" / "calls.sqlite3")
    await upgrade_database(url)
    records = calls_of(3)
    await spool_in(tmp_path).append(records)

    # A replay that committed, then crashed before cutting the file: the next run reads it all again.
    for _run in range(2):
        spool = spool_in(tmp_path)
        await spool.recount()
        entries = await spool.read(0, 100)
        assert [entry.record for entry in entries] == records
        async with await CallLogStore.open(url) as store:
            await store.apply([entry.record for entry in entries if entry.record is not None])
    await spool.consume(entries[-1].end, len(entries))

    assert await counts(url) == {"calls": 3, "turns": 6, "turn_passages": 6, "call_events": 6}
    assert spool.path.read_bytes() == b"" and spool.pending == 0


async def test_records_refused_by_the_database_are_set_aside_with_the_reason(tmp_path: Path) -> None:
    spool = spool_in(tmp_path)
    refused = started("CA1")
    spool.set_aside([refused], ValueError("bad row\nwith details"))
    await spool.wait_idle()
    assert spool_lines(spool.rejected_path) == [{"error": "ValueError: bad row", "record": to_dict(refused)}]
    assert spool.counts()["rejected"] == 1 and not spool.path.exists()


async def test_records_that_cannot_be_spooled_are_counted_lost(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where DATA_DIR should be")
    spool = Spool(blocker / SPOOL_NAME)
    await spool.append(full_call("CA1"))
    spool.append_in_background([started("CA2")])
    await spool.wait_idle()
    assert spool.counts() == {"spooled": 7, "spool_pending": 0, "rejected": 0, "lost": 7}


async def test_a_record_that_cannot_be_serialised_is_lost_alone(tmp_path: Path) -> None:
    spool = spool_in(tmp_path)
    unserialisable: Any = CallEvent("CA1", T0, "dtmf", object())   # type: ignore[arg-type]
    good = started("CA1")
    await spool.append([unserialisable, good])
    assert [from_dict(line) for line in spool_lines(spool.path)] == [good]
    assert spool.counts() == {"spooled": 1, "spool_pending": 1, "rejected": 0, "lost": 1}
