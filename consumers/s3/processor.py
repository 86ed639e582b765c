"""The S3 sink's ShardProcessor: route by type, cut segments deterministically, PUT them in
order, checkpoint.

miniTicker rows go under the JSONL prefix, closed klines under the kline prefix (same hour
partitions, same object naming); open klines are skipped and counted, records of a type this
sink has no handler for are dead-lettered first. The checkpoint only ever moves to the end of
a segment whose batches are all written, i.e. to a boundary of every kind at once. A new owner
therefore re-reads from the first record of the open segment and cuts the same segments as a
run that never stopped, rewriting identical objects under identical keys.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter
from typing import TYPE_CHECKING, Final

from consumers.engine.processor import ProcessorFactory
from consumers.engine.records import ConsumedRecord, Position
from consumers.routing import RecordDeadLetters, Route, dead_letter_unhandled, route_of
from consumers.s3.batching import (
    DEFAULT_GRACE_MS,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ROWS,
    DEFAULT_WINDOW_SECONDS,
    Batch,
    LineEncoder,
    Routed,
    Segment,
    SegmentCutter,
)
from consumers.s3.format import JsonlGzipFormat
from consumers.s3.keys import object_key
from consumers.s3.writer import BatchWriter, async_writer
from core.metrics import Counters, Metrics
from core.threads import SINK_WRITES, run_in, shared_pool
from schemas.codec import MINITICKER_SCHEMA

log = logging.getLogger(__name__)

DEFAULT_PREFIX: Final = "batch_jsonl"
DEFAULT_KLINES_PREFIX: Final = "klines_jsonl"
CONSUMER: Final = "consumer-s3"  # names this sink in an unhandled record's dead letter
# The kinds of rows this sink writes, each under a prefix of its own.
KINDS: Final = (Route.TICKER, Route.CANDLE)
_SCHEMA: Final = attrgetter("schema")


class S3Processor:
    """One shard's S3 sink; every method returns the last position durable in S3, or None.

    ``prefixes`` maps each kind of row (Route.TICKER, Route.CANDLE) to its S3 prefix.
    """

    def __init__(
        self,
        shard_id: str,
        writer: BatchWriter,
        cutter: SegmentCutter,
        format: JsonlGzipFormat,
        prefixes: Mapping[str, str],
        metrics: Metrics | None = None,
        *,
        dead_letters: RecordDeadLetters | None = None,
        consumer: str = CONSUMER,
    ) -> None:
        self.shard_id = shard_id
        self._writer = async_writer(writer, shared_pool(SINK_WRITES))
        self._cutter = cutter
        self._format = format
        self._prefixes = dict(prefixes)
        self._metrics = metrics
        self._dead_letters = dead_letters
        self._consumer = consumer
        # Segments the cutter emitted but S3 has not confirmed; written first on the next call,
        # so a failed PUT can never be skipped over by a later checkpoint.
        self._unwritten: deque[Segment] = deque()

    @property
    def buffered(self) -> int:
        """Rows consumed but not yet durable (open segment plus unwritten segments)."""
        return self._cutter.buffered + sum(segment.rows for segment in self._unwritten)

    async def process(self, records: Sequence[ConsumedRecord]) -> Position | None:
        """Route, feed the cutter and write every segment it closed, in order."""
        self._unwritten.extend(self._cutter.add(await self._routed(records)))
        return await self._write_unwritten()

    async def at_tip(self, now_ms: int) -> Position | None:
        """Close the open segment once its window ended grace_ms before ``now_ms``."""
        self._unwritten.extend(self._cutter.at_tip(now_ms))
        return await self._write_unwritten()

    async def shard_ended(self) -> Position | None:
        """Write everything, including the partly filled last segment of the closed shard."""
        self._unwritten.extend(self._cutter.flush())
        return await self._write_unwritten()

    async def shutdown(self) -> Position | None:
        """Leave the open segment to the next owner: closing it now would cut a segment a
        clean run would not have, and the objects would no longer replay byte for byte."""
        log.info(
            "shard %s shutting down; %d buffered records will be re-read by the next owner",
            self.shard_id,
            self.buffered,
        )
        self.abandon()
        return None

    def abandon(self) -> None:
        """Drop buffers without writing; the checkpoint stays at the last written segment."""
        self._cutter.reset()
        self._unwritten.clear()

    async def _routed(self, records: Sequence[ConsumedRecord]) -> Iterable[Routed]:
        """Each record with the kind of row it becomes (None: none); unhandled ones are dead
        letters before the cutter sees them, so a checkpoint past them is safe."""
        if all(map(MINITICKER_SCHEMA.__eq__, map(_SCHEMA, records))):
            return zip(records, repeat(Route.TICKER))  # no pair per record
        routes = [route_of(record) for record in records]
        unhandled = [
            r for r, route in zip(records, routes, strict=True) if route is Route.UNHANDLED
        ]
        await dead_letter_unhandled(unhandled, self._consumer, self._dead_letters)
        skipped = routes.count(Route.OPEN_KLINE)
        if skipped and self._metrics is not None:
            self._metrics.inc(Counters.OPEN_KLINES_SKIPPED, skipped)
        return [
            (record, route if route in KINDS else None)
            for record, route in zip(records, routes, strict=True)
        ]

    async def _write_unwritten(self) -> Position | None:
        durable: Position | None = None
        while self._unwritten:
            segment = self._unwritten[0]
            for batch in segment.batches:
                await self._write(batch)
            self._unwritten.popleft()
            durable = segment.last
        return durable

    async def _write(self, batch: Batch) -> None:
        key = object_key(self._prefixes[batch.kind], batch)
        # gzip on a pool thread too (it releases the GIL), off the event loop.
        body = await run_in(SINK_WRITES, self._format.serialize, batch)
        await self._writer.put_async(key, body)
        log.debug(
            "wrote %s: %d rows, shard %s %s..%s",
            key,
            len(batch),
            batch.shard_id,
            batch.first,
            batch.last,
        )
        if self._metrics is not None:
            self._metrics.inc(Counters.S3_RECORDS_WRITTEN, len(batch))
            if batch.duplicates:
                self._metrics.inc(Counters.S3_DUPLICATES_DROPPED, batch.duplicates)


@dataclass(frozen=True, slots=True)
class S3ProcessorFactory:
    """Makes one S3Processor per shard lease, all sharing one writer."""

    writer: BatchWriter
    prefix: str = DEFAULT_PREFIX
    max_rows: int = DEFAULT_MAX_ROWS
    window_seconds: int = DEFAULT_WINDOW_SECONDS
    max_bytes: int = DEFAULT_MAX_BYTES
    grace_ms: int = DEFAULT_GRACE_MS
    format: JsonlGzipFormat = field(default_factory=JsonlGzipFormat)
    metrics: Metrics | None = None
    klines_prefix: str = DEFAULT_KLINES_PREFIX
    dead_letters: RecordDeadLetters | None = None
    consumer: str = CONSUMER

    def __call__(self, shard_id: str) -> S3Processor:
        lines: dict[str, LineEncoder] = {
            Route.TICKER: self.format.line,
            Route.CANDLE: self.format.kline_line,
        }
        cutter = SegmentCutter(
            lines, self.max_rows, self.window_seconds, self.max_bytes, self.grace_ms
        )
        return S3Processor(
            shard_id,
            self.writer,
            cutter,
            self.format,
            {Route.TICKER: self.prefix, Route.CANDLE: self.klines_prefix},
            self.metrics,
            dead_letters=self.dead_letters,
            consumer=self.consumer,
        )


if TYPE_CHECKING:

    def _fits_the_engine(factory: S3ProcessorFactory) -> ProcessorFactory:
        # mypy proves S3ProcessorFactory and S3Processor match the engine's protocols.
        return factory
