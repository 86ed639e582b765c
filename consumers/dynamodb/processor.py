"""The DynamoDB sink's ShardProcessor: each batch is durable before its position is returned."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from consumers.dynamodb.items import coalesce_latest, dedupe_history, history_item
from consumers.dynamodb.writer import DynamoDbSinkWriter
from consumers.records import ConsumedRecord, Position

log = logging.getLogger(__name__)


class DynamoDbProcessor:
    """Writes each GetRecords batch straight through: history puts, then latest updates.

    Nothing is buffered between calls, so at_tip, shard_ended and shutdown have nothing to
    flush and abandon nothing to drop.
    """

    def __init__(
        self, writer: DynamoDbSinkWriter, retention_ttl_days: int, shard_id: str = ""
    ) -> None:
        self._writer = writer
        self._retention_ttl_days = retention_ttl_days
        self._shard_id = shard_id

    async def process(self, records: Sequence[ConsumedRecord]) -> Position | None:
        """Write the batch durably; returns the last record's position (None if empty)."""
        if not records:
            return None
        items = dedupe_history(
            history_item(consumed.record, self._retention_ttl_days) for consumed in records
        )
        updates = coalesce_latest(consumed.record for consumed in records)
        await asyncio.to_thread(self._writer.write_history, items)
        # After the history, so a latest row never shows an event the history table lacks.
        await asyncio.to_thread(self._writer.update_latest, updates)
        last = records[-1].position
        log.debug(
            "wrote %d records as %d items and %d latest updates up to %s",
            len(records),
            len(items),
            len(updates),
            last,
            extra={"shard_id": self._shard_id, "sequence_number": last.sequence_number},
        )
        return last

    async def at_tip(self, now_ms: int) -> Position | None:
        """Nothing buffered, so nothing new becomes durable."""
        return None

    async def shard_ended(self) -> Position | None:
        """Everything given was already durable when process returned."""
        return None

    async def shutdown(self) -> Position | None:
        """Everything given was already durable when process returned."""
        return None

    def abandon(self) -> None:
        """Nothing buffered to drop."""


class DynamoDbProcessorFactory:
    """Makes one DynamoDbProcessor per shard lease, all sharing one writer (and its pool)."""

    def __init__(self, writer: DynamoDbSinkWriter, retention_ttl_days: int) -> None:
        self._writer = writer
        self._retention_ttl_days = retention_ttl_days

    def __call__(self, shard_id: str) -> DynamoDbProcessor:
        return DynamoDbProcessor(self._writer, self._retention_ttl_days, shard_id)
