"""The dashboard's candles: exact from the candles table where a kline closed, approximated from
the history elsewhere, as `lake candles` makes them; the book's reads, and /api/candles on moto."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest

from consumers.dynamodb.candles import candle_item
from consumers.dynamodb.items import history_item
from consumers.dynamodb.writer import DynamoDbWriter
from core.aws import AwsClients
from core.metrics import Metrics
from core.settings import Settings
from crypto_live.dashboard.candles import CandleBook
from crypto_live.dashboard.server import DashboardServer
from crypto_live.dashboard.source import DashboardSource
from crypto_live.dashboard.views import candle_rows, candle_ticks, kline_candle, kline_candles
from crypto_live.lake.candles import build_candles
from crypto_live.lake.minute_candles import MinuteCandle, approximated
from crypto_live.provision import provision
from tests.crypto_live.dashboard.test_dashboard import get_json, history_items
from tests.support.klines import kline_record
from tests.support.pipeline import ticker

MINUTE = 60_000
T0 = 1_795_392_000_000  # a whole hour


def closed_kline(symbol: str, open_time: int, n: int) -> dict[str, Any]:
    """A closed kline.avsc record; values differ per ``n`` and from any miniTicker's."""
    return kline_record(
        symbol,
        open_time,
        open_time + MINUTE,
        first_trade_id=1_000 * n,
        last_trade_id=1_000 * n + 40 + n,
        open_price=f"{200 + n}.10000000",
        close_price=f"{200 + n}.90000000",
        high_price=f"{201 + n}.00000000",
        low_price=f"{199 + n}.50000000",
        base_volume=f"{n}.12345678",
        quote_volume=f"{n * 200}.87654321",
        trades=41 + n,
        closed=True,
        taker_buy_base_volume="0.01000000",
        taker_buy_quote_volume="2.00000000",
        source="websocket",
        received_at=(open_time + MINUTE) * 1000 + 7,
    )


def kline_row(record: dict[str, Any]) -> dict[str, Any]:
    """The /api/candles row a closed kline must become: Binance's values, string for string."""
    return {
        "open_time": record["open_time"],
        "open": record["open_price"],
        "high": record["high_price"],
        "low": record["low_price"],
        "close": record["close_price"],
        "base_volume": record["base_volume"],
        "quote_volume": record["quote_volume"],
        "trades": record["trades"],
        "close_time": record["close_time"],
        "source": "kline",
    }


def as_item(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return candle_item(record)


def exact_minute(record: dict[str, Any]) -> MinuteCandle:
    """A closed kline as the dashboard reads it back from its candles-table item."""
    candle = kline_candle(record["symbol"], candle_item(record))
    assert candle is not None
    return candle


# -- pure parts --------------------------------------------------------------------------------


def test_candles_table_items_become_exact_minutes_and_rows() -> None:
    record = closed_kline("BTCUSDT", T0, 3)
    (kept,) = kline_candles("BTCUSDT", [as_item(record), {"open_time": {"N": str(T0)}}])
    assert kept == kline_candle("BTCUSDT", as_item(record))
    assert candle_rows([kept]) == [kline_row(record)]
    ticks = candle_ticks(history_items([ticker("BTCUSDT", T0 + 5_000, "100.50000000")]))
    (approx,) = candle_rows(approximated(c) for c in build_candles("BTCUSDT", ticks))
    assert approx == {
        "open_time": T0,
        "open": "100.50000000",
        "high": "100.50000000",
        "low": "100.50000000",
        "close": "100.50000000",
        "base_volume": "0",  # a symbol's first update only sets the volume base
        "quote_volume": "0",
        "trades": None,
        "close_time": T0 + MINUTE - 1,
        "source": "miniticker-approximation",
    }


def test_book_reads_klines_after_the_last_one_and_equals_lake_candles() -> None:
    """Ticks every 7 s over 23 minutes; the kline of a minute reaches the table 2 s after it
    closes, except minutes 5 and 6 (missed: they stay approximated); one kline has no ticks."""
    records = [
        {**ticker("BTCUSDT", T0 + i * 7_000, f"{100 + (i * 37) % 11}.5"), "base_volume": f"{i}"}
        for i in range(200)
    ]
    klines = [
        exact_minute(closed_kline("BTCUSDT", t, n))
        for n, t in enumerate(range(T0 - 2 * MINUTE, T0 + 23 * MINUTE, MINUTE))
        if t not in (T0 + 5 * MINUTE, T0 + 6 * MINUTE)
    ]
    kline_reads: list[tuple[int, int]] = []  # (from, how many returned)

    def read_since(since: int) -> list[dict[str, Any]]:
        return history_items([r for r in records if since <= r["event_time"] <= clock])

    def read_klines(start: int) -> list[MinuteCandle]:
        out = [k for k in klines if k.open_time >= start and k.close_time + 2_001 <= clock]
        kline_reads.append((start, len(out)))
        return out[::-1]  # any order

    book = CandleBook("BTCUSDT")
    since = T0 - 3 * MINUTE
    for clock in range(T0 + 30_000, T0 + 200 * 7_000, 45_000):  # a refresh every 45 s
        got = book.refresh(read_since, read_klines, since, clock)
        ticks = candle_ticks(read_since(0))
        expected = {c.open_time: approximated(c) for c in build_candles("BTCUSDT", ticks)}
        expected.update((k.open_time, k) for k in klines if k.close_time + 2_001 <= clock)
        assert got == [expected[when] for when in sorted(expected)], clock
    sources = {c.open_time: c.source for c in got}
    assert sources[T0 - 2 * MINUTE] == "kline"  # no ticks, still a minute
    assert sources[T0 + 5 * MINUTE] == sources[T0 + 6 * MINUTE] == "miniticker-approximation"
    assert (got[-1].open_time, got[-1].trades) == (T0 + 22 * MINUTE, None)  # its kline not in
    # One Query a refresh, from the minute after the last kline kept: each kline read once.
    assert kline_reads[0][0] == since
    assert sum(count for _, count in kline_reads) == len([c for c in got if c.source == "kline"])
    # A longer window starts the book over: everything from its first minute is read again.
    longer = book.refresh(read_since, read_klines, since - 60 * MINUTE, clock)
    assert kline_reads[-1] == (since - 60 * MINUTE, len([c for c in got if c.source == "kline"]))
    assert longer == got


# -- /api/candles on DynamoDB ------------------------------------------------------------------


class CountingDynamoDb:
    """A boto3 DynamoDB client that records the candles-table Queries it makes."""

    def __init__(self, client: Any, candles_table: str) -> None:
        self._client = client
        self._table = candles_table
        self.kline_queries: list[int] = []  # the open_time each Query started from

    def query(self, **params: Any) -> Any:
        if params["TableName"] == self._table:
            self.kline_queries.append(int(params["ExpressionAttributeValues"][":from"]["N"]))
        return self._client.query(**params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def write(
    settings: Settings, aws: AwsClients, ticks: Sequence[dict[str, Any]], klines: Any
) -> None:
    writer = DynamoDbWriter(
        aws.dynamodb,
        settings.dynamo_table_name,
        settings.dynamo_latest_table_name,
        Metrics("consumer-dynamodb"),
        candles_table=settings.dynamo_candles_table_name,
    )
    try:
        if ticks:
            writer.write_history([history_item(r, 1) for r in ticks])
        if klines:
            writer.write_candles([candle_item(r) for r in klines])
    finally:
        writer.close()


@pytest.mark.integration
def test_api_candles_are_klines_where_closed_else_approximated(
    aws_settings: Settings, aws: AwsClients
) -> None:
    provision(aws_settings, aws)
    first = (time.time_ns() // 1_000_000 // MINUTE - 10) * MINUTE  # 10 whole minutes ago
    ticks = [
        {
            **ticker("ETHUSDT", first + m * MINUTE + s * 1000, f"{100 + m}.{s:02d}000000"),
            "base_volume": f"{1000 + 3 * m + s // 20}.00000000",
            "quote_volume": f"{100000 + 300 * m + s // 20}.50000000",
        }
        for m in range(10)
        for s in (5, 25, 45)
    ]
    ticks.append(ticker("ETHUSDT", time.time_ns() // 1_000_000, "111.00000000"))  # this minute
    # Closed klines of minutes 0-9 but 3 and 7 (missed), one of minute -2 (no ticks), one
    # out of the window (4 h ago) and another symbol's.
    klines = [closed_kline("ETHUSDT", first + m * MINUTE, m) for m in range(-2, 10) if m != -1]
    klines = [k for k in klines if k["open_time"] not in (first + 3 * MINUTE, first + 7 * MINUTE)]
    outside = [
        closed_kline("ETHUSDT", first - 240 * MINUTE, 99),
        closed_kline("BTCUSDT", first + MINUTE, 98),
    ]
    write(aws_settings, aws, ticks, klines + outside)
    counting = CountingDynamoDb(aws.dynamodb, aws_settings.dynamo_candles_table_name)
    source = DashboardSource(aws_settings, counting)
    with DashboardServer(source, "127.0.0.1", 0) as dashboard:
        url = dashboard.url + "api/candles?symbol=ethusdt&hours=3"
        status, body = get_json(url)
        assert status == 200 and body["symbol"] == "ETHUSDT"
        # What `lake candles` makes of the minutes without a kline (its builder, its rows).
        lake = build_candles("ETHUSDT", candle_ticks(history_items(ticks)))
        approximations = {row["open_time"]: row for row in candle_rows(map(approximated, lake))}
        expected = {**approximations, **{k["open_time"]: kline_row(k) for k in klines}}
        assert body["candles"] == [expected[when] for when in sorted(expected)]
        exact = {k["open_time"] for k in klines}
        approximated_minutes = sorted({t["event_time"] // MINUTE * MINUTE for t in ticks} - exact)
        assert approximated_minutes[:2] == [first + 3 * MINUTE, first + 7 * MINUTE]
        assert [
            row["open_time"] for row in body["candles"] if row["source"] != "kline"
        ] == approximated_minutes
        since = (body["now_ms"] - 3 * 3_600_000) // MINUTE * MINUTE
        assert counting.kline_queries == [since]  # the first refresh: the whole window

        # The current minute's kline closes: the next refresh Queries from after the last
        # kline kept (minute 9) only, and the minute turns exact.
        closing = closed_kline("ETHUSDT", first + 10 * MINUTE, 10)
        write(aws_settings, aws, [], [closing])
        _, again = get_json(url)
        assert counting.kline_queries[1:] == [first + 10 * MINUTE]
        expected[closing["open_time"]] = kline_row(closing)
        assert again["candles"] == [expected[when] for when in sorted(expected)]


@pytest.mark.integration
def test_api_candles_without_a_candles_table_are_approximated(
    aws_settings: Settings, aws: AwsClients, caplog: pytest.LogCaptureFixture
) -> None:
    provision(aws_settings, aws)
    aws.dynamodb.delete_table(TableName=aws_settings.dynamo_candles_table_name)
    now = time.time_ns() // 1_000_000
    ticks = [ticker("ETHUSDT", now - age_s * 1000, f"{100 + age_s}.5") for age_s in (300, 120, 1)]
    write(aws_settings, aws, ticks, [])
    lake = build_candles("ETHUSDT", candle_ticks(history_items(ticks)))
    with DashboardServer(DashboardSource(aws_settings, aws.dynamodb), "127.0.0.1", 0) as dashboard:
        for _ in range(2):
            status, body = get_json(dashboard.url + "api/candles?symbol=ETHUSDT")
            assert status == 200
            assert body["candles"] == candle_rows(map(approximated, lake))
    warnings = [r.getMessage() for r in caplog.records if "no candles table" in r.getMessage()]
    assert warnings == [
        f"no candles table {aws_settings.dynamo_candles_table_name}: "
        "candles approximated from the history"
    ]
