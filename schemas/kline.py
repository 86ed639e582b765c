"""The in-memory shape of one 1-minute kline, as schemas/kline.avsc names its fields."""

from __future__ import annotations

from typing import Final, TypedDict

EVENT_TYPE: Final = "kline"
INTERVAL: Final = "1m"
STREAM_SUFFIX: Final = "@kline_1m"


class Kline(TypedDict):
    """One Binance kline (crypto_live.v1.Kline); prices and volumes are exact strings."""

    event_type: str
    event_time: int
    stream_type: str
    symbol: str
    interval: str
    open_time: int
    close_time: int
    first_trade_id: int
    last_trade_id: int
    open_price: str
    close_price: str
    high_price: str
    low_price: str
    base_volume: str
    quote_volume: str
    trades: int
    closed: bool
    taker_buy_base_volume: str
    taker_buy_quote_volume: str
    source: str
    iso_timestamp: str
    received_at: int


FIELD_ORDER: Final[tuple[str, ...]] = tuple(Kline.__annotations__)
