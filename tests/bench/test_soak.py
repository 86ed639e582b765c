"""bench.soak's pure parts: judging an RSS series flat, reading a counter from /metrics."""

from __future__ import annotations

import os

import pytest

from bench.soak import flatness, parse_counter, rss_bytes

MIB = 2**20


def test_a_series_within_the_limit_of_its_post_warmup_baseline_is_flat() -> None:
    # The burst's peak (300) lies inside the warm-up, which ends at 20 s: not judged.
    series = [(0.0, 100 * MIB), (10.0, 300 * MIB), (20.0, 200 * MIB), (30.0, 210 * MIB)]
    judged = flatness([*series, (40.0, 190 * MIB)], warmup_end=20.0, limit=0.10)
    assert (judged.start, judged.peak_before, judged.baseline) == (100 * MIB, 300 * MIB, 200 * MIB)
    assert (judged.low, judged.high, judged.end) == (190 * MIB, 210 * MIB, 190 * MIB)
    assert judged.below == pytest.approx(-0.05)
    assert judged.above == pytest.approx(0.05)
    assert judged.flat


def test_growth_past_the_limit_after_warmup_is_not_flat() -> None:
    judged = flatness([(0.0, 100 * MIB), (20.0, 100 * MIB), (30.0, 111 * MIB)], 20.0, 0.10)
    assert judged.grew
    assert judged.above == pytest.approx(0.11)
    assert not judged.flat


def test_a_drop_past_the_limit_is_not_flat_either() -> None:
    judged = flatness([(0.0, 100 * MIB), (20.0, 100 * MIB), (30.0, 89 * MIB)], 20.0, 0.10)
    assert not judged.flat
    assert not judged.grew  # memory given back is not growth


def test_no_samples_after_warmup_judge_the_baseline_alone() -> None:
    judged = flatness([(0.0, 50 * MIB), (5.0, 60 * MIB)], warmup_end=10.0, limit=0.10)
    assert (judged.baseline, judged.low, judged.high) == (60 * MIB, 60 * MIB, 60 * MIB)
    assert judged.flat


def test_no_samples_at_all_is_an_error() -> None:
    with pytest.raises(ValueError, match="no RSS samples"):
        flatness([], 1.0, 0.1)


def test_a_counter_is_read_from_prometheus_text_whatever_its_labels() -> None:
    text = (
        "# HELP crypto_live_records_put_total Records put\n"
        "# TYPE crypto_live_records_put_total counter\n"
        'crypto_live_records_put_total{service="producer"} 12345.0\n'
        'crypto_live_records_put_created{service="producer"} 1.7e9\n'
        "crypto_live_dead_letters_total 2.0\n"
    )
    assert parse_counter(text, "crypto_live_records_put_total") == 12345.0
    assert parse_counter(text, "crypto_live_dead_letters_total") == 2.0
    assert parse_counter(text, "crypto_live_records_consumed_total") == 0.0


def test_rss_of_this_process_is_read() -> None:
    assert rss_bytes(os.getpid()) > MIB
