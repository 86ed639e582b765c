"""Kline records into the stream through the producer's Publisher: Avro single-object, KPL
aggregates, partition key = symbol (as the producer's), so the sinks stay exactly-once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from core.aws_errors import aws_error
from core.metrics import Counters, Metrics
from core.settings import Settings
from crypto_live.backfill import BackfillError
from producer.kinesis import StreamWriter
from producer.publisher import Publisher
from schemas.codec import KLINE_SCHEMA, EncodeError, default_codec


class KlinePublisher:
    """``add`` Kline records, ``close`` to wait until Kinesis confirmed every one."""

    def __init__(self, writer: StreamWriter, settings: Settings, metrics: Metrics) -> None:
        self._codec = default_codec().for_writer(KLINE_SCHEMA)
        self._metrics = metrics
        self._grace = settings.shutdown_timeout_seconds
        self._publisher = Publisher(
            writer,
            metrics,
            max_bytes=settings.aggregation_max_bytes,
            max_in_flight=settings.max_in_flight_puts,
            max_buffered_time=settings.record_max_buffered_time_ms / 1000,
            refresh_seconds=settings.shard_map_refresh_seconds,
        )
        self.added = 0

    @property
    def published(self) -> int:
        """Records Kinesis confirmed so far."""
        return int(self._metrics.value(Counters.RECORDS_PUT))

    async def start(self, stream: str) -> None:
        try:
            await self._publisher.start()
        except (BotoCoreError, ClientError) as err:
            raise BackfillError(
                f"cannot publish into Kinesis stream {stream}: {aws_error(err, 'ListShards')}"
            ) from err

    async def add(self, record: Mapping[str, Any]) -> None:
        try:
            data = self._codec.encode(record)
        except EncodeError as err:
            raise BackfillError(str(err)) from err
        await self._publisher.add(str(record["symbol"]), data)
        self.added += 1

    async def close(self) -> int:
        """Flush and wait (SHUTDOWN_TIMEOUT_SECONDS at most); the records published. Raises
        BackfillError when some were not delivered (a re-run puts them, idempotently)."""
        undelivered = await self._publisher.close(self._grace)
        if undelivered:
            lost = sum(item.entry.user_records for item in undelivered)
            reasons = "; ".join(sorted({item.reason for item in undelivered}))
            raise BackfillError(
                f"{lost} of {self.added} candles not delivered to Kinesis ({reasons}); "
                "run it again (the sinks write each candle once)"
            )
        return self.published
