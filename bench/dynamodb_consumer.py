"""DynamoDB sink benchmark: DynamoDbProcessor vs the seed's per-record writes, same records.

Run with `python -m bench.dynamodb_consumer` from the repository root. The embedded DynamoDB
is moto's server in its own process, so absolute numbers measure moto and HTTP, not AWS;
requests per record carries over to AWS as is. Each row is one function returning a Row.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.common import machine, moto_server
from consumers.dynamodb import DynamoDbProcessorFactory, DynamoDbWriter
from consumers.dynamodb.items import history_item, history_key, ticker_attributes
from consumers.records import ConsumedRecord, Position
from crypto_live.aws import AwsClients
from crypto_live.exchange.price_walk import MarketSimulator
from crypto_live.metrics import Counters, Metrics
from crypto_live.provision import provision
from crypto_live.settings import Settings, load_settings
from producer.validation import validate_message
from schemas.record import MiniTicker

SYMBOLS = 200
RECORDS = 20_000
# Catching up, GetRecords (Limit 10,000 aggregates) hands over thousands of records at once;
# at the tip, 200 symbols at 1 Hz over 2 shards polled every 0.5 s gives ~50 per call.
CATCH_UP_BATCH = 2_000
STEADY_BATCH = 50
# Rows dominated by one call per record run on a prefix and report per-record rates from it.
STEADY_SAMPLE = 4_000
NAIVE_SAMPLE = 2_000
MAX_IN_FLIGHT = 4


@dataclass(frozen=True, slots=True)
class Row:
    """One benchmark line: what ran, on how many records, how long, how many requests."""

    name: str
    records: int
    seconds: float
    requests: float

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds

    @property
    def requests_per_record(self) -> float:
        return self.requests / self.records


def market_records(count: int) -> list[MiniTicker]:
    """Validated records from the simulated market: every symbol once per second."""
    market = MarketSimulator(SYMBOLS, seed=7)
    out: list[MiniTicker] = []
    now = 1_795_000_000_000
    while len(out) < count:
        now += 1000
        for payload in market.tick(now):
            message = {"stream": f"{payload['s'].lower()}@miniTicker", "data": dict(payload)}
            records, rejected = validate_message(json.loads(json.dumps(message)), now * 1000)
            assert not rejected, rejected
            out.extend(records)
    return out[:count]


def as_consumed(records: list[MiniTicker]) -> list[ConsumedRecord]:
    arrival = datetime.now(UTC)
    return [
        ConsumedRecord("shardId-000000000000", Position(i + 1), arrival, r["symbol"], dict(r))
        for i, r in enumerate(records)
    ]


def fresh_tables(endpoint: str) -> tuple[Settings, AwsClients]:
    """An empty account with the tables provisioned, so no row sees another's items."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
    settings = load_settings(aws_endpoint_url=endpoint)
    clients = AwsClients(settings)
    provision(settings, clients)
    return settings, clients


def count_items(clients: AwsClients, table: str) -> int:
    pages = clients.dynamodb.get_paginator("scan").paginate(TableName=table, Select="COUNT")
    return sum(page["Count"] for page in pages)


def bench_processor(endpoint: str, records: list[MiniTicker], batch: int, label: str) -> Row:
    """DynamoDbProcessor fed GetRecords-sized batches of one shard, as the engine does."""
    settings, clients = fresh_tables(endpoint)
    metrics = Metrics("bench-dynamodb")
    writer = DynamoDbWriter(
        clients.dynamodb,
        settings.dynamo_table_name,
        settings.dynamo_latest_table_name,
        metrics,
        max_in_flight=MAX_IN_FLIGHT,
    )
    processor = DynamoDbProcessorFactory(writer, settings.retention_ttl_days)("shardId-0")
    consumed = as_consumed(records)

    async def run() -> None:
        for start in range(0, len(consumed), batch):
            await processor.process(consumed[start : start + batch])

    started = time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - started
    writer.close()
    unique = len({history_key(history_item(r, 1)) for r in records})
    stored = count_items(clients, settings.dynamo_table_name)
    assert stored == unique, f"history holds {stored} items, expected {unique}"
    clients.close()
    name = f"DynamoDbProcessor, {label} ({batch}/batch)"
    return Row(name, len(records), elapsed, metrics.value(Counters.DYNAMODB_REQUESTS))


def bench_consumer(endpoint: str, records: list[MiniTicker]) -> Row:
    """The whole consumer: Kinesis (2 shards) -> engine -> DynamoDbProcessor, catching up."""
    from bench.common import publish
    from consumers.app import run_consumer

    settings, clients = fresh_tables(endpoint)
    publish(settings, clients, list(records))
    metrics = Metrics("bench-consumer")
    unique = len({history_key(history_item(r, 1)) for r in records})

    async def run() -> float:
        stop = asyncio.Event()
        started = time.perf_counter()
        task = asyncio.create_task(run_consumer(settings, "dynamodb", stop, metrics))
        while metrics.value(Counters.DYNAMODB_ITEMS_WRITTEN) < unique:
            await asyncio.sleep(0.05)
            if task.done():
                task.result()
        elapsed = time.perf_counter() - started
        stop.set()
        await task
        return elapsed

    elapsed = asyncio.run(run())
    stored = count_items(clients, settings.dynamo_table_name)
    assert stored == unique, f"history holds {stored} items, expected {unique}"
    clients.close()
    requests = metrics.value(Counters.DYNAMODB_REQUESTS)
    return Row("full consumer: Kinesis -> engine -> DynamoDB", len(records), elapsed, requests)


def naive_update(table: str, key: tuple[str, ...], attributes: dict[str, Any]) -> dict[str, Any]:
    """UpdateItem SET of every non-key attribute, as the seed consumer wrote each record."""
    fields = [name for name in attributes if name not in key]
    return {
        "TableName": table,
        "Key": {name: attributes[name] for name in key},
        "UpdateExpression": "SET " + ", ".join(f"#{n} = :{n}" for n in fields),
        "ExpressionAttributeNames": {f"#{n}": n for n in fields},
        "ExpressionAttributeValues": {f":{n}": attributes[n] for n in fields},
    }


def bench_naive(endpoint: str, records: list[MiniTicker]) -> Row:
    """The pre-Kinesis design: per record, one UpdateItem into history and one into latest."""
    settings, clients = fresh_tables(endpoint)
    dynamodb = clients.dynamodb
    history_table, latest_table = settings.dynamo_table_name, settings.dynamo_latest_table_name
    requests = 0
    started = time.perf_counter()
    for record in records:
        item = history_item(record, settings.retention_ttl_days)
        dynamodb.update_item(**naive_update(history_table, ("stream_type", "iso_timestamp"), item))
        dynamodb.update_item(**naive_update(latest_table, ("symbol",), ticker_attributes(record)))
        requests += 2
    elapsed = time.perf_counter() - started
    clients.close()
    return Row("naive: 2 UpdateItem per record", len(records), elapsed, requests)


def main() -> None:
    print(f"machine: {machine()}")
    records = market_records(RECORDS)
    rows_to_run: list[Callable[[str], Row]] = [
        lambda endpoint: bench_consumer(endpoint, records),
        lambda endpoint: bench_processor(endpoint, records, CATCH_UP_BATCH, "catch-up"),
        lambda endpoint: bench_processor(endpoint, records[:STEADY_SAMPLE], STEADY_BATCH, "tip"),
        lambda endpoint: bench_naive(endpoint, records[:NAIVE_SAMPLE]),
    ]
    with moto_server() as endpoint:
        rows = [run(endpoint) for run in rows_to_run]
    print(
        f"\nrecords over {SYMBOLS} symbols into embedded DynamoDB (moto server), one shard, "
        f"max_in_flight={MAX_IN_FLIGHT}"
    )
    naive = rows[-1]
    print(
        f"{'writer':<44}{'records':>8}{'records/s':>11}{'requests/rec':>14}"
        f"{'vs naive rec/s':>16}{'fewer reqs':>12}"
    )
    for row in rows:
        print(
            f"{row.name:<44}{row.records:>8,}{row.records_per_s:>11,.0f}"
            f"{row.requests_per_record:>14.3f}"
            f"{row.records_per_s / naive.records_per_s:>15.1f}x"
            f"{naive.requests_per_record / row.requests_per_record:>11.1f}x"
        )


if __name__ == "__main__":
    main()
