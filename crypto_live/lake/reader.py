"""Raw lake objects (gzipped JSONL) into Arrow tables, one event hour at a time.

The S3 consumer files a batch under the Kinesis arrival hour of its first record, so an event
of hour H can sit in folder H-1 or H+1 (``slack`` hours either way). ``RawHourSweep`` walks
the hours in order and reads each folder once, keeping only the rows of hours still ahead:
memory holds about two hours of rows, whatever the range. A ``RawFormat`` says how to parse
one kind of raw object (miniTicker records here, klines in ``crypto_live.lake.klines``) and
which epoch-ms column names a row's hour.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from crypto_live.lake.arrow import pa, pc, pj
from crypto_live.lake.layout import MS_PER_HOUR, hour_label, raw_folder
from crypto_live.lake.store import LakeStore, ObjectInfo
from schemas.record import DECIMAL_FIELDS, FIELD_ORDER

log = logging.getLogger(__name__)

RAW_SUFFIX: Final = ".jsonl.gz"
SCALE: Final = 8  # Binance sends eight decimals; more would not fit and fails loudly
DECIMAL_TYPE: Final = pa.decimal128(38, SCALE)
_INTEGER_FIELDS: Final = ("event_time", "received_at")
_DECIMAL_FIELDS: Final = frozenset(DECIMAL_FIELDS.values())


def _field_type(name: str) -> Any:
    if name in _INTEGER_FIELDS:
        return pa.int64()
    if name in _DECIMAL_FIELDS:
        return DECIMAL_TYPE
    return pa.string()


# The raw record, typed: exact decimals, never floats (also the compacted Parquet schema).
RAW_SCHEMA: Final = pa.schema([pa.field(name, _field_type(name)) for name in FIELD_ORDER])
# Duplicates share (stream_type, event_time); the rest of the columns only make the survivor
# the same whatever order the inputs came in.
_DEDUPE_ORDER: Final = [
    ("stream_type", "ascending"),
    ("event_time", "ascending"),
    *[(name, "ascending") for name in FIELD_ORDER if name not in ("stream_type", "event_time")],
]


@dataclass(frozen=True, slots=True)
class ParsedObject:
    """The valid rows of one raw object, and how many lines were not valid records."""

    table: Any
    bad_lines: int = 0


def empty_table() -> Any:
    return RAW_SCHEMA.empty_table()


def parse_jsonl(body: bytes, schema: Any) -> ParsedObject:
    """Decode one gzipped JSONL object into ``schema`` (other fields ignored). Arrow parses it
    in one go; when a line is broken the object is parsed line by line instead and only the
    bad lines are left out (and counted). A line missing a field is a bad line."""
    data = gzip.decompress(body)
    if not data.strip():
        return ParsedObject(schema.empty_table())
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    try:
        table = pj.read_json(io.BytesIO(data), parse_options=options)
    except ValueError:  # pyarrow.ArrowInvalid: bad JSON, a wrong type, > 8 decimals
        return _parse_lines(data, schema)
    table = table.select(schema.names)
    complete = pc.is_valid(table[schema.names[0]])
    for name in schema.names[1:]:
        complete = pc.and_(complete, pc.is_valid(table[name]))
    kept = table.filter(complete)
    return ParsedObject(kept, table.num_rows - kept.num_rows)


def parse_raw(body: bytes) -> ParsedObject:
    """One raw miniTicker object as RAW_SCHEMA rows."""
    return parse_jsonl(body, RAW_SCHEMA)


def _value(kind: Any, raw: Any) -> Any:
    """A JSON value as a column of Arrow type ``kind`` takes it; ValueError when it does not."""
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        wanted = bool if pa.types.is_boolean(kind) else int
        if type(raw) is not wanted:
            raise ValueError(kind)
        return raw
    if not isinstance(raw, str):
        raise ValueError(kind)
    if pa.types.is_decimal(kind):
        number = Decimal(raw)
        exponent = number.as_tuple().exponent
        too_big = number.adjusted() >= kind.precision - kind.scale
        if not isinstance(exponent, int) or exponent < -kind.scale or too_big:
            raise ValueError(kind)  # NaN/Infinity, more than 8 places, or too big for (38, 8)
        return number
    return raw


def _parse_lines(data: bytes, schema: Any) -> ParsedObject:
    rows: list[dict[str, Any]] = []
    bad = 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            rows.append({field.name: _value(field.type, record[field.name]) for field in schema})
        except (ValueError, KeyError, TypeError, InvalidOperation):
            bad += 1
    table = pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()
    return ParsedObject(table, bad)


@dataclass(frozen=True, slots=True)
class RawFormat:
    """One kind of raw object: how to parse it, and the epoch-ms column naming a row's hour."""

    parse: Callable[[bytes], ParsedObject]
    schema: Any
    time_column: str


MINITICKER_FORMAT: Final = RawFormat(parse_raw, RAW_SCHEMA, "event_time")


def dedupe(table: Any) -> tuple[Any, int]:
    """Rows sorted by (stream_type, event_time), one per key; (table, duplicates removed)."""
    if table.num_rows == 0:
        return table, 0
    ordered = table.take(pc.sort_indices(table, sort_keys=_DEDUPE_ORDER))
    streams = ordered["stream_type"].combine_chunks()
    times = ordered["event_time"].combine_chunks()
    same = pc.and_(
        pc.equal(streams.slice(1), streams.slice(0, len(streams) - 1)),
        pc.equal(times.slice(1), times.slice(0, len(times) - 1)),
    )
    keep = pa.concat_arrays([pa.array([True]), pc.invert(same)])
    unique = ordered.filter(keep)
    return unique, table.num_rows - unique.num_rows


def split_by_hour(table: Any, time_column: str = "event_time") -> dict[int, Any]:
    """Rows by the hour of ``time_column`` (epoch ms)."""
    if table.num_rows == 0:
        return {}
    hours = pc.divide(table[time_column], MS_PER_HOUR)
    return {int(hour): table.filter(pc.equal(hours, hour)) for hour in pc.unique(hours).to_pylist()}


def split_by_stream(table: Any) -> Iterator[tuple[str, str, Any]]:
    """(stream_type, symbol, rows) of a table sorted by stream_type (as ``dedupe`` leaves it)."""
    if table.num_rows == 0:
        return
    runs = pc.run_end_encode(table["stream_type"].combine_chunks())
    start = 0
    for stream, end in zip(runs.values.to_pylist(), runs.run_ends.to_pylist(), strict=True):
        part = table.slice(start, end - start)
        yield str(stream), str(part["symbol"][0].as_py()), part
        start = end


class FolderListings:
    """The raw objects of each hour folder, listed once per run (entries behind are dropped)."""

    def __init__(self, store: LakeStore, raw_prefix: str) -> None:
        self._store = store
        self._prefix = raw_prefix
        self._cache: dict[int, list[ObjectInfo]] = {}

    def objects(self, folder: int) -> list[ObjectInfo]:
        if folder not in self._cache:
            listed = self._store.list(raw_folder(self._prefix, folder))
            self._cache[folder] = [info for info in listed if info.key.endswith(RAW_SUFFIX)]
        return self._cache[folder]

    def forget_before(self, folder: int) -> None:
        for old in [f for f in self._cache if f < folder]:
            del self._cache[old]


@dataclass
class SweepCounts:
    """Totals over a sweep."""

    objects_read: int = 0
    rows_read: int = 0
    bad_lines: int = 0
    bad_objects: int = 0
    stray_rows: int = 0  # event hour further than ``slack`` from the folder: never compacted
    peak_pending_rows: int = 0


class RawHourSweep:
    """Event hours, ascending: ``rows(h)`` for hours to compute, ``skip(h)`` for the others."""

    def __init__(
        self,
        store: LakeStore,
        listings: FolderListings,
        slack: int,
        raw_format: RawFormat = MINITICKER_FORMAT,
    ) -> None:
        if slack < 0:
            raise ValueError(f"slack must be >= 0: {slack}")
        self._store = store
        self._format = raw_format
        self._listings = listings
        self._slack = slack
        self._read: set[int] = set()
        self._pending: dict[int, list[Any]] = defaultdict(list)
        self._last = -(2**62)
        self.counts = SweepCounts()

    def folders(self, hour: int) -> range:
        """The folders that may hold events of ``hour``."""
        return range(hour - self._slack, hour + self._slack + 1)

    def listed(self, hour: int) -> list[list[tuple[str, str, int]]]:
        """(key, ETag, size) of the raw objects in each folder of ``hour``: what the hour's
        rows are read from, for the fingerprint of its inputs."""
        return [
            [(info.key, info.etag, info.size) for info in self._listings.objects(folder)]
            for folder in self.folders(hour)
        ]

    def skip(self, hour: int) -> None:
        self._advance(hour)
        self._pending.pop(hour, None)

    def rows(self, hour: int) -> Any:
        """The raw rows of ``hour`` (a table, not yet deduplicated)."""
        self._advance(hour)
        for folder in self.folders(hour):
            if folder not in self._read:
                self._read_folder(folder, hour)
        parts = self._pending.pop(hour, [])
        return pa.concat_tables(parts) if parts else self._format.schema.empty_table()

    def _advance(self, hour: int) -> None:
        if hour <= self._last:
            raise ValueError(f"hours must ascend: {hour} after {self._last}")
        self._last = hour
        self._read = {folder for folder in self._read if folder >= hour - self._slack}
        self._listings.forget_before(hour - self._slack)

    def _read_folder(self, folder: int, hour: int) -> None:
        self._read.add(folder)
        for info in self._listings.objects(folder):
            body = self._store.get(info.key)
            if body is None:  # deleted since listed; the next run's fingerprint differs
                continue
            self.counts.objects_read += 1
            try:
                parsed = self._format.parse(body)
            except (OSError, EOFError, zlib.error) as err:
                log.warning("raw object %s is not gzipped JSONL (%s): skipped", info.key, err)
                self.counts.bad_objects += 1
                continue
            if parsed.bad_lines:
                log.warning("%s: %d lines are not records, left out", info.key, parsed.bad_lines)
                self.counts.bad_lines += parsed.bad_lines
            self.counts.rows_read += parsed.table.num_rows
            self._keep(folder, hour, parsed.table)
        pending = sum(part.num_rows for parts in self._pending.values() for part in parts)
        self.counts.peak_pending_rows = max(self.counts.peak_pending_rows, pending)

    def _keep(self, folder: int, hour: int, table: Any) -> None:
        for event_hour, part in split_by_hour(table, self._format.time_column).items():
            if abs(event_hour - folder) > self._slack:
                log.warning(
                    "%d rows in folder hour=%s are %d hours off their event hour (more than "
                    "--slack-hours %d): left out",
                    part.num_rows,
                    hour_label(folder),
                    event_hour - folder,
                    self._slack,
                )
                self.counts.stray_rows += part.num_rows
            elif event_hour >= hour:  # earlier hours were finished before this folder was needed
                self._pending[event_hour].append(part)
