"""bench.peer_consumer's pure parts: the count-only sink, its timings and the delivery check."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator

from bench.peer_consumer import CountingSink, delivery, frame_keys


def ticking(*readings: tuple[float, float]) -> Callable[[], tuple[float, float]]:
    """A (wall, CPU) clock that returns the given readings in turn (exact binary fractions,
    so the differences compare exactly)."""
    it: Iterator[tuple[float, float]] = iter(readings)
    return lambda: next(it)


def test_the_sink_finishes_at_the_last_expected_key_and_times_from_start() -> None:
    # start, first record, last distinct key: one reading each, no more.
    sink = CountingSink(3, clock=ticking((10.0, 1.0), (10.5, 1.25), (12.0, 1.75)))
    sink.start()
    assert not sink.add("BTCUSDT", 1)
    assert not sink.add("BTCUSDT", 1)  # a duplicate does not bring the end closer
    assert not sink.add("ETHUSDT", 1)
    assert sink.add("BTCUSDT", 2)
    assert sink.add("ETHUSDT", 2)  # still finished; the clock is not read again
    assert sink.timings() == {
        "seconds": 2.0,
        "cpu_seconds": 0.75,
        "first_seconds": 0.5,
        "first_cpu_seconds": 0.25,
    }


def test_an_unfinished_sink_is_timed_up_to_now() -> None:
    sink = CountingSink(2, clock=ticking((0.0, 0.0), (1.0, 0.125), (4.0, 0.5)))
    sink.start()
    sink.add("BTCUSDT", 1)
    assert sink.finished is None
    assert sink.timings() == {
        "seconds": 4.0,
        "cpu_seconds": 0.5,
        "first_seconds": 1.0,
        "first_cpu_seconds": 0.125,
    }


def test_delivery_counts_duplicates_missing_and_unexpected_keys() -> None:
    expected = {("A", 1), ("A", 2), ("B", 1)}
    seen = Counter({("A", 1): 1, ("A", 2): 3, ("C", 9): 1})
    assert delivery(expected, seen) == {
        "counted": 5,
        "distinct": 3,
        "duplicates": 2,
        "missing": 1,
        "unexpected": 1,
    }
    assert delivery(expected, Counter(expected))["missing"] == 0


def test_frame_keys_are_symbol_and_event_time_of_each_frame() -> None:
    texts = [
        json.dumps({"stream": f"{s.lower()}@miniTicker", "data": {"s": s, "E": e, "c": "1"}})
        for s, e in (("BTCUSDT", 1000), ("ETHUSDT", 1000), ("BTCUSDT", 2000))
    ]
    assert frame_keys(texts) == {("BTCUSDT", 1000), ("ETHUSDT", 1000), ("BTCUSDT", 2000)}
