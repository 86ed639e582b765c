"""Kline payloads as Binance sends them on ``<symbol>@kline_1m``, and the records the producer
makes of them, for the producer's tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas.kline import Kline

OPEN_TIME = 1_795_000_020_000  # 2026-11-18T11:07:00Z, a whole minute
EVENT_TIME = OPEN_TIME + 60_000 + 1  # just after the close
RECEIVED_AT = EVENT_TIME * 1000 + 2_500


def kline_payload(symbol: str = "BTCUSDT", **k_overrides: Any) -> dict[str, Any]:
    """The ``data`` of one closed kline event; ``k_overrides`` replace fields of ``k``."""
    k: dict[str, Any] = {
        "t": OPEN_TIME,
        "T": OPEN_TIME + 59_999,
        "s": symbol,
        "i": "1m",
        "f": 100,
        "L": 141,
        "o": "91000.01000000",
        "c": "91002.50000000",
        "h": "91010.00000000",
        "l": "90990.10000000",
        "v": "1.23456000",
        "n": 42,
        "x": True,
        "q": "112345.67890000",
        "V": "0.60000000",
        "Q": "54600.00000000",
        "B": "0",
    }
    k.update(k_overrides)
    return {"e": "kline", "E": EVENT_TIME, "s": symbol, "k": k}


def kline_message(data: Any, stream: Any = None) -> dict[str, Any]:
    """The combined-stream envelope of ``data`` (stream from its symbol by default)."""
    if stream is None:
        stream = f"{data['s'].lower()}@kline_1m"
    return {"stream": stream, "data": data}


def expected_kline(data: dict[str, Any], received_at: int = RECEIVED_AT) -> Kline:
    """The record the producer makes of a valid kline payload."""
    k = data["k"]
    return {
        "event_type": "kline",
        "event_time": data["E"],
        "stream_type": f"{data['s'].lower()}@kline_1m",
        "symbol": data["s"],
        "interval": "1m",
        "open_time": k["t"],
        "close_time": k["T"],
        "first_trade_id": k["f"],
        "last_trade_id": k["L"],
        "open_price": k["o"],
        "close_price": k["c"],
        "high_price": k["h"],
        "low_price": k["l"],
        "base_volume": k["v"],
        "quote_volume": k["q"],
        "trades": k["n"],
        "closed": k["x"],
        "taker_buy_base_volume": k["V"],
        "taker_buy_quote_volume": k["Q"],
        "source": "websocket",
        "iso_timestamp": iso_of(data["E"]),
        "received_at": received_at,
    }


def iso_of(epoch_ms: int) -> str:
    """RFC 3339 UTC with milliseconds, computed independently of schemas.record."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"
