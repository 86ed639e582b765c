"""BatchQueue: the reader-to-encoder hand-off. Order, the bound, batches, join; no timing."""

from __future__ import annotations

import asyncio

import pytest

from producer.handoff import BatchQueue

pytestmark = pytest.mark.timeout(10)


def test_take_returns_everything_queued_in_order() -> None:
    async def scenario() -> list[list[int]]:
        queue: BatchQueue[int] = BatchQueue(10)
        for i in range(5):
            assert queue.offer(i)
        first = await queue.take()
        assert queue.empty() and queue.qsize() == 0
        await queue.put(5)
        return [first, await queue.take()]

    assert asyncio.run(scenario()) == [[0, 1, 2, 3, 4], [5]]


def test_offer_refuses_at_the_bound_and_put_waits_until_taken_items_are_done() -> None:
    async def scenario() -> list[int]:
        queue: BatchQueue[int] = BatchQueue(3)
        assert all(queue.offer(i) for i in range(3))
        assert not queue.offer(99)  # full: nothing queued
        assert queue.qsize() == 3
        putter = asyncio.create_task(queue.put(3))
        await asyncio.sleep(0)
        assert not putter.done()  # waits for room
        taken = await queue.take()
        assert not queue.offer(99)  # taken but not handled: still counts against the bound
        await asyncio.sleep(0)
        assert not putter.done()
        queue.done(2)
        await putter
        assert queue.offer(4)  # 1 taken and not done, 3 and 4 queued: full again
        assert not queue.offer(99)
        return taken + await queue.take()

    assert asyncio.run(scenario()) == [0, 1, 2, 3, 4]


def test_take_waits_for_the_first_item_and_gets_all_that_came_before_it_ran() -> None:
    async def scenario() -> tuple[bool, list[str]]:
        queue: BatchQueue[str] = BatchQueue(10)
        taker = asyncio.create_task(queue.take())
        await asyncio.sleep(0)
        waited = not taker.done()
        queue.offer("a")
        queue.offer("b")  # both arrive before the taker runs
        return waited, await taker

    assert asyncio.run(scenario()) == (True, ["a", "b"])


def test_join_waits_until_every_taken_item_is_done() -> None:
    async def scenario() -> list[str]:
        queue: BatchQueue[int] = BatchQueue(10)
        events: list[str] = []
        await queue.join()  # nothing put: returns at once
        queue.offer(1)
        queue.offer(2)

        async def joiner() -> None:
            await queue.join()
            events.append("joined")

        task = asyncio.create_task(joiner())
        batch = await queue.take()
        await asyncio.sleep(0)
        events.append(f"took {len(batch)}")
        queue.done(1)
        await asyncio.sleep(0)
        events.append("one done")
        queue.done(1)
        await task
        return events

    assert asyncio.run(scenario()) == ["took 2", "one done", "joined"]


def test_a_cancelled_take_leaves_the_queue_usable() -> None:
    async def scenario() -> list[int]:
        queue: BatchQueue[int] = BatchQueue(10)
        taker = asyncio.create_task(queue.take())
        await asyncio.sleep(0)
        taker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await taker
        queue.offer(7)
        return await queue.take()

    assert asyncio.run(scenario()) == [7]


def test_maxsize_must_be_positive() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        BatchQueue(0)
