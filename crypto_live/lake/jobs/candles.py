"""`lake candles`: 1-minute candles per symbol and hour, exact from klines where there are any.

``candles_1m/symbol=BTCUSDT/date=2026-11-23/part-03.parquet``, one row per minute that has a
closed kline or miniTicker updates (``crypto_live.lake.minute_candles``). An hour's inputs are
the raw kline folders that may hold klines opening in it (its own and ``slack`` either side:
they are filed by arrival hour) and the compacted miniTicker files of that hour and the hour
before (the symbol's last update before the hour is the base of its first volume step), as
the compaction manifest lists them; the hour is recomputed when any of them changed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from itertools import groupby
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
from crypto_live.lake.jobs.compact import DEFAULT_SLACK_HOURS
from crypto_live.lake.jobs.compact import JOB as COMPACT_JOB
from crypto_live.lake.klines import DEFAULT_KLINES_PREFIX, KLINE_FORMAT, kline_candles
from crypto_live.lake.layout import candles_key, hour_label, symbol_of_key
from crypto_live.lake.manifest import ManifestBook, UnitRecord, fingerprint
from crypto_live.lake.minute_candles import (
    APPROXIMATION,
    MinuteCandle,
    merge_minutes,
    unique_klines,
)
from crypto_live.lake.parquet import to_parquet
from crypto_live.lake.reader import DECIMAL_TYPE, FolderListings, RawHourSweep
from crypto_live.lake.store import PARQUET_CONTENT_TYPE, LakeStore

log = logging.getLogger(__name__)

JOB: Final = "candles"
VERSION: Final = 2  # 2: the columns of issue 15 (trades, source), klines win
TICK_COLUMNS: Final = ("event_time", "close_price", "base_volume", "quote_volume")
MINITICKER_PARTITION: Final = "stream=miniTicker"
# A unit's stats also count each symbol's miniTicker updates in the hour (``updates/BTCUSDT``):
# the daily report's updates column, which the candle rows do not carry.
UPDATES_STAT: Final = "updates/"
_TIME_TYPE: Final = pa.timestamp("ms", tz="UTC")
# The columns in its order: Trading Pair, Open/Close/High/Low Price, BTC (base) and
# USD (quote) Volume, Number of Trades, Candle Open/Close Time; then where the row came from.
CANDLE_SCHEMA: Final = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("open", DECIMAL_TYPE, nullable=False),
        pa.field("close", DECIMAL_TYPE, nullable=False),
        pa.field("high", DECIMAL_TYPE, nullable=False),
        pa.field("low", DECIMAL_TYPE, nullable=False),
        pa.field("base_volume", DECIMAL_TYPE, nullable=False),
        pa.field("quote_volume", DECIMAL_TYPE, nullable=False),
        pa.field("trades", pa.int64()),  # null: approximated, the number is unknown
        pa.field("open_time", _TIME_TYPE, nullable=False),
        pa.field("close_time", _TIME_TYPE, nullable=False),
        pa.field("source", pa.string(), nullable=False),  # kline | miniticker-approximation
    ]
)


def candle_table(candles: Iterable[MinuteCandle]) -> Any:
    rows = [{name: getattr(candle, name) for name in CANDLE_SCHEMA.names} for candle in candles]
    return pa.Table.from_pylist(rows, schema=CANDLE_SCHEMA)


def candles_of(table: Any) -> list[MinuteCandle]:
    """Candles back from a candles table (times as epoch ms)."""
    data = table.cast(
        pa.schema(
            [
                pa.field(f.name, pa.int64() if f.type == _TIME_TYPE else f.type, f.nullable)
                for f in CANDLE_SCHEMA
            ]
        )
    ).to_pylist()
    return [MinuteCandle(**row) for row in data]


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


def _approximations(
    store: LakeStore, files: Mapping[str, str], previous: Mapping[str, Tick]
) -> tuple[list[Candle], dict[str, Tick], dict[str, int]]:
    """The miniTicker candles of an hour's compacted files; each symbol's last tick and
    number of updates."""
    candles: list[Candle] = []
    last: dict[str, Tick] = {}
    updates: dict[str, int] = {}
    for symbol in sorted(files):
        ticks = ticks_of(read_parquet(store, files[symbol], TICK_COLUMNS))
        candles += build_candles(symbol, ticks, previous.get(symbol))
        if ticks:
            last[symbol] = ticks[-1]
            updates[symbol] = len(ticks)
    return candles, last, updates


def run_candles(
    store: LakeStore,
    hours: Iterable[int],
    progress: JobProgress | None = None,
    *,
    klines_prefix: str = DEFAULT_KLINES_PREFIX,
    slack: int = DEFAULT_SLACK_HOURS,
) -> JobResult:
    """Candles for every hour of ``hours`` whose klines or compacted input changed since last
    time; klines are read from the raw kline lake under ``klines_prefix``."""
    hours = sorted(hours)
    progress = progress or NoProgress()
    progress.start("candles", len(hours))
    upstream = ManifestBook(store, COMPACT_JOB)
    book = ManifestBook(store, JOB)
    listings = FolderListings(store, klines_prefix)
    sweep = RawHourSweep(store, listings, slack, KLINE_FORMAT)
    result = JobResult(JOB)
    carried: tuple[int, dict[str, Tick]] | None = None  # last ticks of the hour just computed
    for hour in hours:
        this, before = upstream.hour(hour), upstream.hour(hour - 1)
        listed = sweep.listed(hour)
        inputs = fingerprint(
            JOB,
            VERSION,
            dict(this.outputs) if this else None,
            dict(before.outputs) if before else None,
            klines_prefix,
            slack,
            listed,
        )
        done = book.hour(hour)
        ticked = (this and this.outputs) or (before and before.outputs)
        nothing = done is None and not ticked and not any(listed)
        if nothing or (done is not None and done.inputs == inputs):
            sweep.skip(hour)
            result.skipped.append(hour_label(hour))
            progress.advance(hour_label(hour))
            continue
        files = _by_symbol(this)
        if carried is not None and carried[0] == hour - 1:
            previous = carried[1]
        else:
            previous = _last_ticks(store, _by_symbol(before), files)
        approximations, last, updates = _approximations(store, files, previous)
        klines = sweep.rows(hour)
        unique = unique_klines(kline_candles(klines))
        if unique.conflicts:
            log.warning(
                "%s: %d klines disagree with another of their minute: kept one by value",
                hour_label(hour),
                unique.conflicts,
            )
        rows = merge_minutes(approximations, unique.klines)
        outputs: dict[str, Output] = {
            candles_key(symbol, hour): (to_parquet(candle_table(group)), PARQUET_CONTENT_TYPE)
            for symbol, group in groupby(rows, key=lambda row: row.symbol)
        }
        etags = write_outputs(store, outputs, done, result)
        approximated = sum(row.source == APPROXIMATION for row in rows)
        stats = {
            "ticks": sum(updates.values()),
            "klines": klines.num_rows,
            "kline_duplicates": unique.duplicates,
            "candles": len(rows),
            "approximated": approximated,
            **{f"{UPDATES_STAT}{symbol}": count for symbol, count in updates.items()},
        }
        book.record_hour(hour, UnitRecord(inputs, etags, stats))
        result.rows_in += stats["ticks"] + stats["klines"]
        result.rows_out += len(rows)
        result.duplicates += unique.duplicates
        carried = (hour, last)
        result.computed.append(hour_label(hour))
        progress.advance(hour_label(hour))
    result.record_sweep(sweep.counts)
    return result
