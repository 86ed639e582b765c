"""The in-memory shape of one miniTicker event, as the Avro schema names its fields."""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Final, TypedDict


class MiniTicker(TypedDict):
    """One Binance miniTicker event (DESIGN.md data model); decimals are exact strings."""

    event_type: str
    event_time: int
    stream_type: str
    symbol: str
    close_price: str
    open_price: str
    high_price: str
    low_price: str
    base_volume: str
    quote_volume: str
    iso_timestamp: str
    received_at: int


# Binance payload key -> our field, for the exact-decimal fields.
DECIMAL_FIELDS: Final[dict[str, str]] = {
    "c": "close_price",
    "o": "open_price",
    "h": "high_price",
    "l": "low_price",
    "v": "base_volume",
    "q": "quote_volume",
}

FIELD_ORDER: Final[tuple[str, ...]] = tuple(MiniTicker.__annotations__)


def iso_timestamp(epoch_ms: int) -> str:
    """``2026-11-23T03:23:38.123Z`` (UTC, ms): the ``iso_timestamp`` field, which sorts as text
    and is the history table's range key."""
    seconds, millis = divmod(epoch_ms, 1000)
    return f"{second_prefix(seconds)}.{millis:03d}Z"


@lru_cache(maxsize=4096)
def second_prefix(epoch_seconds: int) -> str:
    """'YYYY-MM-DDTHH:MM:SS' (UTC), formatted once per second instead of once per record."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_seconds))
