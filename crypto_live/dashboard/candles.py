"""1-minute candles of the live view, built from the DynamoDB history and kept per symbol.

Each refresh reads only what may still change: the history since the start of the previous
minute (a grace minute for records the pipeline delivers a little late). Earlier minutes are
final and kept; the candle builder is the lake's (crypto_live.lake.candles), so the live chart
and `lake candles` agree on what a minute's open, high, low and close are.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from crypto_live.dashboard.views import candle_ticks
from crypto_live.lake.candles import MS_PER_MINUTE, Candle, Tick, build_candles

# (since_ms) -> history items of one symbol with event_time >= since_ms, in any order
ReadSince = Callable[[int], Sequence[Mapping[str, Any]]]
GRACE_MINUTES: Final = 1


class CandleBook:
    """One symbol's candles over a sliding window (thread-safe)."""

    def __init__(self, symbol: str) -> None:
        self._symbol = symbol
        self._lock = threading.Lock()
        self._final: dict[int, Candle] = {}  # open time -> candle of a minute before _until
        self._until = 0  # minutes before this are final
        self._base: Tick | None = None  # the last update before _until (volume base)

    def refresh(self, read_since: ReadSince, since_ms: int, now_ms: int) -> list[Candle]:
        """The candles of the minutes from ``since_ms`` (rounded down to a minute) to now."""
        since = since_ms // MS_PER_MINUTE * MS_PER_MINUTE
        horizon = (now_ms // MS_PER_MINUTE - GRACE_MINUTES) * MS_PER_MINUTE
        with self._lock:
            if since > self._until or self._until > now_ms:  # nothing kept is of use
                self._final, self._until, self._base = {}, since, None
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
