"""`lake candles` on moto's S3 over HTTP: raw miniTicker and kline JSONL as the S3 consumer
files them -> `lake compact`, then `crypto-live lake candles` -> exactly the expected rows."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from consumers.s3.format import JsonlGzipFormat, jsonl_line
from core.aws import AwsClients
from core.settings import Settings
from crypto_live.lake.jobs.candles import run_candles
from crypto_live.lake.jobs.compact import run_compact
from crypto_live.lake.layout import hour_label, raw_folder
from crypto_live.lake.parquet import from_parquet
from crypto_live.lake.store import S3LakeStore
from crypto_live.provision import provision
from schemas.record import iso_timestamp
from tests.crypto_live.lake.kline_records import gz_lines, kline

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MS_PER_HOUR = 3_600_000
M = 60_000
H0 = 1_795_392_000_000 // MS_PER_HOUR - 2  # 2026-11-22T22
MINUTES = 120  # two hours, 22:00-23:59
SYMBOLS = {"BTCUSDT": Decimal(65000), "ETHUSDT": Decimal(3400)}
KLINES = "klines_jsonl"  # S3_KLINES_DIR_PATH's default
KLINE_MINUTES = sorted({m for m in range(MINUTES) if m % 10 == 3} | {59, 119})


def open_ms(minute: int) -> int:
    return H0 * MS_PER_HOUR + minute * M


def price(symbol: str, minute: int) -> Decimal:
    return SYMBOLS[symbol] + minute


def ticker(symbol: str, event_time: int, close: Decimal, index: int) -> dict[str, Any]:
    """A miniTicker update; the rolling 24 h base volume grows 0.5 per update."""
    volume = Decimal(index) / 2
    return {
        "event_type": "24hrMiniTicker",
        "event_time": event_time,
        "stream_type": f"{symbol.lower()}@miniTicker",
        "symbol": symbol,
        "close_price": f"{close:.8f}",
        "open_price": "1.00000000",
        "high_price": "999999.00000000",
        "low_price": "0.50000000",
        "base_volume": f"{volume:.8f}",
        "quote_volume": f"{volume * 100:.8f}",
        "iso_timestamp": iso_timestamp(event_time),
        "received_at": event_time * 1000 + 5,
    }


def minute_kline(symbol: str, minute: int, source: str = "websocket") -> dict[str, Any]:
    p = price(symbol, minute)
    ohlc = (f"{p - 1}", f"{p + 5}", f"{p - 2}", f"{p + 1}")
    return kline(symbol, open_ms(minute), ohlc, "7.5", "750.25", 1_000 + minute, source)


def put(aws: AwsClients, bucket: str, name: str, body: bytes) -> None:
    """A raw object ``name`` + ``.jsonl.gz``, as the S3 consumer puts it."""
    aws.s3.put_object(
        Bucket=bucket,
        Key=f"{name}.jsonl.gz",
        Body=body,
        ContentType="application/x-ndjson",
        ContentEncoding="gzip",
    )


def write_lake(aws: AwsClients, bucket: str) -> None:
    """Two updates a minute per symbol (at :00 and :30), filed by event hour except each hour's
    last minute (arrived in the next hour); closed klines of some minutes, filed by the hour
    they closed in, minute 13 backfilled again an hour later and minute 23 replayed."""
    tickers: dict[int, list[dict[str, Any]]] = {}
    for symbol in SYMBOLS:
        for minute in range(MINUTES):
            late = M if minute % 60 == 59 else 0
            for half in (0, 1):
                when = open_ms(minute) + half * 30_000
                close = price(symbol, minute) + half * Decimal("0.25")
                row = ticker(symbol, when, close, 2 * minute + half)
                tickers.setdefault((when + late) // MS_PER_HOUR, []).append(row)
    for folder, rows in tickers.items():
        body = JsonlGzipFormat().compress(b"".join(jsonl_line(row) for row in rows))
        put(
            aws, bucket, f"{raw_folder('batch_jsonl', folder)}shardId-000000000000-{folder}-0", body
        )
    klines: dict[int, list[dict[str, Any]]] = {}
    for minute in KLINE_MINUTES:
        closed_in = (open_ms(minute) + M) // MS_PER_HOUR
        klines.setdefault(closed_in, []).extend(minute_kline(s, minute) for s in SYMBOLS)
    for folder, rows in klines.items():
        put(
            aws,
            bucket,
            f"{raw_folder(KLINES, folder)}shardId-000000000001-{folder}-0",
            gz_lines(rows),
        )
    backfilled = [minute_kline(symbol, 13, "backfill") for symbol in SYMBOLS]
    put(aws, bucket, f"{raw_folder(KLINES, H0 + 1)}shardId-000000000002-7-0", gz_lines(backfilled))
    replayed = [minute_kline(symbol, 23) for symbol in SYMBOLS]
    put(aws, bucket, f"{raw_folder(KLINES, H0)}shardId-000000000003-8-0", gz_lines(replayed))


def expected_rows() -> list[dict[str, Any]]:
    """Worked out from the inputs, by hand: a kline minute is the kline; any other minute opens
    at :00's price and closes 0.25 higher at :30, two volume steps of 0.5 (the very first
    update of a symbol only sets the base), its number of trades unknown."""
    rows = []
    for symbol in sorted(SYMBOLS):
        for minute in range(MINUTES):
            p, start = price(symbol, minute), open_ms(minute)
            times = {
                "open_time": datetime.fromtimestamp(start / 1000, UTC),
                "close_time": datetime.fromtimestamp((start + M - 1) / 1000, UTC),
            }
            if minute in KLINE_MINUTES:
                values = (p - 1, p + 1, p + 5, p - 2, Decimal("7.5"), Decimal("750.25"))
                trades, source = 1_000 + minute, "kline"
            else:
                base = Decimal("0.5") if minute == 0 else Decimal(1)
                values = (p, p + Decimal("0.25"), p + Decimal("0.25"), p, base, base * 100)
                trades, source = None, "miniticker-approximation"
            names = ("open", "close", "high", "low", "base_volume", "quote_volume")
            rows.append(
                {"symbol": symbol, **dict(zip(names, values, strict=True)), "trades": trades}
                | times
                | {"source": source}
            )
    return rows


def candle_rows(store: S3LakeStore) -> list[dict[str, Any]]:
    rows = []
    for info in sorted(store.list("candles_1m/"), key=lambda info: info.key):
        rows.extend(from_parquet(store.get(info.key) or b"").to_pylist())
    return rows


def test_candles_of_raw_minitickers_and_klines_are_exactly_the_expected_rows(
    aws_settings: Settings, aws: AwsClients
) -> None:
    provision(aws_settings, aws)
    bucket = aws_settings.s3_bucket
    write_lake(aws, bucket)
    store = S3LakeStore(aws.s3, bucket)
    hours = range(H0, H0 + 3)
    assert run_compact(store, "batch_jsonl", hours).rows_out == 2 * MINUTES * len(SYMBOLS)
    start, end = hour_label(H0), hour_label(H0 + 3)
    command = [sys.executable, "-m", "crypto_live.cli", "lake", "candles", "--from", start]
    command += ["--to", end, "--no-progress", "--endpoint-url", aws_settings.aws_endpoint_url or ""]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    rows_in = 2 * MINUTES * len(SYMBOLS) + (len(KLINE_MINUTES) + 2) * len(SYMBOLS)
    rows_out = MINUTES * len(SYMBOLS)
    assert f"{rows_in:,} rows in, {rows_out:,} rows out" in done.stdout
    assert f"{2 * len(SYMBOLS)} duplicates dropped" in done.stdout

    assert candle_rows(store) == expected_rows()
    keys = sorted(info.key for info in store.list("candles_1m/"))
    assert keys == [
        f"candles_1m/symbol={symbol}/date={day}/part-{hour}.parquet"
        for symbol in sorted(SYMBOLS)
        for day, hour in (("2026-11-22", "22"), ("2026-11-22", "23"))
    ]
    again = run_candles(store, hours)  # same input: nothing recomputed or written
    assert (again.computed, again.written) == ([], 0)
