"""Seeded random walk of many symbols, emitted as Binance miniTicker payloads; pure, no I/O."""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal
from typing import TypedDict

__all__ = [
    "MarketSimulator",
    "MiniTickerPayload",
    "format_amount",
    "generate_symbols",
    "known_price",
    "tick_size",
]


class MiniTickerPayload(TypedDict):
    """A Binance ``24hrMiniTicker`` event; every amount is a string with eight decimals."""

    e: str  # event type
    E: int  # event time, epoch ms
    s: str  # symbol
    c: str  # close (last) price
    o: str  # open price 24 h ago
    h: str  # 24 h high
    l: str  # noqa: E741 - 24 h low; the name is Binance's
    v: str  # 24 h base asset volume
    q: str  # 24 h quote asset volume


EVENT_TYPE = "24hrMiniTicker"
SECONDS_PER_DAY = 86_400

_EIGHT_DP = Decimal("0.00000001")
_MILLION = Decimal(1_000_000)

# Well-known pairs with a plausible starting price, so small simulations look like the real feed.
_MAJORS: tuple[tuple[str, str], ...] = (
    ("BTCUSDT", "65000.00"),
    ("ETHUSDT", "3500.00"),
    ("BNBUSDT", "580.00"),
    ("SOLUSDT", "150.00"),
    ("XRPUSDT", "0.5200"),
    ("DOGEUSDT", "0.12000"),
    ("ADAUSDT", "0.4500"),
    ("TRXUSDT", "0.12000"),
    ("AVAXUSDT", "35.00"),
    ("LINKUSDT", "14.50"),
    ("DOTUSDT", "6.800"),
    ("LTCUSDT", "80.00"),
    ("BCHUSDT", "450.0"),
    ("UNIUSDT", "9.500"),
    ("ATOMUSDT", "8.200"),
    ("XLMUSDT", "0.11000"),
    ("ETCUSDT", "26.00"),
    ("FILUSDT", "5.500"),
    ("APTUSDT", "8.900"),
    ("NEARUSDT", "5.600"),
    ("ARBUSDT", "0.9500"),
    ("OPUSDT", "2.100"),
    ("SHIBUSDT", "0.00002400"),
    ("PEPEUSDT", "0.00001100"),
)


def generate_symbols(count: int) -> list[str]:
    """Return ``count`` unique uppercase symbols: real majors first, then ``SYM0042USDT``-style."""
    if count < 0:
        raise ValueError(f"symbol count must be >= 0, got {count}")
    names = [name for name, _ in _MAJORS[:count]]
    width = max(4, len(str(count)))
    names.extend(f"SYM{index:0{width}d}USDT" for index in range(len(names), count))
    return names


def known_price(symbol: str) -> Decimal | None:
    """The plausible starting price of a well-known pair, or None for a generated symbol."""
    price = dict(_MAJORS).get(symbol)
    return None if price is None else Decimal(price)


def format_amount(value: Decimal) -> str:
    """Format like Binance: fixed point, exactly eight decimals, never scientific notation."""
    return format(value.quantize(_EIGHT_DP), "f")


def tick_size(price: Decimal) -> Decimal:
    """The PRICE_FILTER tick of a symbol priced ``price``."""
    # Roughly six significant digits, like Binance's PRICE_FILTER, clamped to [1e-8, 0.01].
    exponent = min(max(price.adjusted() - 5, -8), -2)
    return Decimal(1).scaleb(exponent)


@dataclass
class _SymbolState:
    symbol: str
    tick: Decimal
    open: Decimal
    close: Decimal
    high: Decimal
    low: Decimal
    base_volume: Decimal
    quote_volume: Decimal
    quote_per_second: Decimal


class MarketSimulator:
    """Geometric random walk per symbol; ``tick`` advances every symbol one step.

    The 24 h window is approximated: open stays fixed, high/low only widen, volumes only grow.
    """

    def __init__(
        self,
        symbols: int = 20,
        seed: int | None = None,
        volatility: float = 0.0002,
    ) -> None:
        if symbols < 1:
            raise ValueError(f"need at least one symbol, got {symbols}")
        self._rng = random.Random(seed)  # noqa: S311 - simulation, not cryptography
        self._volatility = volatility
        known = dict(_MAJORS)
        self._states = [
            self._initial_state(name, known.get(name)) for name in generate_symbols(symbols)
        ]

    @property
    def symbols(self) -> tuple[str, ...]:
        """Symbols in emission order."""
        return tuple(state.symbol for state in self._states)

    def tick(self, now_ms: int) -> list[MiniTickerPayload]:
        """Advance every symbol one step and return one miniTicker payload per symbol."""
        return [self._payload(self._step(state), now_ms) for state in self._states]

    def _initial_state(self, symbol: str, known_price: str | None) -> _SymbolState:
        rng = self._rng
        if known_price is None:
            # Log-uniform from 0.001 to 9999 built from integers, so it is exact and portable.
            open_ = Decimal(rng.randint(1000, 9999)).scaleb(rng.randint(-6, 0))
        else:
            open_ = Decimal(known_price)
        tick = tick_size(open_)
        open_ = open_.quantize(tick)
        close = self._round_price(open_ * (1 + self._percent(-2, 2)), tick)
        high = max(self._round_price(open_ * (1 + self._percent(0, 3)), tick), open_, close)
        low = min(self._round_price(open_ * (1 - self._percent(0, 3)), tick), open_, close)
        daily_quote = Decimal(rng.randint(1_000_000, 500_000_000))
        base_volume = (daily_quote / open_).quantize(_EIGHT_DP)
        return _SymbolState(
            symbol=symbol,
            tick=tick,
            open=open_,
            close=close,
            high=high,
            low=low,
            base_volume=base_volume,
            quote_volume=(base_volume * open_).quantize(_EIGHT_DP),
            quote_per_second=daily_quote / SECONDS_PER_DAY,
        )

    def _percent(self, low: int, high: int) -> Decimal:
        # Uniform in [low %, high %] with 1e-4 % resolution, drawn as an integer to stay exact.
        return Decimal(self._rng.randint(low * 10_000, high * 10_000)).scaleb(-6)

    def _round_price(self, price: Decimal, tick: Decimal) -> Decimal:
        return max(price.quantize(tick), tick)

    def _step(self, state: _SymbolState) -> _SymbolState:
        rng = self._rng
        micro_return = round(rng.gauss(0.0, self._volatility) * 1_000_000)
        state.close = self._round_price(state.close * (1 + micro_return / _MILLION), state.tick)
        state.high = max(state.high, state.close)
        state.low = min(state.low, state.close)
        # Traded quote amount this step averages one second of the daily turnover.
        traded_quote = state.quote_per_second * Decimal(rng.randint(0, 2_000)).scaleb(-3)
        traded_base = (traded_quote / state.close).quantize(_EIGHT_DP)
        state.base_volume += traded_base
        state.quote_volume += (traded_base * state.close).quantize(_EIGHT_DP)
        return state

    @staticmethod
    def _payload(state: _SymbolState, now_ms: int) -> MiniTickerPayload:
        return {
            "e": EVENT_TYPE,
            "E": now_ms,
            "s": state.symbol,
            "c": format_amount(state.close),
            "o": format_amount(state.open),
            "h": format_amount(state.high),
            "l": format_amount(state.low),
            "v": format_amount(state.base_volume),
            "q": format_amount(state.quote_volume),
        }
