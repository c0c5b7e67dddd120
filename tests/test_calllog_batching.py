"""The batcher on its own: the queue, the linger and what cuts it short, flush.

Durations are generous bounds (a linger of 30 s must not be waited out), never measures.
"""

from __future__ import annotations

import asyncio
import time

from app.calllog.batching import Batcher


def make_batcher(*, queue_size: int = 100, batch_size: int = 10, linger: float = 30.0) -> Batcher[int]:
    return Batcher(queue_size=queue_size, batch_size=batch_size, linger=linger)


async def linger_in_background(batcher: Batcher[int]) -> asyncio.Task[bool]:
    task = asyncio.create_task(batcher.wait_for_more(spool_in_use=False))
    await asyncio.sleep(0.05)
    assert not task.done(), "the batcher should be lingering"
    return task


async def test_put_never_waits_and_says_when_the_queue_is_full() -> None:
    batcher = make_batcher(queue_size=3)
    assert [batcher.put(n) for n in range(4)] == [True, True, True, False]
    assert batcher.queued == 3
    assert batcher.drain() == [0, 1, 2] and batcher.empty


async def test_take_gives_at_most_a_batch_oldest_first() -> None:
    batcher = make_batcher(batch_size=4)
    for n in range(10):
        batcher.put(n)
    assert [batcher.take(), batcher.take(), batcher.take(), batcher.take()] == \
           [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], []]


async def test_the_linger_gathers_items_and_ends_by_itself() -> None:
    batcher = make_batcher(linger=0.3)
    began = time.monotonic()
    batcher.put(1)
    await asyncio.sleep(0.1)
    batcher.put(2)                              # the linger counts from the first item, not this one
    assert await batcher.wait_for_more(spool_in_use=False)
    assert 0.25 <= time.monotonic() - began < 2.0
    assert not await batcher.wait_for_more(spool_in_use=False)   # lingered enough: take now
    assert batcher.take() == [1, 2]


async def test_without_items_or_linger_there_is_no_waiting() -> None:
    assert not await make_batcher().wait_for_more(spool_in_use=False)   # nothing queued
    batcher = make_batcher(linger=0)
    batcher.put(1)
    assert not await batcher.wait_for_more(spool_in_use=False)


async def test_a_full_batch_cuts_the_linger_short() -> None:
    batcher = make_batcher(batch_size=3)
    batcher.put(1)
    task = await linger_in_background(batcher)
    batcher.put(2)
    batcher.put(3)
    assert await asyncio.wait_for(task, 2)
    assert not await batcher.wait_for_more(spool_in_use=False)
    assert batcher.take() == [1, 2, 3]


async def test_a_full_queue_cuts_the_linger_short() -> None:
    batcher = make_batcher(queue_size=2, batch_size=10)
    batcher.put(1)
    task = await linger_in_background(batcher)
    batcher.put(2)                              # lingering on would overflow the next record
    assert await asyncio.wait_for(task, 2)
    assert not await batcher.wait_for_more(spool_in_use=False)


async def test_closing_and_hurrying_cut_the_linger_short() -> None:
    batcher = make_batcher()
    batcher.put(1)
    task = await linger_in_background(batcher)
    batcher.hurry()                             # the spool came into use
    assert await asyncio.wait_for(task, 2)
    assert not await batcher.wait_for_more(spool_in_use=True)

    task = await linger_in_background(batcher)
    batcher.begin_closing()
    assert await asyncio.wait_for(task, 2)
    assert batcher.closing and not await batcher.wait_for_more(spool_in_use=False)
    batcher.reopen()
    assert not batcher.closing


async def test_flush_cuts_the_linger_short_and_waits_until_settled() -> None:
    batcher = make_batcher()
    taken: list[list[int]] = []

    async def consumer() -> None:   # what the writer task does, for one batch
        batcher.went_round()
        while await batcher.wait_for_more(spool_in_use=False):
            pass
        taken.append(batcher.take())
        batcher.went_round()

    batcher.put(1)
    batcher.put(2)
    task = asyncio.create_task(consumer())
    await asyncio.sleep(0.05)
    assert taken == []                          # lingering
    assert await batcher.flush(lambda: batcher.empty, timeout=2)
    assert taken == [[1, 2]]
    await task


async def test_flush_times_out_when_never_settled() -> None:
    batcher = make_batcher()
    batcher.put(1)
    began = time.monotonic()
    assert not await batcher.flush(lambda: batcher.empty, timeout=0.1)
    assert time.monotonic() - began < 2.0
    assert batcher.queued == 1


async def test_wait_for_work_wakes_on_an_item_and_ends_at_its_timeout() -> None:
    batcher = make_batcher()
    began = time.monotonic()
    await batcher.wait_for_work(0.05)           # nothing came
    assert time.monotonic() - began >= 0.04

    task = asyncio.create_task(batcher.wait_for_work(None))
    await asyncio.sleep(0.02)
    assert not task.done()
    batcher.put(1)
    await asyncio.wait_for(task, 2)
    await asyncio.wait_for(batcher.wait_for_work(None), 2)   # something is queued: no waiting
