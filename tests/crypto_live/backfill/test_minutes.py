"""Times and minute ranges of backfill and gap checks: pure."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from crypto_live.backfill.minutes import (
    MS_PER_MINUTE,
    MinuteRange,
    closed_part,
    is_closed,
    last_closed_open,
    last_day,
    parse_time_ms,
    requested_range,
)

T0 = 1_795_000_020_000  # 2026-11-18T11:07:00Z, a whole minute
M = MS_PER_MINUTE


def test_times_are_iso_utc_or_epoch_ms() -> None:
    assert parse_time_ms("1795000020000", "--from") == T0
    assert parse_time_ms("2026-11-18T11:07:00Z", "--from") == T0
    assert parse_time_ms("2026-11-18T11:07:00", "--from") == T0  # naive is UTC
    assert parse_time_ms("2026-11-18T12:07:00+01:00", "--from") == T0
    assert parse_time_ms("2026-11-18T11:07:00.250Z", "--to") == T0 + 250


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01T00:00Z", "", "-5", "12:00"])
def test_a_bad_time_is_one_line_naming_the_option(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_time_ms(text, "--to")
    message = str(caught.value)
    assert message.startswith("invalid --to (got ") and "\n" not in message


def test_requested_range_is_the_minutes_opening_in_from_to() -> None:
    assert requested_range(T0, T0 + 3 * M) == MinuteRange(T0, T0 + 2 * M)
    # --from inside a minute starts at the next whole one; --to is exclusive
    assert requested_range(T0 + 1, T0 + 3 * M + 1) == MinuteRange(T0 + M, T0 + 3 * M)
    assert requested_range(T0, T0) is None
    assert requested_range(T0 + 1, T0 + M) is None


def test_from_after_to_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"^--from \(2026-11-18T11:07:00.001Z\) is after --to"):
        requested_range(T0 + 1, T0)


def test_a_minute_is_closed_once_its_last_millisecond_passed() -> None:
    assert not is_closed(T0, T0 + M - 1)
    assert is_closed(T0, T0 + M)
    assert last_closed_open(T0 + M) == T0
    assert last_closed_open(T0 + M - 1) == T0 - M
    assert closed_part(MinuteRange(T0, T0 + 5 * M), T0 + 3 * M + 5) == MinuteRange(T0, T0 + 2 * M)
    assert closed_part(MinuteRange(T0, T0 + 5 * M), T0 + 59_999) is None


def test_last_day_is_1440_closed_minutes() -> None:
    day = last_day(T0 + 30_000)
    assert day.minutes == 1440 and day.last == T0 - M
    assert is_closed(day.last, T0 + 30_000) and not is_closed(day.last + M, T0 + 30_000)


def test_range_text_and_membership() -> None:
    span = MinuteRange(T0, T0 + 2 * M)
    assert span.describe() == "2026-11-18T11:07Z..2026-11-18T11:09Z (3 minutes)"
    assert MinuteRange(T0, T0).describe() == "2026-11-18T11:07Z (1 minute)"
    assert list(span.open_times()) == [T0, T0 + M, T0 + 2 * M]
    assert T0 + M in span and T0 + 1 not in span and T0 + 3 * M not in span
    with pytest.raises(ValueError):
        MinuteRange(T0 + 1, T0 + M)
