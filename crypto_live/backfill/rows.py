"""A REST kline row as a Kline record (schemas/kline.avsc), pure.

GET /api/v3/klines rows are ``[open_time, o, h, l, c, v, close_time, q, n, V, Q, ignore]``;
prices and volumes stay exactly the strings Binance sent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

from crypto_live.backfill import BackfillError
from crypto_live.backfill.minutes import MS_PER_MINUTE
from schemas.kline import EVENT_TYPE, INTERVAL, STREAM_SUFFIX, Kline
from schemas.record import iso_timestamp

__all__ = ["INTERVAL", "SOURCE", "kline_record", "stream_type"]

SOURCE: Final = "backfill"
_ROW_FIELDS: Final = 11  # the twelfth ("ignore") is not needed
_DECIMAL: Final = re.compile(r"[0-9]{1,30}(\.[0-9]{1,20})?")
# Row index -> Kline field, for the exact-decimal strings.
_DECIMALS: Final = {
    1: "open_price",
    2: "high_price",
    3: "low_price",
    4: "close_price",
    5: "base_volume",
    7: "quote_volume",
    9: "taker_buy_base_volume",
    10: "taker_buy_quote_volume",
}


def stream_type(symbol: str) -> str:
    """``btcusdt@kline_1m``: the stream name the producer's kline events carry."""
    return symbol.lower() + STREAM_SUFFIX


def kline_record(symbol: str, row: Sequence[Any], received_at_us: int) -> Kline:
    """The closed Kline record of one 1-minute REST row; BackfillError for a malformed row."""
    if not isinstance(row, Sequence) or isinstance(row, str) or len(row) < _ROW_FIELDS:
        raise BackfillError(f"Binance sent a malformed kline row for {symbol}: {row!r:.120}")
    open_time, close_time, trades = row[0], row[6], row[8]
    if not all(type(value) is int for value in (open_time, close_time, trades)):
        raise BackfillError(f"Binance sent a kline row with non-integer times for {symbol}")
    if open_time % MS_PER_MINUTE or close_time != open_time + MS_PER_MINUTE - 1:
        raise BackfillError(
            f"Binance sent a kline of {symbol} that is not one whole minute: "
            f"{open_time}..{close_time}"
        )
    decimals: dict[str, str] = {}
    for index, field in _DECIMALS.items():
        value = row[index]
        if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
            raise BackfillError(
                f"Binance sent a kline of {symbol} at {open_time} whose {field} is not a "
                f"decimal string: {value!r:.40}"
            )
        decimals[field] = value
    return Kline(
        event_type=EVENT_TYPE,
        event_time=close_time + 1,
        stream_type=stream_type(symbol),
        symbol=symbol,
        interval=INTERVAL,
        open_time=open_time,
        close_time=close_time,
        first_trade_id=-1,
        last_trade_id=-1,
        open_price=decimals["open_price"],
        close_price=decimals["close_price"],
        high_price=decimals["high_price"],
        low_price=decimals["low_price"],
        base_volume=decimals["base_volume"],
        quote_volume=decimals["quote_volume"],
        trades=trades,
        closed=True,
        taker_buy_base_volume=decimals["taker_buy_base_volume"],
        taker_buy_quote_volume=decimals["taker_buy_quote_volume"],
        source=SOURCE,
        iso_timestamp=iso_timestamp(close_time + 1),
        received_at=received_at_us,
    )
