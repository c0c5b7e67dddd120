"""Batching: records in from the call path without blocking, out in batches worth a transaction.

`put` never waits: the record joins a bounded asyncio queue (or, when that is full, the
caller is told so and deals with the overflow), and one consumer task takes batches out.

Records come a few at a time, and each transaction costs far more than its rows (with
aiosqlite every statement is a hop to its thread and back), so the consumer lingers: once a
record is queued it waits up to `linger` seconds (0 disables it) from that record's arrival
for more, and then takes them together. No record lingers longer than that, and none at all
when the batch is full (`batch_size`, or the queue is), when closing, while someone waits
in `flush` (which cuts a linger short, so it stays prompt), or while the spool is in use
(during an outage records are to reach the disk at once).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    """The queue between `put` and one consumer task, and the signals between them."""

    def __init__(self, *, queue_size: int, batch_size: int, linger: float) -> None:
        self.batch_size = max(batch_size, 1)
        self.linger = max(linger, 0.0)
        self.closing = False
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize=max(queue_size, 1))
        self._work = asyncio.Event()        # something to do: an item, an overflow, closing
        self._progress = asyncio.Event()    # the consumer went round its loop (for `flush`)
        self._hurry = asyncio.Event()       # stop lingering: a full batch, closing, flush, the spool
        self._first_queued = 0.0            # time.monotonic() at or before the oldest queued item
        self._flushing = 0                  # callers waiting in `flush`: no lingering meanwhile

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def empty(self) -> bool:
        return self._queue.empty()

    # ------------------------------------------------------------------ the producer side

    def put(self, item: T) -> bool:
        """Queue `item`; False, leaving the queue as it is, when it is full. Never waits.
        Call it from the event loop's thread."""
        if self._queue.full():
            return False
        if self._queue.empty():
            self._first_queued = time.monotonic()   # the linger counts from here
        self._queue.put_nowait(item)
        self._work.set()
        if self._batch_ready():
            self._hurry.set()
        return True

    def hurry(self) -> None:
        """Wake the consumer and end its linger (the spool is in use now, say)."""
        self._work.set()
        self._hurry.set()

    def begin_closing(self) -> None:
        """From now on the consumer takes what is queued at once, and stops when it is empty."""
        self.closing = True
        self.hurry()

    def reopen(self) -> None:
        self.closing = False

    async def flush(self, settled: Callable[[], bool], timeout: float | None) -> bool:
        """Cut any linger short and wait until `settled()` holds (True), or `timeout` (False).
        `settled` is checked each time the consumer goes round, and every 20 ms."""
        async def settle() -> None:
            while not settled():
                self._progress.clear()
                # Work done outside the consumer (a spool thread, say) ends without a signal.
                await _until_set(self._progress, 0.02)
        self._flushing += 1
        self._hurry.set()
        try:
            async with asyncio.timeout(timeout):
                await settle()
            return True
        except TimeoutError:
            return False
        finally:
            self._flushing -= 1

    # ------------------------------------------------------------------ the consumer side

    def went_round(self) -> None:
        """The consumer is about to look for work (`flush` checks again)."""
        self._progress.set()

    async def wait_for_more(self, *, spool_in_use: bool) -> bool:
        """Linger for more items when that is allowed. True when it waited: look around again
        (the spool may be in use now, or closing begun) before taking a batch."""
        delay = self._linger_left(spool_in_use)
        if delay <= 0:
            return False
        # No await between the checks above and this wait, so a `hurry` is never missed.
        self._hurry.clear()
        await _until_set(self._hurry, delay)
        return True

    def take(self) -> list[T]:
        """Up to `batch_size` items, oldest first."""
        batch: list[T] = []
        while len(batch) < self.batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return batch

    def drain(self) -> list[T]:
        """Everything queued, oldest first."""
        items: list[T] = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                return items

    async def wait_for_work(self, timeout: float | None) -> None:
        """Sleep until an item arrives, closing begins, or `timeout` seconds (None: no limit)."""
        self._work.clear()
        if not self._queue.empty() or self.closing:
            return
        self._progress.set()
        await _until_set(self._work, timeout)

    def _linger_left(self, spool_in_use: bool) -> float:
        if (self.linger <= 0 or self.closing or self._flushing
                or spool_in_use or self._queue.empty() or self._batch_ready()):
            return 0.0
        return self._first_queued + self.linger - time.monotonic()

    def _batch_ready(self) -> bool:
        # A full queue too: lingering must not push records into the spool by overflow.
        return self._queue.qsize() >= self.batch_size or self._queue.full()


async def _until_set(event: asyncio.Event, timeout: float | None) -> None:
    """Wait until `event` is set or `timeout` seconds (None: no limit) have passed."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        pass
