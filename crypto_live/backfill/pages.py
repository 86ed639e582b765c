"""Which GET /api/v3/klines requests fetch a set of minutes, pure: pages of at most 1,000."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from crypto_live.backfill.minutes import MS_PER_MINUTE, MinuteRange

MAX_PAGE: Final = 1000  # Binance's most klines per request


@dataclass(frozen=True, slots=True)
class Page:
    """One request: klines opening in ``span``, of which ``wanted`` are kept."""

    span: MinuteRange
    wanted: tuple[MinuteRange, ...]

    @property
    def params(self) -> dict[str, int]:
        """startTime, endTime (the last open time's close) and limit, as Binance takes them."""
        return {
            "startTime": self.span.first,
            "endTime": self.span.last + MS_PER_MINUTE - 1,
            "limit": self.span.minutes,
        }

    @property
    def wanted_minutes(self) -> int:
        return sum(r.minutes for r in self.wanted)

    def wants(self, open_time: int) -> bool:
        return any(open_time in r for r in self.wanted)


def plan_pages(ranges: Sequence[MinuteRange], page_size: int = MAX_PAGE) -> list[Page]:
    """Pages covering ``ranges`` (sorted, disjoint) in time order, each spanning at most
    ``page_size`` minutes; short ranges close together share a page (a gap list of many
    single minutes costs one request per 1,000 minutes, not one per gap)."""
    if page_size < 1:
        raise ValueError(f"page_size must be >= 1, got {page_size}")
    pages: list[Page] = []
    span_first: int | None = None
    wanted: list[MinuteRange] = []

    def close() -> None:
        nonlocal span_first, wanted
        if span_first is not None and wanted:
            pages.append(Page(MinuteRange(span_first, wanted[-1].last), tuple(wanted)))
        span_first, wanted = None, []

    for whole in ranges:
        first = whole.first
        while first <= whole.last:
            if span_first is None:
                span_first = first
            room_last = span_first + (page_size - 1) * MS_PER_MINUTE
            if first > room_last:
                close()
                continue
            last = min(whole.last, room_last)
            wanted.append(MinuteRange(first, last))
            first = last + MS_PER_MINUTE
            if last == room_last:
                close()
    close()
    return pages
