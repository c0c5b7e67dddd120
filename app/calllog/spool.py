"""The spool: call records kept on disk, in order, while the call-log database is away.

One `to_dict` record per line; an append counts as done once it is fsynced. A batch whose
fate is unknown (it was being applied when the database went away) is prepended, so it stays
ahead of what was spooled after it. The writer replays the file from its start (`read`, by
byte offset) and then cuts what it applied off the front (`consume`), keeping whatever was
appended meanwhile. Replaying a line twice (a crash between the commit and the cut) duplicates
nothing: the store's `apply` is idempotent.

Each process has a file of its own in DATA_DIR (`process_spool_path`): workers share DATA_DIR,
and a file two processes replay and cut loses records. It holds an exclusive `flock` on it from
its first operation to `shutdown`. At `recount` it takes in the files nobody holds (left by a
process that died or stopped during an outage, or `calllog-spool.jsonl` of older versions):
locked, appended to its own, then deleted. A file is renamed over only by a locked
replacement, and whoever locks a file checks that it still bears the name.

A crash may leave the last line cut short. `recount` ends it with a newline, so later appends
stay whole lines; `read` hands it back as an unreadable entry, set aside (`set_aside_line`)
with the records the database refuses in `calllog-spool.rejected.jsonl`, and logged.

Every file operation runs in one thread, in the order it was asked for, so the appends of
`submit` (which must not wait for the disk) neither overtake nor interleave with the writer's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import json
import logging
import os
import secrets
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from app.calllog.records import CallRecord, from_dict, to_dict

log = logging.getLogger(__name__)

SPOOL_NAME = "calllog-spool.jsonl"   # the one file of older versions, still taken in
T = TypeVar("T")


def process_spool_path(directory: Path | str) -> Path:
    """A spool file for this process alone in `directory` (DATA_DIR)."""
    return Path(directory) / f"{SPOOL_NAME.split('.')[0]}.{os.getpid()}-{secrets.token_hex(4)}.jsonl"


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
        self._family = self.path.name.split(".")[0]
        self.rejected_path = self.path.with_name(self._family + ".rejected.jsonl")
        self._held = _Held()
        weakref.finalize(self, self._held.release)   # dropped without `shutdown`: the file is let go
        self._open = True               # False after `shutdown`: the lock is taken per operation
        self._one_at_a_time = threading.Lock()   # a thread `shutdown` let go may still be finishing
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
        """At start, and now and then: take in the spool files beside this one that nobody
        holds, count the file's records into `pending`, and return how many more it holds
        than was known (those other runs left). Ends a line cut short by a crash."""
        self._open = True   # a writer started again after `shutdown` holds its file again
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
        """Let the thread go, then the lock: the file is anyone's to take in. A later operation
        starts a new thread and holds the lock only while it runs (`recount` keeps it again)."""
        self._open = False
        if self._executor is not None:
            self._schedule(self._held.release)
            self._executor.shutdown(wait=False)
            self._executor = None

    def _schedule(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """Run `fn` in the spool thread, after every job scheduled before it."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="calllog-spool")
        future = self._executor.submit(self._job, fn, *args)
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

    # These run in the spool thread only. The file is read and written by its name: while
    # the lock is held, no other process renames or deletes it.

    def _job(self, fn: Callable[..., T], *args: Any) -> T:
        with self._one_at_a_time:
            try:
                return fn(*args)
            finally:
                if not self._open:
                    self._held.release()

    def _claim(self) -> bool:
        """Hold the lock on the file (False: no file). Waits while another process takes it in."""
        if self._held.fd is None:
            self._held.fd = _lock(self.path, wait=True)
        return self._held.fd is not None

    def _write(self, lines: list[str], prepend: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = ("\n".join(lines) + "\n").encode()
        if not self._claim():
            self._replace(data)   # a new file: it appears locked
        elif prepend and self.path.stat().st_size:
            self._replace(data + self.path.read_bytes())
        else:
            with open(self.path, "ab") as spool:
                spool.write(data)
                spool.flush()
                os.fsync(spool.fileno())

    def _replace(self, data: bytes) -> None:
        """Make `data` the file: written aside, locked, then renamed over it (never unlocked nor half)."""
        temporary = self.path.with_name(f"{self.path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)   # a new file, unknown to anyone: no wait
            with open(fd, "wb", closefd=False) as spool:
                spool.write(data)
            os.fsync(fd)
            os.replace(temporary, self.path)
        except BaseException:
            os.close(fd)
            temporary.unlink(missing_ok=True)
            raise
        self._held.release()   # the lock of the file replaced
        self._held.fd = fd

    def _adopt(self) -> None:
        taken: list[tuple[Path, int]] = []
        try:
            # The other spool files here: of older versions, and one per process.
            for path in self.path.parent.glob(f"{self._family}.*jsonl"):
                if path not in (self.path, self.rejected_path) and (fd := _lock(path, wait=False)) is not None:
                    taken.append((path, fd))
            data = b""   # their lines, each ended
            for path, fd in taken:
                with open(fd, "rb", closefd=False) as orphan:
                    text = orphan.read()
                if text.strip():
                    log.info("call log: %d spooled record(s) taken in from %s",
                             sum(1 for line in text.splitlines() if line.strip()), path.name)
                    data += text if text.endswith(b"\n") else text + b"\n"
            if data:
                mine = self.path.read_bytes() if self._claim() else b""
                # Behind what is there, so that offsets read before stay valid.
                self._replace(mine + (b"\n" if mine and not mine.endswith(b"\n") else b"") + data)
            for path, _fd in taken:   # still locked: nobody else takes them in meanwhile
                path.unlink()
        finally:
            for _path, fd in taken:
                os.close(fd)

    def _count_lines(self) -> int:
        self._adopt()
        if not self._claim():
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
        if not self._claim():
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
        self._claim()
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
                fcntl.flock(rejected.fileno(), fcntl.LOCK_EX)   # the processes share it
                rejected.write("\n".join(lines) + "\n")
        except OSError as exc:
            log.error("call log: cannot write %s: %s", self.rejected_path, exc)


@dataclass(slots=True)
class _Held:
    """The descriptor holding the spool file's lock (a flock lasts while it is open)."""
    fd: int | None = None

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


def _lock(path: Path, *, wait: bool) -> int | None:
    """A descriptor holding the exclusive lock of the file at `path`; None when there is no
    such file or, unless `wait`, another process holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    current = False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Its holder may have deleted it, or renamed a locked file over it, between the open
        # and the lock: a lock on a file no longer at `path` guards nothing.
        current = os.path.samestat(os.fstat(fd), os.stat(path))
    except (BlockingIOError, FileNotFoundError):
        pass
    finally:
        if not current:
            os.close(fd)
    return fd if current else None
