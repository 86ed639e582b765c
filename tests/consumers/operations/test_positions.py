"""Replay and reset positions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from consumers.operations.positions import parse_start, parse_time, window_ceil_ms, window_floor
from core.errors import ConfigError


def test_named_positions() -> None:
    assert parse_start("TRIM_HORIZON", option="--from").checkpoint == "TRIM_HORIZON"
    assert parse_start("LATEST", option="--from").checkpoint == "LATEST"


def test_shard_sequence_includes_the_record_or_starts_after_a_sub_record() -> None:
    whole = parse_start("shardId-000000000001:4965", option="--from")
    assert (whole.shard_id, whole.checkpoint, whole.checkpoint_sub) == (
        "shardId-000000000001",
        "4965",
        -1,
    )
    inner = parse_start("shardId-000000000001:4965:3", option="--from")
    assert inner.checkpoint_sub == 2  # sub-records 0..2 are before the start


def test_times_are_utc_and_align_to_the_batch_window_for_s3() -> None:
    plain = parse_start("2026-11-23T03:23:38.123Z", option="--from")
    assert plain.checkpoint == "AT_TIMESTAMP:2026-11-23T03:23:38.123000+00:00"
    aligned = parse_start("2026-11-23T03:23:38.123", option="--from", align_seconds=10)
    assert aligned.checkpoint == "AT_TIMESTAMP:2026-11-23T03:23:30+00:00"
    assert aligned.aligned_from == datetime(2026, 11, 23, 3, 23, 38, 123000, tzinfo=UTC)


def test_window_bounds() -> None:
    when = datetime(2026, 11, 23, 3, 23, 38, tzinfo=UTC)
    assert window_floor(when, 60) == datetime(2026, 11, 23, 3, 23, tzinfo=UTC)
    assert window_ceil_ms(when, 60) == int(
        datetime(2026, 11, 23, 3, 24, tzinfo=UTC).timestamp() * 1000
    )


def test_bad_time_names_the_option() -> None:
    with pytest.raises(ConfigError, match="--to"):
        parse_time("yesterday", "--to")
