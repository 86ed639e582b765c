"""`lake compact`: raw JSONL.gz -> Snappy Parquet per stream, symbol and event hour.

``parquet/stream=miniTicker/symbol=BTCUSDT/date=2026-11-23/part-03.parquet`` holds the
symbol's events of 03:00-03:59 UTC, deduplicated on (stream_type, event_time) and sorted by
event time, every field exactly as in the raw record (decimals as decimal128(38, 8)).
An hour is recomputed when the raw folders that may hold its events (its own and ``slack``
either side) changed since it was last compacted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final

from crypto_live.lake.jobs import JobProgress, JobResult, NoProgress, Output, write_outputs
from crypto_live.lake.layout import compacted_key, hour_label
from crypto_live.lake.manifest import ManifestBook, UnitRecord, fingerprint
from crypto_live.lake.parquet import to_parquet
from crypto_live.lake.reader import FolderListings, RawHourSweep, dedupe, split_by_stream
from crypto_live.lake.store import PARQUET_CONTENT_TYPE, LakeStore

log = logging.getLogger(__name__)

JOB: Final = "compact"
VERSION: Final = 1  # bump when the output changes for the same input: every hour recomputes
DEFAULT_SLACK_HOURS: Final = 1


def run_compact(
    store: LakeStore,
    raw_prefix: str,
    hours: Iterable[int],
    slack: int = DEFAULT_SLACK_HOURS,
    progress: JobProgress | None = None,
) -> JobResult:
    """Compact every hour of ``hours`` (ascending) whose raw input changed since last time."""
    hours = sorted(hours)
    progress = progress or NoProgress()
    progress.start("compact", len(hours))
    listings = FolderListings(store, raw_prefix)
    sweep = RawHourSweep(store, listings, slack)
    book = ManifestBook(store, JOB)
    result = JobResult(JOB)
    for hour in hours:
        listed = sweep.listed(hour)
        inputs = fingerprint(JOB, VERSION, raw_prefix, slack, listed)
        done = book.hour(hour)
        nothing = done is None and not any(listed)  # never had data: leave no trace
        if nothing or (done is not None and done.inputs == inputs):
            sweep.skip(hour)
            result.skipped.append(hour_label(hour))
            progress.advance(hour_label(hour))
            continue
        rows = sweep.rows(hour)
        table, duplicates = dedupe(rows)
        outputs: dict[str, Output] = {
            compacted_key(stream, symbol, hour): (to_parquet(part), PARQUET_CONTENT_TYPE)
            for stream, symbol, part in split_by_stream(table)
        }
        etags = write_outputs(store, outputs, done, result)
        stats = {"rows_in": rows.num_rows, "rows_out": table.num_rows, "duplicates": duplicates}
        book.record_hour(hour, UnitRecord(inputs, etags, stats))
        log.debug("compacted %s: %s", hour_label(hour), stats)
        result.computed.append(hour_label(hour))
        result.rows_in += rows.num_rows
        result.rows_out += table.num_rows
        result.duplicates += duplicates
        progress.advance(hour_label(hour))
    result.record_sweep(sweep.counts)
    return result
