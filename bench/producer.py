"""Producer benchmark: pure validate+encode+aggregate, and end to end into embedded Kinesis.

Run with `make bench` (or `python -m bench.producer` from the repository root); it prints
a table whose numbers go into README "Performance".
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from bench.common import machine, moto_server
from crypto_live.aws import AwsClients
from crypto_live.dead_letters import MemoryDeadLetterStore
from crypto_live.exchange.price_walk import MarketSimulator
from crypto_live.metrics import Counters, Metrics
from crypto_live.provision import provision
from crypto_live.settings import load_settings
from producer.aggregation import ShardAggregator
from producer.kinesis import KinesisStreamWriter
from producer.publisher import Publisher
from producer.service import ProducerService
from producer.shard_map import ShardMap
from producer.source import WireMessage, tolerant_json_loads
from producer.validation import validate_message
from schemas.codec import default_codec

SYMBOLS = 200
PURE_MESSAGES = 100_000
E2E_RECORDS = 40_000


def frames(count: int) -> list[str]:
    """Combined-stream frames as Binance sends them, from the simulated market."""
    market = MarketSimulator(SYMBOLS, seed=7)
    out: list[str] = []
    now = 1_795_000_000_000
    while len(out) < count:
        now += 1000
        for payload in market.tick(now):
            stream = f"{payload['s'].lower()}@miniTicker"
            out.append(json.dumps({"stream": stream, "data": payload}, separators=(",", ":")))
    return out[:count]


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


def bench_pure() -> float:
    """records/s for parse + validate + Avro encode + per-shard aggregation, one core."""
    texts = frames(PURE_MESSAGES)
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


async def bench_e2e(endpoint: str, aggregate: bool) -> dict[str, float]:
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
        ListSource(frames(E2E_RECORDS)),
        publisher,
        default_codec(),
        MemoryDeadLetterStore(),
        metrics,
    )
    stop = asyncio.Event()
    started = time.perf_counter()
    running = asyncio.create_task(service.run(stop))
    while metrics.value(Counters.RECORDS_PUT) < E2E_RECORDS:
        await asyncio.sleep(0.01)
        if running.done():
            running.result()
    elapsed = time.perf_counter() - started
    stop.set()
    await running
    clients.kinesis.delete_stream(StreamName=settings.kinesis_stream_name)
    clients.close()
    return {
        "records_per_s": E2E_RECORDS / elapsed,
        "kinesis_records": metrics.value(Counters.KINESIS_RECORDS_PUT),
        "requests": metrics.value(Counters.PUT_REQUESTS),
        "bytes": metrics.value(Counters.KINESIS_BYTES_PUT),
    }


def main() -> None:
    print(f"machine: {machine()}")
    pure = bench_pure()
    print(f"pure validate+encode+aggregate: {pure:,.0f} records/s on one core (target >= 50,000)")
    with moto_server() as endpoint:
        agg = asyncio.run(bench_e2e(endpoint, aggregate=True))
        raw = asyncio.run(bench_e2e(endpoint, aggregate=False))
    print(f"\nend to end into embedded Kinesis (moto server), {E2E_RECORDS:,} records, 4 shards")
    print(f"{'mode':<14}{'records/s':>12}{'Kinesis recs':>14}{'requests':>10}{'bytes/rec':>11}")
    for name, row in (("aggregated", agg), ("unaggregated", raw)):
        print(
            f"{name:<14}{row['records_per_s']:>12,.0f}{row['kinesis_records']:>14,.0f}"
            f"{row['requests']:>10,.0f}{row['bytes'] / E2E_RECORDS:>11,.1f}"
        )
    print(f"ratio aggregated/unaggregated: {agg['records_per_s'] / raw['records_per_s']:.1f}x")


if __name__ == "__main__":
    main()
