"""`lake candles` with klines on an in-memory store: the known day of test_jobs plus klines,
some repeated (websocket then backfill), one filed in the next hour's folder."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest

from crypto_live.lake import LakeError
from crypto_live.lake.arrow import pa
from crypto_live.lake.jobs.candles import candles_of, run_candles
from crypto_live.lake.jobs.compact import run_compact
from crypto_live.lake.jobs.report import run_report
from crypto_live.lake.layout import candles_key, raw_folder, report_keys
from crypto_live.lake.minute_candles import APPROXIMATION, KLINE, MinuteCandle
from crypto_live.lake.parquet import from_parquet, to_parquet
from crypto_live.lake.store import MemoryLakeStore
from tests.crypto_live.lake.kline_records import gz_lines, kline
from tests.crypto_live.lake.test_jobs import DAY, HD, HOURS, MIDNIGHT, RAW, at, known_lake

KLINES = "klines_jsonl"
M = 60_000
UTC_MS = pa.timestamp("ms", tz="UTC")
DEC = pa.decimal128(38, 8)


def put_klines(store: MemoryLakeStore, folder: int, name: str, rows: list[dict[str, Any]]) -> None:
    store.put(f"{raw_folder(KLINES, folder)}{name}.jsonl.gz", gz_lines(rows), "")


ETH_00 = kline("ETHUSDT", at("00:00:00"), ("3499", "3520", "3498.5", "3512"), "7.25", "25400", 61)
ETH_59 = kline("ETHUSDT", at("00:59:00"), ("3511", "3513", "3509", "3510"), "0.5", "1755.5", 4)
SOL_05 = kline("SOLUSDT", at("00:05:00"), ("150", "151", "149", "150.5"), "10", "1502", 12)


def lake_with_klines() -> MemoryLakeStore:
    store = known_lake()
    put_klines(store, HD, "shardId-000000000002-1-0", [ETH_00, SOL_05])
    put_klines(store, HD + 1, "shardId-000000000002-2-0", [ETH_59])  # closed after 01:00
    backfill = {**ETH_00, "source": "backfill", "first_trade_id": -1, "last_trade_id": -1}
    put_klines(store, HD + 1, "shardId-000000000002-3-0", [backfill])  # the same minute again
    return store


def run_all(store: MemoryLakeStore) -> list[Any]:
    return [
        run_compact(store, RAW, range(HD - 1, HD)),
        run_compact(store, RAW, HOURS),
        run_candles(store, range(HD - 1, HD), klines_prefix=KLINES),
        run_candles(store, HOURS, klines_prefix=KLINES),
        run_report(store, DAY),
    ]


def rows_of(store: MemoryLakeStore, symbol: str, hour: int) -> list[MinuteCandle]:
    return candles_of(from_parquet(store.objects[candles_key(symbol, hour)]))


def test_klines_win_and_the_rest_is_marked_approximated() -> None:
    store = lake_with_klines()
    candles = run_all(store)[3]
    eth = rows_of(store, "ETHUSDT", HD)
    assert eth == [
        MinuteCandle(
            "ETHUSDT", D("3499"), D("3512"), D("3520"), D("3498.5"), D("7.25"), D("25400"), 61,
            MIDNIGHT, MIDNIGHT + M - 1, KLINE,
        ),  # not the approximation of 00:00 (3500 .. 3510, 2.5 / 8765)
        MinuteCandle(
            "ETHUSDT", D("3480"), D("3480"), D("3480"), D("3480"), D("0"), D("0"), None,
            MIDNIGHT + M, MIDNIGHT + 2 * M - 1, APPROXIMATION,
        ),
        MinuteCandle(
            "ETHUSDT", D("3511"), D("3510"), D("3513"), D("3509"), D("0.5"), D("1755.5"), 4,
            MIDNIGHT + 59 * M, MIDNIGHT + 60 * M - 1, KLINE,
        ),  # filed under 01:00, a candle of 00:59
    ]  # fmt: skip
    assert [(c.open_time - MIDNIGHT, c.source) for c in rows_of(store, "SOLUSDT", HD)] == [
        (5 * M, KLINE)  # a symbol with klines and no miniTicker updates
    ]
    assert [c.source for c in rows_of(store, "BTCUSDT", HD)] == [APPROXIMATION]
    assert candles.duplicates == 1  # the backfilled 00:00
    assert candles.rows_out == 3 + 1 + 1 + 1 + 1 + 1  # ETH 00 (3), SOL, BTC, ETH 01, 23, 23
    assert candles.objects_read == 3


def test_the_candle_file_has_exactly_the_issues_columns_and_a_source() -> None:
    store = lake_with_klines()
    run_all(store)
    schema = from_parquet(store.objects[candles_key("ETHUSDT", HD)]).schema
    assert [(f.name, f.type, f.nullable) for f in schema] == [
        ("symbol", pa.string(), False),  # Trading Pair
        ("open", DEC, False),  # Open Price
        ("close", DEC, False),  # Close Price
        ("high", DEC, False),  # High Price
        ("low", DEC, False),  # Low Price
        ("base_volume", DEC, False),  # BTC Volume
        ("quote_volume", DEC, False),  # USD Volume
        ("trades", pa.int64(), True),  # Number of Trades (null when approximated)
        ("open_time", UTC_MS, False),  # Candle Open Time
        ("close_time", UTC_MS, False),  # Candle Close Time
        ("source", pa.string(), False),  # kline | miniticker-approximation
    ]


def test_the_report_folds_exact_candles_and_still_counts_updates() -> None:
    store = lake_with_klines()
    run_all(store)
    csv = store.objects[report_keys(DAY)[0]].decode().splitlines()
    # ETH opens at the 00:00 kline's open; its volumes take the klines' instead of the
    # approximation of 00:00 (base 4 - 2.5 + 7.25 + 0.5 of 00:59, quote 14305.5 - 8765 + 25400
    # + 1755.5); the max stays 01:30's 3525.25 (the kline's high is 3520); updates are the
    # day's six miniTicker updates, as without klines.
    assert csv[2] == (
        "2026-11-23,ETHUSDT,3499.00000000,3490.00000000,3480.00000000,3525.25000000,"
        "9.25000000,32696.00000000,6,3400.00000000,2.6471"
    )
    assert csv[3].startswith("2026-11-23,SOLUSDT,150.00000000,150.50000000,149.00000000,")
    assert csv[3].endswith(",10.00000000,1502.00000000,0,,")


def test_rerunning_changes_nothing_and_a_late_kline_redoes_only_its_hours() -> None:
    store = lake_with_klines()
    run_all(store)
    snapshot, puts = dict(store.objects), store.puts
    assert all(not result.computed for result in run_all(store)[:4])
    assert (store.objects, store.puts) == (snapshot, puts)

    late = kline("BTCUSDT", at("02:10:00"), ("65000", "65001", "64999", "65000.5"), "1", "65000", 9)
    put_klines(store, HD + 3, "shardId-000000000002-9-0", [late])  # backfilled an hour later
    again = run_candles(store, HOURS, klines_prefix=KLINES)
    assert again.computed == ["2026-11-23T02", "2026-11-23T03", "2026-11-23T04"]
    assert rows_of(store, "BTCUSDT", HD + 2)[0].trades == 9
    assert candles_key("BTCUSDT", HD + 3) not in store.objects  # hours 03, 04: no candles
    assert run_candles(store, HOURS, klines_prefix=KLINES).computed == []


def test_a_report_over_candles_of_the_old_format_says_what_to_run() -> None:
    store = lake_with_klines()
    run_all(store)
    key = candles_key("ETHUSDT", HD)
    old = from_parquet(store.objects[key]).drop_columns(["trades", "source"])
    store.put(key, to_parquet(old.append_column("updates", pa.array([2, 1, 0]))), "")
    with pytest.raises(LakeError, match=r"older `lake candles` .*--date D"):
        run_report(store, DAY, force=True)
