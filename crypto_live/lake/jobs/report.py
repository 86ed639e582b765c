"""`lake report --date D`: one CSV and one Parquet per UTC day under ``reports/``.

Folded from the day's 1-minute candles, one candle file at a time; the previous close is the
last candle close of the day before. A day already reported is skipped unless ``force``; when
its candles changed since (late data), the run says it is stale.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Final

from crypto_live.lake import LakeError
from crypto_live.lake.arrow import pa
from crypto_live.lake.jobs import (
    JobProgress,
    JobResult,
    NoProgress,
    Output,
    read_parquet,
    write_outputs,
)
from crypto_live.lake.jobs.candles import CANDLE_SCHEMA, UPDATES_STAT, candles_of
from crypto_live.lake.jobs.candles import JOB as CANDLES_JOB
from crypto_live.lake.layout import hours_of_day, report_keys, symbol_of_key
from crypto_live.lake.manifest import ManifestBook, UnitRecord, fingerprint
from crypto_live.lake.minute_candles import MinuteCandle
from crypto_live.lake.parquet import to_parquet
from crypto_live.lake.reader import DECIMAL_TYPE
from crypto_live.lake.report import COLUMNS, DailyRow, DayFold, to_csv
from crypto_live.lake.store import CSV_CONTENT_TYPE, PARQUET_CONTENT_TYPE, LakeStore

log = logging.getLogger(__name__)

JOB: Final = "report"
VERSION: Final = 1
UNIT: Final = "day"
_PERCENT_TYPE: Final = pa.decimal128(18, 4)
REPORT_SCHEMA: Final = pa.schema(
    [
        pa.field("date", pa.date32(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        *[
            pa.field(name, DECIMAL_TYPE, nullable=False)
            for name in COLUMNS[2:8]  # open, close, min, max prices; base, quote volume
        ],
        pa.field("updates", pa.int64(), nullable=False),
        pa.field("previous_close", DECIMAL_TYPE),
        pa.field("change_pct", _PERCENT_TYPE),
    ]
)


def report_table(rows: list[DailyRow]) -> Any:
    data = [
        {
            "date": row.day,
            **{name: getattr(row, name) for name in COLUMNS[1:]},
        }
        for row in rows
    ]
    return pa.Table.from_pylist(data, schema=REPORT_SCHEMA)


def _hour_files(book: ManifestBook, day: date) -> dict[str, list[str]]:
    """symbol -> the day's candle files in hour order."""
    files: dict[str, list[str]] = {}
    for hour in hours_of_day(day):
        unit = book.hour(hour)
        for key in sorted(unit.outputs) if unit else ():
            files.setdefault(symbol_of_key(key), []).append(key)
    return files


def _day_updates(book: ManifestBook, day: date) -> dict[str, int]:
    """symbol -> the day's miniTicker updates, as the candles job counted them per hour."""
    updates: dict[str, int] = {}
    for hour in hours_of_day(day):
        unit = book.hour(hour)
        for name, count in unit.stats.items() if unit else ():
            if name.startswith(UPDATES_STAT):
                symbol = name.removeprefix(UPDATES_STAT)
                updates[symbol] = updates.get(symbol, 0) + count
    return updates


def _day_inputs(book: ManifestBook, day: date) -> list[Any]:
    units = [book.hour(hour) for hour in hours_of_day(day)]
    return [dict(unit.outputs) if unit else None for unit in units] + [_day_updates(book, day)]


def _candles(store: LakeStore, key: str) -> list[MinuteCandle]:
    table = read_parquet(store, key)
    if table.schema.names != CANDLE_SCHEMA.names:  # written before the kline columns
        raise LakeError(
            f"{key} has the columns of an older `lake candles` ({', '.join(table.schema.names)}):"
            " run `lake candles` over its day again (--date D) first"
        )
    return candles_of(table)


def _previous_close(store: LakeStore, files: list[str] | None) -> Decimal | None:
    if not files:
        return None
    candles = _candles(store, files[-1])
    return candles[-1].close if candles else None


def run_report(
    store: LakeStore, day: date, force: bool = False, progress: JobProgress | None = None
) -> JobResult:
    """The report of ``day``; skipped when already written unless ``force``."""
    progress = progress or NoProgress()
    upstream = ManifestBook(store, CANDLES_JOB)
    book = ManifestBook(store, JOB)
    result = JobResult(JOB)
    previous_day = day - timedelta(days=1)
    inputs = fingerprint(
        JOB, VERSION, _day_inputs(upstream, day), _day_inputs(upstream, previous_day)
    )
    keys = report_keys(day)
    done = book.unit(day, UNIT)
    present = done is not None and all(store.etag(key) is not None for key in keys)
    if present and not force:
        result.skipped.append(day.isoformat())
        if done is not None and done.inputs != inputs:
            log.warning("report %s is older than its candles: rerun with --force", day)
            result.stale.append(day.isoformat())
        return result
    files = _hour_files(upstream, day)
    updates = _day_updates(upstream, day)
    previous = _hour_files(upstream, previous_day)
    progress.start(f"report {day}", len(files))
    rows: list[DailyRow] = []
    for symbol in sorted(files):
        fold = DayFold(day, symbol)
        for key in files[symbol]:
            candles = _candles(store, key)
            result.rows_in += len(candles)
            fold.add(candles)
        fold.add_updates(updates.get(symbol, 0))
        row = fold.row(_previous_close(store, previous.get(symbol)))
        if row is not None:
            rows.append(row)
        progress.advance(symbol)
    if not rows:
        log.warning("no candles for %s: nothing to report (run `lake candles` first?)", day)
        return result
    outputs: dict[str, Output] = {
        keys[0]: (to_csv(rows), CSV_CONTENT_TYPE),
        keys[1]: (to_parquet(report_table(rows)), PARQUET_CONTENT_TYPE),
    }
    etags = write_outputs(store, outputs, done, result)
    book.record(day, UNIT, UnitRecord(inputs, etags, {"symbols": len(rows)}))
    result.rows_out = len(rows)
    result.computed.append(day.isoformat())
    return result
