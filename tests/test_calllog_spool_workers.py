"""Several processes on one DATA_DIR (`octi serve --workers N`, or a restart while the old
process still drains): each spools to a file of its own, and every record spooled lands in the
database exactly once, whoever replays it.

Two spools in one test stand for two processes: a `flock` taken through one descriptor holds
against any other descriptor, in this process or another. The last test runs real processes.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from app.calllog.migrate import upgrade_database
from app.calllog.records import CallRecord, from_dict, to_dict
from app.calllog.spool import SPOOL_NAME, Spool, process_spool_path
from app.calllog.writer import CallLogWriter
from app.config import Settings
from tests.test_calllog_store import T0, full_call
from tests.test_calllog_writer import applied, counts, spool_lines, sqlite_url, wait_until

__all__ = ["applied"]   # the fixture, used here too

TORN = '{"kind": "event", "call_s'   # a last line a crash cut short


def records_of(tag: str, calls: int) -> list[CallRecord]:
    records: list[CallRecord] = []
    for i in range(calls):
        records += full_call(f"CA{tag}{i:03d}", T0 + timedelta(minutes=i))
    return records


def leave_spool(path: Path, records: list[CallRecord], tail: str = "") -> None:
    """A spool file as a process that is gone left it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(to_dict(r), ensure_ascii=False) + "\n" for r in records) + tail,
                    encoding="utf-8")


def key(record: CallRecord) -> str:
    return json.dumps(to_dict(record), sort_keys=True, ensure_ascii=False)


def spool_files(data: Path) -> list[Path]:
    return [path for path in data.glob("calllog-spool.*jsonl") if not path.name.endswith(".rejected.jsonl")]


def expected_rows(records: list[CallRecord]) -> dict[str, int]:
    calls = len({record.call_sid for record in records})
    return {"calls": calls, "turns": 2 * calls, "turn_passages": 2 * calls, "call_events": 2 * calls}


def make_writer(url: str, data: Path, **options: Any) -> CallLogWriter:
    """A writer as `from_settings` makes one for each process, retrying quickly."""
    return CallLogWriter(url, process_spool_path(data), prices=Settings().model_prices,
                         retry_initial=0.02, retry_max=0.1, **options)


class AwayDatabase:
    """A migrated SQLite database behind a link that points at a plain file first (away);
    `back()` swaps the link atomically, so no writer ever sees a half-made database."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.link = tmp_path / "db"
        self.url = sqlite_url(self.link / "calls.sqlite3")

    async def prepare(self) -> AwayDatabase:
        await upgrade_database(sqlite_url(self.tmp_path / "ready" / "calls.sqlite3"))
        (self.tmp_path / "away").write_text("a file where the database's directory should be")
        os.symlink(self.tmp_path / "away", self.link)
        return self

    def back(self) -> None:
        os.symlink(self.tmp_path / "ready", self.tmp_path / "db.new")
        os.replace(self.tmp_path / "db.new", self.link)


async def test_two_processes_through_an_outage_store_each_record_once(tmp_path: Path, applied) -> None:
    database = await AwayDatabase(tmp_path).prepare()
    data = tmp_path / "data"
    left = {SPOOL_NAME: records_of("L", 2),                              # an older version's
            "calllog-spool.4242-0badcafe.jsonl": records_of("D", 2),      # workers that died
            "calllog-spool.4243-deadbeef.jsonl": records_of("E", 1)}
    for name, records in left.items():
        leave_spool(data / name, records)
    mine = {make_writer(database.url, data): records_of("A", 3), make_writer(database.url, data): records_of("B", 3)}
    writers = list(mine)

    await asyncio.gather(*(writer.start() for writer in writers))   # both look for leftovers at once
    assert not any((data / name).exists() for name in left)
    for writer, records in mine.items():
        for record in records:
            writer.submit(record)
    await wait_until(lambda: all(writer.status()["spooled"] == len(records) and writer.status()["queued"] == 0
                                 for writer, records in mine.items()))
    everything = [record for records in [*left.values(), *mine.values()] for record in records]
    assert sum(writer.status()["spool_pending"] for writer in writers) == len(everything)
    # On disk, each once (the counts are kept as appends are asked for; the disk follows).
    await wait_until(lambda: sorted(key(from_dict(line)) for path in spool_files(data) for line in spool_lines(path))
                     == sorted(key(record) for record in everything))

    database.back()                                                       # both replay at once
    assert all(await asyncio.gather(*(writer.flush(timeout=20) for writer in writers)))
    await asyncio.gather(*(writer.close() for writer in writers))

    assert Counter(key(record) for batch in applied for record in batch) == Counter(map(key, everything))
    statuses = [writer.status() for writer in writers]
    assert sum(status["replayed"] + status["written"] for status in statuses) == len(everything)
    assert [(status["lost"], status["rejected"]) for status in statuses] == [(0, 0), (0, 0)]
    assert await counts(database.url) == expected_rows(everything)
    assert [spool_lines(path) for path in spool_files(data)] == [[] for _ in spool_files(data)]


async def test_a_spool_file_left_by_a_dead_process_is_replayed_and_removed(tmp_path: Path, applied) -> None:
    data = tmp_path / "data"
    orphan = data / "calllog-spool.4242-0badcafe.jsonl"
    records = records_of("D", 2)
    leave_spool(orphan, records, tail=TORN)
    writer = make_writer(sqlite_url(data / "calls.sqlite3"), data)
    await writer.start()
    assert not orphan.exists()
    assert await writer.flush(timeout=10)
    await writer.close()

    assert [record for batch in applied for record in batch] == records
    status = writer.status()
    assert (status["replayed"], status["rejected"], status["spool_pending"]) == (len(records), 1, 0)
    assert [entry["line"] for entry in spool_lines(writer.rejected_path)] == [TORN]
    assert spool_lines(writer.spool_path) == []
    assert await counts(writer.url) == expected_rows(records)


async def test_a_spool_file_another_process_holds_is_left_alone_until_it_lets_go(tmp_path: Path, applied) -> None:
    data = tmp_path / "data"
    held = Spool(process_spool_path(data))                  # another process, the database away
    records = records_of("H", 2)
    await held.append(records[6:])
    await held.append(records[:6], prepend=True)            # its file renamed over: still held
    writer = make_writer(sqlite_url(data / "calls.sqlite3"), data, sweep_every=0.05)
    await writer.start()
    assert await writer.flush(timeout=10)
    await asyncio.sleep(0.2)                                # a few sweeps
    assert [from_dict(line) for line in spool_lines(held.path)] == records
    assert writer.status()["replayed"] == 0 and applied == []

    held.shutdown()                                         # it stops: its file is anyone's
    await held.wait_idle()
    await wait_until(lambda: writer.status()["replayed"] == len(records))
    assert not held.path.exists()

    late = records_of("Z", 1)
    held.append_in_background(late)                         # a call that ended after its shutdown
    await held.wait_idle()
    await wait_until(lambda: writer.status()["replayed"] == len(records) + len(late))
    assert await writer.flush(timeout=10)
    await writer.close()
    assert [record for batch in applied for record in batch] == records + late
    assert await counts(writer.url) == expected_rows(records + late)


async def test_taking_a_file_in_keeps_the_offsets_read_before(tmp_path: Path) -> None:
    data = tmp_path / "data"
    mine, other = Spool(process_spool_path(data)), Spool(process_spool_path(data))
    own, theirs = records_of("A", 1), records_of("B", 1)
    await mine.append(own)
    await other.append(theirs)
    assert await mine.recount() == 0                        # held by the other: left alone
    head = await mine.read(0, 3)

    other.shutdown()
    await other.wait_idle()
    assert await mine.recount() == len(theirs)              # taken in, behind what was read
    assert not other.path.exists() and mine.pending == len(own + theirs)
    assert await mine.consume(head[-1].end, len(head)) == 3
    assert [from_dict(line) for line in spool_lines(mine.path)] == own[3:] + theirs
    mine.shutdown()


# ---------------------------------------------------------------------- real processes

def _worker(data: str, url: str, tag: str, ready: Any, go: Any, results: Any) -> None:
    """One worker process: spools its calls during the outage, then more calls while it replays."""
    async def run() -> None:
        writer = make_writer(url, Path(data))
        await writer.start()
        for record in records_of(f"{tag}1", 5):
            writer.submit(record)
        await wait_until(lambda: writer.status()["spooled"] == 30 and writer.status()["queued"] == 0)
        ready.set()
        await asyncio.to_thread(go.wait, 60)
        for record in records_of(f"{tag}2", 5):
            writer.submit(record)
            await asyncio.sleep(0.002)
        flushed = await writer.flush(timeout=60)
        await writer.close()
        results.put((tag, flushed, writer.status()))

    asyncio.run(run())


async def test_two_worker_processes_share_data_dir_without_losing_or_doubling(tmp_path: Path) -> None:
    database = await AwayDatabase(tmp_path).prepare()
    data = tmp_path / "data"
    left = records_of("L", 4)
    leave_spool(data / SPOOL_NAME, left[:12])
    leave_spool(data / "calllog-spool.4242-0badcafe.jsonl", left[12:])
    context = multiprocessing.get_context("spawn")         # as `octi serve --workers N` starts them
    go, results = context.Event(), context.Queue()
    ready = {tag: context.Event() for tag in ("P", "Q")}
    processes = [context.Process(target=_worker, args=(str(data), database.url, tag, event, go, results))
                 for tag, event in ready.items()]
    for process in processes:
        process.start()
    try:
        assert all([await asyncio.to_thread(event.wait, 60) for event in ready.values()])
        database.back()
        go.set()
        statuses = [await asyncio.to_thread(results.get, True, 90) for _ in processes]
    finally:
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()

    everything = left + [record for tag in ready for batch in "12" for record in records_of(tag + batch, 5)]
    assert all(flushed for _tag, flushed, _status in statuses)
    assert sum(status["replayed"] + status["written"] for _tag, _flushed, status in statuses) == len(everything)
    assert [(status["lost"], status["rejected"]) for _tag, _flushed, status in statuses] == [(0, 0), (0, 0)]
    assert await counts(database.url) == expected_rows(everything)
    assert [spool_lines(path) for path in spool_files(data)] == [[] for _ in spool_files(data)]
