"""Raw lake objects into Arrow, deduplication, the hour sweep, and the lake's key layout."""

from __future__ import annotations

import gzip
import itertools
import json
import time
from datetime import UTC, date, datetime
from typing import Any

import pytest

from consumers.engine.records import Position
from consumers.s3.batching import Batch
from consumers.s3.format import JsonlGzipFormat, jsonl_line
from consumers.s3.keys import partition_path
from crypto_live.lake import LakeError
from crypto_live.lake.layout import (
    MS_PER_HOUR,
    candles_key,
    compacted_key,
    hour_of,
    hour_range,
    manifest_key,
    raw_folder,
    report_keys,
)
from crypto_live.lake.reader import (
    FolderListings,
    RawHourSweep,
    dedupe,
    parse_raw,
    split_by_stream,
)
from crypto_live.lake.store import MemoryLakeStore
from schemas.record import FIELD_ORDER

H = 498_611  # 2026-11-18T11:00Z as an epoch hour


def record(
    symbol: str, event_time: int, price: str = "65000.12000000", **extra: Any
) -> dict[str, Any]:
    seconds, millis = divmod(event_time, 1000)
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
    fields = {
        "event_type": "24hrMiniTicker",
        "event_time": event_time,
        "stream_type": f"{symbol.lower()}@miniTicker",
        "symbol": symbol,
        "close_price": price,
        "open_price": "64000.00000000",
        "high_price": "66000.00000000",
        "low_price": "0.00000001",
        "base_volume": "12345678901234.12345678",
        "quote_volume": "0.00000000",
        "iso_timestamp": iso,
        "received_at": event_time * 1000 + 7,
    }
    fields.update(extra)
    return fields


def gz(records: list[dict[str, Any]]) -> bytes:
    return JsonlGzipFormat().compress(b"".join(jsonl_line(r) for r in records))


def test_parse_keeps_every_field_exactly() -> None:
    records = [record("BTCUSDT", H * MS_PER_HOUR + i) for i in range(3)]
    parsed = parse_raw(gz(records))
    assert parsed.bad_lines == 0
    assert parsed.table.column_names == list(FIELD_ORDER)
    back = [
        {k: format(v, "f") if k.endswith(("price", "volume")) else v for k, v in row.items()}
        for row in parsed.table.to_pylist()
    ]
    assert back == records


def test_broken_lines_are_left_out_and_counted() -> None:
    good = record("BTCUSDT", H * MS_PER_HOUR)
    lines = [
        jsonl_line(good),
        b'{"not json\n',
        jsonl_line(record("BTCUSDT", H * MS_PER_HOUR + 1, price="1.123456789")),  # 9 places
        jsonl_line(record("BTCUSDT", H * MS_PER_HOUR + 3, price="1" * 31)),  # > decimal(38, 8)
        jsonl_line(record("BTCUSDT", H * MS_PER_HOUR + 4, price="NaN")),
        jsonl_line({**good, "event_time": "123"}),  # a string where a number belongs
        b'{"event_type": "24hrMiniTicker"}\n',  # fields missing
        jsonl_line(record("ETHUSDT", H * MS_PER_HOUR + 2)),
    ]
    parsed = parse_raw(gzip.compress(b"".join(lines)))
    assert parsed.bad_lines == 6
    assert parsed.table["symbol"].to_pylist() == ["BTCUSDT", "ETHUSDT"]


def test_missing_fields_are_bad_lines_on_the_fast_path_too() -> None:
    good = record("BTCUSDT", H * MS_PER_HOUR)
    partial = {k: v for k, v in good.items() if k != "received_at"}
    parsed = parse_raw(gzip.compress(jsonl_line(good) + json.dumps(partial).encode() + b"\n"))
    assert (parsed.table.num_rows, parsed.bad_lines) == (1, 1)


def test_empty_object() -> None:
    assert parse_raw(gzip.compress(b"")).table.num_rows == 0


def test_dedupe_keeps_one_per_key_whatever_the_order() -> None:
    base = H * MS_PER_HOUR
    rows = [
        record("BTCUSDT", base + 1),
        record("BTCUSDT", base + 1),  # a producer retry
        record("BTCUSDT", base + 1, received_at=1),  # same key, other content
        record("ETHUSDT", base + 1),
        record("BTCUSDT", base),
    ]
    survivors = set()
    for order in itertools.permutations(rows):
        table, dropped = dedupe(parse_raw(gz(list(order))).table)
        assert dropped == 2
        survivors.add(tuple(map(str, table.to_pylist())))
    assert len(survivors) == 1
    (table_rows,) = survivors
    assert len(table_rows) == 3
    parts = list(split_by_stream(dedupe(parse_raw(gz(rows)).table)[0]))
    assert [(s, sym, p.num_rows) for s, sym, p in parts] == [
        ("btcusdt@miniTicker", "BTCUSDT", 2),
        ("ethusdt@miniTicker", "ETHUSDT", 1),
    ]


class CountingStore(MemoryLakeStore):
    def __init__(self) -> None:
        super().__init__()
        self.gets: list[str] = []

    def get(self, key: str) -> bytes | None:
        self.gets.append(key)
        return super().get(key)


def test_sweep_gathers_an_hour_from_neighbour_folders_reading_each_once() -> None:
    store = CountingStore()
    base = H * MS_PER_HOUR

    def put(folder: int, name: str, times: list[int]) -> None:
        store.put(raw_folder("raw", folder) + name, gz([record("BTCUSDT", t) for t in times]), "")

    put(H - 1, "a.jsonl.gz", [base - 10, base + 1])  # one event of H arrived early (clock skew)
    put(H, "b.jsonl.gz", [base + 2, base + 3])
    put(H + 1, "c.jsonl.gz", [base + 4, base + MS_PER_HOUR])  # a late event of H
    put(H + 1, "ignored.txt", [])
    put(H + 2, "d.jsonl.gz", [base + MS_PER_HOUR + 5, base - 5 * MS_PER_HOUR])  # 7 h off: stray
    sweep = RawHourSweep(store, FolderListings(store, "raw"), slack=1)
    got = {h: sweep.rows(h)["event_time"].to_pylist() for h in (H, H + 1)}
    assert got[H] == [base + 1, base + 2, base + 3, base + 4]
    assert got[H + 1] == [base + MS_PER_HOUR, base + MS_PER_HOUR + 5]
    assert sweep.counts.stray_rows == 1
    assert sorted(store.gets) == sorted(set(store.gets))  # every object read once
    assert not any(k.endswith(".txt") for k in store.gets)
    with pytest.raises(ValueError, match="ascend"):
        sweep.rows(H)


def test_sweep_skip_drops_what_it_kept_for_that_hour() -> None:
    store = CountingStore()
    base = H * MS_PER_HOUR
    first = [record("X", base), record("X", base + MS_PER_HOUR)]
    store.put(raw_folder("raw", H) + "a.jsonl.gz", gz(first), "")
    store.put(
        raw_folder("raw", H + 2) + "b.jsonl.gz", gz([record("X", base + 2 * MS_PER_HOUR)]), ""
    )
    sweep = RawHourSweep(store, FolderListings(store, "raw"), slack=1)
    assert sweep.rows(H).num_rows == 1
    sweep.skip(H + 1)
    assert sweep.rows(H + 2)["event_time"].to_pylist() == [base + 2 * MS_PER_HOUR]
    assert sweep.rows(H + 3).num_rows == 0  # H + 2's rows belong to H + 2, not H + 3


def test_raw_folder_is_where_the_s3_consumer_writes() -> None:
    arrival = datetime(2026, 11, 18, 11, 59, 59, tzinfo=UTC)
    batch = Batch("shardId-000000000000", (), (), Position(1, 0), Position(1, 0), arrival, 0, 0, 0)
    assert raw_folder("batch_jsonl", hour_of(arrival)) == partition_path("batch_jsonl", batch) + "/"
    assert raw_folder("batch_jsonl", H) == "batch_jsonl/year=2026/month=11/day=18/hour=11/"


def test_output_keys() -> None:
    assert compacted_key("btcusdt@miniTicker", "BTCUSDT", H) == (
        "parquet/stream=miniTicker/symbol=BTCUSDT/date=2026-11-18/part-11.parquet"
    )
    assert candles_key("BTCUSDT", H) == "candles_1m/symbol=BTCUSDT/date=2026-11-18/part-11.parquet"
    assert report_keys(date(2026, 11, 18)) == (
        "reports/csv/date=2026-11-18/daily-report-2026-11-18.csv",
        "reports/parquet/date=2026-11-18/daily-report-2026-11-18.parquet",
    )
    assert (
        manifest_key("compact", date(2026, 11, 18)) == "meta/manifests/compact/date=2026-11-18.json"
    )
    with pytest.raises(LakeError, match="partition value"):
        compacted_key("btc/../usdt@miniTicker", "BTC/../USDT", H)


def test_hour_ranges() -> None:
    now = datetime(2026, 11, 18, 11, 25, tzinfo=UTC)
    assert hour_range(None, None, None, now, 24) == range(H - 23, H + 1)
    assert hour_range(None, None, "2026-11-18", now, 24) == range(H - 11, H + 13)
    assert hour_range("2026-11-18T09", "2026-11-18T11:00:00Z", None, now, 24) == range(H - 2, H)
    assert hour_range("2026-11-18T10:30:00+00:00", None, None, now, 24) == range(H - 1, H + 1)
    with pytest.raises(LakeError, match="either"):
        hour_range("2026-11-18", None, "2026-11-18", now, 24)
    with pytest.raises(LakeError, match="empty"):
        hour_range("2026-11-18T11", "2026-11-18T11", None, now, 24)
    with pytest.raises(LakeError, match="invalid time"):
        hour_range("yesterday", None, None, now, 24)
