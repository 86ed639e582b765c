"""Pure DynamoDB item mapping: exact numbers, TTL, dedupe, latest coalescing, chunking."""

from __future__ import annotations

from typing import Any

import pytest

from consumers.dynamodb.items import (
    LATEST_CONDITION,
    chunk,
    coalesce_latest,
    dedupe_history,
    expires_at,
    history_item,
    history_key,
)
from schemas.record import FIELD_ORDER

EVENT_TIME = 1_795_000_000_123


def ticker(symbol: str = "BTCUSDT", event_time: int = EVENT_TIME, **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_type": "24hrMiniTicker",
        "event_time": event_time,
        "stream_type": f"{symbol.lower()}@miniTicker",
        "symbol": symbol,
        "close_price": "65000.12000000",
        "open_price": "64000.00000000",
        "high_price": "65500.99999999",
        "low_price": "0.00000001",
        "base_volume": "12345678901.12345678",
        "quote_volume": "803456789012345.00000000",
        "iso_timestamp": "2026-11-18T08:26:40.123Z",
        "received_at": 1_795_000_000_123_456,
    }
    record.update(changes)
    return record


def test_history_item_keeps_every_field_with_exact_number_strings() -> None:
    item = history_item(ticker(), retention_ttl_days=1)
    assert set(item) == {*FIELD_ORDER, "expires_at"}
    assert item["close_price"] == {"N": "65000.12000000"}
    assert item["low_price"] == {"N": "0.00000001"}
    assert item["base_volume"] == {"N": "12345678901.12345678"}
    assert item["quote_volume"] == {"N": "803456789012345.00000000"}
    assert item["event_time"] == {"N": "1795000000123"}
    assert item["received_at"] == {"N": "1795000000123456"}
    assert item["symbol"] == {"S": "BTCUSDT"}
    assert item["event_type"] == {"S": "24hrMiniTicker"}
    assert history_key(item) == ("btcusdt@miniTicker", "2026-11-18T08:26:40.123Z")


@pytest.mark.parametrize(("days", "expected"), [(1, 1_795_086_400), (7, 1_795_604_800)])
def test_expires_at_is_event_seconds_plus_retention(days: int, expected: int) -> None:
    assert expires_at(EVENT_TIME, days) == expected
    assert history_item(ticker(), days)["expires_at"] == {"N": str(expected)}


def test_expires_at_truncates_milliseconds() -> None:
    assert expires_at(1_999, 1) == 1 + 86_400


def test_dedupe_keeps_the_last_item_per_key_in_shard_order() -> None:
    first = history_item(ticker(close_price="1.00000000"), 1)
    other = history_item(ticker("ETHUSDT"), 1)
    later_same_ms = history_item(ticker(close_price="2.00000000"), 1)
    next_ms = history_item(ticker(iso_timestamp="2026-11-18T08:26:40.124Z"), 1)
    result = dedupe_history([first, other, later_same_ms, next_ms])
    assert result == [other, later_same_ms, next_ms]


def test_dedupe_of_unique_items_is_identity() -> None:
    items = [history_item(ticker(f"S{i}USDT"), 1) for i in range(5)]
    assert dedupe_history(items) == items
    assert dedupe_history([]) == []


def test_coalesce_keeps_the_newest_record_per_symbol() -> None:
    records = [
        ticker("BTCUSDT", EVENT_TIME + 5, close_price="5.00000000"),
        ticker("ETHUSDT", EVENT_TIME, close_price="1.00000000"),
        ticker("BTCUSDT", EVENT_TIME + 2, close_price="2.00000000"),  # older, arrives later
        ticker("ETHUSDT", EVENT_TIME + 1, close_price="3.00000000"),
    ]
    updates = {update.symbol: update for update in coalesce_latest(records)}
    assert set(updates) == {"BTCUSDT", "ETHUSDT"}
    assert updates["BTCUSDT"].event_time == EVENT_TIME + 5
    assert updates["BTCUSDT"].attributes["close_price"] == {"N": "5.00000000"}
    assert updates["ETHUSDT"].attributes["close_price"] == {"N": "3.00000000"}


def test_coalesce_tie_goes_to_the_later_record() -> None:
    records = [ticker(close_price="1.00000000"), ticker(close_price="2.00000000")]
    (update,) = coalesce_latest(records)
    assert update.attributes["close_price"] == {"N": "2.00000000"}
    assert "expires_at" not in update.attributes  # the latest table keeps no TTL


def test_latest_request_puts_every_field_only_moving_forward() -> None:
    (update,) = coalesce_latest([ticker()])
    request = update.to_request("latest-table")
    assert set(request) == {
        "TableName",
        "Item",
        "ConditionExpression",
        "ExpressionAttributeValues",
    }
    assert request["TableName"] == "latest-table"
    assert request["Item"]["symbol"] == {"S": "BTCUSDT"}
    assert request["Item"]["close_price"] == {"N": "65000.12000000"}
    assert set(request["Item"]) == set(FIELD_ORDER)  # the whole row, no TTL
    assert request["ConditionExpression"] == LATEST_CONDITION
    assert LATEST_CONDITION == "attribute_not_exists(symbol) OR event_time < :event_time"
    assert request["ExpressionAttributeValues"] == {":event_time": {"N": str(EVENT_TIME)}}


@pytest.mark.parametrize(
    ("count", "sizes"), [(0, []), (1, [1]), (25, [25]), (26, [25, 1]), (60, [25, 25, 10])]
)
def test_chunk_in_25s(count: int, sizes: list[int]) -> None:
    items = list(range(count))
    pieces = list(chunk(items))
    assert [len(piece) for piece in pieces] == sizes
    assert [x for piece in pieces for x in piece] == items


def test_chunk_rejects_a_bad_size() -> None:
    with pytest.raises(ValueError, match="chunk size"):
        list(chunk([1], 0))
