"""The DynamoDB sink's ShardProcessor: history and candles durable per batch, latest rows via
the pump. Records are routed by type (consumers.routing): miniTicker records to the history and
latest tables, closed klines to the candles table, open klines skipped, other types
dead-lettered before the batch can be checkpointed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

from consumers.dynamodb.candles import candle_item, dedupe_candles
from consumers.dynamodb.items import coalesce_latest, dedupe_history, history_item
from consumers.dynamodb.latest import DEFAULT_CONCURRENCY, LatestBook, LatestPump
from consumers.dynamodb.writer import AsyncDynamoDbSink, DynamoDbSinkWriter, all_of, async_sink
from consumers.engine.records import ConsumedRecord, Position
from consumers.routing import RecordDeadLetters, dead_letter_unhandled, split
from core.dead_letters import DeadLetterStore
from core.metrics import Counters, Histograms, Metrics
from core.threads import SINK_WRITES, shared_pool

log = logging.getLogger(__name__)

# process()'s time budget per batch, history write included, before it returns (the engine's
# pause between reads, IDLE_TIME_BETWEEN_READS_MS, by default): what is left after the history
# write is spent waiting for the batch's latest rows, so a pump that keeps up lets the
# checkpoint follow in the same cycle. The wait never holds the pump (the rows are written
# the same either way); a latest table falling behind costs the shard's reads only the
# GetRecords and decoding time, since the engine's pause counts from the GetRecords call and
# this budget from process().
LATEST_WAIT_SECONDS: Final = 0.5
# A batch whose newest record the producer received longer ago than this is a catch-up (a
# backlog, a replay): its latest rows are held for the batches behind it until the shard is at
# its tip (or LATEST_HOLD_SECONDS at most), so a catch-up writes each row about once instead of
# once per batch, and process() does not wait for them. At the tip a record is here well within
# a second: never held.
CATCH_UP_AGE_SECONDS: Final = 5.0
LATEST_HOLD_SECONDS: Final = 5.0
# At SIGTERM: how long to let waiting latest rows finish; the rest is re-read by the next owner.
SHUTDOWN_WAIT_SECONDS: Final = 2.0
CONSUMER: Final = "consumer-dynamodb"  # names this sink in an unhandled record's dead letter


def _epoch_us() -> int:
    """Now, in epoch microseconds (the producer's ``received_at`` clock)."""
    return time.time_ns() // 1000


class DynamoDbProcessor:
    """Writes each GetRecords batch's history and candle items before returning, and hands its
    latest updates to the book; the position returned is the end of the last batch whose
    history and candles are durable, whose unhandled records are dead letters and whose latest
    updates are written or covered (see consumers.dynamodb.latest).
    """

    def __init__(
        self,
        writer: AsyncDynamoDbSink,
        book: LatestBook,
        retention_ttl_days: int,
        shard_id: str = "",
        metrics: Metrics | None = None,
        *,
        latest_wait: float = LATEST_WAIT_SECONDS,
        dead_letters: RecordDeadLetters | None = None,
        consumer: str = CONSUMER,
        wall_clock_us: Callable[[], int] = _epoch_us,
    ) -> None:
        self._writer = writer
        self._wall_clock_us = wall_clock_us
        self._dead_letters = dead_letters
        self._consumer = consumer
        self._latest_wait = latest_wait
        self._book = book
        self._retention_ttl_days = retention_ttl_days
        self._shard_id = shard_id
        self._metrics = metrics
        self._batch = 0
        self._ends: deque[tuple[int, Position]] = deque()  # batches not yet returned

    async def process(self, records: Sequence[ConsumedRecord]) -> Position | None:
        """Write the batch's history and candles durably, queue its latest updates; returns
        what is safe."""
        if not records:
            return self._safe()
        deadline = time.monotonic() + self._latest_wait
        routed = split(records)
        await dead_letter_unhandled(routed.unhandled, self._consumer, self._dead_letters)
        tickers = routed.tickers
        items = dedupe_history(
            history_item(consumed.record, self._retention_ttl_days) for consumed in tickers
        )
        updates = coalesce_latest(consumed.record for consumed in tickers)
        if routed.candles:
            candles = dedupe_candles(candle_item(consumed.record) for consumed in routed.candles)
            await all_of([self._writer.put_history(items), self._writer.put_candles(candles)])
        else:
            await self._writer.put_history(items)
        if self._metrics is not None:
            self._metrics.observe_ages(
                Histograms.HISTORY_DURABLE_SECONDS, (int(r.record["received_at"]) for r in tickers)
            )
            if routed.open_klines:
                self._metrics.inc(Counters.OPEN_KLINES_SKIPPED, routed.open_klines)
        # After the history, so a latest row never shows an event the history table lacks.
        self._batch += 1
        self._ends.append((self._batch, records[-1].position))
        hold = self._hold(tickers)
        self._book.offer(self._shard_id, self._batch, updates, hold)
        if not hold:
            await self._book.until_clear(
                self._shard_id, self._batch, max(0.0, deadline - time.monotonic())
            )
        log.debug(
            "wrote %d records as %d items and %d candles, queued %d latest updates",
            len(records),
            len(items),
            len(routed.candles),
            len(updates),
            extra={"shard_id": self._shard_id},
        )
        return self._safe()

    def _hold(self, tickers: Sequence[ConsumedRecord]) -> float:
        """How long the batch's latest rows may wait for newer ones: a catch-up's are held."""
        if not tickers:
            return 0.0
        age_us = self._wall_clock_us() - int(tickers[-1].record["received_at"])
        return LATEST_HOLD_SECONDS if age_us > CATCH_UP_AGE_SECONDS * 1_000_000 else 0.0

    async def at_tip(self, now_ms: int) -> Position | None:
        """Whatever became safe since (the pump writes in the background); a catch-up's held
        rows are written now."""
        self._book.release(self._shard_id)
        return self._safe()

    async def shard_ended(self) -> Position | None:
        """Wait for every latest update of the shard: SHARD_END must cover everything."""
        self._book.release(self._shard_id)
        await self._book.until_clear(self._shard_id, self._batch, None)
        return self._safe()

    async def shutdown(self) -> Position | None:
        """Give waiting latest updates a moment, then return what is safe."""
        self._book.release(self._shard_id)
        await self._book.until_clear(self._shard_id, self._batch, SHUTDOWN_WAIT_SECONDS)
        return self._safe()

    def abandon(self) -> None:
        """The lease is gone: the next owner re-reads (and re-queues) the unsafe batches."""
        self._book.drop(self._shard_id)
        self._ends.clear()

    def _safe(self) -> Position | None:
        first_blocked = self._book.first_blocked(self._shard_id)
        position = None
        while self._ends and (first_blocked is None or self._ends[0][0] < first_blocked):
            position = self._ends.popleft()[1]
        return position


class DynamoDbProcessorFactory:
    """Makes one DynamoDbProcessor per shard lease, all sharing one writer (and its pool) and
    one latest-table pump; ``close`` stops the pump (not the writer). Latest-table updates
    DynamoDB refuses for good go to ``dead_letters`` under ``dead_letter_source``; records of a
    type this sink has no handler for go to ``record_dead_letters`` (without it they fail the
    shard rather than vanish)."""

    def __init__(
        self,
        writer: DynamoDbSinkWriter,
        retention_ttl_days: int,
        metrics: Metrics | None = None,
        *,
        latest_wait: float = LATEST_WAIT_SECONDS,
        latest_concurrency: int = DEFAULT_CONCURRENCY,
        dead_letters: DeadLetterStore | None = None,
        dead_letter_source: str = "crypto-live-dynamodb",
        record_dead_letters: RecordDeadLetters | None = None,
        consumer: str = CONSUMER,
        wall_clock_us: Callable[[], int] = _epoch_us,
    ) -> None:
        self._wall_clock_us = wall_clock_us  # how old a batch is: catch-ups hold latest rows
        self._record_dead_letters = record_dead_letters
        self._consumer = consumer
        # DynamoDbWriter awaits its own pool; a blocking fake's calls run on the sinks' pool.
        self._writer = async_sink(writer, shared_pool(SINK_WRITES))
        self._retention_ttl_days = retention_ttl_days
        self._metrics = metrics
        self._latest_wait = latest_wait
        # The pump keeps latest_concurrency calls in flight on the writer's pool.
        self._pump = LatestPump(
            self._writer,
            metrics,
            concurrency=latest_concurrency,
            dead_letters=dead_letters,
            dead_letter_source=dead_letter_source,
        )

    @property
    def book(self) -> LatestBook:
        return self._pump.book

    def __call__(self, shard_id: str) -> DynamoDbProcessor:
        return DynamoDbProcessor(
            self._writer,
            self._pump.book,
            self._retention_ttl_days,
            shard_id,
            self._metrics,
            latest_wait=self._latest_wait,
            dead_letters=self._record_dead_letters,
            consumer=self._consumer,
            wall_clock_us=self._wall_clock_us,
        )

    async def drained(self) -> None:
        """Until every queued latest update is written (raises the pump's error)."""
        await self._pump.drain()

    def drain(self) -> None:
        """``drained`` for a caller without an event loop (the replay command)."""
        asyncio.run(self.drained())

    def close(self) -> None:
        """Stop the pump (close the writer too, to cut the write in flight short); waiting
        updates stay un-checkpointed, so the shards' next owners write them."""
        self._pump.book.close()
