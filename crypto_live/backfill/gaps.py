"""Missing closed minutes, pure: which open times of a range a table does not hold."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from crypto_live.backfill.minutes import MS_PER_MINUTE, MinuteRange


def as_ranges(open_times: Iterable[int]) -> list[MinuteRange]:
    """Whole-minute open times as ranges of consecutive minutes, in time order."""
    ranges: list[MinuteRange] = []
    first = last = None
    for open_time in sorted(set(open_times)):
        if last is not None and open_time == last + MS_PER_MINUTE:
            last = open_time
            continue
        if first is not None and last is not None:
            ranges.append(MinuteRange(first, last))
        first = last = open_time
    if first is not None and last is not None:
        ranges.append(MinuteRange(first, last))
    return ranges


def missing_ranges(expected: MinuteRange, present: Iterable[int]) -> list[MinuteRange]:
    """The minutes of ``expected`` that are not in ``present``, as ranges in time order.

    Open times outside ``expected`` (or not on a minute) are ignored."""
    have = {open_time for open_time in present if open_time in expected}
    ranges: list[MinuteRange] = []
    start: int | None = None
    for open_time in expected.open_times():
        if open_time in have:
            if start is not None:
                ranges.append(MinuteRange(start, open_time - MS_PER_MINUTE))
                start = None
        elif start is None:
            start = open_time
    if start is not None:
        ranges.append(MinuteRange(start, expected.last))
    return ranges


def minute_count(ranges: Iterable[MinuteRange]) -> int:
    return sum(r.minutes for r in ranges)


def still_missing(ranges: Iterable[MinuteRange], present: Iterable[int]) -> list[MinuteRange]:
    """The minutes of ``ranges`` not in ``present``."""
    have = set(present)
    return [gap for r in ranges for gap in missing_ranges(r, have)]


def hull(ranges: Sequence[MinuteRange]) -> MinuteRange:
    """The smallest range holding every one of ``ranges`` (not empty)."""
    return MinuteRange(min(r.first for r in ranges), max(r.last for r in ranges))


@dataclass(frozen=True, slots=True)
class SymbolGaps:
    """The closed minutes of ``span`` the candles table lacks for ``symbol``."""

    symbol: str
    span: MinuteRange
    missing: tuple[MinuteRange, ...]

    @property
    def minutes(self) -> int:
        return minute_count(self.missing)


def gap_lines(gaps: Sequence[SymbolGaps], max_ranges: int = 50) -> list[str]:
    """The listing: a line per symbol, then one per missing range (at most ``max_ranges``),
    then the total."""
    lines: list[str] = []
    for gap in gaps:
        span = gap.span
        if not gap.missing:
            lines.append(f"{gap.symbol}: no missing minute of {span.minutes:,} in {span.bounds()}")
            continue
        lines.append(
            f"{gap.symbol}: {gap.minutes:,} missing of {span.minutes:,} minutes in "
            f"{span.bounds()}, in {_count(len(gap.missing), 'range', 'ranges')}:"
        )
        lines.extend(f"  {r.describe()}" for r in gap.missing[:max_ranges])
        if len(gap.missing) > max_ranges:
            lines.append(
                f"  ... and {_count(len(gap.missing) - max_ranges, 'more range', 'more ranges')}"
            )
    lines.append(total_line(gaps))
    return lines


def total_line(gaps: Sequence[SymbolGaps]) -> str:
    total = sum(g.minutes for g in gaps)
    ranges = sum(len(g.missing) for g in gaps)
    with_gaps = sum(1 for g in gaps if g.missing)
    symbols = _count(len(gaps), "symbol", "symbols")
    if not total:
        return f"0 missing closed minutes ({symbols})"
    return (
        f"{_count(total, 'missing closed minute', 'missing closed minutes')} in "
        f"{_count(ranges, 'range', 'ranges')} ({with_gaps} of {symbols})"
    )


def _count(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"
