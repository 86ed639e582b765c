"""Wires the producer service from settings: the one place that builds real I/O objects."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from core.aws import AwsClients
from core.dead_letters import S3DeadLetterStore
from core.health import Health
from core.metrics import Metrics
from core.settings import Settings
from producer.kinesis import KinesisStreamWriter
from producer.publisher import Publisher
from producer.service import ProducerService, ProducerSummary
from producer.source import BinanceSource
from producer.streams import check_streams, streams_from_secret
from schemas.codec import default_codec

log = logging.getLogger(__name__)


def resolve_streams(settings: Settings, clients: AwsClients) -> tuple[str, ...]:
    """BINANCE_STREAMS when set, else the streams in the Secrets Manager secret."""
    if settings.binance_streams:
        return check_streams(settings.binance_streams, "BINANCE_STREAMS")
    return streams_from_secret(clients.secretsmanager, settings.binance_websocket_secret)


def build_producer(
    settings: Settings,
    clients: AwsClients,
    metrics: Metrics,
    *,
    aggregate: bool = True,
    health: Health | None = None,
) -> tuple[ProducerService, BinanceSource]:
    """The producer service and its websocket source, ready to run."""
    streams = resolve_streams(settings, clients)
    source = BinanceSource(
        streams,
        metrics,
        url=settings.binance_stream_url,
        testnet=settings.testnet,
        max_queue_size=settings.producer_queue_size,
        rotate_after_seconds=settings.binance_rotate_hours * 3600,
        down_unhealthy_seconds=settings.binance_down_unhealthy_seconds,
        health=health,
    )
    publisher = Publisher(
        KinesisStreamWriter(clients.kinesis, settings.kinesis_stream_name),
        metrics,
        max_bytes=settings.aggregation_max_bytes,
        aggregate=aggregate,
        max_in_flight=settings.max_in_flight_puts,
        max_buffered_time=settings.record_max_buffered_time_ms / 1000,
        refresh_seconds=settings.shard_map_refresh_seconds,
    )
    service = ProducerService(
        source,
        publisher,
        default_codec(),
        S3DeadLetterStore(clients.s3, settings.s3_bucket),
        metrics,
        queue_size=settings.producer_queue_size,
        dead_letter_flush_seconds=settings.dead_letter_flush_seconds,
        shutdown_timeout=settings.shutdown_timeout_seconds,
        dead_letter_max_bytes=settings.dead_letter_max_bytes,
        dead_letter_dir=Path(settings.dead_letter_dir),
        health=health,
    )
    log.info("producer reading %s into %s", source.description, settings.kinesis_stream_name)
    return service, source


async def run_producer(
    settings: Settings,
    stop: asyncio.Event,
    metrics: Metrics | None = None,
    health: Health | None = None,
    on_built: Callable[[], None] | None = None,
) -> ProducerSummary:
    """Run the producer until ``stop`` is set; returns the exit summary. ``on_built`` is
    called once the service is built, before it runs (the CLI freezes the start-up heap)."""
    clients = AwsClients(settings)
    try:
        metrics = metrics or Metrics("producer")
        service, _ = build_producer(settings, clients, metrics, health=health)
        if on_built is not None:
            on_built()
        return await service.run(stop)
    finally:
        clients.close()
