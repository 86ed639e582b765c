"""Cuts one shard's records into S3 batches from the shard's contents alone (pure).

A batch closes when a record arrives at or after the end of the batch's time window (windows
are aligned to ``window_seconds``), when the next line would pass ``max_bytes``, or when it
holds ``max_rows`` rows. None of these looks at a wall clock, so re-reading the shard from any
batch's first record cuts the same batches again: the S3 objects are rewritten byte for byte
under the same keys, which is what makes replays exactly-once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from consumers.engine.records import ConsumedRecord, Position
from consumers.s3.format import JsonlGzipFormat

DEFAULT_MAX_ROWS: Final = 1000
DEFAULT_WINDOW_SECONDS: Final = 10
DEFAULT_MAX_BYTES: Final = 64 * 2**20
DEFAULT_GRACE_MS: Final = 2000

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)

LineEncoder = Callable[[ConsumedRecord], bytes]


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
    """One future S3 object: unique rows in shard order and the shard range they cover.

    ``last`` is the last position consumed into the batch, dropped duplicates included, so
    checkpointing it never makes the next reader see those duplicates again.
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

    def __len__(self) -> int:
        return len(self.records)


class _OpenBatch:
    """The batch being filled; mutable, private to the cutter."""

    __slots__ = ("duplicates", "keys", "last", "lines", "records", "size", "window_end_ms")

    def __init__(self, record: ConsumedRecord, window_end_ms: int) -> None:
        self.records: list[ConsumedRecord] = []
        self.lines: list[bytes] = []
        self.keys: set[tuple[Any, Any]] = set()
        self.size = 0
        self.duplicates = 0
        self.last = record.position
        self.window_end_ms = window_end_ms

    def append(self, record: ConsumedRecord, line: bytes) -> None:
        self.records.append(record)
        self.lines.append(line)
        self.keys.add(duplicate_key(record))
        self.size += len(line)
        self.last = record.position

    def close(self, window_ms: int) -> Batch:
        first = self.records[0]
        return Batch(
            shard_id=first.shard_id,
            records=tuple(self.records),
            lines=tuple(self.lines),
            first=first.position,
            last=self.last,
            first_arrival=as_utc(first.arrival),
            window_start_ms=self.window_end_ms - window_ms,
            size=self.size,
            duplicates=self.duplicates,
        )


class BatchCutter:
    """Deterministic batch boundaries for ONE shard; feed records in shard order."""

    def __init__(
        self,
        max_rows: int = DEFAULT_MAX_ROWS,
        window_seconds: int = DEFAULT_WINDOW_SECONDS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        grace_ms: int = DEFAULT_GRACE_MS,
        line: LineEncoder | None = None,
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
        self._line = line or JsonlGzipFormat().line
        self._open: _OpenBatch | None = None

    @property
    def buffered(self) -> int:
        """Rows in the open batch (not yet emitted, so not durable)."""
        return 0 if self._open is None else len(self._open.records)

    @property
    def window_end_ms(self) -> int | None:
        """End of the open batch's window, or None when nothing is open."""
        return None if self._open is None else self._open.window_end_ms

    def add(self, records: Iterable[ConsumedRecord]) -> list[Batch]:
        """Take records in shard order; return the batches they closed, oldest first."""
        out: list[Batch] = []
        for record in records:
            self._add_one(record, out)
        return out

    def at_tip(self, now_ms: int) -> list[Batch]:
        """At the shard's tip: close the open batch once its window ended ``grace_ms`` ago.

        Records read later carry arrival times after the window end, so they would have
        closed this batch anyway: the boundary still depends only on the shard's contents.
        """
        if self._open is not None and now_ms >= self._open.window_end_ms + self.grace_ms:
            return [self._emit()]
        return []

    def flush(self) -> list[Batch]:
        """Close whatever is open (the shard ended: nothing more will arrive)."""
        return [] if self._open is None else [self._emit()]

    def reset(self) -> None:
        """Forget the open batch without emitting it."""
        self._open = None

    def _add_one(self, record: ConsumedRecord, out: list[Batch]) -> None:
        arrival_ms = epoch_ms(record.arrival)
        current = self._open
        if current is not None and arrival_ms >= current.window_end_ms:
            out.append(self._emit())
            current = None
        if current is not None and duplicate_key(record) in current.keys:
            current.duplicates += 1
            current.last = record.position
            return
        line = self._line(record)
        # A full batch closes when the next NEW record arrives, not at once: a producer
        # retry right behind the last row (same event again) still lands in the same batch
        # and is dropped there, and the boundary stays a function of the shard's contents.
        if current is not None and (
            len(current.records) >= self.max_rows or current.size + len(line) > self.max_bytes
        ):
            out.append(self._emit())
            current = None
        if current is None:
            window_start = arrival_ms // self.window_ms * self.window_ms
            current = self._open = _OpenBatch(record, window_start + self.window_ms)
        current.append(record, line)

    def _emit(self) -> Batch:
        assert self._open is not None
        batch = self._open.close(self.window_ms)
        self._open = None
        return batch
