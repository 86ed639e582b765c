"""Candles in the DynamoDB sink: item mapping and routing by type, over the in-memory writer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from consumers.dynamodb import DynamoDbProcessorFactory, MemoryDynamoDbWriter
from consumers.dynamodb.candles import candle_item, dedupe_candles
from consumers.dynamodb.items import history_item
from consumers.engine.records import ConsumedRecord, Position, UndecodableRecord
from consumers.klines import KLINE_FIELD_ORDER
from consumers.routing import UnhandledRecordError
from core.metrics import Counters, Metrics
from schemas.codec import KLINE_SCHEMA, MINITICKER_SCHEMA
from tests.support.klines import (
    HEARTBEAT_SCHEMA,
    encode,
    heartbeat,
    kline,
    minute_of_klines,
)
from tests.support.pipeline import ticker

SHARD = "shardId-000000000000"
ARRIVAL = datetime(2026, 11, 18, 19, 33, 20, tzinfo=UTC)
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def schema_of(fields: dict[str, Any]) -> str:
    if "interval" in fields:
        return KLINE_SCHEMA
    return MINITICKER_SCHEMA if "event_type" in fields else HEARTBEAT_SCHEMA


def consumed(records: Sequence[dict[str, Any]], first: int = 1) -> list[ConsumedRecord]:
    return [
        ConsumedRecord(SHARD, Position(first + i), ARRIVAL, "k", r, schema_of(r), encode(r)[1])
        for i, r in enumerate(records)
    ]


def plain(item: dict[str, Any]) -> dict[str, Any]:
    """An item as Python values: Numbers as exact Decimals."""
    return {k: Decimal(v["N"]) if "N" in v else v.get("S", v.get("BOOL")) for k, v in item.items()}


def test_a_candle_item_is_every_kline_field_exact_plus_the_iso_open_time() -> None:
    record = kline("BTCUSDT", 7)
    item = candle_item(record)
    assert set(item) == {*KLINE_FIELD_ORDER, "iso_open_time"}  # no expires_at: kept
    assert item["symbol"] == {"S": "BTCUSDT"} and item["open_time"] == {
        "N": str(record["open_time"])
    }
    assert item["open_price"] == {"N": record["open_price"]}  # the exact string, trailing zeros
    assert item["closed"] == {"BOOL": True}
    assert item["trades"] == {"N": str(record["trades"])}
    assert item["iso_open_time"]["S"].endswith(":07:00.000Z")
    for name in ("event_type", "stream_type", "interval", "source", "iso_timestamp"):
        assert item[name] == {"S": record[name]}


def test_dedupe_keeps_the_last_candle_of_each_minute() -> None:
    first, again = kline("BTCUSDT", 1), dict(kline("BTCUSDT", 1), source="backfill")
    items = dedupe_candles(candle_item(r) for r in [first, kline("ETHUSDT", 1), again])
    assert [(i["symbol"]["S"], i["source"]["S"]) for i in items] == [
        ("ETHUSDT", "websocket"),
        ("BTCUSDT", "backfill"),
    ]


def mixed(minutes: int) -> list[dict[str, Any]]:
    """Tickers, open and closed klines and heartbeats interleaved, as one stream carries them."""
    out: list[dict[str, Any]] = []
    for minute in range(minutes):
        base = kline("BTCUSDT", minute)["open_time"]
        out += [ticker(s, base + 10 + i, f"{minute}.{i}0") for i, s in enumerate(SYMBOLS)]
        out += minute_of_klines(SYMBOLS, minute)
        out.append(heartbeat("BTCUSDT", base + 30_000))
    return out


def run(factory: DynamoDbProcessorFactory, records: list[ConsumedRecord], batch: int) -> list[Any]:
    processor = factory(SHARD)

    async def go() -> list[Position | None]:
        out = [
            await processor.process(records[i : i + batch]) for i in range(0, len(records), batch)
        ]
        return [*out, await processor.shard_ended()]

    try:
        return asyncio.run(go())
    finally:
        factory.close()


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_each_type_goes_its_own_way_and_the_checkpoint_covers_all(batch: int) -> None:
    records = mixed(4)
    metrics = Metrics("consumer-dynamodb")
    writer = MemoryDynamoDbWriter(metrics)
    letters: list[UndecodableRecord] = []
    factory = DynamoDbProcessorFactory(
        writer, 1, metrics, latest_wait=0.01, record_dead_letters=letters.extend
    )
    consumed_records = consumed(records)

    positions = run(factory, consumed_records, batch)

    closed = [r for r in records if r.get("closed") is True]
    tickers = [r for r in records if r.get("event_type") == "24hrMiniTicker"]
    assert {k: plain(v) for k, v in writer.candles.items()} == {
        (r["symbol"], r["open_time"]): plain(candle_item(r)) for r in closed
    }
    assert len(writer.candles) == 4 * len(SYMBOLS)
    assert {k: plain(v) for k, v in writer.history.items()} == {
        (r["stream_type"], r["iso_timestamp"]): plain(history_item(r, 1)) for r in tickers
    }
    assert set(writer.latest) == set(SYMBOLS)  # from the tickers only
    heartbeats = [c for c in consumed_records if c.schema == HEARTBEAT_SCHEMA]
    assert [(d.position, d.data) for d in letters] == [(c.position, c.data) for c in heartbeats]
    assert {d.reason for d in letters} == {
        "no handler for schema crypto_live.v1.Heartbeat in consumer-dynamodb"
    }
    assert metrics.value(Counters.OPEN_KLINES_SKIPPED) == 4 * 2 * len(SYMBOLS)
    assert metrics.value(Counters.CANDLES_WRITTEN) == 4 * len(SYMBOLS)
    assert [p for p in positions if p is not None][-1] == consumed_records[-1].position


def test_a_replayed_batch_overwrites_the_same_candles() -> None:
    records = consumed(mixed(2))
    writer = MemoryDynamoDbWriter()
    run(DynamoDbProcessorFactory(writer, 1, latest_wait=0.01, record_dead_letters=list), records, 5)
    before = dict(writer.candles)
    run(DynamoDbProcessorFactory(writer, 1, latest_wait=0.01, record_dead_letters=list), records, 3)
    assert writer.candles == before


def test_an_unhandled_type_without_a_dead_letter_store_fails_the_batch_unwritten() -> None:
    writer = MemoryDynamoDbWriter()
    factory = DynamoDbProcessorFactory(writer, 1, latest_wait=0.01)
    with pytest.raises(UnhandledRecordError):
        run(factory, consumed([kline("BTCUSDT", 0), heartbeat("BTCUSDT", 1)]), 10)
    assert writer.candles == {}  # nothing of the batch written, nothing checkpointed


def test_a_failing_dead_letter_write_fails_the_batch() -> None:
    def broken(letters: list[UndecodableRecord]) -> None:
        raise OSError("S3 is down")

    writer = MemoryDynamoDbWriter()
    factory = DynamoDbProcessorFactory(writer, 1, latest_wait=0.01, record_dead_letters=broken)
    with pytest.raises(OSError, match="S3 is down"):
        run(factory, consumed([heartbeat("BTCUSDT", 1), kline("BTCUSDT", 0)]), 10)
    assert writer.candles == {}
