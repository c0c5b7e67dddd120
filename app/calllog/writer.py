"""The per-process call-log writer: records in, database rows out, nothing lost on the way.

The call session hands each record to `submit`, which never blocks and never raises: the
record goes into a bounded asyncio queue, and a background task stores the queue in
batches (`CallLogStore.apply`, one transaction per batch).

Records come a few at a time, and each transaction costs far more than its rows (with
aiosqlite every statement is a hop to its thread and back), so the writer lingers: once a
record is queued it waits up to `linger` seconds (0 disables it) from that record's arrival
for more, and then applies them together. No record lingers longer than that, and none at
all when the batch is full (`batch_size`, or the queue is), when the writer is closing,
while someone waits in `flush` (which cuts a linger short, so it stays prompt), or while
the spool is in use (see below).

When the database cannot be used (a connection, OS or operational error, or any error
while the database does not answer a ping), the batch is appended to the spool,
`DATA_DIR/calllog-spool.jsonl` (one `to_dict` record per line, written and fsynced by a
thread), and the writer retries with backoff (1 s, 2 s, … 30 s): it reconnects to
`self.url` (running the migrations, so a database that was down at start-up gets its
schema), replays the spool in order, cuts what was applied off the file, and resumes
writing directly. A spool left by a previous run is replayed at `start`.

Order is kept: once something is in the spool, later records go to the spool too, behind
it, until the spool has been replayed (a caller's turn is sent again when its retrieval
completes; applying the older version last would undo that). Replays are harmless because
`apply` is idempotent: a batch that may or may not have been committed when the process
was interrupted is simply spooled and applied again, so each record lands exactly once.

A full queue means the writer is stuck (a slow or hanging database) while calls go on.
Dropping records would lose the log of those calls, and blocking would stall the audio
path; keeping them in memory would grow without bound for as long as the database hangs.
So on overflow `submit` moves what the queue holds plus the new record to the spool (the
write itself runs in the spool thread; `submit` returns at once), which keeps their order
and bounds memory; the writer then drains the spool as soon as the database answers.

Records the database refuses (a constraint or data error while it is otherwise up) would
block the spool forever; they are set aside in `calllog-spool.rejected.jsonl` and logged.
An error is blamed on the records only when the database still answers a ping: drivers do
not always say "connection" (asyncpg's refusals come as a bare DBAPIError), and setting
records aside during an outage would be a loss.
All spool files are touched only by one thread, in submission order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import exc as sa_exc

from app.calllog.migrate import upgrade_database
from app.calllog.records import CallRecord, from_dict, to_dict
from app.calllog.store import CallLogStore

log = logging.getLogger(__name__)

SPOOL_NAME = "calllog-spool.jsonl"
T = TypeVar("T")


class _Unavailable(Exception):
    """Could not connect to (or migrate) the database."""


def is_unavailable(exc: BaseException) -> bool:
    """True when `exc` surely means "the database cannot be used now". Other errors may
    still be an outage (asyncpg's connection refusals arrive as a bare DBAPIError), so the
    writer also pings the database before blaming the data: see `CallLogWriter._is_down`."""
    if isinstance(exc, (_Unavailable, OSError)):  # includes TimeoutError and ConnectionError
        return True
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError,
                        sa_exc.TimeoutError, sa_exc.ProgrammingError, sa_exc.InternalError)):
        return True  # down, locked, read-only, schema missing: nothing the records can fix
    if isinstance(exc, sa_exc.DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(exc.orig, (OSError, ConnectionError))
    return False


@dataclass(slots=True)
class _Entry:
    """One spool line read back: the record, or None when the line is unreadable."""
    record: CallRecord | None
    line: str
    end: int          # byte offset just after the line
    error: str = ""


class CallLogWriter:
    """Stores call records in the background; one per process. See the module docstring."""

    def __init__(
        self,
        url: str,
        spool_path: Path | str,
        *,
        prices: Mapping[str, Mapping[str, float]] | None = None,
        queue_size: int = 10_000,
        batch_size: int = 200,
        retry_initial: float = 1.0,
        retry_max: float = 30.0,
        migrate: bool = True,
        close_timeout: float = 10.0,
        linger: float = 0.5,
    ) -> None:
        self.url = url                    # may be changed: the next (re)connection uses it
        self.spool_path = Path(spool_path)
        self.rejected_path = self.spool_path.with_name(self.spool_path.stem + ".rejected.jsonl")
        self.prices = prices
        self.batch_size = max(batch_size, 1)
        self.retry_initial = retry_initial
        self.retry_max = max(retry_max, retry_initial)
        self.migrate = migrate
        self.close_timeout = close_timeout
        self.linger = max(linger, 0.0)

        self._queue: asyncio.Queue[CallRecord] = asyncio.Queue(maxsize=max(queue_size, 1))
        self._work = asyncio.Event()        # something to do: a record, an overflow, close
        self._progress = asyncio.Event()    # the writer went round its loop (for `flush`)
        self._hurry = asyncio.Event()       # stop lingering: a full batch, close, flush, the spool
        self._first_queued = 0.0            # time.monotonic() at or before the oldest queued record
        self._flushing = 0                  # callers waiting in `flush`: no lingering meanwhile
        self._executor: ThreadPoolExecutor | None = None
        self._jobs: set[concurrent.futures.Future[Any]] = set()
        self._lock = threading.Lock()       # counters also updated from the spool thread
        self._task: asyncio.Task[None] | None = None
        self._store: CallLogStore | None = None
        self._store_url: str | None = None
        self._inflight: list[CallRecord] = []   # the batch being applied straight to the database
        self._closing = False
        self._closed = False
        self._retry_delay = retry_initial
        self._next_retry = 0.0
        self._database = "unknown"
        self._last_error: str | None = None

        self.spool_pending = 0    # records in the spool file (or on their way to it)
        self.written = 0          # applied straight from the queue
        self.spooled = 0          # appended to the spool
        self.replayed = 0         # applied from the spool
        self.rejected = 0         # refused by the database, set aside in the rejected file
        self.lost = 0             # could be neither stored nor spooled (disk full, …)

    @classmethod
    def from_settings(cls, settings: Any, **options: Any) -> CallLogWriter:
        """The writer of the service: DATABASE_URL (or SQLite under DATA_DIR), spool in DATA_DIR."""
        return cls(settings.effective_database_url, Path(settings.data_dir) / SPOOL_NAME,
                   prices=settings.model_prices, **options)

    # ------------------------------------------------------------------ the public side

    def submit(self, record: CallRecord) -> None:
        """Queue `record` for storage. Never blocks, never raises. Call it from the event loop's thread."""
        try:
            if self._closed:
                self._spool_in_background([record])  # a call that ended after shutdown began
                return
            if self._queue.empty():
                self._first_queued = time.monotonic()   # the linger counts from here
            self._queue.put_nowait(record)
            self._work.set()
            if self._batch_ready():
                self._hurry.set()
        except asyncio.QueueFull:
            try:
                self._spool_in_background([*self._drain_queue(), record])
                self._work.set()
                self._hurry.set()   # the spool is in use now: no more lingering
            except Exception:
                log.exception("call log: a record could not be spooled")
        except Exception:
            log.exception("call log: a record could not be queued")

    async def start(self) -> None:
        """Start the background writer; it first replays any spool left by a previous run."""
        if self._task is not None and not self._task.done():
            return
        self._closing = self._closed = False
        with self._lock:
            before = self.spool_pending
        try:
            found = await self._in_spool_thread(self._count_spool)
        except OSError as exc:
            log.error("call log: cannot read the spool %s: %s", self.spool_path, exc)
            found = before
        with self._lock:
            # Appends scheduled before the count are in both numbers; later ones only in spool_pending.
            self.spool_pending += found - before
        if found > before:
            log.info("call log: %d record(s) left in %s by a previous run: replaying them",
                     found - before, self.spool_path)
        self._next_retry = 0.0
        self._task = asyncio.create_task(self._run(), name="calllog-writer")

    async def close(self, timeout: float | None = None) -> None:
        """Stop after storing everything queued: in the database, or in the spool when the
        database is down or `timeout` (default `close_timeout`) runs out. Nothing is lost."""
        if self._closed:
            return
        self._closing = True
        self._work.set()
        self._hurry.set()
        task = self._task
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=self.close_timeout if timeout is None else timeout)
            if not done:
                log.warning("call log: flushing took too long; the rest goes to the spool")
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        # What the task could not finish: the batch it was applying (maybe committed, maybe
        # not: replaying it is harmless), ahead of everything spooled since, then the queue.
        inflight, self._inflight = self._inflight, []
        if inflight:
            await self._spool(inflight, prepend=True)
        rest = self._drain_queue()
        if rest:
            await self._spool(rest)
        await self._wait_for_jobs()
        await self._drop_store()
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is in the database (True), or `timeout` (False)."""
        async def settle() -> None:
            while not self._settled():
                self._progress.clear()
                # Spool-thread jobs end without a signal: look again now and then.
                await _until_set(self._progress, 0.02)
        self._flushing += 1
        self._hurry.set()   # a lingering batch goes now
        try:
            await asyncio.wait_for(settle(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._flushing -= 1

    def status(self) -> dict[str, Any]:
        """For /health: the database state and what went where."""
        running = self._task is not None and not self._task.done()
        return {
            "state": "closed" if self._closed else ("running" if running else "stopped"),
            "database": self._database,           # unknown, up, down
            "queued": self._queue.qsize(),
            "written": self.written,
            "spooled": self.spooled,
            "replayed": self.replayed,
            "spool_pending": self.spool_pending,
            "rejected": self.rejected,
            "lost": self.lost,
            "spool_path": str(self.spool_path),
            "last_error": self._last_error,
        }

    # ------------------------------------------------------------------ the loop

    def _settled(self) -> bool:
        return self._queue.empty() and not self._inflight and self.spool_pending == 0 and not self._jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        final_attempt_made = False
        while True:
            self._progress.set()
            try:
                if self.spool_pending > 0:
                    # Closing: one last replay, unless the database is known to be down (then
                    # the spool waits for the next start rather than for a connection timeout).
                    if self._closing and not final_attempt_made and self._database != "down":
                        final_attempt_made = True
                        await self._replay()
                        continue
                    if not self._closing and loop.time() >= self._next_retry:
                        await self._replay()
                        continue
                delay = self._linger_left()
                if delay > 0:
                    await self._linger(delay)
                    continue   # look again: the spool may be in use now, or the writer closing
                batch = self._take_batch()
                if batch:
                    if self.spool_pending > 0:
                        await self._spool(batch)      # behind what is already waiting there
                    else:
                        await self._deliver(batch)
                    continue
                if self._closing:
                    return
                await self._wait_for_work(loop)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("call log writer: unexpected error")
                stranded, self._inflight = self._inflight, []
                if stranded:  # keep it (and its place in the order) for the next replay
                    await self._spool(stranded, prepend=True)
                await asyncio.sleep(self.retry_initial)

    async def _wait_for_work(self, loop: asyncio.AbstractEventLoop) -> None:
        self._work.clear()
        if not self._queue.empty() or self._closing:
            return
        timeout = max(self._next_retry - loop.time(), 0.0) if self.spool_pending > 0 else None
        self._progress.set()
        await _until_set(self._work, timeout)

    def _linger_left(self) -> float:
        """Seconds to wait for more records before applying the queue (0 or less: apply now).
        Never on the spool path: during an outage records are to reach the disk at once."""
        now = time.monotonic()
        if (self.linger <= 0 or self._closing or self._flushing
                or self.spool_pending > 0 or self._queue.empty() or self._batch_ready()):
            return 0.0
        return self._first_queued + self.linger - now

    async def _linger(self, delay: float) -> None:
        # No await between the caller's checks and this wait, so a `_hurry.set()` is never missed.
        self._hurry.clear()
        await _until_set(self._hurry, delay)

    def _batch_ready(self) -> bool:
        # A full queue too: lingering must not push records into the spool by overflow.
        return self._queue.qsize() >= self.batch_size or self._queue.full()

    def _take_batch(self) -> list[CallRecord]:
        batch: list[CallRecord] = []
        while len(batch) < self.batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return batch

    def _drain_queue(self) -> list[CallRecord]:
        items: list[CallRecord] = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                return items

    # ------------------------------------------------------------------ the database

    async def _connect(self) -> CallLogStore:
        if self._store is not None and self._store_url == self.url:
            return self._store
        await self._drop_store()
        url = self.url
        try:
            if self.migrate:
                await upgrade_database(url)
            self._store = await CallLogStore.open(url, prices=self.prices)
            self._store_url = url
        except Exception as exc:
            raise _Unavailable(f"{type(exc).__name__}: {exc}") from exc
        return self._store

    async def _drop_store(self) -> None:
        store, self._store, self._store_url = self._store, None, None
        if store is not None:
            try:
                await asyncio.wait_for(store.close(), 5.0)
            except Exception as exc:  # a dead connection may not close cleanly
                log.debug("call log: closing the store: %s", exc)

    async def _went_down(self, exc: BaseException) -> None:
        loop = asyncio.get_running_loop()
        reason = str(exc) if isinstance(exc, _Unavailable) else f"{type(exc).__name__}: {exc}"
        self._last_error = reason[:500]
        if self._database != "down":
            log.warning("call log database unavailable (%s): records go to %s until it answers",
                        self._last_error.splitlines()[0], self.spool_path)
            self._retry_delay = self.retry_initial
        self._database = "down"
        self._next_retry = loop.time() + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, self.retry_max)
        await self._drop_store()

    async def _is_down(self, exc: BaseException, store: CallLogStore) -> bool:
        """Did `exc` come from the database being unusable (rather than from the records)?
        Only when the database still answers is the data to blame."""
        if is_unavailable(exc):
            return True
        try:
            await asyncio.wait_for(store.ping(), 10.0)
        except asyncio.CancelledError:
            raise
        except Exception:
            return True
        return False

    def _went_up(self) -> None:
        if self._database == "down":
            log.info("call log database answers again")
        self._database = "up"
        self._retry_delay = self.retry_initial
        self._next_retry = 0.0

    async def _deliver(self, batch: list[CallRecord]) -> None:
        """Apply a batch straight from the queue (the spool is empty)."""
        self._inflight = batch
        try:
            store = await self._connect()
            await store.apply(batch)
        except asyncio.CancelledError:
            raise  # close() spools the in-flight batch
        except Exception as exc:
            if isinstance(exc, _Unavailable) or await self._is_down(exc, store):
                self._inflight = []
                await self._went_down(exc)
                # Anything spooled meanwhile (an overflow) is newer: this batch goes first.
                await self._spool(batch, prepend=True)
                return
            await self._deliver_one_by_one(store, batch, exc)
            return
        self._inflight = []
        self.written += len(batch)
        self._went_up()

    async def _deliver_one_by_one(self, store: CallLogStore, batch: list[CallRecord], cause: BaseException) -> None:
        """The database refused a batch: find the bad records, store the others."""
        log.warning("call log: a batch was refused (%s); storing its records one by one", cause)
        for position, record in enumerate(batch):
            self._inflight = batch[position:]
            try:
                await store.apply([record])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if await self._is_down(exc, store):
                    self._inflight = []
                    await self._went_down(exc)
                    await self._spool(batch[position:], prepend=True)
                    return
                self._reject([record], exc)
                continue
            self.written += 1
        self._inflight = []
        self._went_up()

    async def _replay(self) -> None:
        """Apply the spool in order, then cut what was applied off the file."""
        try:
            store = await self._connect()
        except _Unavailable as exc:
            await self._went_down(exc)
            return
        offset = consumed = 0
        complete = False
        try:
            while True:
                entries: list[_Entry] = await self._in_spool_thread(self._read_spool, offset, self.batch_size)
                if not entries:
                    complete = True
                    break
                records = [e.record for e in entries if e.record is not None]
                try:
                    await store.apply(records)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if await self._is_down(exc, store):
                        await self._went_down(exc)
                        break
                    done = await self._replay_one_by_one(store, entries, exc)
                    offset, consumed = (done[-1].end if done else offset), consumed + len(done)
                    if len(done) < len(entries):
                        break
                    continue
                for entry in entries:
                    if entry.record is None:
                        self._reject_line(entry)
                self.replayed += len(records)
                offset, consumed = entries[-1].end, consumed + len(entries)
        finally:
            if offset:
                try:
                    await self._in_spool_thread(self._cut_spool, offset)
                except OSError as exc:  # the lines stay: replaying them again is harmless
                    log.error("call log: cannot shorten the spool %s: %s", self.spool_path, exc)
                    consumed = 0
            with self._lock:
                self.spool_pending = max(self.spool_pending - consumed, 0)
        if complete:
            if consumed:
                log.info("call log: %d spooled record(s) replayed", consumed)
            self._went_up()
            if not consumed:  # an append still on its way (or a spool emptied by hand): look again soon
                self._next_retry = asyncio.get_running_loop().time() + self.retry_initial

    async def _replay_one_by_one(self, store: CallLogStore, entries: list[_Entry], cause: BaseException) -> list[_Entry]:
        """The entries dealt with (stored or set aside), in order, until the database goes away."""
        log.warning("call log: a spooled batch was refused (%s); replaying it record by record", cause)
        done: list[_Entry] = []
        for entry in entries:
            if entry.record is None:
                self._reject_line(entry)
            else:
                try:
                    await store.apply([entry.record])
                    self.replayed += 1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if await self._is_down(exc, store):
                        await self._went_down(exc)
                        return done
                    self._reject([entry.record], exc)
            done.append(entry)
        return done

    # ------------------------------------------------------------------ the spool (a thread)

    def _spool_executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="calllog-spool")
        return self._executor

    def _schedule(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """Run `fn` in the spool thread, after every job scheduled before it."""
        future = self._spool_executor().submit(fn, *args)
        self._jobs.add(future)
        future.add_done_callback(self._jobs.discard)
        return future

    async def _in_spool_thread(self, fn: Callable[..., T], *args: Any) -> T:
        # Shielded: a cancelled caller must not cancel a write that has been promised.
        return await asyncio.shield(asyncio.wrap_future(self._schedule(fn, *args)))

    async def _wait_for_jobs(self) -> None:
        if self._jobs:
            await asyncio.gather(*(asyncio.wrap_future(job) for job in list(self._jobs)), return_exceptions=True)

    def _lines(self, records: Sequence[CallRecord]) -> list[str]:
        lines = []
        for record in records:
            try:
                lines.append(json.dumps(to_dict(record), ensure_ascii=False))
            except Exception as exc:
                log.error("call log: a %s record cannot be serialised (%s): dropped", type(record).__name__, exc)
                self._count("lost", 1)
        return lines

    def _count(self, name: str, delta: int) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + delta)

    async def _spool(self, records: Sequence[CallRecord], *, prepend: bool = False) -> None:
        """Spool records from the writer task (waits for the write)."""
        lines = self._lines(records)
        if not lines:
            return
        self._count("spool_pending", len(lines))
        self.spooled += len(lines)
        try:
            await self._in_spool_thread(self._write_spool, lines, prepend)
        except OSError as exc:
            self._spool_failed(len(lines), exc)

    def _spool_in_background(self, records: Sequence[CallRecord]) -> None:
        """Spool records from `submit` (does not wait)."""
        lines = self._lines(records)
        if not lines:
            return
        self._count("spool_pending", len(lines))
        self.spooled += len(lines)

        def done(future: concurrent.futures.Future[None]) -> None:
            if not future.cancelled() and future.exception() is not None:
                self._spool_failed(len(lines), future.exception())

        self._schedule(self._write_spool, lines, False).add_done_callback(done)

    def _spool_failed(self, count: int, exc: BaseException | None) -> None:
        log.error("call log: %d record(s) lost: the database is unavailable and the spool %s "
                  "cannot be written (%s)", count, self.spool_path, exc)
        with self._lock:
            self.spool_pending = max(self.spool_pending - count, 0)
            self.lost += count

    def _reject(self, records: Sequence[CallRecord], exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        log.error("call log: %d record(s) refused by the database (%s): set aside in %s",
                  len(records), reason, self.rejected_path)
        self.rejected += len(records)
        lines = []
        for record in records:
            try:
                lines.append(json.dumps({"error": reason, "record": to_dict(record)}, ensure_ascii=False))
            except Exception:
                lines.append(json.dumps({"error": reason, "record": repr(record)}, ensure_ascii=False))
        self._schedule(self._append_rejected, lines)

    def _reject_line(self, entry: _Entry) -> None:
        log.error("call log: an unreadable spool line (%s): set aside in %s", entry.error, self.rejected_path)
        self.rejected += 1
        self._schedule(self._append_rejected, [json.dumps({"error": entry.error, "line": entry.line},
                                                          ensure_ascii=False)])

    # These run in the spool thread only.

    def _write_spool(self, lines: list[str], prepend: bool) -> None:
        self.spool_path.parent.mkdir(parents=True, exist_ok=True)
        data = ("\n".join(lines) + "\n").encode()
        if prepend and self.spool_path.exists() and self.spool_path.stat().st_size:
            self._replace_spool(data + self.spool_path.read_bytes())
            return
        with open(self.spool_path, "ab") as spool:
            spool.write(data)
            spool.flush()
            os.fsync(spool.fileno())

    def _replace_spool(self, data: bytes) -> None:
        temporary = self.spool_path.with_name(self.spool_path.name + ".tmp")
        with open(temporary, "wb") as spool:
            spool.write(data)
            spool.flush()
            os.fsync(spool.fileno())
        os.replace(temporary, self.spool_path)

    def _count_spool(self) -> int:
        """Records in the spool; also ends a line cut short by a crash, so appends stay whole."""
        if not self.spool_path.exists():
            return 0
        count = 0
        last = b"\n"
        with open(self.spool_path, "rb") as spool:
            for line in spool:
                if line.strip():
                    count += 1
                last = line[-1:]
        if last != b"\n":
            with open(self.spool_path, "ab") as spool:
                spool.write(b"\n")
        return count

    def _read_spool(self, offset: int, limit: int) -> list[_Entry]:
        entries: list[_Entry] = []
        if not self.spool_path.exists():
            return entries
        with open(self.spool_path, "rb") as spool:
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
                    entries.append(_Entry(from_dict(json.loads(text)), text, end))
                except Exception as exc:
                    entries.append(_Entry(None, text, end, f"{type(exc).__name__}: {exc}"))
            if entries:
                entries[-1].end = spool.tell()
        return entries

    def _cut_spool(self, offset: int) -> None:
        """Drop the first `offset` bytes (the replayed records); keep what was appended since."""
        with open(self.spool_path, "rb") as spool:
            spool.seek(offset)
            rest = spool.read()
        if rest.strip():
            self._replace_spool(rest)
        else:
            with open(self.spool_path, "r+b") as spool:
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


async def _until_set(event: asyncio.Event, timeout: float | None) -> None:
    """Wait until `event` is set or `timeout` seconds (None: no limit) have passed."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        pass
