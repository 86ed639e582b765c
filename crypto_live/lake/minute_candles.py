"""The rows of `lake candles`: exact klines where there are, else the miniTicker approximation.

Pure (no I/O, no pyarrow). A minute with a closed Binance kline takes the kline's values as
Binance computed them from every trade (``source`` ``kline``); a minute with miniTicker updates
but no kline falls back to ``crypto_live.lake.candles`` (``source``
``miniticker-approximation``), whose number of trades is unknown: None, never the update count.
The same kline may be in the raw lake more than once (the websocket and a later backfill of the
minute, a replay); one per (symbol, open_time) is kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import astuple, dataclass
from decimal import Decimal
from typing import Final, Literal

from crypto_live.lake.candles import Candle

Source = Literal["kline", "miniticker-approximation"]
KLINE: Final[Source] = "kline"
APPROXIMATION: Final[Source] = "miniticker-approximation"


@dataclass(frozen=True, slots=True)
class MinuteCandle:
    """One symbol's minute as `lake candles` writes it; times are epoch ms (open_time a whole
    minute, close_time its last millisecond)."""

    symbol: str
    open: Decimal
    close: Decimal
    high: Decimal
    low: Decimal
    base_volume: Decimal  # base asset (BTC of BTCUSDT)
    quote_volume: Decimal  # quote asset (USDT of BTCUSDT)
    trades: int | None  # Binance's number of trades; None when approximated
    open_time: int
    close_time: int
    source: Source


@dataclass(frozen=True, slots=True)
class UniqueKlines:
    """Klines, one per (symbol, open_time) in that order; how many repeats were dropped, and
    how many of those disagreed with the kept one (never expected: Binance's candle is final)."""

    klines: list[MinuteCandle]
    duplicates: int = 0
    conflicts: int = 0


def approximated(candle: Candle) -> MinuteCandle:
    """A miniTicker candle as a row: trades unknown (its update count is not a trade count)."""
    return MinuteCandle(
        symbol=candle.symbol,
        open=candle.open,
        close=candle.close,
        high=candle.high,
        low=candle.low,
        base_volume=candle.base_volume,
        quote_volume=candle.quote_volume,
        trades=None,
        open_time=candle.open_time,
        close_time=candle.close_time,
        source=APPROXIMATION,
    )


def _order(candle: MinuteCandle) -> tuple[object, ...]:
    # The key first; the values then pick the same survivor whatever order the inputs came in.
    return (candle.symbol, candle.open_time, *astuple(candle))


def unique_klines(klines: Iterable[MinuteCandle]) -> UniqueKlines:
    """One kline per (symbol, open_time), sorted by it; among disagreeing repeats the smallest
    by value wins, so the result never depends on the input order."""
    kept: list[MinuteCandle] = []
    duplicates = conflicts = 0
    for kline in sorted(klines, key=_order):
        last = kept[-1] if kept else None
        if last is not None and (last.symbol, last.open_time) == (kline.symbol, kline.open_time):
            duplicates += 1
            conflicts += kline != last
            continue
        kept.append(kline)
    return UniqueKlines(kept, duplicates, conflicts)


def merge_minutes(
    approximations: Iterable[Candle], klines: Iterable[MinuteCandle]
) -> list[MinuteCandle]:
    """Every minute of either input, sorted by (symbol, open_time): the kline where there is
    one (klines deduplicated already), else the approximation."""
    minutes = {(c.symbol, c.open_time): approximated(c) for c in approximations}
    minutes.update(((k.symbol, k.open_time), k) for k in klines)
    return [minutes[key] for key in sorted(minutes)]
