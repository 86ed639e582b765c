"""DynamoDB sink benchmark: DynamoDbProcessor vs the seed's per-record writes, same records.

Run with `python -m bench.dynamodb_consumer` from the repository root (`--quick` for a smoke
run). The embedded DynamoDB is moto's server in its own process, so absolute numbers measure
moto and HTTP, not AWS; requests per record carries over to AWS as is. The full consumer runs
in this process, so its CPU time (time.process_time, every thread) is the consumer's alone:
records per CPU-second is its records/s per core. Each row is one function returning a Row;
the README "Performance" rows are saved through bench.report.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.common import (
    SYMBOLS,
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
from consumers.dynamodb import DynamoDbProcessorFactory, DynamoDbWriter
from consumers.dynamodb.items import (
    MAX_BATCH_WRITE_ITEMS,
    coalesce_latest,
    dedupe_history,
    history_item,
    history_key,
    ticker_attributes,
)
from consumers.engine.records import ConsumedRecord, Position
from core.aws import AwsClients
from core.heap import freeze_startup_heap
from core.metrics import Counters, Metrics
from core.settings import Settings, load_settings
from crypto_live.provision import provision
from schemas.record import MiniTicker


@dataclass(frozen=True, slots=True)
class Sizes:
    """Records per row. Rows dominated by one call per record run on a prefix and report
    per-record rates from it."""

    records: int = 20_000
    steady_sample: int = 4_000
    naive_sample: int = 2_000


QUICK = Sizes(records=1_000, steady_sample=200, naive_sample=100)
# Catching up, GetRecords (Limit 10,000 aggregates) hands over thousands of records at once;
# at the tip, 200 symbols at 1 Hz over 2 shards polled every 0.5 s gives ~50 per call.
CATCH_UP_BATCH = 2_000
STEADY_BATCH = 50
MAX_IN_FLIGHT = 4


@dataclass(frozen=True, slots=True)
class Row(Run):
    """One benchmark line: a Run and its DynamoDB requests."""

    requests: float

    @property
    def requests_per_record(self) -> float:
        return self.requests / self.records


def as_consumed(records: list[MiniTicker]) -> list[ConsumedRecord]:
    arrival = datetime.now(UTC)
    return [
        ConsumedRecord("shardId-000000000000", Position(i + 1), arrival, r["symbol"], dict(r))
        for i, r in enumerate(records)
    ]


def fresh_tables(endpoint: str) -> tuple[Settings, AwsClients]:
    """An empty account with the tables provisioned, so no row sees another's items."""
    reset_account(endpoint)
    settings = load_settings(aws_endpoint_url=endpoint)
    clients = AwsClients(settings)
    provision(settings, clients)
    return settings, clients


def count_items(clients: AwsClients, table: str) -> int:
    pages = clients.dynamodb.get_paginator("scan").paginate(TableName=table, Select="COUNT")
    return sum(page["Count"] for page in pages)


def bench_processor(
    endpoint: str, records: list[MiniTicker], batch: int, label: str, *, at_tip: bool = False
) -> Row:
    """DynamoDbProcessor fed GetRecords-sized batches of one shard, as the engine does; at the
    tip each batch is processed at the time its records were received (fresh: a catch-up's
    latest rows would be held for the batches behind them)."""
    settings, clients = fresh_tables(endpoint)
    metrics = Metrics("bench-dynamodb")
    writer = DynamoDbWriter(
        clients.dynamodb,
        settings.dynamo_table_name,
        settings.dynamo_latest_table_name,
        metrics,
        max_in_flight=MAX_IN_FLIGHT,
    )
    received = {"now": 0}  # at the tip: the clock reads the batch's receive time
    factory = DynamoDbProcessorFactory(
        writer,
        settings.retention_ttl_days,
        **({"wall_clock_us": lambda: received["now"]} if at_tip else {}),
    )
    processor = factory("shardId-0")
    consumed = as_consumed(records)

    async def run() -> None:
        for start in range(0, len(consumed), batch):
            part = consumed[start : start + batch]
            received["now"] = int(part[-1].record["received_at"])
            await processor.process(part)

    started = time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - started
    factory.close()  # the latest-table pump first (after its write in flight), then the writer
    writer.close()
    unique = len({history_key(history_item(r, 1)) for r in records})
    stored = count_items(clients, settings.dynamo_table_name)
    assert stored == unique, f"history holds {stored} items, expected {unique}"
    clients.close()
    name = f"DynamoDbProcessor, {label} ({batch}/batch)"
    return Row(name, len(records), elapsed, metrics.value(Counters.DYNAMODB_REQUESTS))


def bench_consumer(moto: MotoProcess, records: list[MiniTicker]) -> Row:
    """The whole consumer: Kinesis (2 shards) -> engine -> DynamoDbProcessor, catching up.

    The consumer runs in this process and moto in its own, so this process's CPU time over
    the run is the consumer's (every thread: engine, writer pool, the polling loop here).
    """
    from consumers.app import run_consumer

    settings, clients = fresh_tables(moto.endpoint)
    publish(settings, clients, records)
    metrics = Metrics("bench-consumer")
    unique = len({history_key(history_item(r, 1)) for r in records})

    async def run() -> tuple[float, float, float]:
        stop = asyncio.Event()
        # The bench's own prepared records out of the collector's walks first (a consumer
        # process holds none); the consumer freezes its own start-up heap, as the CLI does.
        freeze_startup_heap()
        started, cpu, moto_cpu = time.perf_counter(), time.process_time(), moto.cpu_seconds()
        task = asyncio.create_task(
            run_consumer(settings, "dynamodb", stop, metrics, on_built=freeze_startup_heap)
        )
        while metrics.value(Counters.DYNAMODB_ITEMS_WRITTEN) < unique:
            await asyncio.sleep(0.05)
            if task.done():
                task.result()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        moto_cpu = moto.cpu_seconds() - moto_cpu
        stop.set()
        await task
        return elapsed, cpu, moto_cpu

    elapsed, cpu, moto_cpu = asyncio.run(run())
    stored = count_items(clients, settings.dynamo_table_name)
    assert stored == unique, f"history holds {stored} items, expected {unique}"
    clients.close()
    return Row(
        "full consumer: Kinesis -> engine -> DynamoDB",
        len(records),
        elapsed,
        metrics.value(Counters.DYNAMODB_REQUESTS),
        cpu_seconds=cpu,
        moto_cpu_seconds=moto_cpu,
    )


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


def moto_cost_per_call(
    moto: MotoProcess, records: list[MiniTicker], calls: int
) -> dict[str, float]:
    """moto's server CPU ms per call of each kind the sink makes (one at a time, so the CPU
    moto burns in that window is the calls'): what bounds the rates on the embedded AWS."""
    settings, clients = fresh_tables(moto.endpoint)
    items = dedupe_history(history_item(r, settings.retention_ttl_days) for r in records)
    updates = coalesce_latest(records)
    latest, history = settings.dynamo_latest_table_name, settings.dynamo_table_name
    calls = min(calls, len(updates), len(items) // MAX_BATCH_WRITE_ITEMS)
    kinds: dict[str, Callable[[int], object]] = {
        "BatchWriteItem (25 puts)": lambda i: clients.dynamodb.batch_write_item(
            RequestItems={
                history: [
                    {"PutRequest": {"Item": item}}
                    for item in items[i * MAX_BATCH_WRITE_ITEMS : (i + 1) * MAX_BATCH_WRITE_ITEMS]
                ]
            }
        ),
        "conditional PutItem (latest row)": lambda i: clients.dynamodb.put_item(
            **updates[i].to_request(latest)
        ),
        "UpdateItem SET of every field": lambda i: clients.dynamodb.update_item(
            **naive_update(latest, ("symbol",), updates[i].attributes)
        ),
    }
    costs = {}
    for name, call in kinds.items():
        before = moto.cpu_seconds()
        for i in range(calls):
            call(i)
        costs[name] = (moto.cpu_seconds() - before) / calls * 1000
        print(f"moto server CPU per {name}: {costs[name]:.1f} ms")
    clients.close()
    return costs


def print_table(rows: Sequence[Row]) -> None:
    naive = rows[-1]
    print(
        f"{'writer':<44}{'records':>8}{'records/s':>11}{'rec/CPU-s':>11}{'requests/rec':>14}"
        f"{'vs naive rec/s':>16}{'fewer reqs':>12}"
    )
    for row in rows:
        per_cpu = "" if row.records_per_cpu_s is None else f"{row.records_per_cpu_s:,.0f}"
        print(
            f"{row.name:<44}{row.records:>8,}{row.records_per_s:>11,.0f}{per_cpu:>11}"
            f"{row.requests_per_record:>14.3f}"
            f"{row.records_per_s / naive.records_per_s:>15.1f}x"
            f"{naive.requests_per_record / row.requests_per_record:>11.1f}x"
        )
    full = rows[0]
    if full.cpu_cores is not None and full.moto_cores is not None:
        print(
            f"rec/CPU-s: records per CPU-second of the consumer alone (records/s per core); "
            f"over the full run it kept {full.cpu_cores:.2f} cores busy, "
            f"moto's process {full.moto_cores:.2f}"
        )


def readme_rows(
    consumer: Row, tip: Row, naive: Row, costs: dict[str, float]
) -> list[tuple[str, str]]:
    return [
        (
            "embedded AWS (moto) server CPU per DynamoDB call",
            ", ".join(f"{name} {ms:.1f} ms" for name, ms in costs.items()),
        ),
        (
            "DynamoDB consumer, full (Kinesis -> engine -> DynamoDB), "
            f"catching up {consumer.records:,} records",
            f"{consumer.records_per_s:,.0f} records/s, {per_core_text(consumer)}, "
            f"**{consumer.requests_per_record:.3f}** DynamoDB requests per record",
        ),
        (
            "pre-Kinesis design: 2 UpdateItem per record",
            f"{naive.records_per_s:,.0f} records/s, "
            f"{naive.requests_per_record:.3f} requests per record",
        ),
        (
            "DynamoDB consumer vs per-item writer",
            f"**{consumer.records_per_s / naive.records_per_s:.1f}x** records/s, "
            f"{naive.requests_per_record / consumer.requests_per_record:.0f}x fewer requests",
        ),
        (
            f"DynamoDB sink at the tip ({STEADY_BATCH} records per batch)",
            f"{tip.records_per_s:,.0f} records/s, {tip.requests_per_record:.3f} requests per "
            f"record ({tip.records_per_s / naive.records_per_s:.1f}x faster than per-item)",
        ),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    args = bench_parser(__doc__).parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    print(f"machine: {machine()}")
    records = market_records(sizes.records)
    rows_to_run: list[Callable[[MotoProcess], Row]] = [
        lambda moto: bench_consumer(moto, records),
        lambda moto: bench_processor(moto.endpoint, records, CATCH_UP_BATCH, "catch-up"),
        lambda moto: bench_processor(
            moto.endpoint, records[: sizes.steady_sample], STEADY_BATCH, "tip", at_tip=True
        ),
        lambda moto: bench_naive(moto.endpoint, records[: sizes.naive_sample]),
    ]
    with moto_process() as moto:
        rows = [run(moto) for run in rows_to_run]
        costs = moto_cost_per_call(moto, records, sizes.steady_sample)
    print(
        f"\nrecords over {SYMBOLS} symbols into embedded DynamoDB (moto server): the full "
        f"consumer reads a 2-shard stream, the sink rows one shard; max_in_flight={MAX_IN_FLIGHT}"
    )
    print_table(rows)
    consumer, _, tip, naive = rows
    save_results(args.quick, "dynamodb_consumer", readme_rows(consumer, tip, naive, costs))


if __name__ == "__main__":
    main()
