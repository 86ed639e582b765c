"""S3 consumer benchmark: batch cutting + JSONL + gzip + PUT through S3Processor.

Run with `python -m bench.s3_consumer` from the repository root. Deaggregation and Avro decoding
belong to the shard engine and are left out: records start as decoded ConsumedRecords. Each row
of the table is one function returning a Row, so a "full consumer through Kinesis" row can be
added beside them.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from bench.common import machine, moto_server
from bench.producer import frames
from consumers.records import ConsumedRecord, Position
from consumers.s3.format import JsonlGzipFormat
from consumers.s3.processor import S3ProcessorFactory
from consumers.s3.writer import BatchWriter, MemoryBatchWriter, S3BatchWriter
from crypto_live.aws import AwsClients
from crypto_live.metrics import Counters, Metrics
from crypto_live.provision import provision
from crypto_live.settings import load_settings
from producer.source import WireMessage, tolerant_json_loads
from producer.validation import validate_message

RECORDS = 100_000
SHARDS = 4
CHUNK = 500  # user records per GetRecords call, roughly
USER_RECORDS_PER_KINESIS_RECORD = 20  # KPL aggregates: positions share a sequence number


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table."""

    name: str
    records: int
    seconds: float
    objects: int
    raw_bytes: int
    gzip_bytes: int

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds

    @property
    def puts_per_1k(self) -> float:
        return self.objects / (self.records / 1000)

    @property
    def ratio(self) -> float:
        return self.raw_bytes / self.gzip_bytes


def shard_records(count: int, shards: int) -> dict[str, list[ConsumedRecord]]:
    """Simulated-market records (200 symbols/s), spread over shards as a partition key would."""
    by_shard: dict[str, list[ConsumedRecord]] = {f"shardId-{i:012d}": [] for i in range(shards)}
    shard_ids = list(by_shard)
    for text in frames(count):
        message = tolerant_json_loads(text)
        assert isinstance(message, WireMessage)
        records, _ = validate_message(message.parsed, 0)
        for record in records:
            shard = shard_ids[zlib.crc32(record["symbol"].encode()) % shards]
            out = by_shard[shard]
            n = len(out)
            position = Position(
                49_650_000_000_000_000_000_000 + n // USER_RECORDS_PER_KINESIS_RECORD,
                n % USER_RECORDS_PER_KINESIS_RECORD,
            )
            arrival = datetime.fromtimestamp((record["event_time"] + 40) / 1000, UTC)
            out.append(ConsumedRecord(shard, position, arrival, record["symbol"], dict(record)))
    return by_shard


async def run_processors(
    writer: BatchWriter, streams: dict[str, list[ConsumedRecord]], metrics: Metrics
) -> float:
    """Seconds to push every shard through its S3Processor concurrently, as the engine would."""
    make = S3ProcessorFactory(writer, "batch_jsonl", metrics=metrics)

    async def one_shard(shard_id: str, records: Sequence[ConsumedRecord]) -> None:
        processor = make(shard_id)
        for i in range(0, len(records), CHUNK):
            await processor.process(records[i : i + CHUNK])
        await processor.shard_ended()

    started = time.perf_counter()
    await asyncio.gather(*(one_shard(shard, records) for shard, records in streams.items()))
    return time.perf_counter() - started


def raw_size(streams: dict[str, list[ConsumedRecord]]) -> int:
    fmt = JsonlGzipFormat()
    return sum(len(fmt.line(r)) for records in streams.values() for r in records)


def row_memory(streams: dict[str, list[ConsumedRecord]]) -> Row:
    """Cut + JSONL + gzip with an in-memory writer: the CPU cost alone."""
    writer = MemoryBatchWriter()
    seconds = asyncio.run(run_processors(writer, streams, Metrics("s3")))
    gzip_bytes = sum(len(body) for body in writer.bodies().values())
    records = sum(map(len, streams.values()))
    return Row(
        "cut+JSONL+gzip (memory)",
        records,
        seconds,
        len(writer.objects),
        raw_size(streams),
        gzip_bytes,
    )


def row_embedded_s3(streams: dict[str, list[ConsumedRecord]], endpoint: str) -> Row:
    """The same through S3BatchWriter into the embedded S3 (moto server over HTTP)."""
    settings = load_settings(aws_endpoint_url=endpoint)
    clients = AwsClients(settings)
    provision(settings, clients)
    metrics = Metrics("s3")
    writer = S3BatchWriter(clients.s3, settings.s3_bucket, metrics)
    try:
        seconds = asyncio.run(run_processors(writer, streams, metrics))
    finally:
        clients.close()
    return Row(
        "+ PUT into embedded S3",
        int(metrics.value(Counters.S3_RECORDS_WRITTEN)),
        seconds,
        int(metrics.value(Counters.S3_OBJECTS_WRITTEN)),
        raw_size(streams),
        int(metrics.value(Counters.S3_BYTES_WRITTEN)),
    )


def row_full_consumer(streams: dict[str, list[ConsumedRecord]], endpoint: str) -> Row:
    """The whole consumer: Kinesis (4 shards) -> engine -> S3Processor -> embedded S3.

    Runs with MAX_BATCH_TIMEOUT 1 s and 200 ms grace so the last windows close quickly.
    """
    from bench.common import publish, reset_account
    from consumers.app import run_consumer

    reset_account(endpoint)
    settings = load_settings(
        aws_endpoint_url=endpoint,
        kinesis_shard_count=SHARDS,
        max_batch_timeout=1,
        batch_grace_ms=200,
        s3_jsonl_dir_path="full",
    )
    clients = AwsClients(settings)
    provision(settings, clients)
    records = [r.record for rows in streams.values() for r in rows]
    publish(settings, clients, records)
    metrics = Metrics("s3-consumer")

    async def run() -> float:
        stop = asyncio.Event()
        started = time.perf_counter()
        task = asyncio.create_task(run_consumer(settings, "s3", stop, metrics))
        while metrics.value(Counters.S3_RECORDS_WRITTEN) < len(records):
            await asyncio.sleep(0.05)
            if task.done():
                task.result()
        elapsed = time.perf_counter() - started
        stop.set()
        await task
        return elapsed

    try:
        seconds = asyncio.run(run())
    finally:
        clients.close()
    return Row(
        "full consumer (Kinesis)",
        int(metrics.value(Counters.S3_RECORDS_WRITTEN)),
        seconds,
        int(metrics.value(Counters.S3_OBJECTS_WRITTEN)),
        raw_size(streams),
        int(metrics.value(Counters.S3_BYTES_WRITTEN)),
    )


def print_table(rows: Sequence[Row]) -> None:
    print(f"{'path':<26}{'records/s':>11}{'objects':>9}{'PUTs/1k':>9}{'gzip KiB':>10}{'ratio':>7}")
    for row in rows:
        print(
            f"{row.name:<26}{row.records_per_s:>11,.0f}{row.objects:>9,}{row.puts_per_1k:>9.2f}"
            f"{row.gzip_bytes / 1024:>10,.0f}{row.ratio:>6.1f}x"
        )


def main() -> None:
    print(f"machine: {machine()}")
    streams = shard_records(RECORDS, SHARDS)
    print(
        f"{RECORDS:,} records, {SHARDS} shards in parallel, chunks of {CHUNK}, "
        "MAX_BATCH_SIZE 1000, MAX_BATCH_TIMEOUT 10 s, 200 symbols/s (simulated market)"
    )
    rows: list[Callable[[str], Row]] = [
        lambda _endpoint: row_memory(streams),
        lambda endpoint: row_embedded_s3(streams, endpoint),
        lambda endpoint: row_full_consumer(streams, endpoint),
    ]
    with moto_server() as endpoint:
        print_table([row(endpoint) for row in rows])


if __name__ == "__main__":
    main()
