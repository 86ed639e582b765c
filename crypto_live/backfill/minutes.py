"""Whole minutes of 1-minute candles, pure: times parsed, ranges of open times, closed minutes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from core.errors import ConfigError

MS_PER_MINUTE: Final = 60_000
MINUTES_PER_DAY: Final = 24 * 60


@dataclass(frozen=True, slots=True)
class MinuteRange:
    """Open times ``first`` .. ``last`` (epoch ms, whole minutes, both included)."""

    first: int
    last: int

    def __post_init__(self) -> None:
        if self.first % MS_PER_MINUTE or self.last % MS_PER_MINUTE or self.last < self.first:
            raise ValueError(f"not a range of whole minutes: {self.first}..{self.last}")

    @property
    def minutes(self) -> int:
        return (self.last - self.first) // MS_PER_MINUTE + 1

    def open_times(self) -> Iterator[int]:
        return iter(range(self.first, self.last + 1, MS_PER_MINUTE))

    def __contains__(self, open_time: object) -> bool:
        return (
            isinstance(open_time, int)
            and self.first <= open_time <= self.last
            and open_time % MS_PER_MINUTE == 0
        )

    def bounds(self) -> str:
        """``2026-11-23T03:14Z..2026-11-23T03:16Z`` (open times, UTC)."""
        if self.first == self.last:
            return minute_text(self.first)
        return f"{minute_text(self.first)}..{minute_text(self.last)}"

    def describe(self) -> str:
        """``2026-11-23T03:14Z`` or ``2026-11-23T03:14Z..2026-11-23T03:16Z (3 minutes)``."""
        count = "1 minute" if self.minutes == 1 else f"{self.minutes:,} minutes"
        return f"{self.bounds()} ({count})"


def minute_text(open_time: int) -> str:
    """An open time as ``2026-11-23T03:14Z`` (UTC)."""
    return datetime.fromtimestamp(open_time / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


def parse_time_ms(text: str, option: str) -> int:
    """``--from``/``--to`` as epoch ms: digits are epoch ms, anything else an ISO-8601 time
    (naive means UTC). A bad value is one ConfigError line naming the option."""
    value = text.strip()
    if value.isdigit():
        return int(value)
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as err:
        raise ConfigError(
            f"invalid {option} (got {text!r}): expected an ISO-8601 UTC time such as "
            "2026-11-23T03:00:00Z, or epoch milliseconds"
        ) from err
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def last_closed_open(now_ms: int) -> int:
    """The open time of the newest closed minute: ``open_time + 59,999 < now``."""
    return (now_ms - MS_PER_MINUTE) // MS_PER_MINUTE * MS_PER_MINUTE


def is_closed(open_time: int, now_ms: int) -> bool:
    return open_time + MS_PER_MINUTE - 1 < now_ms


def requested_range(start_ms: int, end_ms: int) -> MinuteRange | None:
    """The minutes opening in ``[start_ms, end_ms)`` (``--from``, ``--to``); None when none
    does. ConfigError when ``--from`` is after ``--to``."""
    if start_ms > end_ms:
        raise ConfigError(
            f"--from ({timestamp_text(start_ms)}) is after --to ({timestamp_text(end_ms)})"
        )
    first = -(-start_ms // MS_PER_MINUTE) * MS_PER_MINUTE
    last = (end_ms - 1) // MS_PER_MINUTE * MS_PER_MINUTE
    return MinuteRange(first, last) if last >= first else None


def closed_part(span: MinuteRange, now_ms: int) -> MinuteRange | None:
    """The minutes of ``span`` closed at ``now_ms``; None when none is."""
    last = min(span.last, last_closed_open(now_ms))
    return MinuteRange(span.first, last) if last >= span.first else None


def last_day(now_ms: int) -> MinuteRange:
    """The last 24 hours of closed minutes."""
    last = last_closed_open(now_ms)
    return MinuteRange(last - (MINUTES_PER_DAY - 1) * MS_PER_MINUTE, last)


def timestamp_text(epoch_ms: int) -> str:
    """Any epoch ms as ISO-8601 UTC with milliseconds (for messages)."""
    when = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"
