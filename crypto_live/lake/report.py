"""The daily report per symbol, folded from its 1-minute candles; pure (no I/O, no pyarrow).

Opening and closing price are the first and last traded price of the UTC day, min and max the
extremes of the traded prices, volumes the sums of the candles' volumes, and the change is
against the previous day's closing price (the last price before midnight). ``updates`` counts
the day's miniTicker updates, which the fold is told apart from the candles.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Final, Protocol

PERCENT_PLACES: Final = Decimal("0.0001")
AMOUNT_PLACES: Final = Decimal("0.00000001")  # Binance's eight decimals
COLUMNS: Final = (
    "date",
    "symbol",
    "open_price",
    "close_price",
    "min_price",
    "max_price",
    "base_volume",
    "quote_volume",
    "updates",
    "previous_close",
    "change_pct",
)


@dataclass(frozen=True, slots=True)
class DailyRow:
    """One symbol's day."""

    day: date
    symbol: str
    open_price: Decimal
    close_price: Decimal
    min_price: Decimal
    max_price: Decimal
    base_volume: Decimal
    quote_volume: Decimal
    updates: int
    previous_close: Decimal | None
    change_pct: Decimal | None


def change_pct(close: Decimal, previous_close: Decimal | None) -> Decimal | None:
    """(close - previous) / previous in percent, 4 places, half-even; None without a previous."""
    if previous_close is None or previous_close == 0:
        return None
    with localcontext() as context:
        context.prec = 50
        change = (close - previous_close) * 100 / previous_close
        return change.quantize(PERCENT_PLACES, rounding=ROUND_HALF_EVEN)


class MinuteBar(Protocol):
    """What the fold reads of a 1-minute candle (exact or approximated)."""

    @property
    def open(self) -> Decimal: ...
    @property
    def close(self) -> Decimal: ...
    @property
    def high(self) -> Decimal: ...
    @property
    def low(self) -> Decimal: ...
    @property
    def base_volume(self) -> Decimal: ...
    @property
    def quote_volume(self) -> Decimal: ...
    @property
    def open_time(self) -> int: ...


class DayFold:
    """Candles of one symbol and day, added in time order, folded into a DailyRow."""

    def __init__(self, day: date, symbol: str) -> None:
        self.day = day
        self.symbol = symbol
        self._first: MinuteBar | None = None
        self._last: MinuteBar | None = None
        self._low = self._high = Decimal(0)
        self._base = self._quote = Decimal(0)
        self._updates = 0

    def add(self, candles: Iterable[MinuteBar]) -> None:
        for candle in candles:
            if self._last is not None and candle.open_time <= self._last.open_time:
                raise ValueError(f"{self.symbol}: candles must ascend ({candle.open_time})")
            if self._first is None:
                self._first = candle
                self._low, self._high = candle.low, candle.high
            self._last = candle
            self._low = min(self._low, candle.low)
            self._high = max(self._high, candle.high)
            self._base += candle.base_volume
            self._quote += candle.quote_volume

    def add_updates(self, count: int) -> None:
        """Count ``count`` more miniTicker updates of the day."""
        self._updates += count

    def row(self, previous_close: Decimal | None) -> DailyRow | None:
        """The day's row; None when the symbol had no update that day."""
        if self._first is None or self._last is None:
            return None
        return DailyRow(
            day=self.day,
            symbol=self.symbol,
            open_price=self._first.open,
            close_price=self._last.close,
            min_price=self._low,
            max_price=self._high,
            base_volume=self._base,
            quote_volume=self._quote,
            updates=self._updates,
            previous_close=previous_close,
            change_pct=change_pct(self._last.close, previous_close),
        )


def plain(value: Decimal | int | None, places: Decimal = AMOUNT_PLACES) -> str:
    """Fixed-point text with ``places`` (never ``1E-8``); empty for None."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value.quantize(places, rounding=ROUND_HALF_EVEN), "f")
    return str(value)


def to_csv(rows: Sequence[DailyRow]) -> bytes:
    """The report as CSV (header, one row per symbol in the given order), ``\\n`` line ends."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        amounts = (
            row.open_price,
            row.close_price,
            row.min_price,
            row.max_price,
            row.base_volume,
            row.quote_volume,
        )
        writer.writerow(
            [
                row.day.isoformat(),
                row.symbol,
                *(plain(value) for value in amounts),
                row.updates,
                plain(row.previous_close),
                plain(row.change_pct, PERCENT_PLACES),
            ]
        )
    return out.getvalue().encode()
