"""Producer benchmark: pure validate+encode+aggregate, and end to end into embedded Kinesis.

Run with `make bench` (or `python -m bench.producer` from the repository root); it prints
a table and saves its README "Performance" rows (bench.report); `--quick` for a smoke run.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from bench.common import bench_parser, frames, load_average, machine, moto_server, save_results
from core.aws import AwsClients
from core.dead_letters import MemoryDeadLetterStore
from core.heap import freeze_startup_heap
from core.metrics import Counters, Metrics
from core.settings import load_settings
from crypto_live.provision import provision
from producer.aggregation import ShardAggregator
from producer.kinesis import KinesisStreamWriter
from producer.miniticker_encoder import MiniTickerEncoder
from producer.publisher import Publisher
from producer.service import ProducerService
from producer.shard_map import ShardMap
from producer.source import WireMessage, tolerant_json_loads
from producer.validation import validate_message
from schemas.codec import default_codec

PURE_MESSAGES = 100_000
E2E_RECORDS = 40_000
PURE_TARGET = 50_000
RECEIVED_AT_US = 1_795_000_000_000_000  # receive times, one µs apart
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
    """records/s for parse + validate and Avro-encode (the hot path) + per-shard aggregation,
    one core, as the producer's encoder does them."""
    texts = frames(messages)
    encoder = MiniTickerEncoder(default_codec())
    aggregator = ShardAggregator(even_map(4))
    started = time.perf_counter()
    encoded: list[tuple[str, bytes]] = []
    for index, text in enumerate(texts):
        message = tolerant_json_loads(text)
        assert isinstance(message, WireMessage)
        assert encoder.encode_message(message.parsed, RECEIVED_AT_US + index, encoded)
    aggregator.add_many(encoded)
    aggregator.flush()
    return len(texts) / (time.perf_counter() - started)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_steps(messages: int, repeats: int = 3) -> dict[str, float]:
    """Client CPU µs per record of each pure step (best of ``repeats``, steps interleaved): the
    producer's hot path (a valid miniTicker validated and encoded in one step), and for
    comparison validate_message + the codec, the path of rejects and klines."""
    texts = frames(messages)
    codec = default_codec()
    encoder = MiniTickerEncoder(codec)
    parsed = [tolerant_json_loads(text) for text in texts]
    records = [validate_message(m.parsed, 0)[0][0] for m in parsed if isinstance(m, WireMessage)]
    encoded: list[tuple[str, bytes]] = []
    for index, message in enumerate(parsed):
        encoder.encode_message(message.parsed, RECEIVED_AT_US + index, encoded)  # type: ignore[union-attr]

    def parse() -> None:
        for text in texts:
            tolerant_json_loads(text)

    def hot_path() -> None:
        out: list[tuple[str, bytes]] = []
        encode = encoder.encode_message
        for index, message in enumerate(parsed):
            encode(message.parsed, RECEIVED_AT_US + index, out)  # type: ignore[union-attr]

    def slow_path() -> None:
        for message in parsed:
            for record in validate_message(message.parsed, 0)[0]:  # type: ignore[union-attr]
                codec.encode(record)

    def aggregate() -> None:
        aggregator = ShardAggregator(even_map(4))
        aggregator.add_many(encoded)
        aggregator.flush()

    steps = {
        "JSON parse": parse,
        "validation + Avro encode": hot_path,
        "KPL aggregation": aggregate,
        "(validate_message + codec, for rejects and klines)": slow_path,
    }
    assert len(records) == len(encoded)
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(repeats):
        for name, step in steps.items():
            started = _cpu()
            step()
            best[name] = min(best[name], (_cpu() - started) / len(texts) * 1e6)
    return best


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
    freeze_startup_heap()  # as `crypto-live producer` does once the service is built
    stop = asyncio.Event()
    started, cpu_started = time.perf_counter(), _cpu()
    running = asyncio.create_task(service.run(stop))
    while metrics.value(Counters.RECORDS_PUT) < records:
        await asyncio.sleep(0.01)
        if running.done():
            running.result()
    elapsed, cpu = time.perf_counter() - started, _cpu() - cpu_started
    stop.set()
    await running
    clients.kinesis.delete_stream(StreamName=settings.kinesis_stream_name)
    clients.close()
    return {
        "records_per_s": records / elapsed,
        "cpu_us_per_record": cpu / records * 1e6,
        "kinesis_records": metrics.value(Counters.KINESIS_RECORDS_PUT),
        "requests": metrics.value(Counters.PUT_REQUESTS),
        "bytes": metrics.value(Counters.KINESIS_BYTES_PUT),
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = bench_parser(__doc__).parse_args(argv)
    messages = QUICK_PURE_MESSAGES if args.quick else PURE_MESSAGES
    records = QUICK_E2E_RECORDS if args.quick else E2E_RECORDS
    print(f"machine: {machine()}; load average {load_average()}")
    steps = bench_steps(messages)
    print("client CPU per record by step (pure, best of 3):")
    for name, micros in steps.items():
        print(f"  {name:<52}{micros:>6.2f} us")
    pure = bench_pure(messages)
    print(
        f"pure validate+encode+aggregate: {pure:,.0f} records/s on one core "
        f"(target >= {PURE_TARGET:,})"
    )
    with moto_server() as endpoint:
        agg = asyncio.run(bench_e2e(endpoint, aggregate=True, records=records))
        raw = asyncio.run(bench_e2e(endpoint, aggregate=False, records=records))
    print(f"\nend to end into embedded Kinesis (moto server), {records:,} records, 4 shards")
    print(
        f"{'mode':<14}{'records/s':>12}{'CPU us/rec':>11}{'Kinesis recs':>14}{'requests':>10}"
        f"{'bytes/rec':>11}"
    )
    for name, row in (("aggregated", agg), ("unaggregated", raw)):
        print(
            f"{name:<14}{row['records_per_s']:>12,.0f}{row['cpu_us_per_record']:>11.1f}"
            f"{row['kinesis_records']:>14,.0f}{row['requests']:>10,.0f}"
            f"{row['bytes'] / records:>11,.1f}"
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
                "producer client CPU per record by step (pure, best of 3)",
                ", ".join(f"{name} {micros:.1f} us" for name, micros in steps.items()),
            ),
            (
                "producer end to end into Kinesis, aggregated",
                f"{agg['records_per_s']:,.0f} records/s at {agg['cpu_us_per_record']:.1f} us "
                f"client CPU per record (from the parsed frame to PutRecords), "
                f"{agg['kinesis_records']:,.0f} Kinesis "
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
