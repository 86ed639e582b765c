"""The simulated exchange's trades and the klines made from them; pure, deterministic, no I/O.

Every minute's trades are a function of (seed, symbol, minute) alone, so any range of the past
can be asked for in any order and always gives the same candles (backfill, gap repair). The
price level at a minute's start is smooth value noise over several time scales; a minute's trades
walk from its level to the next minute's, so the last trade of one minute meets the next.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from crypto_live.exchange.price_walk import format_amount, known_price, tick_size

__all__ = [
    "INTERVALS_MS",
    "LOT_STEP",
    "MS_PER_MINUTE",
    "Candle",
    "Trade",
    "TradeModel",
    "base_price",
]

MS_PER_MINUTE = 60_000
# The fixed-length intervals this exchange serves (Binance's names); all aligned to the epoch.
INTERVALS_MS: dict[str, int] = {
    "1m": MS_PER_MINUTE,
    "3m": 3 * MS_PER_MINUTE,
    "5m": 5 * MS_PER_MINUTE,
    "15m": 15 * MS_PER_MINUTE,
    "30m": 30 * MS_PER_MINUTE,
    "1h": 60 * MS_PER_MINUTE,
}
LOT_STEP = Decimal("0.00001")
_EIGHT_DP = Decimal("0.00000001")
# (period in minutes, amplitude of log price): slow trends plus faster wiggles.
_SCALES = ((4096, 0.04), (512, 0.015), (64, 0.005), (8, 0.0015))


@dataclass(frozen=True, slots=True)
class Trade:
    time_ms: int
    price: Decimal
    qty: Decimal
    buyer_is_maker: bool


@dataclass(frozen=True, slots=True)
class Candle:
    """One kline; ``close_time_ms`` is Binance's (open time + interval - 1)."""

    open_time_ms: int
    close_time_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trades: int
    taker_buy_volume: Decimal
    taker_buy_quote_volume: Decimal

    def as_binance(self) -> list[object]:
        """Binance's kline array: times as ints, amounts as 8-decimal strings."""
        return [
            self.open_time_ms,
            format_amount(self.open),
            format_amount(self.high),
            format_amount(self.low),
            format_amount(self.close),
            format_amount(self.volume),
            self.close_time_ms,
            format_amount(self.quote_volume),
            self.trades,
            format_amount(self.taker_buy_volume),
            format_amount(self.taker_buy_quote_volume),
            "0",
        ]


def _unit(seed: int, symbol: str, *key: int) -> float:
    """A uniform number in [-1, 1) fixed by its key (portable: crc32, not hash())."""
    digest = zlib.crc32(f"{seed}:{symbol}:{':'.join(map(str, key))}".encode())
    return digest / 2**31 - 1.0


def base_price(symbol: str) -> Decimal:
    """A symbol's reference price: the real one for majors, else fixed by the name."""
    known = known_price(symbol)
    if known is not None:
        return known
    digits = zlib.crc32(symbol.encode())
    return Decimal(1000 + digits % 9000).scaleb(-((digits // 9000) % 7))


class TradeModel:
    """Deterministic trades of every symbol, minute by minute, and klines over them."""

    def __init__(self, seed: int = 0, trades_per_minute: tuple[int, int] = (8, 40)) -> None:
        self.seed = seed
        self._trades_range = trades_per_minute
        self.minute_trades = lru_cache(maxsize=20_000)(self._minute_trades)

    def level(self, symbol: str, minute: int) -> Decimal:
        """The price level at the start of ``minute`` (epoch minutes)."""
        log_move = 0.0
        for period, amplitude in _SCALES:
            cell, offset = divmod(minute, period)
            left = _unit(self.seed, symbol, period, cell)
            right = _unit(self.seed, symbol, period, cell + 1)
            weight = (1 - math.cos(math.pi * offset / period)) / 2  # smooth between grid points
            log_move += amplitude * (left + (right - left) * weight)
        base = base_price(symbol)
        tick = tick_size(base)
        return max((base * Decimal(repr(math.exp(log_move)))).quantize(tick), tick)

    def _minute_trades(self, symbol: str, minute: int) -> tuple[Trade, ...]:
        rng = random.Random(f"{self.seed}:{symbol}:{minute}")  # noqa: S311 - simulation
        start, end = self.level(symbol, minute), self.level(symbol, minute + 1)
        tick = tick_size(base_price(symbol))
        count = rng.randint(*self._trades_range)
        offsets = sorted(rng.randrange(MS_PER_MINUTE) for _ in range(count))
        notional = Decimal(rng.randint(200, 20_000))  # quote amount per trade, roughly
        trades = []
        for index, offset in enumerate(offsets):
            # A noisy bridge from this minute's level to the next: the last trade lands on it.
            share = Decimal(index) / Decimal(max(count - 1, 1))
            noise = Decimal(rng.randint(-20, 20)) * tick if 0 < index < count - 1 else 0
            price = max((start + (end - start) * share + noise).quantize(tick), tick)
            qty = max((notional * Decimal(rng.randint(1, 200)) / 100 / price), LOT_STEP)
            trades.append(
                Trade(
                    minute * MS_PER_MINUTE + offset,
                    price,
                    qty.quantize(LOT_STEP),
                    rng.random() < 0.5,
                )
            )
        return tuple(trades)

    def trades(self, symbol: str, start_ms: int, end_ms: int) -> Iterator[Trade]:
        """Every trade with ``start_ms <= time <= end_ms``, in time order."""
        for minute in range(start_ms // MS_PER_MINUTE, end_ms // MS_PER_MINUTE + 1):
            for trade in self.minute_trades(symbol, minute):
                if start_ms <= trade.time_ms <= end_ms:
                    yield trade

    def candle(
        self, symbol: str, open_time_ms: int, interval_ms: int, now_ms: int
    ) -> Candle | None:
        """The kline opening at ``open_time_ms`` from the trades up to ``now_ms``; None if none."""
        close_time = open_time_ms + interval_ms - 1
        trades = list(self.trades(symbol, open_time_ms, min(close_time, now_ms)))
        if not trades:
            return None
        buys = [trade for trade in trades if not trade.buyer_is_maker]
        return Candle(
            open_time_ms=open_time_ms,
            close_time_ms=close_time,
            open=trades[0].price,
            high=max(trade.price for trade in trades),
            low=min(trade.price for trade in trades),
            close=trades[-1].price,
            volume=sum((trade.qty for trade in trades), Decimal(0)),
            quote_volume=_quote(trades),
            trades=len(trades),
            taker_buy_volume=sum((trade.qty for trade in buys), Decimal(0)),
            taker_buy_quote_volume=_quote(buys),
        )

    def klines(
        self,
        symbol: str,
        interval_ms: int,
        *,
        now_ms: int,
        listed_ms: int,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[Candle]:
        """Binance's paging: open time >= start (ascending from there) and <= end; without a
        start, the ``limit`` latest up to end (or now). Nothing before listing or after now."""
        first = max(start_ms if start_ms is not None else listed_ms, listed_ms)
        first = -(-first // interval_ms) * interval_ms  # the first open time at or after it
        last = min(end_ms if end_ms is not None else now_ms, now_ms)
        last -= last % interval_ms
        if last < first or limit < 1:
            return []
        if start_ms is not None:
            opens = range(first, min(last, first + (limit - 1) * interval_ms) + 1, interval_ms)
        else:
            opens = range(max(first, last - (limit - 1) * interval_ms), last + 1, interval_ms)
        candles = (self.candle(symbol, open_ms, interval_ms, now_ms) for open_ms in opens)
        return [candle for candle in candles if candle is not None]


def _quote(trades: list[Trade]) -> Decimal:
    return sum(((trade.price * trade.qty).quantize(_EIGHT_DP) for trade in trades), Decimal(0))
