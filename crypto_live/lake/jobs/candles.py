"""`lake candles`: the compacted Parquet -> 1-minute OHLCV candles per symbol and hour.

``candles_1m/symbol=BTCUSDT/date=2026-11-23/part-03.parquet``, one row per minute with updates.
An hour's inputs are the compacted files of that hour and the hour before (the symbol's last
update before the hour is the base of its first volume step), as the compaction manifest
lists them; the hour is recomputed when they changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from crypto_live.lake.arrow import pa
from crypto_live.lake.candles import Candle, Tick, build_candles
from crypto_live.lake.jobs import (
    JobProgress,
    JobResult,
    NoProgress,
    Output,
    read_parquet,
    write_outputs,
)
from crypto_live.lake.jobs.compact import JOB as COMPACT_JOB
from crypto_live.lake.layout import candles_key, hour_label, symbol_of_key
from crypto_live.lake.manifest import ManifestBook, UnitRecord, fingerprint
from crypto_live.lake.parquet import to_parquet
from crypto_live.lake.reader import DECIMAL_TYPE
from crypto_live.lake.store import PARQUET_CONTENT_TYPE, LakeStore

JOB: Final = "candles"
VERSION: Final = 1
TICK_COLUMNS: Final = ("event_time", "close_price", "base_volume", "quote_volume")
MINITICKER_PARTITION: Final = "stream=miniTicker"
_TIME_TYPE: Final = pa.timestamp("ms", tz="UTC")
# Column order as the issue lists them: pair, OHLC, volumes, updates, open and close time.
CANDLE_SCHEMA: Final = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("open", DECIMAL_TYPE, nullable=False),
        pa.field("close", DECIMAL_TYPE, nullable=False),
        pa.field("high", DECIMAL_TYPE, nullable=False),
        pa.field("low", DECIMAL_TYPE, nullable=False),
        pa.field("base_volume", DECIMAL_TYPE, nullable=False),
        pa.field("quote_volume", DECIMAL_TYPE, nullable=False),
        pa.field("updates", pa.int64(), nullable=False),
        pa.field("open_time", _TIME_TYPE, nullable=False),
        pa.field("close_time", _TIME_TYPE, nullable=False),
    ]
)


def candle_table(candles: Iterable[Candle]) -> Any:
    rows = [{name: getattr(candle, name) for name in CANDLE_SCHEMA.names} for candle in candles]
    return pa.Table.from_pylist(rows, schema=CANDLE_SCHEMA)


def candles_of(table: Any) -> list[Candle]:
    """Candles back from a candles table (times as epoch ms)."""
    data = table.cast(
        pa.schema(
            [
                pa.field(f.name, pa.int64() if f.type == _TIME_TYPE else f.type)
                for f in CANDLE_SCHEMA
            ]
        )
    ).to_pylist()
    return [Candle(**row) for row in data]


def ticks_of(table: Any) -> list[Tick]:
    columns = [table[name].to_pylist() for name in TICK_COLUMNS]
    return [Tick(*values) for values in zip(*columns, strict=True)]


def _by_symbol(unit: UnitRecord | None) -> dict[str, str]:
    """symbol -> compacted miniTicker file of an hour (other stream kinds are not tickers)."""
    if unit is None:
        return {}
    return {symbol_of_key(key): key for key in unit.outputs if f"/{MINITICKER_PARTITION}/" in key}


def _last_ticks(
    store: LakeStore, keys: Mapping[str, str], symbols: Iterable[str]
) -> dict[str, Tick]:
    last: dict[str, Tick] = {}
    for symbol in symbols:
        if symbol in keys:
            ticks = ticks_of(read_parquet(store, keys[symbol], TICK_COLUMNS))
            if ticks:
                last[symbol] = ticks[-1]
    return last


def run_candles(
    store: LakeStore, hours: Iterable[int], progress: JobProgress | None = None
) -> JobResult:
    """Candles for every hour of ``hours`` whose compacted input changed since last time."""
    hours = sorted(hours)
    progress = progress or NoProgress()
    progress.start("candles", len(hours))
    upstream = ManifestBook(store, COMPACT_JOB)
    book = ManifestBook(store, JOB)
    result = JobResult(JOB)
    carried: tuple[int, dict[str, Tick]] | None = None  # last ticks of the hour just computed
    for hour in hours:
        this, before = upstream.hour(hour), upstream.hour(hour - 1)
        inputs = fingerprint(
            JOB,
            VERSION,
            dict(this.outputs) if this else None,
            dict(before.outputs) if before else None,
        )
        done = book.hour(hour)
        nothing = done is None and not (this and this.outputs) and not (before and before.outputs)
        if nothing or (done is not None and done.inputs == inputs):
            result.skipped.append(hour_label(hour))
            progress.advance(hour_label(hour))
            continue
        files = _by_symbol(this)
        if carried is not None and carried[0] == hour - 1:
            previous = carried[1]
        else:
            previous = _last_ticks(store, _by_symbol(before), files)
        outputs: dict[str, Output] = {}
        last: dict[str, Tick] = {}
        stats = {"ticks": 0, "candles": 0}
        for symbol in sorted(files):
            ticks = ticks_of(read_parquet(store, files[symbol], TICK_COLUMNS))
            candles = build_candles(symbol, ticks, previous.get(symbol))
            stats["ticks"] += len(ticks)
            stats["candles"] += len(candles)
            if ticks:
                last[symbol] = ticks[-1]
                body = to_parquet(candle_table(candles))
                outputs[candles_key(symbol, hour)] = (body, PARQUET_CONTENT_TYPE)
        etags = write_outputs(store, outputs, done, result)
        book.record_hour(hour, UnitRecord(inputs, etags, stats))
        result.rows_in += stats["ticks"]
        result.rows_out += stats["candles"]
        carried = (hour, last)
        result.computed.append(hour_label(hour))
        progress.advance(hour_label(hour))
    return result
