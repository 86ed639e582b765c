"""What the dashboard's JSON API answers, built from DynamoDB items, leases and metrics; pure.

DynamoDB items arrive in the low-level form (``{"N": "65000.12"}``); numbers stay decimal
strings end to end, only the browser turns them into pixels.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Final

from prometheus_client.parser import text_string_to_metric_families

from crypto_live.lake.candles import Tick
from crypto_live.lake.minute_candles import KLINE, MinuteCandle

SYMBOL_PATTERN: Final = re.compile(r"^[A-Z0-9]{1,32}$")
CONSUMED: Final = "crypto_live_records_consumed_total"
PUT: Final = "crypto_live_records_put_total"
_CENTS: Final = Decimal("0.01")
# The candles-table attributes (README "Data") of MinuteCandle's decimals, in its order.
KLINE_DECIMALS: Final = (
    "open_price",
    "close_price",
    "high_price",
    "low_price",
    "base_volume",
    "quote_volume",
)


def stream_type(symbol: str) -> str:
    """The history table's hash key for a symbol (DESIGN.md: ``<symbol lower>@miniTicker``)."""
    return f"{symbol.lower()}@miniTicker"


def _text(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    if not isinstance(value, Mapping):
        return None
    text = value.get("S", value.get("N"))
    return str(text) if text is not None else None


def _decimal(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def change_pct(close: str | None, open_24h: str | None) -> str | None:
    """24 h change in percent with two places, from the last price and the price 24 h ago."""
    last, first = _decimal(close), _decimal(open_24h)
    if last is None or first is None or first == 0:
        return None
    change = ((last - first) * 100 / first).quantize(_CENTS, rounding=ROUND_HALF_EVEN)
    return format(change, "f")


def ticker_row(item: Mapping[str, Any]) -> dict[str, Any] | None:
    """A latest-table item as a table row; None when it lacks the basics."""
    symbol, close, event_time = _text(item, "symbol"), _text(item, "close_price"), None
    raw_time = _text(item, "event_time")
    if raw_time is not None and raw_time.isdigit():
        event_time = int(raw_time)
    if symbol is None or close is None or event_time is None:
        return None
    return {
        "symbol": symbol,
        "price": close,
        "open_price": _text(item, "open_price"),
        "high_price": _text(item, "high_price"),
        "low_price": _text(item, "low_price"),
        "base_volume": _text(item, "base_volume"),
        "quote_volume": _text(item, "quote_volume"),
        "change_pct": change_pct(close, _text(item, "open_price")),
        "event_time": event_time,
    }


def ticker_rows(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = [row for row in (ticker_row(item) for item in items) if row is not None]
    return sorted(rows, key=lambda row: str(row["symbol"]))


def history_points(items: Iterable[Mapping[str, Any]]) -> list[list[Any]]:
    """``[[event_time_ms, "price"], ...]`` in time order (compact: thousands per hour)."""
    points: list[list[Any]] = []
    for item in items:
        raw_time, price = _text(item, "event_time"), _text(item, "close_price")
        if raw_time is not None and raw_time.isdigit() and price is not None:
            points.append([int(raw_time), price])
    return sorted(points, key=lambda point: int(point[0]))


def candle_ticks(items: Iterable[Mapping[str, Any]]) -> list[Tick]:
    """History items as candle ticks, ascending by event time, one per millisecond."""
    ticks: dict[int, Tick] = {}
    for item in items:
        raw_time = _text(item, "event_time")
        price = _decimal(_text(item, "close_price"))
        if raw_time is None or not raw_time.isdigit() or price is None:
            continue
        base = _decimal(_text(item, "base_volume")) or Decimal(0)
        quote = _decimal(_text(item, "quote_volume")) or Decimal(0)
        ticks[int(raw_time)] = Tick(int(raw_time), price, base, quote)
    return [ticks[when] for when in sorted(ticks)]


def kline_candle(symbol: str, item: Mapping[str, Any]) -> MinuteCandle | None:
    """A candles-table item (a closed kline) as an exact minute; None when it lacks a field."""
    values = [_decimal(_text(item, name)) for name in KLINE_DECIMALS]
    decimals = [value for value in values if value is not None]
    texts = [_text(item, name) for name in ("trades", "open_time", "close_time")]
    integers = [int(text) for text in texts if text is not None and text.isdigit()]
    if len(decimals) != len(values) or len(integers) != len(texts):
        return None
    open_, close, high, low, base, quote = decimals
    trades, open_time, close_time = integers
    return MinuteCandle(
        symbol, open_, close, high, low, base, quote, trades, open_time, close_time, KLINE
    )


def kline_candles(symbol: str, items: Iterable[Mapping[str, Any]]) -> list[MinuteCandle]:
    """Candles-table items of ``symbol`` as exact minutes, in item order (broken ones left out)."""
    return [c for c in (kline_candle(symbol, item) for item in items) if c is not None]


def candle_rows(candles: Iterable[MinuteCandle]) -> list[dict[str, Any]]:
    """Minutes as `lake candles` rows: decimals as strings, times in epoch ms, ``trades`` None
    and ``source`` ``miniticker-approximation`` where no kline was closed."""
    return [
        {
            "open_time": c.open_time,
            "open": format(c.open, "f"),
            "high": format(c.high, "f"),
            "low": format(c.low, "f"),
            "close": format(c.close, "f"),
            "base_volume": format(c.base_volume, "f"),
            "quote_volume": format(c.quote_volume, "f"),
            "trades": c.trades,
            "close_time": c.close_time,
            "source": c.source,
        }
        for c in candles
    ]


def totals_by_service(exposition: str) -> dict[str, float]:
    """From a /metrics scrape: records put by the producer, records consumed by each consumer
    service (``consumer-dynamodb``, ``consumer-s3``), by ``service`` label."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            service = sample.labels.get("service", "")
            wanted = PUT if service == "producer" else CONSUMED
            if sample.name == wanted and service:
                totals[service] = totals.get(service, 0.0) + sample.value
    return totals


class RateMeter:
    """Per-second rates of counters over a sliding window (records come in bursts, so a
    one-second difference jumps around); a counter that went back (a restarted process)
    starts its window again."""

    def __init__(self, window_seconds: float = 10.0) -> None:
        self._window = window_seconds
        self._samples: dict[str, deque[tuple[float, float]]] = {}

    def update(self, now: float, totals: Mapping[str, float]) -> dict[str, float | None]:
        rates: dict[str, float | None] = {}
        for service, total in totals.items():
            samples = self._samples.setdefault(service, deque())
            if samples and total < samples[-1][1]:
                samples.clear()
            samples.append((now, total))
            while len(samples) > 2 and now - samples[1][0] >= self._window:
                samples.popleft()
            then, before = samples[0]
            rates[service] = (total - before) / (now - then) if now > then else None
        for gone in set(self._samples) - set(totals):
            del self._samples[gone]
        return rates


def shard_row(lease: Any, now_ms: int) -> dict[str, Any]:
    """One shard of a consumer group from its lease (``consumers.engine.leases.Lease``)."""
    return {
        "shard_id": lease.shard_id,
        "owner": lease.owner,
        "checkpoint": lease.checkpoint,
        "millis_behind": lease.millis_behind,
        "heartbeat_age_ms": now_ms - lease.heartbeat_ms if lease.heartbeat_ms else None,
        "finished": lease.finished,
    }


def group_view(
    kind: str, group: str, leases: Iterable[Any], rate: float | None, now_ms: int
) -> dict[str, Any]:
    """A consumer group: its shards, the worst lag of the open ones, and records/s."""
    shards = [shard_row(lease, now_ms) for lease in leases]
    lags = [
        int(shard["millis_behind"])
        for shard in shards
        if shard["millis_behind"] is not None and not shard["finished"]
    ]
    return {
        "kind": kind,
        "group": group,
        "shards": shards,
        "max_millis_behind": max(lags) if lags else None,
        "records_per_second": rate,
    }
