"""The websocket edge's rules, with the clock passed in: reconnect policy, rotation, overlap."""

from __future__ import annotations

import pytest

from core.backoff import Backoff
from producer.rotation import (
    HEALTHY_CONNECTION_SECONDS,
    OverlapFilter,
    ReconnectPolicy,
    RotationPlan,
    event_key,
)


def policy() -> ReconnectPolicy:
    return ReconnectPolicy(Backoff(base=0.5, cap=30.0), rand=lambda: 1.0)


def test_a_good_connection_ending_reconnects_at_once() -> None:
    rules = policy()
    assert rules.connection_ended(lived_seconds=3600, frames=0) == 0.0
    assert rules.connection_ended(lived_seconds=0.1, frames=1) == 0.0  # closed after one frame


def test_repeated_failures_back_off_exponentially_up_to_the_cap() -> None:
    rules = policy()
    delays = [rules.attempt_failed() for _ in range(10)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert delays[-1] == 30.0


def test_a_connection_that_dies_young_without_frames_counts_as_a_failure() -> None:
    rules = policy()
    young = HEALTHY_CONNECTION_SECONDS / 2
    assert rules.connection_ended(young, frames=0) == 0.5
    assert rules.connection_ended(young, frames=0) == 1.0
    # ... until one proves good again: then the next end is followed at once.
    assert rules.connection_ended(HEALTHY_CONNECTION_SECONDS, frames=0) == 0.0
    assert rules.failures == 0
    assert rules.attempt_failed() == 0.5


def test_backoff_is_jittered() -> None:
    low = ReconnectPolicy(Backoff(base=0.5, cap=30.0), rand=lambda: 0.25)
    assert low.attempt_failed() == 0.125


def frame(stream: str, data: object) -> dict[str, object]:
    return {"stream": stream, "data": data}


def test_event_key_is_stream_and_event_time() -> None:
    assert event_key(frame("btcusdt@miniTicker", {"E": 5, "s": "BTCUSDT"})) == (
        "btcusdt@miniTicker",
        5,
    )
    array = frame("!miniTicker@arr", [{"s": "A", "E": 1}, {"s": "B", "E": 2}])
    assert event_key(array) == ("!miniTicker@arr", (("A", 1), ("B", 2)))


@pytest.mark.parametrize(
    "parsed",
    [
        ["not", "an", "envelope"],
        {"data": {"E": 1}},  # no stream
        frame("x@miniTicker", {"E": "soon"}),  # bad input is never deduplicated away
        frame("x@miniTicker", {"s": "X"}),
        frame("x@miniTicker", None),
        frame("!miniTicker@arr", []),
    ],
)
def test_frames_without_a_key_are_never_deduplicated(parsed: object) -> None:
    assert event_key(parsed) is None
    overlap = OverlapFilter(linger_seconds=1.0)
    overlap.start()
    assert overlap.admit(event_key(parsed), 0.0)
    assert overlap.admit(event_key(parsed), 0.0)


def test_overlap_keeps_each_event_once_and_only_while_overlapping() -> None:
    overlap = OverlapFilter(linger_seconds=3.0)
    key = ("btcusdt@miniTicker", 1)
    assert overlap.admit(key, 0.0) and overlap.admit(key, 0.0)  # no rotation: no filtering
    overlap.start()
    assert overlap.admit(key, 1.0)  # from the old connection
    assert not overlap.admit(key, 1.1)  # the same event from the new one
    assert overlap.admit(("btcusdt@miniTicker", 2), 1.2)
    overlap.old_connection_ended(now=5.0)
    assert not overlap.admit(key, 7.9)  # still lingering: the new one's queued frames
    assert overlap.duplicates == 2
    assert overlap.admit(key, 8.0)  # over: memory released, nothing filtered
    assert not overlap.active


def test_rotation_is_due_after_its_time_and_retires_the_old_connection_once_settled() -> None:
    plan = RotationPlan(rotate_after_seconds=100.0, settle_seconds=3.0, max_overlap_seconds=10.0)
    assert not plan.due(opened_at=0.0, now=99.9)
    assert plan.due(opened_at=0.0, now=100.0)
    # The new connection opened at 100 and delivered its first frame at 100.5.
    assert not plan.retire_old(100.0, None, now=105.0)
    assert not plan.retire_old(100.0, 100.5, now=103.4)
    assert plan.retire_old(100.0, 100.5, now=103.5)
    # Quiet streams: it never delivers, the old one goes after the longest overlap anyway.
    assert plan.retire_old(100.0, None, now=110.0)
