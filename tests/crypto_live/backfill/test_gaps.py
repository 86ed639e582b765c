"""Missing minutes as ranges, and pages planned over them: pure."""

from __future__ import annotations

import pytest

from crypto_live.backfill.gaps import (
    SymbolGaps,
    as_ranges,
    gap_lines,
    missing_ranges,
    still_missing,
)
from crypto_live.backfill.minutes import MS_PER_MINUTE, MinuteRange
from crypto_live.backfill.pages import plan_pages

T0 = 1_795_000_020_000
M = MS_PER_MINUTE


def minutes(*offsets: int) -> list[int]:
    return [T0 + i * M for i in offsets]


def r(first: int, last: int) -> MinuteRange:
    return MinuteRange(T0 + first * M, T0 + last * M)


def test_missing_minutes_become_ranges() -> None:
    span = r(0, 9)
    present = minutes(0, 1, 2, 5, 6, 9)
    assert missing_ranges(span, present) == [r(3, 4), r(7, 8)]
    assert missing_ranges(span, []) == [span]
    assert missing_ranges(span, minutes(*range(10))) == []
    # at either end, and items outside the span or off the minute are ignored
    assert missing_ranges(span, [*minutes(*range(1, 9)), T0 - M, T0 + 1]) == [r(0, 0), r(9, 9)]


def test_still_missing_and_as_ranges() -> None:
    assert as_ranges(minutes(4, 1, 2, 2, 7)) == [r(1, 2), r(4, 4), r(7, 7)]
    assert as_ranges([]) == []
    assert still_missing([r(0, 2), r(5, 6)], minutes(1, 5)) == [r(0, 0), r(2, 2), r(6, 6)]


def test_listing_names_each_range_and_the_total() -> None:
    span = r(0, 59)
    lines = gap_lines(
        [SymbolGaps("BTCUSDT", span, (r(3, 5), r(9, 9))), SymbolGaps("ETHUSDT", span, ())]
    )
    assert lines == [
        "BTCUSDT: 4 missing of 60 minutes in 2026-11-18T11:07Z..2026-11-18T12:06Z, in 2 ranges:",
        "  2026-11-18T11:10Z..2026-11-18T11:12Z (3 minutes)",
        "  2026-11-18T11:16Z (1 minute)",
        "ETHUSDT: no missing minute of 60 in 2026-11-18T11:07Z..2026-11-18T12:06Z",
        "4 missing closed minutes in 2 ranges (1 of 2 symbols)",
    ]
    assert gap_lines([SymbolGaps("ETHUSDT", span, ())])[-1] == "0 missing closed minutes (1 symbol)"
    many = tuple(r(2 * i, 2 * i) for i in range(30))
    listed = gap_lines([SymbolGaps("BTCUSDT", span, many)], max_ranges=10)
    assert listed[11] == "  ... and 20 more ranges" and len(listed) == 13
    one = gap_lines([SymbolGaps("BTCUSDT", span, (r(7, 7),))])
    assert one[0].endswith(", in 1 range:")
    assert one[-1] == "1 missing closed minute in 1 range (1 of 1 symbol)"


def test_a_long_range_is_paged_by_1000() -> None:
    pages = plan_pages([r(0, 2_499)])
    assert [p.span for p in pages] == [r(0, 999), r(1_000, 1_999), r(2_000, 2_499)]
    assert [p.wanted for p in pages] == [(p.span,) for p in pages]
    assert pages[0].params == {"startTime": T0, "endTime": T0 + 1000 * M - 1, "limit": 1000}
    assert pages[2].params["limit"] == 500


def test_nearby_gaps_share_a_page_far_ones_do_not() -> None:
    pages = plan_pages([r(0, 1), r(10, 10), r(998, 1_001), r(5_000, 5_000)])
    assert [(p.span, p.wanted) for p in pages] == [
        (r(0, 999), (r(0, 1), r(10, 10), r(998, 999))),
        (r(1_000, 1_001), (r(1_000, 1_001),)),
        (r(5_000, 5_000), (r(5_000, 5_000),)),
    ]
    assert [p.wanted_minutes for p in pages] == [5, 2, 1]
    assert pages[0].wants(T0 + 10 * M) and not pages[0].wants(T0 + 5 * M)


def test_pages_cover_every_wanted_minute_once() -> None:
    ranges = [r(3 * i, 3 * i + (i % 3)) for i in range(0, 2_000, 2)]
    pages = plan_pages(ranges, page_size=97)
    wanted = [t for p in pages for w in p.wanted for t in w.open_times()]
    assert wanted == [t for x in ranges for t in x.open_times()]
    assert all(p.span.minutes <= 97 for p in pages)
    assert all(
        p.span.first == p.wanted[0].first and p.span.last == p.wanted[-1].last for p in pages
    )
    with pytest.raises(ValueError):
        plan_pages(ranges, page_size=0)
