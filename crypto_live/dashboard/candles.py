"""1-minute candles of the live view, kept per symbol: exact where a closed kline is in the
candles table, else approximated from the DynamoDB history, as `lake candles` makes them.

Each refresh reads only what may still change. The history since the start of the previous
minute (a grace minute for records the pipeline delivers a little late): earlier minutes are
final and kept; the candle builder is the lake's (crypto_live.lake.candles). The candles table
after the last closed kline kept (one Query): a closed kline is final, and the consumer writes
a symbol's klines in order. The two are merged by the lake's own rule
(crypto_live.lake.minute_candles.merge_minutes: the kline wins), so the chart and `lake
candles` agree on every minute's values and source. A kline written later for a minute before
the last one kept (the hourly repair's backfill) shows once the book starts over (a restart, a
longer window).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from crypto_live.dashboard.views import candle_ticks
from crypto_live.lake.candles import MS_PER_MINUTE, Candle, Tick, build_candles
from crypto_live.lake.minute_candles import MinuteCandle, merge_minutes

# (since_ms) -> history items of one symbol with event_time >= since_ms, in any order
ReadSince = Callable[[int], Sequence[Mapping[str, Any]]]
# (from_ms) -> closed klines of one symbol with open_time >= from_ms, in any order
ReadKlinesFrom = Callable[[int], Sequence[MinuteCandle]]
GRACE_MINUTES: Final = 1


def _minute(ms: int) -> int:
    return ms // MS_PER_MINUTE * MS_PER_MINUTE


class ApproximationBook:
    """One symbol's miniTicker-approximated candles over a sliding window (not thread-safe)."""

    def __init__(self, symbol: str) -> None:
        self._symbol = symbol
        self._final: dict[int, Candle] = {}  # open time -> candle of a minute before _until
        self._from = 0  # the window's first minute when the book (re)started
        self._until = 0  # minutes before this are final
        self._base: Tick | None = None  # the last update before _until (volume base)

    def refresh(self, read_since: ReadSince, since_ms: int, now_ms: int) -> list[Candle]:
        """The candles of the minutes from ``since_ms`` (rounded down to a minute) to now."""
        since = _minute(since_ms)
        horizon = _minute(now_ms) - GRACE_MINUTES * MS_PER_MINUTE
        # Nothing kept is of use after a gap, a clock that went back, or a longer window.
        if since > self._until or self._until > now_ms or since < self._from:
            self._final, self._from, self._until, self._base = {}, since, since, None
        ticks = candle_ticks(read_since(self._until))
        candles = build_candles(self._symbol, ticks, self._base)
        recent = [c for c in candles if c.open_time >= horizon]
        self._final.update((c.open_time, c) for c in candles if c.open_time < horizon)
        settled = [tick for tick in ticks if tick.event_time < horizon]
        if settled:
            self._base = settled[-1]
        self._until = max(self._until, horizon)
        for stale in [when for when in self._final if when < since]:
            del self._final[stale]
        return [self._final[when] for when in sorted(self._final)] + recent


class KlineBook:
    """One symbol's closed klines over a sliding window (not thread-safe)."""

    def __init__(self) -> None:
        self._klines: dict[int, MinuteCandle] = {}  # open time -> kline
        self._from: int | None = None  # the window's first minute when the book (re)started

    def refresh(self, read_from: ReadKlinesFrom, since_ms: int) -> list[MinuteCandle]:
        """The klines of the minutes from ``since_ms`` (rounded down to a minute) on, reading
        only those after the last one kept."""
        since = _minute(since_ms)
        if self._from is None or since < self._from:  # a longer window: read it all again
            self._klines, self._from = {}, since
        for stale in [when for when in self._klines if when < since]:
            del self._klines[stale]
        start = max(self._klines, default=since - MS_PER_MINUTE) + MS_PER_MINUTE
        self._klines.update((k.open_time, k) for k in read_from(start) if k.open_time >= since)
        return [self._klines[when] for when in sorted(self._klines)]


class CandleBook:
    """One symbol's minutes over a sliding window, exact where there are klines (thread-safe)."""

    def __init__(self, symbol: str) -> None:
        self._lock = threading.Lock()
        self._approximations = ApproximationBook(symbol)
        self._klines = KlineBook()

    def refresh(
        self, read_since: ReadSince, read_klines: ReadKlinesFrom, since_ms: int, now_ms: int
    ) -> list[MinuteCandle]:
        """Every minute from ``since_ms`` to now with a kline or updates, oldest first: the
        kline where there is one, else the approximation (trades None)."""
        with self._lock:
            approximations = self._approximations.refresh(read_since, since_ms, now_ms)
            klines = self._klines.refresh(read_klines, since_ms)
        return merge_minutes(approximations, klines)
