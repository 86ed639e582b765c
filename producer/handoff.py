"""The bounded hand-off between the producer's reader and its encoder, taken in batches.

An ``asyncio.Queue`` costs an await, a future and a wake-up per item on both sides; here the
reader appends without awaiting while there is room and the encoder takes everything queued
at once, so the per-item cost is a list append.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class BatchQueue(Generic[T]):
    """A FIFO whose consumer takes every queued item at once; at most ``maxsize`` items are
    in it or taken and not yet handled, so a batch being handled counts against the bound.

    ``offer`` adds an item when there is room, ``put`` waits for room (backpressure);
    ``take`` waits for at least one item and returns every queued one; ``done`` marks taken
    items handled (making room), and ``join`` waits until every item put was handled.
    """

    __slots__ = (
        "_all_done",
        "_items",
        "_maxsize",
        "_not_empty",
        "_not_full",
        "_taking",
        "_unfinished",
    )

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be positive: {maxsize}")
        self._maxsize = maxsize
        self._items: list[T] = []
        self._unfinished = 0
        self._not_empty = asyncio.Event()
        self._not_full = asyncio.Event()
        self._not_full.set()
        self._all_done = asyncio.Event()
        self._all_done.set()
        self._taking = False

    def qsize(self) -> int:
        """Items queued and not yet taken."""
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def offer(self, item: T) -> bool:
        """Queue ``item`` if there is room; False (and nothing queued) when full."""
        if self._unfinished >= self._maxsize:
            return False
        items = self._items
        items.append(item)
        self._unfinished += 1
        if self._unfinished == 1:
            self._all_done.clear()
        if self._taking and len(items) == 1:
            self._not_empty.set()
        return True

    async def put(self, item: T) -> None:
        """Queue ``item``, waiting while the queue is full."""
        while not self.offer(item):
            self._not_full.clear()
            await self._not_full.wait()

    async def take(self) -> list[T]:
        """Every queued item, oldest first; waits for one if there is none."""
        while not self._items:
            self._not_empty.clear()
            self._taking = True
            try:
                await self._not_empty.wait()
            finally:
                self._taking = False
        batch, self._items = self._items, []
        return batch

    def done(self, count: int) -> None:
        """``count`` taken items were handled."""
        self._unfinished -= count
        self._not_full.set()
        if self._unfinished <= 0:
            self._unfinished = 0
            self._all_done.set()

    async def join(self) -> None:
        """Until every item put so far was taken and handled."""
        while self._unfinished:
            await self._all_done.wait()
