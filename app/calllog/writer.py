"""The per-process call-log writer: records in, database rows out, nothing lost on the way.

The call session hands each record to `submit`, which never blocks and never raises. A
background task (`_run`) stores them, one transaction per batch. It is made of:

* `Batcher` (batching.py): the queue `submit` puts into, and the linger (0.5 s by default)
  that gathers records into larger batches;
* `StoreLink` (store_link.py): applies a batch to the database, sets aside the records it
  refuses, notices outages and times the retries;
* `Spool` (spool.py): a file of this process's own in DATA_DIR, where records wait while the
  database is away; replayed in order when it answers again. At `start`, and every
  `sweep_every` seconds, it takes in the spool files no process holds any more (a previous
  run's, a worker's that died), so that each is replayed once, by one process.

This module holds the policy that ties them together. Order is kept: once something is in
the spool, later records go to the spool too, behind it, until it has been replayed (a
caller's turn is sent again when its retrieval completes; applying the older version last
would undo that). Replays are harmless because the store's `apply` is idempotent: a batch
that may or may not have been committed when the process was interrupted is simply spooled
and applied again, so each record lands exactly once.

A full queue means the writer is stuck (a slow or hanging database) while calls go on.
Dropping records would lose the log of those calls, and blocking would stall the audio
path; keeping them in memory would grow without bound for as long as the database hangs.
So on overflow `submit` moves what the queue holds plus the new record to the spool (the
write itself runs in the spool thread; `submit` returns at once), which keeps their order
and bounds memory; the writer then drains the spool as soon as the database answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.calllog.batching import Batcher
from app.calllog.records import CallRecord
from app.calllog.spool import SPOOL_NAME, Spool, SpoolEntry, process_spool_path
from app.calllog.store_link import Batch, StoreLink

__all__ = ["SPOOL_NAME", "CallLogWriter"]

log = logging.getLogger(__name__)


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
        sweep_every: float = 60.0,
    ) -> None:
        self.close_timeout = close_timeout
        self.sweep_every = sweep_every
        self._next_sweep = 0.0                # loop time of the next look for others' spool files
        self._batcher: Batcher[CallRecord] = Batcher(queue_size=queue_size, batch_size=batch_size, linger=linger)
        self._spool = Spool(spool_path)
        self._link = StoreLink(url, set_aside=self._spool.set_aside, prices=prices, migrate=migrate,
                               retry_initial=retry_initial, retry_max=retry_max)
        self._task: asyncio.Task[None] | None = None
        self._inflight: Batch | None = None   # the batch being applied straight to the database
        self._closed = False
        self._written = 0                     # applied straight from the queue
        self._replayed = 0                    # applied from the spool

    @classmethod
    def from_settings(cls, settings: Any, **options: Any) -> CallLogWriter:
        """The writer of the service: DATABASE_URL (or SQLite under DATA_DIR), a spool of its
        own in DATA_DIR (the workers of `octi serve --workers N` share it)."""
        return cls(settings.effective_database_url, process_spool_path(settings.data_dir),
                   prices=settings.model_prices, **options)

    @property
    def url(self) -> str:
        return self._link.url

    @url.setter
    def url(self, url: str) -> None:
        self._link.url = url   # the next (re)connection uses it

    @property
    def spool_path(self) -> Path:
        return self._spool.path

    @property
    def rejected_path(self) -> Path:
        """Where records the database refuses, and unreadable spool lines, are set aside."""
        return self._spool.rejected_path

    # ------------------------------------------------------------------ the public side

    def submit(self, record: CallRecord) -> None:
        """Queue `record` for storage. Never blocks, never raises. Call it from the event loop's thread."""
        try:
            if self._closed:
                self._spool.append_in_background([record])  # a call that ended after shutdown began
            elif not self._batcher.put(record):
                self._spool.append_in_background([*self._batcher.drain(), record])
                self._batcher.hurry()   # the spool is in use now: no more lingering
        except Exception:
            log.exception("call log: a record could not be queued nor spooled")

    async def start(self) -> None:
        """Start the background writer; it first replays any spool left by a previous run."""
        if self._task is not None and not self._task.done():
            return
        self._batcher.reopen()
        self._closed = False
        left = await self._spool.recount()
        if left > 0:
            log.info("call log: %d record(s) spooled by a previous run in %s: replaying them",
                     left, self._spool.path.parent)
        self._next_sweep = asyncio.get_running_loop().time() + self.sweep_every
        self._link.retry_now()
        self._task = asyncio.create_task(self._run(), name="calllog-writer")

    async def close(self, timeout: float | None = None) -> None:
        """Stop after storing everything queued: in the database, or in the spool when the
        database is down or `timeout` (default `close_timeout`) runs out. Nothing is lost."""
        if self._closed:
            return
        self._batcher.begin_closing()
        task = self._task
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=self.close_timeout if timeout is None else timeout)
            if not done:
                log.warning("call log: flushing took too long; the rest goes to the spool")
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        # What the task could not finish: the batch it was applying (maybe committed, maybe
        # not: replaying it is harmless), ahead of everything spooled since, then the queue.
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            await self._spool.append(inflight.rest, prepend=True)
        await self._spool.append(self._batcher.drain())
        await self._spool.wait_idle()
        await self._link.close()
        self._closed = True
        self._spool.shutdown()

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is in the database (True), or `timeout` (False)."""
        return await self._batcher.flush(self._settled, timeout)

    def status(self) -> dict[str, Any]:
        """For /health: the database state and what went where."""
        running = self._task is not None and not self._task.done()
        spool = self._spool.counts()
        return {
            "state": "closed" if self._closed else ("running" if running else "stopped"),
            "database": self._link.state,         # unknown, up, down
            "queued": self._batcher.queued,
            "written": self._written,
            "spooled": spool["spooled"],
            "replayed": self._replayed,
            "spool_pending": spool["spool_pending"],
            "rejected": spool["rejected"],
            "lost": spool["lost"],
            "spool_path": str(self._spool.path),
            "last_error": self._link.last_error,
        }

    # ------------------------------------------------------------------ the task

    def _settled(self) -> bool:
        return (self._batcher.empty and self._inflight is None
                and self._spool.pending == 0 and not self._spool.busy)

    async def _run(self) -> None:
        final_attempt_made = False
        while True:
            self._batcher.went_round()
            try:
                if self._spool.pending > 0:
                    # Closing: one last replay, unless the database is known to be down (then
                    # the spool waits for the next start rather than for a connection timeout).
                    if self._batcher.closing:
                        if not final_attempt_made and self._link.state != "down":
                            final_attempt_made = True
                            await self._replay()
                            continue
                    elif self._link.seconds_to_retry() == 0:
                        await self._replay()
                        continue
                if await self._batcher.wait_for_more(spool_in_use=self._spool.pending > 0):
                    continue
                batch = self._batcher.take()
                if batch:
                    if self._spool.pending > 0:
                        await self._spool.append(batch)      # behind what is already waiting there
                    else:
                        await self._deliver(batch)
                    continue
                if self._batcher.closing:
                    return
                now = asyncio.get_running_loop().time()
                if now >= self._next_sweep:
                    # Spool files other processes left while this one runs (a worker that
                    # died, an older run that stopped during an outage) wait for no restart.
                    self._next_sweep = now + self.sweep_every
                    await self._spool.recount()
                    continue
                wait = self._next_sweep - now
                if self._spool.pending > 0:
                    wait = min(wait, self._link.seconds_to_retry())
                await self._batcher.wait_for_work(wait)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("call log writer: unexpected error")
                stranded, self._inflight = self._inflight, None
                if stranded is not None:  # keep it (and its place in the order) for the next replay
                    await self._spool.append(stranded.rest, prepend=True)
                await asyncio.sleep(self._link.retry_initial)

    async def _deliver(self, records: list[CallRecord]) -> None:
        """Apply a batch straight from the queue (the spool is empty)."""
        batch = self._inflight = Batch(records)
        await self._link.apply(batch)
        self._inflight = None
        self._written += batch.stored
        if batch.complete:
            self._link.answering()
        else:
            # The database went away. Anything spooled meanwhile (an overflow) is newer: the
            # rest of this batch goes first.
            await self._spool.append(batch.rest, prepend=True)

    async def _replay(self) -> None:
        """Apply the spool in order, then cut what was applied off the file."""
        if not await self._link.reachable():
            return
        offset = consumed = 0
        complete = False
        try:
            while True:
                entries = await self._spool.read(offset, self._batcher.batch_size)
                if not entries:
                    complete = True
                    break
                batch = Batch([entry.record for entry in entries if entry.record is not None])
                await self._link.apply(batch)
                self._replayed += batch.stored
                dealt_with = _entries_dealt_with(entries, batch.done)
                for entry in dealt_with:
                    if entry.record is None:
                        self._spool.set_aside_line(entry)
                if dealt_with:
                    offset, consumed = dealt_with[-1].end, consumed + len(dealt_with)
                if not batch.complete:
                    break   # the database went away
        finally:
            if offset:
                consumed = await self._spool.consume(offset, consumed)
        if complete:
            if consumed:
                log.info("call log: %d spooled record(s) replayed", consumed)
            self._link.answering()
            if not consumed:  # an append still on its way (or a spool emptied by hand): look again soon
                self._link.retry_later()


def _entries_dealt_with(entries: list[SpoolEntry], records_done: int) -> list[SpoolEntry]:
    """The leading entries settled once the first `records_done` readable records are: the
    unreadable lines up to the next readable record included."""
    for position, entry in enumerate(entries):
        if entry.record is not None:
            if records_done == 0:
                return entries[:position]
            records_done -= 1
    return entries
