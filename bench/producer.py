"""Producer benchmark: pure validate+encode+aggregate, and end to end into embedded Kinesis.

Run with `make bench` (or `python -m bench.producer` from the repository root); it prints
a table and saves its README "Performance" rows (bench.report); `--quick` for a smoke run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from bench.common import bench_parser, frames, machine, moto_server, save_results
from core.aws import AwsClients
from core.dead_letters import MemoryDeadLetterStore
from core.metrics import Counters, Metrics
from core.settings import load_settings
from crypto_live.provision import provision
from producer.aggregation import ShardAggregator
from producer.kinesis import KinesisStreamWriter
from producer.publisher import Publisher
from producer.service import ProducerService
from producer.shard_map import ShardMap
from producer.source import WireMessage, tolerant_json_loads
from producer.validation import validate_message
from schemas.codec import default_codec

PURE_MESSAGES = 100_000
E2E_RECORDS = 40_000
PURE_TARGET = 50_000
# --quick: a smoke run.
QUICK_PURE_MESSAGES = 5_000
QUICK_E2E_RECORDS = 2_000


def even_map(shards: int) -> ShardMap:
    step = 2**128 // shards
    return ShardMap.from_list_shards(
        [
            {
                "ShardId": f"shardId-{i:012d}",
                "HashKeyRange": {
                    "StartingHashKey": str(i * step),
                    "EndingHashKey": str(2**128 - 1 if i == shards - 1 else (i + 1) * step - 1),
                },
                "SequenceNumberRange": {"StartingSequenceNumber": "0"},
            }
            for i in range(shards)
        ]
    )


def bench_pure(messages: int) -> float:
    """records/s for parse + validate + Avro encode + per-shard aggregation, one core."""
    texts = frames(messages)
    codec = default_codec()
    aggregator = ShardAggregator(even_map(4))
    started = time.perf_counter()
    for text in texts:
        message = tolerant_json_loads(text)
        assert isinstance(message, WireMessage)
        records, _ = validate_message(message.parsed, 0)
        for record in records:
            aggregator.add(record["symbol"], codec.encode(record))
    aggregator.flush()
    return len(texts) / (time.perf_counter() - started)


class ListSource:
    """Pre-parsed frames, so the end-to-end figure measures our pipeline, not a socket."""

    def __init__(self, texts: list[str]) -> None:
        self._messages = [tolerant_json_loads(text) for text in texts]

    async def messages(self, stop: asyncio.Event) -> AsyncIterator[Any]:
        for message in self._messages:
            yield message
        await stop.wait()


async def bench_e2e(endpoint: str, aggregate: bool, records: int) -> dict[str, float]:
    settings = load_settings(aws_endpoint_url=endpoint, kinesis_shard_count=4)
    clients = AwsClients(settings)
    provision(settings, clients)
    metrics = Metrics("producer")
    publisher = Publisher(
        KinesisStreamWriter(clients.kinesis, settings.kinesis_stream_name),
        metrics,
        aggregate=aggregate,
        max_in_flight=settings.max_in_flight_puts,
    )
    service = ProducerService(
        ListSource(frames(records)),
        publisher,
        default_codec(),
        MemoryDeadLetterStore(),
        metrics,
    )
    stop = asyncio.Event()
    started = time.perf_counter()
    running = asyncio.create_task(service.run(stop))
    while metrics.value(Counters.RECORDS_PUT) < records:
        await asyncio.sleep(0.01)
        if running.done():
            running.result()
    elapsed = time.perf_counter() - started
    stop.set()
    await running
    clients.kinesis.delete_stream(StreamName=settings.kinesis_stream_name)
    clients.close()
    return {
        "records_per_s": records / elapsed,
        "kinesis_records": metrics.value(Counters.KINESIS_RECORDS_PUT),
        "requests": metrics.value(Counters.PUT_REQUESTS),
        "bytes": metrics.value(Counters.KINESIS_BYTES_PUT),
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = bench_parser(__doc__).parse_args(argv)
    messages = QUICK_PURE_MESSAGES if args.quick else PURE_MESSAGES
    records = QUICK_E2E_RECORDS if args.quick else E2E_RECORDS
    print(f"machine: {machine()}")
    pure = bench_pure(messages)
    print(
        f"pure validate+encode+aggregate: {pure:,.0f} records/s on one core "
        f"(target >= {PURE_TARGET:,})"
    )
    with moto_server() as endpoint:
        agg = asyncio.run(bench_e2e(endpoint, aggregate=True, records=records))
        raw = asyncio.run(bench_e2e(endpoint, aggregate=False, records=records))
    print(f"\nend to end into embedded Kinesis (moto server), {records:,} records, 4 shards")
    print(f"{'mode':<14}{'records/s':>12}{'Kinesis recs':>14}{'requests':>10}{'bytes/rec':>11}")
    for name, row in (("aggregated", agg), ("unaggregated", raw)):
        print(
            f"{name:<14}{row['records_per_s']:>12,.0f}{row['kinesis_records']:>14,.0f}"
            f"{row['requests']:>10,.0f}{row['bytes'] / records:>11,.1f}"
        )
    speedup = agg["records_per_s"] / raw["records_per_s"]
    fewer = raw["kinesis_records"] / agg["kinesis_records"]
    print(f"ratio aggregated/unaggregated: {speedup:.1f}x")
    save_results(
        args.quick,
        "producer",
        [
            (
                "producer, validate + Avro encode + per-shard aggregation (pure, one core)",
                f"{pure:,.0f} records/s (target {PURE_TARGET:,})",
            ),
            (
                "producer end to end into Kinesis, aggregated",
                f"{agg['records_per_s']:,.0f} records/s, {agg['kinesis_records']:,.0f} Kinesis "
                f"records and {agg['requests']:,.0f} requests for {records:,} records",
            ),
            (
                "producer end to end into Kinesis, unaggregated",
                f"{raw['records_per_s']:,.0f} records/s, {raw['kinesis_records']:,.0f} Kinesis "
                f"records, {raw['requests']:,.0f} requests",
            ),
            (
                "aggregated vs unaggregated",
                f"**{speedup:.1f}x** records/s, {fewer:,.0f}x fewer Kinesis records",
            ),
        ],
    )


if __name__ == "__main__":
    main()
