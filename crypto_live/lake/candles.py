"""1-minute OHLCV candles from miniTicker updates; pure (no I/O, no pyarrow).

Prices are the miniTicker last price ``c`` of each update within the minute. Volume comes from
``v``/``q``, which are *rolling 24 h* totals: the volume traded between two updates is the
increase of ``v``. When ``v`` decreases, the 24 h window dropped more old trades than new ones
came in: the traded amount is unknown but not negative, so that step counts 0 (a lower bound).
A candle's volume is the sum of its steps, the first one measured from the symbol's previous
update (possibly in an earlier minute or hour); a symbol's very first update only sets the base.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

MS_PER_MINUTE: Final = 60_000
ZERO: Final = Decimal(0)


@dataclass(frozen=True, slots=True)
class Tick:
    """The fields of one miniTicker update a candle needs."""

    event_time: int  # epoch ms
    price: Decimal  # last price (c)
    base_volume: Decimal  # rolling 24 h base volume (v)
    quote_volume: Decimal  # rolling 24 h quote volume (q)


@dataclass(frozen=True, slots=True)
class Candle:
    """One symbol's minute; times are epoch ms, close time is the minute's last millisecond."""

    symbol: str
    open: Decimal
    close: Decimal
    high: Decimal
    low: Decimal
    base_volume: Decimal
    quote_volume: Decimal
    updates: int
    open_time: int
    close_time: int


def traded(before: Decimal, after: Decimal) -> Decimal:
    """Volume traded between two readings of a rolling 24 h total; 0 when the total fell."""
    return max(after - before, ZERO)


def _minutes(ticks: Iterable[Tick]) -> Iterator[list[Tick]]:
    current: list[Tick] = []
    for tick in ticks:
        if current and tick.event_time // MS_PER_MINUTE != current[0].event_time // MS_PER_MINUTE:
            yield current
            current = []
        current.append(tick)
    if current:
        yield current


def build_candles(symbol: str, ticks: Iterable[Tick], previous: Tick | None = None) -> list[Candle]:
    """Candles of the minutes that had updates; ``ticks`` ascend by event time (deduplicated),
    ``previous`` is the symbol's last update before them, if known."""
    candles: list[Candle] = []
    last = previous
    for minute in _minutes(ticks):
        base = quote = ZERO
        for tick in minute:
            if last is not None:
                if tick.event_time <= last.event_time:
                    raise ValueError(f"{symbol}: ticks must ascend ({tick.event_time})")
                base += traded(last.base_volume, tick.base_volume)
                quote += traded(last.quote_volume, tick.quote_volume)
            last = tick
        prices = [tick.price for tick in minute]
        start = minute[0].event_time // MS_PER_MINUTE * MS_PER_MINUTE
        candles.append(
            Candle(
                symbol=symbol,
                open=prices[0],
                close=prices[-1],
                high=max(prices),
                low=min(prices),
                base_volume=base,
                quote_volume=quote,
                updates=len(minute),
                open_time=start,
                close_time=start + MS_PER_MINUTE - 1,
            )
        )
    return candles
