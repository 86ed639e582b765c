"""S3 consumer benchmark: batch cutting + JSONL + gzip + PUT through S3Processor.

Run with `python -m bench.s3_consumer` from the repository root (`--quick` for a smoke run).
Deaggregation and Avro decoding belong to the shard engine and are left out of the first two
rows: records start as decoded ConsumedRecords. The last row is the whole consumer through
Kinesis; it runs in this process and moto in its own, so this process's CPU time over it is
the consumer's alone (records per CPU-second: records/s per core). Each row of the table is
one function returning a Row; the README "Performance" rows are saved through bench.report.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from bench.common import (
    MotoProcess,
    Run,
    bench_parser,
    machine,
    market_records,
    moto_process,
    per_core_text,
    publish,
    reset_account,
    save_results,
)
from consumers.engine.records import ConsumedRecord, Position
from consumers.s3.format import JsonlGzipFormat
from consumers.s3.processor import S3ProcessorFactory
from consumers.s3.writer import BatchWriter, MemoryBatchWriter, S3BatchWriter
from core.aws import AwsClients
from core.heap import freeze_startup_heap
from core.metrics import Counters, Metrics
from core.settings import load_settings
from crypto_live.provision import provision

RECORDS = 100_000
QUICK_RECORDS = 5_000
SHARDS = 4
CHUNK = 500  # user records per GetRecords call, roughly
USER_RECORDS_PER_KINESIS_RECORD = 20  # KPL aggregates: positions share a sequence number


@dataclass(frozen=True, slots=True)
class Row(Run):
    """One line of the table: a Run and the objects it wrote."""

    objects: int
    raw_bytes: int
    gzip_bytes: int

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
    for record in market_records(count, received_at_us=0):
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


def row_full_consumer(streams: dict[str, list[ConsumedRecord]], moto: MotoProcess) -> Row:
    """The whole consumer: Kinesis (4 shards) -> engine -> S3Processor -> embedded S3.

    Runs with MAX_BATCH_TIMEOUT 1 s and 200 ms grace so the last windows close quickly. The
    consumer runs in this process, so this process's CPU time over the run is the consumer's.
    """
    from consumers.app import run_consumer

    reset_account(moto.endpoint)
    settings = load_settings(
        aws_endpoint_url=moto.endpoint,
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

    async def run() -> tuple[float, float, float]:
        stop = asyncio.Event()
        # The bench's own prepared records out of the collector's walks first (a consumer
        # process holds none); the consumer freezes its own start-up heap, as the CLI does.
        freeze_startup_heap()
        started, cpu, moto_cpu = time.perf_counter(), time.process_time(), moto.cpu_seconds()
        task = asyncio.create_task(
            run_consumer(settings, "s3", stop, metrics, on_built=freeze_startup_heap)
        )
        while metrics.value(Counters.S3_RECORDS_WRITTEN) < len(records):
            await asyncio.sleep(0.05)
            if task.done():
                task.result()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        moto_cpu = moto.cpu_seconds() - moto_cpu
        stop.set()
        await task
        return elapsed, cpu, moto_cpu

    try:
        seconds, cpu, moto_cpu = asyncio.run(run())
    finally:
        clients.close()
    return Row(
        "full consumer (Kinesis)",
        int(metrics.value(Counters.S3_RECORDS_WRITTEN)),
        seconds,
        int(metrics.value(Counters.S3_OBJECTS_WRITTEN)),
        raw_size(streams),
        int(metrics.value(Counters.S3_BYTES_WRITTEN)),
        cpu_seconds=cpu,
        moto_cpu_seconds=moto_cpu,
    )


def print_table(rows: Sequence[Row]) -> None:
    print(
        f"{'path':<26}{'records/s':>11}{'rec/CPU-s':>11}{'objects':>9}{'PUTs/1k':>9}"
        f"{'gzip KiB':>10}{'ratio':>7}"
    )
    for row in rows:
        per_cpu = "" if row.records_per_cpu_s is None else f"{row.records_per_cpu_s:,.0f}"
        print(
            f"{row.name:<26}{row.records_per_s:>11,.0f}{per_cpu:>11}{row.objects:>9,}"
            f"{row.puts_per_1k:>9.2f}{row.gzip_bytes / 1024:>10,.0f}{row.ratio:>6.1f}x"
        )
    for row in rows:
        if row.cpu_cores is not None and row.moto_cores is not None:
            print(
                f"rec/CPU-s: records per CPU-second of the consumer alone (records/s per core); "
                f"over the {row.name} run it kept {row.cpu_cores:.2f} cores busy, "
                f"moto's process {row.moto_cores:.2f}"
            )


def readme_rows(memory: Row, embedded: Row, full: Row) -> list[tuple[str, str]]:
    return [
        (
            "S3 cut + JSONL + gzip (CPU only)",
            f"{memory.records_per_s:,.0f} records/s, {memory.puts_per_1k:.2f} objects per "
            f"1,000 records, gzip {memory.ratio:.1f}x",
        ),
        ("S3 sink + PUT into embedded S3", f"{embedded.records_per_s:,.0f} records/s"),
        (
            "S3 consumer, full (Kinesis -> engine -> S3), 1 s windows",
            f"{full.records_per_s:,.0f} records/s, {per_core_text(full)}, "
            f"{full.puts_per_1k:.2f} PUTs per 1,000 records, gzip {full.ratio:.1f}x",
        ),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    args = bench_parser(__doc__).parse_args(argv)
    count = QUICK_RECORDS if args.quick else RECORDS
    print(f"machine: {machine()}")
    streams = shard_records(count, SHARDS)
    print(
        f"{count:,} records, {SHARDS} shards in parallel, chunks of {CHUNK}, "
        "MAX_BATCH_SIZE 1000, MAX_BATCH_TIMEOUT 10 s, 200 symbols/s (simulated market)"
    )
    runs: list[Callable[[MotoProcess], Row]] = [
        lambda _moto: row_memory(streams),
        lambda moto: row_embedded_s3(streams, moto.endpoint),
        lambda moto: row_full_consumer(streams, moto),
    ]
    with moto_process() as moto:
        rows = [run(moto) for run in runs]
    print_table(rows)
    memory, embedded, full = rows
    save_results(args.quick, "s3_consumer", readme_rows(memory, embedded, full))


if __name__ == "__main__":
    main()
