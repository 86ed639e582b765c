"""The S3 sink's ShardProcessor: cut batches deterministically, PUT them in order, checkpoint.

The checkpoint only ever moves to the last position of a written batch, i.e. to a batch
boundary. A new owner therefore re-reads from the first record of the open batch and cuts the
same batches as a run that never stopped, rewriting identical objects under identical keys.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from consumers.engine.processor import ProcessorFactory
from consumers.engine.records import ConsumedRecord, Position
from consumers.s3.batching import (
    DEFAULT_GRACE_MS,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ROWS,
    DEFAULT_WINDOW_SECONDS,
    Batch,
    BatchCutter,
)
from consumers.s3.format import JsonlGzipFormat
from consumers.s3.keys import object_key
from consumers.s3.writer import BatchWriter, async_writer
from core.metrics import Counters, Metrics
from core.threads import SINK_WRITES, run_in, shared_pool

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "batch_jsonl"


class S3Processor:
    """One shard's S3 sink; every method returns the last position durable in S3, or None."""

    def __init__(
        self,
        shard_id: str,
        writer: BatchWriter,
        cutter: BatchCutter,
        format: JsonlGzipFormat,
        prefix: str = DEFAULT_PREFIX,
        metrics: Metrics | None = None,
    ) -> None:
        self.shard_id = shard_id
        self._writer = async_writer(writer, shared_pool(SINK_WRITES))
        self._cutter = cutter
        self._format = format
        self._prefix = prefix
        self._metrics = metrics
        # Batches the cutter emitted but S3 has not confirmed; written first on the next call,
        # so a failed PUT can never be skipped over by a later checkpoint.
        self._unwritten: deque[Batch] = deque()

    @property
    def buffered(self) -> int:
        """Records consumed but not yet durable (open batch plus unwritten batches)."""
        return self._cutter.buffered + sum(len(batch) for batch in self._unwritten)

    async def process(self, records: Sequence[ConsumedRecord]) -> Position | None:
        """Feed the cutter and write every batch it closed, in order."""
        self._unwritten.extend(self._cutter.add(records))
        return await self._write_unwritten()

    async def at_tip(self, now_ms: int) -> Position | None:
        """Close the open batch once its window ended grace_ms before ``now_ms``."""
        self._unwritten.extend(self._cutter.at_tip(now_ms))
        return await self._write_unwritten()

    async def shard_ended(self) -> Position | None:
        """Write everything, including the partly filled last batch of the closed shard."""
        self._unwritten.extend(self._cutter.flush())
        return await self._write_unwritten()

    async def shutdown(self) -> Position | None:
        """Leave the open batch to the next owner: closing it now would cut a batch a clean
        run would not have, and the objects would no longer replay byte for byte."""
        log.info(
            "shard %s shutting down; %d buffered records will be re-read by the next owner",
            self.shard_id,
            self.buffered,
        )
        self.abandon()
        return None

    def abandon(self) -> None:
        """Drop buffers without writing; the checkpoint stays at the last written batch."""
        self._cutter.reset()
        self._unwritten.clear()

    async def _write_unwritten(self) -> Position | None:
        durable: Position | None = None
        while self._unwritten:
            batch = self._unwritten[0]
            await self._write(batch)
            self._unwritten.popleft()
            durable = batch.last
        return durable

    async def _write(self, batch: Batch) -> None:
        key = object_key(self._prefix, batch)
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

    def __call__(self, shard_id: str) -> S3Processor:
        cutter = BatchCutter(
            self.max_rows, self.window_seconds, self.max_bytes, self.grace_ms, self.format.line
        )
        return S3Processor(shard_id, self.writer, cutter, self.format, self.prefix, self.metrics)


if TYPE_CHECKING:

    def _fits_the_engine(factory: S3ProcessorFactory) -> ProcessorFactory:
        # mypy proves S3ProcessorFactory and S3Processor match the engine's protocols.
        return factory
