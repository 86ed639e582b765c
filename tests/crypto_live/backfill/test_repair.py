"""Gap checks and the bounded wait for repaired candles, over an in-memory table and a fake
clock; subscribed symbols from stream names."""

from __future__ import annotations

from collections import defaultdict

from crypto_live.backfill.minutes import MS_PER_MINUTE, MinuteRange
from crypto_live.backfill.repair import find_gaps, kline_symbols, wait_until_written
from tests.crypto_live.backfill.fakes import FakeClock

T0 = 1_795_000_020_000
M = MS_PER_MINUTE


def r(first: int, last: int) -> MinuteRange:
    return MinuteRange(T0 + first * M, T0 + last * M)


class MemoryTable:
    """Open times per symbol; ``arrivals`` are written one per query, as a consumer would."""

    def __init__(self, items: dict[str, list[int]], arrivals: list[tuple[str, int]] | None = None):
        self.items: dict[str, set[int]] = defaultdict(set, {k: set(v) for k, v in items.items()})
        self.arrivals = list(arrivals or [])
        self.queries: list[tuple[str, MinuteRange]] = []

    def open_times(self, symbol: str, span: MinuteRange) -> set[int]:
        self.queries.append((symbol, span))
        if self.arrivals:
            arrived_symbol, open_time = self.arrivals.pop(0)
            self.items[arrived_symbol].add(open_time)
        return {t for t in self.items[symbol] if t in span}


def test_kline_symbols_from_stream_names() -> None:
    streams = ["btcusdt@miniTicker", "btcusdt@kline_1m", "!miniTicker@arr", "ethusdt@kline_1m",
               "btcusdt@kline_1m", "solusdt@kline_5m"]  # fmt: skip
    assert kline_symbols(streams) == ("BTCUSDT", "ETHUSDT")
    assert kline_symbols(["btcusdt@miniTicker"]) == ()


def test_find_gaps_per_symbol() -> None:
    span = r(0, 9)
    table = MemoryTable(
        {"BTCUSDT": [T0 + i * M for i in (0, 1, 5, 9)], "ETHUSDT": list(span.open_times())}
    )
    gaps = find_gaps(table, ["BTCUSDT", "ETHUSDT", "SOLUSDT"], span)
    assert [(g.symbol, g.missing, g.minutes) for g in gaps] == [
        ("BTCUSDT", (r(2, 4), r(6, 8)), 6),
        ("ETHUSDT", (), 0),
        ("SOLUSDT", (span,), 10),
    ]
    assert table.queries == [("BTCUSDT", span), ("ETHUSDT", span), ("SOLUSDT", span)]


def test_wait_returns_once_every_repaired_minute_is_written() -> None:
    clock = FakeClock()
    arrivals = [
        ("BTCUSDT", T0 + 2 * M),
        ("BTCUSDT", T0 + 3 * M),
        ("ETHUSDT", T0),
        ("BTCUSDT", T0 + 7 * M),
    ]
    table = MemoryTable({}, arrivals)
    seen: list[tuple[int, int]] = []
    left = wait_until_written(
        table,
        {"BTCUSDT": [r(2, 3), r(7, 7)], "ETHUSDT": [r(0, 0)], "XRPUSDT": []},
        60,
        on_progress=lambda written, total: seen.append((written, total)),
        clock=lambda: clock() / 1000,
        sleep=clock.sleep,
    )
    assert left == {}
    assert seen == [(1, 4), (3, 4), (4, 4)]
    assert clock.sleeps == [1.0, 1.0]
    # each poll reads one range per symbol: the hull of what it still waits for
    assert table.queries[-1] == ("BTCUSDT", r(7, 7))


def test_wait_is_bounded_and_says_what_is_left() -> None:
    clock = FakeClock()
    table = MemoryTable({"BTCUSDT": [T0]})
    left = wait_until_written(
        table, {"BTCUSDT": [r(0, 2)]}, 5.5, clock=lambda: clock() / 1000, sleep=clock.sleep
    )
    assert left == {"BTCUSDT": [r(1, 2)]}
    assert sum(clock.sleeps) == 5.5 and len(table.queries) == 7
