"""The producer end to end: local websocket server -> python-binance -> moto Kinesis over HTTP."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from consumers.operations.stream_dump import read_stream
from core.aws import AwsClients
from core.metrics import Counters, Metrics
from core.settings import Settings
from crypto_live.provision import provision
from producer.app import build_producer
from producer.shard_map import ShardMap
from tests.support.exchange import ScriptedExchange

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "TRXUSDT"]
BASE_TIME_MS = 1_795_000_000_000


def payload(symbol: str, index: int) -> dict[str, Any]:
    price = f"{1000 + index}.{index % 100:02d}000000"
    return {
        "e": "24hrMiniTicker",
        "E": BASE_TIME_MS + index * 10,
        "s": symbol,
        "c": price,
        "o": "1000.00000000",
        "h": f"{2000 + index}.00000000",
        "l": "999.00000000",
        "v": f"{index}.12345678",
        "q": f"{index * 1000}.87654321",
    }


def expected_record(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_type": data["e"],
        "event_time": data["E"],
        "stream_type": f"{data['s'].lower()}@miniTicker",
        "symbol": data["s"],
        "close_price": data["c"],
        "open_price": data["o"],
        "high_price": data["h"],
        "low_price": data["l"],
        "base_volume": data["v"],
        "quote_volume": data["q"],
    }


MALFORMED = [
    "{not json",
    json.dumps({"stream": "btcusdt@miniTicker", "data": {"e": "24hrMiniTicker", "s": "BTCUSDT"}}),
    json.dumps({"stream": "btcusdt@miniTicker", "data": dict(payload("BTCUSDT", 1), c=65000.1)}),
    json.dumps({"stream": "btcusdt@miniTicker", "data": dict(payload("BTCUSDT", 1), e="trade")}),
    json.dumps({"stream": "btcusdt@miniTicker", "data": payload("ETHUSDT", 1)}),
    json.dumps({"stream": "btcusdt@miniTicker", "data": dict(payload("BTCUSDT", 1), l="-1.0")}),
    json.dumps({"stream": "btcusdt@miniTicker", "data": dict(payload("BTCUSDT", 1), v="9" * 40)}),
    json.dumps({"stream": "btcusdt@miniTicker", "data": ["not", "an", "object"]}),
    json.dumps({"stream": "btcusdt@miniTicker", "data": dict(payload("BTCUSDT", 1), E="soon")}),
    json.dumps(["no", "envelope"]),
]


def build_script() -> tuple[list[str], list[dict[str, Any]]]:
    """1,000 messages: 989 single-symbol, 10 malformed, one all-market array of 50."""
    messages: list[str] = []
    expected: list[dict[str, Any]] = []
    for index in range(989):
        data = payload(SYMBOLS[index % len(SYMBOLS)], index)
        messages.append(json.dumps({"stream": f"{data['s'].lower()}@miniTicker", "data": data}))
        expected.append(expected_record(data))
        if index == 500:
            array = [payload(SYMBOLS[i % len(SYMBOLS)], 5000 + i) for i in range(50)]
            messages.append(json.dumps({"stream": "!miniTicker@arr", "data": array}))
            expected.extend(expected_record(item) for item in array)
        if index % 100 == 50:
            messages.append(MALFORMED[index // 100])
    assert len(messages) == 1000
    return messages, expected


async def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value for key, value in record.items() if key not in ("received_at", "iso_timestamp")
    }


async def run_script(
    settings: Settings, clients: AwsClients, messages: list[str], valid: int
) -> Metrics:
    metrics = Metrics("producer")
    async with ScriptedExchange(autotick=False) as exchange:
        run_settings = settings.with_overrides(
            binance_stream_url=exchange.url,
            binance_streams=[*(f"{s.lower()}@miniTicker" for s in SYMBOLS), "!miniTicker@arr"],
            dead_letter_flush_seconds=0.5,
        )
        service, _ = build_producer(run_settings, clients, metrics)
        stop = asyncio.Event()
        running = asyncio.create_task(service.run(stop))
        await exchange.wait_for_clients(1, timeout=10)
        await exchange.send_script(messages)
        await wait_for(lambda: metrics.value(Counters.MESSAGES_RECEIVED) >= len(messages), 30)
        await wait_for(lambda: service.summary().records_put >= valid, 30)
        stop.set()
        summary = await running
    assert summary.undelivered == 0
    return metrics


def read_dead_letters(clients: AwsClients, bucket: str) -> list[dict[str, Any]]:
    listing = clients.s3.list_objects_v2(Bucket=bucket, Prefix="errors/producer/")
    lines: list[dict[str, Any]] = []
    for obj in listing.get("Contents", []):
        body = clients.s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        lines.extend(json.loads(line) for line in body.splitlines())
    return lines


def test_thousand_messages_exactly_the_valid_records_in_their_shards(
    aws_settings: Settings, aws: AwsClients
) -> None:
    settings = aws_settings.with_overrides(kinesis_shard_count=4)
    provision(settings, aws)
    messages, expected = build_script()

    metrics = asyncio.run(run_script(settings, aws, messages, len(expected)))

    shards = read_stream(aws.kinesis, settings.kinesis_stream_name)
    shard_map = ShardMap.from_list_shards(
        aws.kinesis.list_shards(StreamName=settings.kinesis_stream_name)["Shards"]
    )
    got = [row for rows in shards.values() for row in rows]
    # Exactly the valid records: same multiset, nothing missing, nothing duplicated.
    assert len(got) == len(expected) == 1039
    assert Counter(json.dumps(comparable(r.record), sort_keys=True) for r in got) == Counter(
        json.dumps(record, sort_keys=True) for record in expected
    )
    # Each record sits in the shard its partition key (the symbol) hashes to.
    assert all(row.partition_key == row.record["symbol"] for row in got)
    assert all(shard_map.shard_for(row.partition_key) == row.shard_id for row in got)
    assert len([s for s, rows in shards.items() if rows]) > 1
    # Per-symbol order is the order the exchange sent them.
    by_symbol: dict[str, list[int]] = defaultdict(list)
    for rows in shards.values():
        for row in rows:
            by_symbol[row.record["symbol"]].append(row.record["event_time"])
    sent: dict[str, list[int]] = defaultdict(list)
    for record in expected:
        sent[record["symbol"]].append(record["event_time"])
    assert by_symbol == sent
    # Records are aggregated: far fewer Kinesis records than user records.
    assert all(row.aggregated for row in got)
    assert metrics.value(Counters.KINESIS_RECORDS_PUT) < 1039 / 10
    # Derived fields.
    sample = got[0].record
    assert sample["iso_timestamp"].endswith("Z") and "T" in sample["iso_timestamp"]
    assert sample["received_at"] > BASE_TIME_MS * 1000

    # The 10 malformed messages are counted and kept as dead letters with their reason.
    assert metrics.value(Counters.RECORDS_REJECTED) == 10
    letters = read_dead_letters(aws, settings.s3_bucket)
    assert len(letters) == 10
    assert sorted(letter["raw"] for letter in letters) == sorted(MALFORMED)
    assert all(letter["reason"] and letter["source"] == "producer" for letter in letters)
    assert any("JSON" in letter["reason"] for letter in letters)
