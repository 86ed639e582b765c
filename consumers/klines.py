"""The Kline record as the sinks read it: field order and field types (pure, no I/O).

schemas/kline.avsc is the contract; tests/consumers/test_routing.py checks these tuples
against it, so a schema change cannot silently drop a field from a sink.
"""

from __future__ import annotations

from typing import Final

from schemas.kline import FIELD_ORDER

# In kline.avsc's order: the order of a JSON line in the S3 kline prefix (schemas.kline's).
KLINE_FIELD_ORDER: Final = FIELD_ORDER
KLINE_STRING_FIELDS: Final = (
    "event_type",
    "stream_type",
    "symbol",
    "interval",
    "source",
    "iso_timestamp",
)
KLINE_INTEGER_FIELDS: Final = (
    "event_time",
    "open_time",
    "close_time",
    "first_trade_id",
    "last_trade_id",
    "trades",
    "received_at",
)
# Exact decimal strings, as Binance sent them.
KLINE_DECIMAL_FIELDS: Final = (
    "open_price",
    "close_price",
    "high_price",
    "low_price",
    "base_volume",
    "quote_volume",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
)
KLINE_BOOLEAN_FIELDS: Final = ("closed",)
