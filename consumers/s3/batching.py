"""Cuts one shard's records into S3 batches from the shard's contents alone (pure).

One stream carries several kinds of rows (miniTickers, closed klines), each kind written under
a prefix of its own. The shard is cut into *segments*, each closing for every kind at once:
when a record arrives at or after the end of the segment's time window (windows are aligned to
``window_seconds``), or when the next line of a kind would pass ``max_bytes`` or its batch
holds ``max_rows`` rows. A segment becomes one batch per kind it has rows of. A record no kind
takes (an open kline, a dead-lettered type) still belongs to its segment: it can close one, and
the segment's ``last`` position covers it.

None of these looks at a wall clock, and a segment boundary is a boundary for every kind, so
re-reading the shard from the end of any segment cuts the same segments again: the S3 objects
are rewritten byte for byte under the same keys, which is what makes replays exactly-once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from consumers.engine.records import ConsumedRecord, Position
from consumers.s3.format import JsonlGzipFormat

DEFAULT_MAX_ROWS: Final = 1000
DEFAULT_WINDOW_SECONDS: Final = 10
DEFAULT_MAX_BYTES: Final = 64 * 2**20
DEFAULT_GRACE_MS: Final = 2000
DEFAULT_KIND: Final = "rows"  # the one kind of a single-kind cutter

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)

LineEncoder = Callable[[ConsumedRecord], bytes]
# A record and the kind of row it becomes, or None: consumed, but no row of any kind.
Routed = tuple[ConsumedRecord, str | None]


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime is taken to be UTC already (boto3 sends aware ones)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def epoch_ms(moment: datetime) -> int:
    """Whole epoch milliseconds, floored, with integer arithmetic (no float rounding)."""
    return (as_utc(moment) - _EPOCH) // _ONE_MS


def duplicate_key(record: ConsumedRecord) -> tuple[Any, Any]:
    """What makes two records the same event: a producer retry repeats both fields."""
    return record.record.get("stream_type"), record.record.get("event_time")


@dataclass(frozen=True, slots=True)
class Batch:
    """One future S3 object: unique rows of one kind in shard order and the range they cover.

    ``last`` is the last position consumed into the batch, dropped duplicates included.
    """

    shard_id: str
    records: tuple[ConsumedRecord, ...]
    lines: tuple[bytes, ...]
    first: Position
    last: Position
    first_arrival: datetime
    window_start_ms: int
    size: int  # uncompressed bytes
    duplicates: int
    kind: str = DEFAULT_KIND

    def __len__(self) -> int:
        return len(self.records)


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of the shard closed for every kind at once: its batches (one per kind with rows,
    in the order the kinds first appeared) and the last position it covers, records of no
    kind and dropped duplicates included. Checkpointing ``last`` once every batch is written
    never makes the next reader cut differently."""

    batches: tuple[Batch, ...]
    last: Position

    @property
    def rows(self) -> int:
        return sum(len(batch) for batch in self.batches)


class _OpenBatch:
    """One kind's rows in the open segment; mutable, private to the cutter."""

    __slots__ = ("duplicates", "keys", "last", "lines", "records", "size")

    def __init__(self) -> None:
        self.records: list[ConsumedRecord] = []
        self.lines: list[bytes] = []
        self.keys: set[tuple[Any, Any]] = set()
        self.size = 0
        self.duplicates = 0
        self.last: Position | None = None

    def append(self, record: ConsumedRecord, line: bytes, key: tuple[Any, Any]) -> None:
        self.records.append(record)
        self.lines.append(line)
        self.keys.add(key)
        self.size += len(line)
        self.last = record.position

    def close(self, kind: str, window_start_ms: int) -> Batch:
        first = self.records[0]
        assert self.last is not None
        return Batch(
            shard_id=first.shard_id,
            records=tuple(self.records),
            lines=tuple(self.lines),
            first=first.position,
            last=self.last,
            first_arrival=as_utc(first.arrival),
            window_start_ms=window_start_ms,
            size=self.size,
            duplicates=self.duplicates,
            kind=kind,
        )


class _OpenSegment:
    __slots__ = ("batches", "last", "rows", "window_end_ms")

    def __init__(self, position: Position, window_end_ms: int) -> None:
        self.batches: dict[str, _OpenBatch] = {}
        self.last = position
        self.rows = 0
        self.window_end_ms = window_end_ms


class SegmentCutter:
    """Deterministic segment boundaries for ONE shard; feed (record, kind) in shard order.

    ``lines`` maps each kind to the encoder of its JSONL lines (the cutter sizes batches by
    them); a kind not in it is a programming error.
    """

    def __init__(
        self,
        lines: Mapping[str, LineEncoder],
        max_rows: int = DEFAULT_MAX_ROWS,
        window_seconds: int = DEFAULT_WINDOW_SECONDS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        grace_ms: int = DEFAULT_GRACE_MS,
    ) -> None:
        if max_rows < 1 or window_seconds < 1 or max_bytes < 1 or grace_ms < 0:
            raise ValueError(
                "BatchCutter needs max_rows, window_seconds, max_bytes >= 1 and grace_ms >= 0: "
                f"{max_rows}, {window_seconds}, {max_bytes}, {grace_ms}"
            )
        self.max_rows = max_rows
        self.window_ms = window_seconds * 1000
        self.max_bytes = max_bytes
        self.grace_ms = grace_ms
        self._lines = dict(lines)
        self._open: _OpenSegment | None = None
        # The user records of one aggregate share one arrival object: its epoch ms, once.
        self._arrival: datetime | None = None
        self._arrival_ms = 0

    @property
    def buffered(self) -> int:
        """Rows in the open segment (not yet emitted, so not durable)."""
        return 0 if self._open is None else self._open.rows

    @property
    def window_end_ms(self) -> int | None:
        """End of the open segment's window, or None when nothing is open."""
        return None if self._open is None else self._open.window_end_ms

    def add(self, routed: Iterable[Routed]) -> list[Segment]:
        """Take (record, kind or None) in shard order; return the segments they closed."""
        out: list[Segment] = []
        for record, kind in routed:
            self._add_one(record, kind, out)
        return out

    def at_tip(self, now_ms: int) -> list[Segment]:
        """At the shard's tip: close the open segment once its window ended ``grace_ms`` ago.

        Records read later carry arrival times after the window end, so they would have
        closed this segment anyway: the boundary still depends only on the shard's contents.
        """
        if self._open is not None and now_ms >= self._open.window_end_ms + self.grace_ms:
            return [self._emit()]
        return []

    def flush(self) -> list[Segment]:
        """Close whatever is open (the shard ended: nothing more will arrive)."""
        return [] if self._open is None else [self._emit()]

    def reset(self) -> None:
        """Forget the open segment without emitting it."""
        self._open = None

    def _add_one(self, record: ConsumedRecord, kind: str | None, out: list[Segment]) -> None:
        if record.arrival is not self._arrival:
            self._arrival, self._arrival_ms = record.arrival, epoch_ms(record.arrival)
        arrival_ms = self._arrival_ms
        segment = self._open
        if segment is not None and arrival_ms >= segment.window_end_ms:
            out.append(self._emit())
            segment = None
        if kind is None:
            self._opened(segment, record, arrival_ms).last = record.position
            return
        batch = None if segment is None else segment.batches.get(kind)
        key = duplicate_key(record)
        if batch is not None and key in batch.keys:
            assert segment is not None
            batch.duplicates += 1
            batch.last = segment.last = record.position
            return
        line = self._lines[kind](record)
        # A full batch closes when the next NEW record of its kind arrives, not at once: a
        # producer retry right behind the last row (same event again) still lands in the same
        # batch and is dropped there, and the boundary stays a function of the shard's contents.
        if batch is not None and (
            len(batch.records) >= self.max_rows or batch.size + len(line) > self.max_bytes
        ):
            out.append(self._emit())
            segment = batch = None
        segment = self._opened(segment, record, arrival_ms)
        if batch is None:
            batch = segment.batches[kind] = _OpenBatch()
        batch.append(record, line, key)
        segment.rows += 1
        segment.last = record.position

    def _opened(
        self, segment: _OpenSegment | None, record: ConsumedRecord, arrival_ms: int
    ) -> _OpenSegment:
        if segment is not None:
            return segment
        window_start = arrival_ms // self.window_ms * self.window_ms
        opened = self._open = _OpenSegment(record.position, window_start + self.window_ms)
        return opened

    def _emit(self) -> Segment:
        segment = self._open
        assert segment is not None
        self._open = None
        start = segment.window_end_ms - self.window_ms
        batches = tuple(batch.close(kind, start) for kind, batch in segment.batches.items())
        return Segment(batches, segment.last)


class BatchCutter:
    """A SegmentCutter with one kind: every record is a row, every segment one batch."""

    def __init__(
        self,
        max_rows: int = DEFAULT_MAX_ROWS,
        window_seconds: int = DEFAULT_WINDOW_SECONDS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        grace_ms: int = DEFAULT_GRACE_MS,
        line: LineEncoder | None = None,
    ) -> None:
        lines = {DEFAULT_KIND: line or JsonlGzipFormat().line}
        self._segments = SegmentCutter(lines, max_rows, window_seconds, max_bytes, grace_ms)

    @property
    def max_rows(self) -> int:
        return self._segments.max_rows

    @property
    def window_ms(self) -> int:
        return self._segments.window_ms

    @property
    def max_bytes(self) -> int:
        return self._segments.max_bytes

    @property
    def grace_ms(self) -> int:
        return self._segments.grace_ms

    @property
    def buffered(self) -> int:
        """Rows in the open batch (not yet emitted, so not durable)."""
        return self._segments.buffered

    @property
    def window_end_ms(self) -> int | None:
        """End of the open batch's window, or None when nothing is open."""
        return self._segments.window_end_ms

    def add(self, records: Iterable[ConsumedRecord]) -> list[Batch]:
        """Take records in shard order; return the batches they closed, oldest first."""
        return _batches(self._segments.add((record, DEFAULT_KIND) for record in records))

    def at_tip(self, now_ms: int) -> list[Batch]:
        """``SegmentCutter.at_tip``."""
        return _batches(self._segments.at_tip(now_ms))

    def flush(self) -> list[Batch]:
        """Close whatever is open (the shard ended: nothing more will arrive)."""
        return _batches(self._segments.flush())

    def reset(self) -> None:
        """Forget the open batch without emitting it."""
        self._segments.reset()


def _batches(segments: list[Segment]) -> list[Batch]:
    return [batch for segment in segments for batch in segment.batches]
