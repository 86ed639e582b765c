"""Pure mapping from closed klines to candles-table items (no I/O).

One item per (symbol, open_time): every Kline field, decimals as exact Numbers (like the history
items), plus ``iso_open_time``. No ``expires_at``: candles are small (one per symbol and minute)
and are what gap detection and the lake's exact candles read, so they are kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from consumers.dynamodb.items import attribute_values
from consumers.klines import (
    KLINE_BOOLEAN_FIELDS,
    KLINE_DECIMAL_FIELDS,
    KLINE_INTEGER_FIELDS,
    KLINE_STRING_FIELDS,
)
from schemas.record import iso_timestamp

# A low-level item whose values may be {"S": str}, {"N": str} or {"BOOL": bool}.
CandleItem = dict[str, dict[str, Any]]

CANDLES_KEY: Final = ("symbol", "open_time")
ISO_OPEN_TIME: Final = "iso_open_time"


def candle_item(record: Mapping[str, Any]) -> CandleItem:
    """The candles-table item of one closed kline; decimals stay the exact input strings."""
    item: CandleItem = dict(
        attribute_values(record, KLINE_STRING_FIELDS, KLINE_INTEGER_FIELDS, KLINE_DECIMAL_FIELDS)
    )
    for name in KLINE_BOOLEAN_FIELDS:
        item[name] = {"BOOL": bool(record[name])}
    # The minute as text (sorts as text, reads at a glance), beside the epoch-ms range key.
    item[ISO_OPEN_TIME] = {"S": iso_timestamp(int(record["open_time"]))}
    return item


def candle_key(item: Mapping[str, Mapping[str, Any]]) -> tuple[str, int]:
    """The (symbol, open_time) primary key of a candle item."""
    return str(item["symbol"]["S"]), int(item["open_time"]["N"])


def dedupe_candles(items: Iterable[CandleItem]) -> list[CandleItem]:
    """One item per key, the last in shard order (BatchWriteItem rejects duplicates); a
    replayed or backfilled kline of the same minute carries the same candle anyway."""
    by_key: dict[tuple[str, int], CandleItem] = {}
    for item in items:
        key = candle_key(item)
        by_key.pop(key, None)
        by_key[key] = item
    return list(by_key.values())


def require_unique_candles(items: Sequence[CandleItem]) -> None:
    """Duplicates in requests running side by side would make the survivor random."""
    if len({candle_key(item) for item in items}) != len(items):
        raise ValueError("candle items must have unique keys; dedupe_candles() them first")
