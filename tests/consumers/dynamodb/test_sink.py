"""DynamoDB sink: one contract suite for the in-memory fake and the moto-backed writer,
plus the real writer's retries under injected UnprocessedItems and throttling."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError

from consumers.dynamodb import (
    DynamoDbProcessor,
    DynamoDbProcessorFactory,
    DynamoDbRetriesExhaustedError,
    DynamoDbSinkWriter,
    DynamoDbWriteError,
    DynamoDbWriter,
    MemoryDynamoDbWriter,
)
from consumers.dynamodb.items import coalesce_latest, dedupe_history, history_item
from consumers.engine.records import ConsumedRecord, Position
from core.aws import AwsClients
from core.aws_json import AwsJsonApi
from core.backoff import Backoff
from core.metrics import Counters, Metrics
from core.settings import Settings
from crypto_live.provision import provision

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SYMBOLS = tuple(f"S{i}USDT" for i in range(8))
START_MS = 1_795_000_000_000
TTL_DAYS = 1
FAST = Backoff(base=0.001, cap=0.01)
DECIMALS = ("close_price", "open_price", "high_price", "low_price", "base_volume", "quote_volume")
Plain = dict[str, str | Decimal]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def ticker(symbol: str, event_time: int, step: int) -> dict[str, Any]:
    return {
        "event_type": "24hrMiniTicker",
        "event_time": event_time,
        "stream_type": f"{symbol.lower()}@miniTicker",
        "symbol": symbol,
        "close_price": f"{65000 + step}.{step % 100:02d}000000",
        "open_price": "64000.00000000",
        "high_price": f"{70000 + step}.99999999",
        "low_price": "0.00000001",
        "base_volume": f"{12345678901 + step}.12345678",
        "quote_volume": f"{803456789012345 + step}.00000000",
        "iso_timestamp": iso(event_time),
        "received_at": event_time * 1000 + 456,
    }


def consumed(records: Sequence[dict[str, Any]], first_sequence: int = 1) -> list[ConsumedRecord]:
    arrival = datetime.fromtimestamp(START_MS / 1000, UTC)
    return [
        ConsumedRecord(
            "shardId-000000000000", Position(first_sequence + i), arrival, r["symbol"], r
        )
        for i, r in enumerate(records)
    ]


def market(count: int) -> list[dict[str, Any]]:
    """``count`` records over 8 symbols, 10 ms apart, with the duplicates real feeds carry:
    identical resends (producer retries) and a second event in the same millisecond."""
    records = [
        ticker(SYMBOLS[i % len(SYMBOLS)], START_MS + (i // len(SYMBOLS)) * 10, i)
        for i in range(count)
    ]
    for i in range(0, count, 97):
        records[i + 1 if i + 1 < count else i] = dict(records[i])  # a resend, next in shard
    for i in range(50, count, 101):
        same_ms = dict(records[i - 8], close_price=f"{i}.00000001")  # supersedes records[i-8]
        records[i] = same_ms
    return records


def plain(item: dict[str, Any]) -> Plain:
    """An AttributeValue map as comparable Python values; Numbers as exact Decimals."""
    return {k: Decimal(v["N"]) if "N" in v else v["S"] for k, v in item.items()}


def expected_history(records: Sequence[dict[str, Any]]) -> dict[tuple[str, str], Plain]:
    out: dict[tuple[str, str], Plain] = {}
    for record in records:
        out[(record["stream_type"], record["iso_timestamp"])] = plain(history_item(record, 1))
    return out


def expected_latest(records: Sequence[dict[str, Any]]) -> dict[str, Plain]:
    return {u.symbol: plain(u.attributes) for u in coalesce_latest(records)}


@dataclass
class Sink:
    """A writer under test and how to read back what it stored."""

    writer: DynamoDbSinkWriter
    metrics: Metrics
    read_history: Callable[[], dict[tuple[str, str], Plain]]
    read_latest: Callable[[], dict[str, Plain]]


def scan(aws: AwsClients, table: str) -> list[dict[str, Any]]:
    pages = aws.dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
    return [item for page in pages for item in page["Items"]]


def moto_sink(aws: AwsClients, settings: Settings, client: Any, metrics: Metrics) -> Sink:
    writer = DynamoDbWriter(
        client,
        settings.dynamo_table_name,
        settings.dynamo_latest_table_name,
        metrics,
        backoff=FAST,
    )

    def read_history() -> dict[tuple[str, str], Plain]:
        items = scan(aws, settings.dynamo_table_name)
        return {(i["stream_type"]["S"], i["iso_timestamp"]["S"]): plain(i) for i in items}

    def read_latest() -> dict[str, Plain]:
        return {i["symbol"]["S"]: plain(i) for i in scan(aws, settings.dynamo_latest_table_name)}

    return Sink(writer, metrics, read_history, read_latest)


@pytest.fixture
def tables(aws_settings: Settings, aws: AwsClients) -> Settings:
    provision(aws_settings, aws)
    return aws_settings


@pytest.fixture(params=["memory", "moto"])
def sink(request: pytest.FixtureRequest) -> Iterator[Sink]:
    metrics = Metrics("consumer-dynamodb")
    if request.param == "memory":
        fake = MemoryDynamoDbWriter(metrics)
        yield Sink(
            fake,
            metrics,
            lambda: {key: plain(item) for key, item in fake.history.items()},
            lambda: {symbol: plain(item) for symbol, item in fake.latest.items()},
        )
        return
    settings = request.getfixturevalue("tables")
    aws = request.getfixturevalue("aws")
    real = moto_sink(aws, settings, aws.dynamodb, metrics)
    yield real
    assert isinstance(real.writer, DynamoDbWriter)
    real.writer.close()


@contextmanager
def one_shard(writer: DynamoDbSinkWriter) -> Iterator[DynamoDbProcessor]:
    """A processor for one shard, with its factory's latest-table pump stopped afterwards."""
    factory = DynamoDbProcessorFactory(writer, TTL_DAYS)
    try:
        yield factory("shardId-000000000000")
    finally:
        factory.close()


def feed(processor: DynamoDbProcessor, records: list[ConsumedRecord], batch: int = 500) -> Any:
    """Process the records in batches, then flush as at SHARD_END; every position returned."""

    async def run() -> list[Position | None]:
        positions = [
            await processor.process(records[start : start + batch])
            for start in range(0, len(records), batch)
        ]
        return [*positions, await processor.shard_ended()]

    return asyncio.run(run())


def write_all(writer: DynamoDbSinkWriter, records: list[ConsumedRecord], batch: int = 500) -> Any:
    with one_shard(writer) as processor:
        return feed(processor, records, batch)


def checkpoints(positions: list[Position | None]) -> list[Position]:
    """The positions the engine would commit: increasing, None meaning nothing new."""
    committed = [p for p in positions if p is not None]
    assert committed == sorted(committed) and len(set(committed)) == len(committed)
    return committed


# -- contract: fake and real --------------------------------------------------------------


def test_batches_land_exactly_once_with_exact_numbers(sink: Sink) -> None:
    records = market(2000)
    committed = checkpoints(write_all(sink.writer, consumed(records)))
    assert set(committed) <= {Position(500), Position(1000), Position(1500), Position(2000)}
    assert committed[-1] == Position(2000)
    history = sink.read_history()
    expected = expected_history(records)
    assert len(history) == len(expected) < 2000  # resends and same-ms events collapsed
    assert history == expected
    sample = history[(records[0]["stream_type"], records[0]["iso_timestamp"])]
    assert sample["close_price"] == Decimal("65000.00000000")
    assert sample["expires_at"] == START_MS // 1000 + 86_400
    assert sink.read_latest() == expected_latest(records)
    assert len(sink.read_latest()) == len(SYMBOLS)
    assert sink.metrics.value(Counters.DYNAMODB_ITEMS_WRITTEN) == len(expected)


def test_writing_the_same_records_again_changes_nothing(sink: Sink) -> None:
    records = consumed(market(800))
    write_all(sink.writer, records, batch=200)
    history, latest = sink.read_history(), sink.read_latest()
    updates = sink.metrics.value(Counters.LATEST_UPDATES)
    write_all(sink.writer, records, batch=300)
    assert sink.read_history() == history
    assert sink.read_latest() == latest
    assert sink.metrics.value(Counters.LATEST_UPDATES) == updates
    assert sink.metrics.value(Counters.LATEST_STALE_SKIPPED) >= len(SYMBOLS)


def test_replaying_older_records_never_regresses_latest(sink: Sink) -> None:
    records = market(1600)
    newer, older = consumed(records[800:], 801), consumed(records[:800], 1)
    write_all(sink.writer, newer)
    latest = sink.read_latest()
    write_all(sink.writer, older)
    assert sink.read_latest() == latest == expected_latest(records)
    assert sink.read_history() == expected_history(records)
    assert sink.metrics.value(Counters.LATEST_STALE_SKIPPED) >= len(SYMBOLS)


def test_duplicate_keys_in_one_call_are_refused(sink: Sink) -> None:
    item = history_item(ticker("S0USDT", START_MS, 0), TTL_DAYS)
    with pytest.raises(ValueError, match="unique keys"):
        sink.writer.write_history([item, dict(item)])


def test_processor_lifecycle_returns_nothing_new(sink: Sink) -> None:
    async def run(processor: DynamoDbProcessor) -> list[Position | None]:
        return [
            await processor.process([]),
            await processor.at_tip(START_MS),
            await processor.shard_ended(),
            await processor.shutdown(),
        ]

    with one_shard(sink.writer) as processor:
        assert asyncio.run(run(processor)) == [None, None, None, None]
        processor.abandon()
    assert sink.read_history() == {}


def test_shards_share_one_writer_concurrently(sink: Sink) -> None:
    factory = DynamoDbProcessorFactory(sink.writer, TTL_DAYS)
    records = market(1200)
    halves = consumed(records[:600], 1), consumed(records[600:], 601)

    async def run() -> None:
        async def one(shard: str, part: list[ConsumedRecord]) -> None:
            processor = factory(shard)
            positions = [
                await processor.process(part[start : start + 150])
                for start in range(0, len(part), 150)
            ]
            positions.append(await processor.shard_ended())
            assert checkpoints(positions)[-1] == part[-1].position

        async with asyncio.TaskGroup() as group:
            group.create_task(one("shardId-000000000000", halves[0]))
            group.create_task(one("shardId-000000000001", halves[1]))

    try:
        asyncio.run(run())
    finally:
        factory.close()
    assert sink.read_history() == expected_history(records)
    assert sink.read_latest() == expected_latest(records)


# -- the real writer's requests and retries -----------------------------------------------


class UnprocessingClient:
    """Sends only every other put of each BatchWriteItem to moto and hands the rest back as
    UnprocessedItems, as DynamoDB does under throttling; every other call is untouched. Sits
    where the writer's calls go out (its JSON API: operation and body)."""

    def __init__(self, real: Any, always: bool = False) -> None:
        self._real = AwsJsonApi(real)
        self._always = always
        self._lock = threading.Lock()  # the writer calls from several threads
        self.calls = 0
        self.held_back = 0

    def call(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        if operation != "BatchWriteItem":
            return self._real.call(operation, body)
        requests: dict[str, list[Any]] = body["RequestItems"]
        with self._lock:
            self.calls += 1
            passthrough = not self._always and self.calls % 2 == 0
        if passthrough:
            return self._real.call(operation, body)
        sent = {table: items[::2] for table, items in requests.items()}
        kept = {table: items[1::2] for table, items in requests.items()}
        if self._always:
            sent, kept = {}, requests
        response: dict[str, Any] = {"UnprocessedItems": {}}
        if any(sent.values()):
            response = self._real.call(operation, {"RequestItems": sent})
        response["UnprocessedItems"] = {t: r for t, r in kept.items() if r}
        with self._lock:
            self.held_back += sum(len(r) for r in kept.values())
        return response


class ThrottlingClient:
    """Every third BatchWriteItem or PutItem fails as throttled without writing anything."""

    def __init__(self, real: Any) -> None:
        self._real = AwsJsonApi(real)
        self._lock = threading.Lock()
        self.calls = 0
        self.throttled = 0

    def call(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.calls += 1
            throttle = self.calls % 3 == 0
            self.throttled += throttle
        if throttle:
            raise ClientError(
                {
                    "Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"},
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                },
                operation,
            )
        return self._real.call(operation, body)


def test_requests_per_record(tables: Settings, aws: AwsClients) -> None:
    metrics = Metrics("consumer-dynamodb")
    real = moto_sink(aws, tables, aws.dynamodb, metrics)
    records = market(2000)
    write_all(real.writer, consumed(records), batch=500)
    history_requests = sum(
        math.ceil(len(expected_history(records[start : start + 500])) / 25)
        for start in range(0, 2000, 500)
    )
    # Each symbol's row at least once; at most once per batch (fewer when coalesced).
    latest_requests = metrics.value(Counters.DYNAMODB_REQUESTS) - history_requests
    assert len(SYMBOLS) <= latest_requests <= 4 * len(SYMBOLS)
    assert latest_requests == metrics.value(Counters.LATEST_UPDATES) + metrics.value(
        Counters.LATEST_STALE_SKIPPED
    )
    assert (history_requests + 4 * len(SYMBOLS)) / 2000 < 0.06  # vs 2 per record
    assert isinstance(real.writer, DynamoDbWriter)
    real.writer.close()


def test_unprocessed_items_are_retried_until_none_are_left(
    tables: Settings, aws: AwsClients
) -> None:
    metrics = Metrics("consumer-dynamodb")
    client = UnprocessingClient(aws.dynamodb)
    real = moto_sink(aws, tables, client, metrics)
    records = market(2000)
    write_all(real.writer, consumed(records))
    assert client.held_back > 200
    assert metrics.value(Counters.DYNAMODB_UNPROCESSED_RETRIES) == client.held_back
    assert real.read_history() == expected_history(records)
    assert real.read_latest() == expected_latest(records)
    assert metrics.value(Counters.DYNAMODB_ITEMS_WRITTEN) == len(expected_history(records))


def test_throttled_calls_are_retried(tables: Settings, aws: AwsClients) -> None:
    metrics = Metrics("consumer-dynamodb")
    client = ThrottlingClient(aws.dynamodb)
    real = moto_sink(aws, tables, client, metrics)
    records = market(1000)
    write_all(real.writer, consumed(records))
    assert client.throttled > 10
    assert metrics.value(Counters.DYNAMODB_CALL_RETRIES) == client.throttled
    assert real.read_history() == expected_history(records)
    assert real.read_latest() == expected_latest(records)


def test_gives_up_with_a_retriable_error_when_items_stay_unprocessed(
    tables: Settings, aws: AwsClients
) -> None:
    metrics = Metrics("consumer-dynamodb")
    client = UnprocessingClient(aws.dynamodb, always=True)
    writer = DynamoDbWriter(
        client, tables.dynamo_table_name, "unused", metrics, backoff=FAST, give_up_after=0.2
    )
    items = dedupe_history(history_item(r, TTL_DAYS) for r in market(30))
    with pytest.raises(DynamoDbRetriesExhaustedError, match="unprocessed") as caught:
        writer.write_history(items)
    assert caught.value.retriable
    assert client.calls > 2
    writer.close()
    writer.close()  # idempotent


def test_a_missing_table_is_a_non_retriable_error(tables: Settings, aws: AwsClients) -> None:
    metrics = Metrics("consumer-dynamodb")
    writer = DynamoDbWriter(aws.dynamodb, "no-such-table", "no-such-latest", metrics)
    records = market(40)
    with pytest.raises(DynamoDbWriteError) as caught:
        writer.write_history(dedupe_history(history_item(r, TTL_DAYS) for r in records))
    assert not caught.value.retriable
    with pytest.raises(DynamoDbWriteError):
        writer.update_latest(coalesce_latest(records))
    writer.close()
