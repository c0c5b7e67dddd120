"""The spool: call records kept on disk, in order, while the call-log database is away.

`DATA_DIR/calllog-spool.jsonl` holds one `to_dict` record per line. An append counts as done
once it is fsynced. A batch whose fate is unknown (it was being applied when the database
went away) is prepended, so it stays ahead of what was spooled after it.

The writer replays the file from its start (`read`, by byte offset) and then cuts what it
applied off the front (`consume`), keeping whatever was appended meanwhile. Nothing is
duplicated by replaying a line twice (a crash between the commit and the cut): the store's
`apply` is idempotent.

A crash may leave the last line cut short. `recount` (at start) ends it with a newline, so
later appends stay whole lines; `read` hands it back as an unreadable entry, which is set
aside (`set_aside_line`) in `calllog-spool.rejected.jsonl` with the records the database
refuses, and logged.

Every file operation runs in one thread, in the order it was asked for, so the appends of
`submit` (which must not wait for the disk) neither overtake nor interleave with the
writer task's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from app.calllog.records import CallRecord, from_dict, to_dict

log = logging.getLogger(__name__)

SPOOL_NAME = "calllog-spool.jsonl"
T = TypeVar("T")


@dataclass(slots=True)
class SpoolEntry:
    """One spool line read back: the record, or None when the line is unreadable."""
    record: CallRecord | None
    line: str
    end: int          # byte offset just after the line
    error: str = ""


class Spool:
    """The spool file, its rejected file beside it, and the one thread that touches them."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.rejected_path = self.path.with_name(self.path.stem + ".rejected.jsonl")
        self._executor: ThreadPoolExecutor | None = None
        self._jobs: set[concurrent.futures.Future[Any]] = set()
        self._lock = threading.Lock()   # the counts also change in the spool thread
        self._pending = 0               # records in the file, or on their way to it
        self._spooled = 0               # records appended
        self._rejected = 0              # records and lines set aside
        self._lost = 0                  # records that could not be spooled (disk full, …)

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    @property
    def busy(self) -> bool:
        """Some file operation is still to run or running."""
        return bool(self._jobs)

    def counts(self) -> dict[str, int]:
        """What went through the spool, keyed as the writer's status reports it."""
        with self._lock:
            return {"spooled": self._spooled, "spool_pending": self._pending,
                    "rejected": self._rejected, "lost": self._lost}

    # ------------------------------------------------------------------ writing

    async def append(self, records: Sequence[CallRecord], *, prepend: bool = False) -> None:
        """Spool `records` (ahead of the file's lines when `prepend`) and wait until they are
        on disk. A failure is logged and counts them lost; it is not raised."""
        lines = self._lines(records)
        if not lines:
            return
        self._count_spooled(len(lines))
        try:
            await self._in_thread(self._write, lines, prepend)
        except OSError as exc:
            self._failed(len(lines), exc)

    def append_in_background(self, records: Sequence[CallRecord]) -> None:
        """Spool `records` behind everything asked for before, without waiting (for `submit`)."""
        lines = self._lines(records)
        if not lines:
            return
        self._count_spooled(len(lines))

        def done(future: concurrent.futures.Future[None]) -> None:
            if not future.cancelled() and future.exception() is not None:
                self._failed(len(lines), future.exception())

        self._schedule(self._write, lines, False).add_done_callback(done)

    def set_aside(self, records: Sequence[CallRecord], exc: BaseException) -> None:
        """Keep records the database refused, with the reason, in the rejected file (logged):
        left in the spool they would block it forever."""
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        log.error("call log: %d record(s) refused by the database (%s): set aside in %s",
                  len(records), reason, self.rejected_path)
        with self._lock:
            self._rejected += len(records)
        lines = []
        for record in records:
            try:
                lines.append(json.dumps({"error": reason, "record": to_dict(record)}, ensure_ascii=False))
            except Exception:
                lines.append(json.dumps({"error": reason, "record": repr(record)}, ensure_ascii=False))
        self._schedule(self._append_rejected, lines)

    def set_aside_line(self, entry: SpoolEntry) -> None:
        """Keep an unreadable spool line (garbled, or cut short by a crash) in the rejected file."""
        log.error("call log: an unreadable spool line (%s): set aside in %s", entry.error, self.rejected_path)
        with self._lock:
            self._rejected += 1
        self._schedule(self._append_rejected, [json.dumps({"error": entry.error, "line": entry.line},
                                                          ensure_ascii=False)])

    # ------------------------------------------------------------------ reading back

    async def recount(self) -> int:
        """At start: count the file's records into `pending`, and return how many more it
        holds than was known (those a previous run left). Ends a line cut short by a crash."""
        with self._lock:
            before = self._pending
        try:
            found = await self._in_thread(self._count_lines)
        except OSError as exc:
            log.error("call log: cannot read the spool %s: %s", self.path, exc)
            return 0
        with self._lock:
            # Appends scheduled before the count are in both numbers; later ones only in pending.
            self._pending += found - before
        return found - before

    async def read(self, offset: int, limit: int) -> list[SpoolEntry]:
        """Up to `limit` entries in file order, from byte `offset` (blank lines skipped)."""
        return await self._in_thread(self._read, offset, limit)

    async def consume(self, offset: int, count: int) -> int:
        """Cut the first `offset` bytes (`count` records, replayed) off the file, keeping what
        was appended since. Returns the records cut: 0 when the file cannot be shortened (the
        lines stay, and replaying them again is harmless)."""
        try:
            await self._in_thread(self._cut, offset)
        except OSError as exc:
            log.error("call log: cannot shorten the spool %s: %s", self.path, exc)
            return 0
        with self._lock:
            self._pending = max(self._pending - count, 0)
        return count

    # ------------------------------------------------------------------ the thread

    async def wait_idle(self) -> None:
        """Wait until every file operation asked for so far has run."""
        if self._jobs:
            await asyncio.gather(*(asyncio.wrap_future(job) for job in list(self._jobs)), return_exceptions=True)

    def shutdown(self) -> None:
        """Let the thread go; a later operation starts a new one."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    def _schedule(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """Run `fn` in the spool thread, after every job scheduled before it."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="calllog-spool")
        future = self._executor.submit(fn, *args)
        self._jobs.add(future)
        future.add_done_callback(self._jobs.discard)
        return future

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        # Shielded: a cancelled caller must not cancel a write that has been promised.
        return await asyncio.shield(asyncio.wrap_future(self._schedule(fn, *args)))

    def _lines(self, records: Sequence[CallRecord]) -> list[str]:
        lines = []
        for record in records:
            try:
                lines.append(json.dumps(to_dict(record), ensure_ascii=False))
            except Exception as exc:
                log.error("call log: a %s record cannot be serialised (%s): dropped", type(record).__name__, exc)
                with self._lock:
                    self._lost += 1
        return lines

    def _count_spooled(self, count: int) -> None:
        with self._lock:
            self._pending += count
            self._spooled += count

    def _failed(self, count: int, exc: BaseException | None) -> None:
        log.error("call log: %d record(s) lost: the database is unavailable and the spool %s "
                  "cannot be written (%s)", count, self.path, exc)
        with self._lock:
            self._pending = max(self._pending - count, 0)
            self._lost += count

    # These run in the spool thread only.

    def _write(self, lines: list[str], prepend: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = ("\n".join(lines) + "\n").encode()
        if prepend and self.path.exists() and self.path.stat().st_size:
            self._replace(data + self.path.read_bytes())
            return
        with open(self.path, "ab") as spool:
            spool.write(data)
            spool.flush()
            os.fsync(spool.fileno())

    def _replace(self, data: bytes) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        with open(temporary, "wb") as spool:
            spool.write(data)
            spool.flush()
            os.fsync(spool.fileno())
        os.replace(temporary, self.path)

    def _count_lines(self) -> int:
        if not self.path.exists():
            return 0
        count = 0
        last = b"\n"
        with open(self.path, "rb") as spool:
            for line in spool:
                if line.strip():
                    count += 1
                last = line[-1:]
        if last != b"\n":
            with open(self.path, "ab") as spool:
                spool.write(b"\n")
        return count

    def _read(self, offset: int, limit: int) -> list[SpoolEntry]:
        entries: list[SpoolEntry] = []
        if not self.path.exists():
            return entries
        with open(self.path, "rb") as spool:
            spool.seek(offset)
            while len(entries) < limit:
                raw = spool.readline()
                if not raw:
                    break
                text = raw.decode("utf-8", errors="replace").strip()
                if not text:
                    continue  # skipped, but the cut still goes past it
                end = spool.tell()
                try:
                    entries.append(SpoolEntry(from_dict(json.loads(text)), text, end))
                except Exception as exc:
                    entries.append(SpoolEntry(None, text, end, f"{type(exc).__name__}: {exc}"))
            if entries:
                entries[-1].end = spool.tell()
        return entries

    def _cut(self, offset: int) -> None:
        with open(self.path, "rb") as spool:
            spool.seek(offset)
            rest = spool.read()
        if rest.strip():
            self._replace(rest)
        else:
            with open(self.path, "r+b") as spool:
                spool.truncate(0)
                spool.flush()
                os.fsync(spool.fileno())

    def _append_rejected(self, lines: list[str]) -> None:
        try:
            self.rejected_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.rejected_path, "a", encoding="utf-8") as rejected:
                rejected.write("\n".join(lines) + "\n")
        except OSError as exc:
            log.error("call log: cannot write %s: %s", self.rejected_path, exc)
