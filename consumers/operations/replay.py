"""Re-drive a range of the stream into a sink, beside the live consumer group.

Replays use their own in-memory leases, so the live group's lease table is never touched;
the sinks' writes are idempotent, so re-applied records change nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from consumers.engine.leases import Lease, MemoryLeaseStore
from consumers.engine.processor import ProcessorFactory, ShardProcessor
from consumers.engine.records import ConsumedRecord, Position, UndecodableRecord
from consumers.engine.shard_reader import LeaseHandle, ReaderConfig, ShardReader
from consumers.operations.positions import StartPosition
from core.metrics import Counters, Metrics
from schemas.codec import SingleObjectCodec

log = logging.getLogger(__name__)


def _arrival_ms(record: ConsumedRecord) -> int:
    return int(record.arrival.timestamp() * 1000)


class BoundedProcessor:
    """Passes records up to an end time to the real processor, then says it is done.

    ``close_batch``: the S3 sink also gets the first record past the end, so the batch
    before it closes exactly where a clean run closed it (that record is not written).
    """

    def __init__(
        self,
        inner: ShardProcessor,
        end_ms: int | None,
        done: asyncio.Event,
        count: Callable[[int], None],
        *,
        close_batch: bool,
    ) -> None:
        self._inner = inner
        self._end_ms = end_ms
        self._done = done
        self._count = count
        self._close_batch = close_batch

    async def process(self, records: Sequence[ConsumedRecord]) -> Position | None:
        if self._done.is_set():
            return None
        end = self._end_ms
        cut = next(
            (i for i, r in enumerate(records) if end is not None and _arrival_ms(r) >= end), None
        )
        if cut is None:
            self._count(len(records))
            return await self._inner.process(records)
        self._done.set()
        self._count(cut)
        head = records[: cut + 1] if self._close_batch else records[:cut]
        return await self._inner.process(head) if head else None

    async def at_tip(self, now_ms: int) -> Position | None:
        position = await self._inner.at_tip(now_ms)
        self._done.set()  # caught up with the stream: the range is replayed
        return position

    async def shard_ended(self) -> Position | None:
        self._done.set()
        return await self._inner.shard_ended()

    async def shutdown(self) -> Position | None:
        return await self._inner.shutdown()

    def abandon(self) -> None:
        self._inner.abandon()


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """What to replay: which shards, from where, until when."""

    start: StartPosition
    end_ms: int | None
    shard_ids: tuple[str, ...]
    close_batch: bool  # the S3 sink: end on a batch boundary


async def replay(
    plan: ReplayPlan,
    *,
    kinesis: Any,
    stream: str,
    processors: ProcessorFactory,
    codec: SingleObjectCodec,
    dead_letters: Callable[[list[UndecodableRecord]], None],
    metrics: Metrics,
    closed_ending: dict[str, int],
    reader: ReaderConfig | None = None,
    on_progress: Callable[[], None] = lambda: None,
) -> int:
    """Replay every planned shard concurrently; returns the number of records re-driven."""
    store = MemoryLeaseStore()
    total = 0

    def count(n: int) -> None:
        nonlocal total
        total += n
        metrics.inc(Counters.RECORDS_REPLAYED, n)
        on_progress()

    async def one(shard_id: str) -> None:
        start = plan.start
        store.create(shard_id, (), start.checkpoint)
        lease = store.take(Lease(shard_id, None, 0, start.checkpoint), "replay")
        if start.checkpoint.isdigit():
            lease = store.checkpoint(lease, start.checkpoint, start.checkpoint_sub)
        done = asyncio.Event()
        processor = BoundedProcessor(
            processors(shard_id), plan.end_ms, done, count, close_batch=plan.close_batch
        )
        shard_reader = ShardReader(
            LeaseHandle(lease, store),
            kinesis,
            stream,
            processor,
            codec,
            dead_letters,
            config=reader or ReaderConfig(idle_seconds=0.05),
            parents_done=lambda: True,
            closed_ending=lambda: closed_ending.get(shard_id),
            metrics=metrics,
        )
        outcome = await shard_reader.run(done)
        log.info("replayed %s: %s", shard_id, outcome.value, extra={"shard_id": shard_id})

    await asyncio.gather(*(one(shard_id) for shard_id in plan.shard_ids))
    return total
