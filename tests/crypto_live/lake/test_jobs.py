"""compact -> candles -> report on an in-memory store: a known day, worked out by hand."""

from __future__ import annotations

import time
from datetime import date
from decimal import Decimal as D
from typing import Any

from consumers.s3.format import JsonlGzipFormat, jsonl_line
from crypto_live.lake.jobs.candles import candles_of, run_candles
from crypto_live.lake.jobs.compact import run_compact
from crypto_live.lake.jobs.report import run_report
from crypto_live.lake.layout import compacted_key, hours_of_day, raw_folder, report_keys
from crypto_live.lake.parquet import from_parquet
from crypto_live.lake.store import MemoryLakeStore

DAY = date(2026, 11, 23)
HOURS = hours_of_day(DAY)
HD = HOURS[0]  # 2026-11-23T00 as an epoch hour
MIDNIGHT = HD * 3_600_000
RAW = "batch_jsonl"


def at(clock: str) -> int:
    """Epoch ms of ``HH:MM:SS[.mmm]`` on DAY; ``-HH:MM:SS`` is before midnight."""
    sign = -1 if clock.startswith("-") else 1
    hours, minutes, seconds = clock.lstrip("-").split(":")
    ms = (int(hours) * 3600 + int(minutes) * 60) * 1000 + round(float(seconds) * 1000)
    return MIDNIGHT + sign * ms


def tick(symbol: str, clock: str, price: str, base: str, quote: str) -> dict[str, Any]:
    event_time = at(clock)
    seconds, millis = divmod(event_time, 1000)
    return {
        "event_type": "24hrMiniTicker",
        "event_time": event_time,
        "stream_type": f"{symbol.lower()}@miniTicker",
        "symbol": symbol,
        "close_price": f"{D(price):.8f}",
        "open_price": "1.00000000",
        "high_price": "99999.00000000",
        "low_price": "0.10000000",
        "base_volume": f"{D(base):.8f}",
        "quote_volume": f"{D(quote):.8f}",
        "iso_timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        + f".{millis:03d}Z",
        "received_at": event_time * 1000 + 3,
    }


def put_raw(store: MemoryLakeStore, folder: int, name: str, records: list[dict[str, Any]]) -> None:
    body = JsonlGzipFormat().compress(b"".join(jsonl_line(r) for r in records))
    store.put(f"{raw_folder(RAW, folder)}{name}.jsonl.gz", body, "application/x-ndjson")


ETH = [
    tick("ETHUSDT", "-00:00:30", "3400", "100", "340000"),  # the day before: its close
    tick("ETHUSDT", "00:00:10", "3500", "101", "343500"),  # +1 / +3500
    tick("ETHUSDT", "00:00:40", "3510", "102.5", "348765"),  # +1.5 / +5265
    tick("ETHUSDT", "00:01:05", "3480", "102", "348000"),  # 24 h total fell (roll): 0 / 0
    tick("ETHUSDT", "01:30:00", "3525.25", "103", "351525.25"),  # +1 / +3525.25
    tick("ETHUSDT", "23:10:00", "3495", "103.5", "353000"),  # no update in 22:xx: base only
    tick("ETHUSDT", "23:59:59.999", "3490", "104", "355015.25"),  # +0.5 / +2015.25
]
BTC = [
    tick("BTCUSDT", "00:30:00", "65000", "10", "650000"),
    tick("BTCUSDT", "00:30:30", "65100.5", "10.5", "682550.25"),  # +0.5 / +32550.25
]


def known_lake() -> MemoryLakeStore:
    """The records spread over folders as the S3 consumer may file them (by arrival hour)."""
    store = MemoryLakeStore()
    put_raw(store, HD - 1, "shardId-000000000000-1-0", ETH[:2])  # 00:00:10 arrived "early"
    put_raw(store, HD, "shardId-000000000000-2-0", [ETH[2], ETH[3], *BTC])
    put_raw(store, HD, "shardId-000000000001-3-0", [ETH[2]])  # a producer retry: duplicate
    put_raw(store, HD + 1, "shardId-000000000000-4-0", [ETH[4]])
    put_raw(store, HD + 23, "shardId-000000000000-5-0", [ETH[5]])
    put_raw(store, HD + 24, "shardId-000000000000-6-0", [ETH[6]])  # late: next day's folder
    return store


EXPECTED_CSV = (
    "date,symbol,open_price,close_price,min_price,max_price,base_volume,quote_volume,"
    "updates,previous_close,change_pct\n"
    "2026-11-23,BTCUSDT,65000.00000000,65100.50000000,65000.00000000,65100.50000000,"
    "0.50000000,32550.25000000,2,,\n"
    # (3490 - 3400) / 3400 * 100 = 2.64705...
    "2026-11-23,ETHUSDT,3500.00000000,3490.00000000,3480.00000000,3525.25000000,"
    "4.00000000,14305.50000000,6,3400.00000000,2.6471\n"
)


def run_all(store: MemoryLakeStore, force: bool = False) -> list[Any]:
    previous = range(HD - 1, HD)
    return [
        run_compact(store, RAW, previous),
        run_compact(store, RAW, HOURS),
        run_candles(store, previous),
        run_candles(store, HOURS),
        run_report(store, DAY, force=force),
    ]


def test_a_known_day_by_hand() -> None:
    store = known_lake()
    compact_before, compact, *_, report = run_all(store)
    assert (compact_before.rows_out, compact.rows_out) == (1, 8)
    assert compact.duplicates == 1
    key = report_keys(DAY)[0]
    assert store.objects[key].decode() == EXPECTED_CSV
    assert report.computed == ["2026-11-23"]
    table = from_parquet(store.objects[report_keys(DAY)[1]])
    eth = table.to_pylist()[1]
    assert eth["change_pct"] == D("2.6471")
    assert eth["base_volume"] == D("4")
    assert eth["date"] == DAY


def test_candles_of_the_first_hour_by_hand() -> None:
    store = known_lake()
    run_all(store)
    key = "candles_1m/symbol=ETHUSDT/date=2026-11-23/part-00.parquet"
    eth = candles_of(from_parquet(store.objects[key]))
    ohlcv = [
        (c.open, c.close, c.high, c.low, c.base_volume, c.quote_volume, c.trades, c.source)
        for c in eth
    ]
    approximated = "miniticker-approximation"
    assert ohlcv == [  # no klines in this lake: every minute approximated, trades unknown
        (D("3500"), D("3510"), D("3510"), D("3500"), D("2.5"), D("8765"), None, approximated),
        (D("3480"), D("3480"), D("3480"), D("3480"), D("0"), D("0"), None, approximated),
    ]
    assert [(c.open_time - MIDNIGHT, c.close_time - MIDNIGHT) for c in eth] == [
        (0, 59_999),
        (60_000, 119_999),
    ]


def test_compacted_rows_equal_the_raw_records() -> None:
    store = known_lake()
    run_compact(store, RAW, HOURS)
    table = from_parquet(store.objects[compacted_key("ethusdt@miniTicker", "ETHUSDT", HD)])
    rows = [
        {k: f"{v:f}" if isinstance(v, D) else v for k, v in row.items()}
        for row in table.to_pylist()
    ]
    assert rows == ETH[1:4]


def test_rerunning_changes_nothing() -> None:
    store = known_lake()
    run_all(store)
    snapshot, puts = dict(store.objects), store.puts
    results = run_all(store) + run_all(store, force=True)
    assert store.objects == snapshot
    assert store.puts == puts
    assert all(not r.computed for r in results[:4])
    assert results[-1].computed == ["2026-11-23"]  # forced: recomputed, same bytes, not written
    assert results[-1].unchanged == 2


def test_late_data_recomputes_only_the_hours_it_touches() -> None:
    store = known_lake()
    run_all(store)
    late = tick("ETHUSDT", "00:59:00", "3600", "102.25", "348900")  # +0.25 / +900 after 00:01:05
    put_raw(store, HD + 1, "shardId-000000000001-9-0", [late])
    compact = run_compact(store, RAW, HOURS)
    assert compact.computed == ["2026-11-23T00", "2026-11-23T01", "2026-11-23T02"]
    assert len(compact.skipped) == 21
    candles = run_candles(store, HOURS)
    assert candles.computed == ["2026-11-23T00", "2026-11-23T01"]  # 02 has no data either side
    report = run_report(store, DAY)
    assert report.skipped == ["2026-11-23"] and report.stale == ["2026-11-23"]
    assert run_report(store, DAY, force=True).computed == ["2026-11-23"]
    csv = store.objects[report_keys(DAY)[0]].decode()
    # max 3600 now; the late update adds +0.25 / +900, and 01:30's step starts from it (+0.75).
    assert "3480.00000000,3600.00000000,4.00000000,14305.50000000,7,3400.00000000" in csv


def test_outputs_a_recomputed_hour_no_longer_has_are_deleted() -> None:
    store = known_lake()
    run_compact(store, RAW, HOURS)
    btc = compacted_key("btcusdt@miniTicker", "BTCUSDT", HD)
    assert btc in store.objects
    put_raw(store, HD, "shardId-000000000000-2-0", [ETH[2], ETH[3]])  # BTC rows rewritten away
    result = run_compact(store, RAW, HOURS)
    assert btc not in store.objects
    assert result.deleted == 1
