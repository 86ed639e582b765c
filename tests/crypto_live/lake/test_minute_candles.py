"""The candle rows of `lake candles`: exact klines win, repeats deduplicated, the rest marked as
the miniTicker approximation; and raw kline objects parsed exactly (pure, no I/O)."""

from __future__ import annotations

import gzip
import itertools
import json
from decimal import Decimal as D

from crypto_live.lake.candles import Candle
from crypto_live.lake.klines import KLINE_FORMAT, kline_candles, parse_klines
from crypto_live.lake.layout import MS_PER_HOUR, raw_folder
from crypto_live.lake.minute_candles import (
    APPROXIMATION,
    KLINE,
    MinuteCandle,
    merge_minutes,
    unique_klines,
)
from crypto_live.lake.reader import FolderListings, RawHourSweep
from crypto_live.lake.store import MemoryLakeStore
from tests.crypto_live.lake.kline_records import gz_lines, kline, kline_line

H = 498_611  # 2026-11-18T11:00Z as an epoch hour
T = H * MS_PER_HOUR
M = 60_000


def exact(symbol: str, minute: int, close: str, trades: int) -> MinuteCandle:
    start = T + minute * M
    return MinuteCandle(
        symbol, D("100"), D(close), D("101"), D("99"), D("2"), D("200"), trades,
        start, start + M - 1, KLINE,
    )  # fmt: skip


def approx(symbol: str, minute: int, close: str, updates: int = 7) -> Candle:
    start = T + minute * M
    return Candle(
        symbol, D("100"), D(close), D("100.5"), D("99.5"), D("0.5"), D("50"), updates,
        start, start + M - 1,
    )  # fmt: skip


def test_a_kline_wins_over_the_approximation_of_its_minute() -> None:
    approximations = [approx("BTCUSDT", 0, "100.1"), approx("BTCUSDT", 1, "100.2")]
    rows = merge_minutes(approximations, [exact("BTCUSDT", 1, "100.25", 42)])
    assert rows == [
        MinuteCandle(
            "BTCUSDT", D("100"), D("100.1"), D("100.5"), D("99.5"), D("0.5"), D("50"), None,
            T, T + M - 1, APPROXIMATION,
        ),
        exact("BTCUSDT", 1, "100.25", 42),
    ]  # fmt: skip


def test_minutes_of_either_source_are_all_kept_in_symbol_and_time_order() -> None:
    rows = merge_minutes(
        [approx("ETHUSDT", 2, "3"), approx("BTCUSDT", 3, "4")],
        [exact("BTCUSDT", 5, "5", 1), exact("ETHUSDT", 0, "6", 2), exact("BTCUSDT", 0, "7", 3)],
    )
    assert [(r.symbol, (r.open_time - T) // M, r.source) for r in rows] == [
        ("BTCUSDT", 0, KLINE),
        ("BTCUSDT", 3, APPROXIMATION),
        ("BTCUSDT", 5, KLINE),
        ("ETHUSDT", 0, KLINE),
        ("ETHUSDT", 2, APPROXIMATION),
    ]
    assert [r.trades for r in rows] == [3, None, 1, 2, None]  # never the update count


def test_repeated_klines_are_kept_once_whatever_the_order() -> None:
    klines = [
        exact("BTCUSDT", 0, "100.25", 42),
        exact("BTCUSDT", 0, "100.25", 42),  # websocket, then backfill of the same minute
        exact("BTCUSDT", 1, "100.5", 43),
        exact("ETHUSDT", 0, "3", 9),
        exact("BTCUSDT", 0, "100.25", 42),  # a replay
    ]
    results = {}
    for order in itertools.permutations(klines):
        unique = unique_klines(order)
        results[tuple(unique.klines)] = (unique.duplicates, unique.conflicts)
    assert results == {
        (
            exact("BTCUSDT", 0, "100.25", 42),
            exact("BTCUSDT", 1, "100.5", 43),
            exact("ETHUSDT", 0, "3", 9),
        ): (2, 0)
    }


def test_disagreeing_repeats_keep_the_same_one_and_are_counted() -> None:
    a, b = exact("BTCUSDT", 0, "100.25", 42), exact("BTCUSDT", 0, "100.3", 41)
    for order in ([a, b], [b, a]):
        unique = unique_klines(order)
        assert (unique.klines, unique.duplicates, unique.conflicts) == ([a], 1, 1)


# -- raw kline objects ----------------------------------------------------------------------


def test_parse_keeps_the_kline_values_exactly() -> None:
    records = [
        kline("BTCUSDT", T, ("65000.01", "65100", "64999.99999999", "65050.5"), "1.5", "97575", 42),
        kline("BTCUSDT", T + M, ("1", "1", "1", "1"), "0", "0", 0, source="backfill"),
    ]
    parsed = parse_klines(gz_lines(records))
    assert parsed.bad_lines == 0
    assert kline_candles(parsed.table) == [
        MinuteCandle(
            "BTCUSDT", D("65000.01"), D("65050.5"), D("65100"), D("64999.99999999"), D("1.5"),
            D("97575"), 42, T, T + M - 1, KLINE,
        ),
        MinuteCandle(
            "BTCUSDT", D(1), D(1), D(1), D(1), D(0), D(0), 0, T + M, T + 2 * M - 1, KLINE,
        ),
    ]  # fmt: skip
    assert str(kline_candles(parsed.table)[0].low) == "64999.99999999"


def test_lines_that_are_not_closed_one_minute_klines_are_bad_lines() -> None:
    ohlc = ("1", "2", "0.5", "1.5")
    good = kline("BTCUSDT", T, ohlc, "1", "1.5", 3)
    not_good = [
        {**good, "closed": False},
        {**good, "interval": "5m"},
        {**good, "open_time": T + 1, "close_time": T + M},  # not a whole minute
        {**good, "close_time": T + M},  # not open + 59,999
    ]
    lines = [kline_line(good), *map(kline_line, not_good)]
    fast = parse_klines(gzip.compress(b"".join(lines)))
    assert (fast.table.num_rows, fast.bad_lines) == (1, 4)
    broken = [
        b'{"not json\n',
        kline_line({**good, "trades": "3"}),  # a string where a number belongs
        kline_line({**good, "high_price": "2.123456789"}),  # 9 places
        json.dumps({k: v for k, v in good.items() if k != "trades"}).encode() + b"\n",
    ]
    slow = parse_klines(gzip.compress(b"".join(lines + broken)))  # line by line
    assert (slow.table.num_rows, slow.bad_lines) == (1, 8)
    assert kline_candles(slow.table) == kline_candles(fast.table)
    assert parse_klines(gzip.compress(b"")).table.num_rows == 0


def test_a_last_minute_filed_in_the_next_hour_belongs_to_its_open_hour() -> None:
    store = MemoryLakeStore()
    ohlc = ("1", "2", "0.5", "1.5")
    on_time = [kline("BTCUSDT", T + m * M, ohlc, "1", "1.5", m) for m in range(59)]
    last = kline("BTCUSDT", T + 59 * M, ohlc, "1", "1.5", 59)  # closes at 11:59:59.999
    next_hour = kline("BTCUSDT", T + 60 * M, ohlc, "1", "1.5", 60)
    store.put(raw_folder("klines_jsonl", H) + "a-1-0.jsonl.gz", gz_lines(on_time), "")
    store.put(raw_folder("klines_jsonl", H + 1) + "a-2-0.jsonl.gz", gz_lines([last, next_hour]), "")
    sweep = RawHourSweep(store, FolderListings(store, "klines_jsonl"), 1, KLINE_FORMAT)
    assert [c.trades for c in kline_candles(sweep.rows(H))] == list(range(60))
    assert [c.trades for c in kline_candles(sweep.rows(H + 1))] == [60]
