"""Wires a consumer worker from settings: lease table, processors, dead letters."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from consumers.engine.kinesis import BotoKinesisShards
from consumers.engine.leases import DynamoLeaseStore
from consumers.engine.processor import ProcessorFactory
from consumers.engine.records import UndecodableRecord
from consumers.engine.shard_reader import ReaderConfig
from consumers.engine.worker import Worker, WorkerConfig
from core.aws import AwsClients
from core.dead_letters import DeadLetter, S3DeadLetterStore
from core.health import Health
from core.metrics import Counters, Metrics
from core.settings import Settings
from schemas.codec import default_codec

log = logging.getLogger(__name__)

ConsumerKind = Literal["dynamodb", "s3"]
KINDS: tuple[ConsumerKind, ...] = ("dynamodb", "s3")


def app_name(settings: Settings, kind: ConsumerKind) -> str:
    """The consumer group: CONSUMER_APP_NAME, else crypto-live-<kind>."""
    return settings.consumer_app_name or f"crypto-live-{kind}"


def lease_table_name(settings: Settings, kind: ConsumerKind) -> str:
    return f"{app_name(settings, kind)}-leases"


def worker_config(settings: Settings) -> WorkerConfig:
    return WorkerConfig(
        failover_seconds=settings.failover_seconds,
        discovery_seconds=settings.shard_discovery_seconds,
        initial_position=settings.initial_position,
        shutdown_seconds=settings.shutdown_timeout_seconds,
        reader=ReaderConfig(
            idle_seconds=settings.idle_time_between_reads_ms / 1000,
            limit=settings.get_records_limit,
            max_user_records=settings.get_records_max_user_records,
        ),
    )


def _nothing_left() -> None:
    """A sink whose processors return only when everything given is durable."""


@dataclass(frozen=True, slots=True)
class Sink:
    """A consumer group's processor factory, how to close its writer, and how to finish its
    background writes (the live group leaves them to the next owner; a replay has none)."""

    processors: ProcessorFactory
    close: Callable[[], None]
    drain: Callable[[], None] = _nothing_left


def processor_factory(
    settings: Settings, clients: AwsClients, kind: ConsumerKind, metrics: Metrics
) -> Sink:
    """The sink of a consumer group."""
    if kind == "dynamodb":
        from consumers.dynamodb.processor import DynamoDbProcessorFactory
        from consumers.dynamodb.writer import DynamoDbWriter

        writer = DynamoDbWriter(
            clients.sink_client("dynamodb"),
            settings.dynamo_table_name,
            settings.dynamo_latest_table_name,
            metrics,
            candles_table=settings.dynamo_candles_table_name,
            max_in_flight=settings.dynamodb_max_in_flight,
        )
        dynamodb_factory = DynamoDbProcessorFactory(
            writer,
            settings.retention_ttl_days,
            metrics,
            latest_concurrency=settings.dynamodb_max_in_flight,
            latest_wait=settings.idle_time_between_reads_ms / 1000,
            # A latest-table row DynamoDB refuses for good: errors/<app>/..., not a dead book.
            dead_letters=S3DeadLetterStore(clients.s3, settings.s3_bucket),
            dead_letter_source=app_name(settings, kind),
            # A record of a type this sink has no handler for: errors/<app>/..., like the
            # undecodable ones, named by shard position.
            record_dead_letters=dead_letter_writer(
                clients, settings, app_name(settings, kind), metrics
            ),
            consumer=f"consumer-{kind}",
        )

        def close() -> None:
            dynamodb_factory.book.close()  # no new latest-table writes
            writer.close()  # ends the one in flight at once
            dynamodb_factory.close()

        return Sink(dynamodb_factory, close, dynamodb_factory.drain)
    from consumers.s3.processor import S3ProcessorFactory
    from consumers.s3.writer import S3BatchWriter

    s3_writer = S3BatchWriter(
        clients.sink_client("s3"),
        settings.s3_bucket,
        metrics,
        sse=settings.s3_sse,
        kms_key_id=settings.s3_kms_key_id,
    )
    factory = S3ProcessorFactory(
        s3_writer,
        prefix=settings.s3_jsonl_dir_path,
        max_rows=settings.max_batch_size,
        window_seconds=settings.max_batch_timeout,
        max_bytes=settings.max_batch_bytes,
        grace_ms=settings.batch_grace_ms,
        metrics=metrics,
        klines_prefix=settings.s3_klines_dir_path,
        dead_letters=dead_letter_writer(clients, settings, app_name(settings, kind), metrics),
        consumer=f"consumer-{kind}",
    )
    return Sink(factory, s3_writer.close)


def dead_letter_writer(
    clients: AwsClients, settings: Settings, source: str, metrics: Metrics
) -> Callable[[list[UndecodableRecord]], None]:
    """Undecodable or unhandled records to errors/<app>/..., named by shard position
    (replay-safe). The S3 client is made at the first dead letter (most runs have none, and
    a client costs a worker's start tens of milliseconds of CPU)."""
    stores: list[S3DeadLetterStore] = []
    making = threading.Lock()  # writes come from the engine's threads

    def write(records: list[UndecodableRecord]) -> None:
        with making:
            if not stores:
                stores.append(S3DeadLetterStore(clients.s3, settings.s3_bucket))
        store = stores[0]
        first = records[0]
        letters = [
            DeadLetter(r.data, r.reason, int(r.arrival.timestamp() * 1_000_000)) for r in records
        ]
        name = f"{first.shard_id}-{first.position.sequence}-{first.position.sub_sequence}"
        key = store.put(source, letters, name=name)
        metrics.inc(Counters.DEAD_LETTERS, len(records))
        log.warning("%d records kept as dead letters in %s (%s)", len(records), key, first.reason)

    return write


@dataclass(frozen=True, slots=True)
class ConsumerSummary:
    """Counts shown when a consumer exits."""

    app: str
    records: int
    dead_letters: int

    def __str__(self) -> str:
        return f"{self.app}: {self.records} records consumed, {self.dead_letters} dead letters"


def build_worker(
    settings: Settings,
    clients: AwsClients,
    kind: ConsumerKind,
    metrics: Metrics,
    sink: Sink,
    health: Health | None = None,
) -> Worker:
    """A worker of the ``kind`` consumer group writing to ``sink``, ready to run."""
    app = app_name(settings, kind)
    return Worker(
        kinesis=BotoKinesisShards(clients.kinesis, settings.kinesis_stream_name),
        stream=settings.kinesis_stream_name,
        leases=DynamoLeaseStore(clients.dynamodb, lease_table_name(settings, kind)),
        processors=sink.processors,
        codec=default_codec(),
        dead_letters=dead_letter_writer(clients, settings, app, metrics),
        config=worker_config(settings),
        metrics=metrics,
        on_cycle=(lambda: health.beat("worker")) if health else (lambda: None),
    )


async def run_consumer(
    settings: Settings,
    kind: ConsumerKind,
    stop: asyncio.Event,
    metrics: Metrics | None = None,
    health: Health | None = None,
    on_built: Callable[[], None] | None = None,
) -> ConsumerSummary:
    """Run one worker of the ``kind`` group until ``stop``; returns the exit summary.
    ``on_built`` is called once the worker is built, before it runs (the CLI freezes the
    start-up heap)."""
    metrics = metrics or Metrics(f"consumer-{kind}")
    if health is not None:
        # A worker whose lease cycles stopped for three failover times is stuck.
        health.register("worker", 3 * settings.failover_seconds)
    clients = AwsClients(settings)
    sink = processor_factory(settings, clients, kind, metrics)
    try:
        worker = build_worker(settings, clients, kind, metrics, sink, health)
        if on_built is not None:
            on_built()
        await worker.run(stop)
    finally:
        sink.close()  # writes still retrying give up: their records stay beyond the checkpoint
        clients.close()
    return ConsumerSummary(
        app_name(settings, kind),
        int(metrics.value(Counters.RECORDS_CONSUMED)),
        int(metrics.value(Counters.DEAD_LETTERS)),
    )
