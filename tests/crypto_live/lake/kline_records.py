"""Closed klines as the S3 consumer writes them to the raw kline lake (kline.avsc field names,
decimals as exact strings, times as ints), for the lake's tests."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Final

from consumers.s3.format import JsonlGzipFormat
from schemas.codec import SCHEMA_DIR
from tests.support.klines import kline_record

MS_PER_MINUTE: Final = 60_000
KLINE_FIELDS: Final = tuple(
    field["name"] for field in json.loads((SCHEMA_DIR / "kline.avsc").read_text())["fields"]
)


def kline(
    symbol: str,
    open_time: int,
    ohlc: tuple[str, str, str, str],
    base: str,
    quote: str,
    trades: int,
    source: str = "websocket",
    **extra: Any,
) -> dict[str, Any]:
    """One closed 1-minute kline of ``symbol`` opening at ``open_time`` (a whole minute);
    ``ohlc`` are open, high, low, close. A backfilled one carries no trade ids and an event
    time of close + 1, as the backfill writes it."""
    close_time = open_time + MS_PER_MINUTE - 1
    event_time = close_time + 1 if source == "backfill" else close_time + 250
    o, h, low, c = (f"{Decimal(v):.8f}" for v in ohlc)
    backfilled = source == "backfill"
    first_trade_id = -1 if backfilled else 7_000 + open_time // MS_PER_MINUTE
    fields = kline_record(
        symbol,
        open_time,
        event_time,
        first_trade_id=first_trade_id,
        last_trade_id=-1 if backfilled else first_trade_id + 5,
        open_price=o,
        close_price=c,
        high_price=h,
        low_price=low,
        base_volume=f"{Decimal(base):.8f}",
        quote_volume=f"{Decimal(quote):.8f}",
        trades=trades,
        closed=True,
        taker_buy_base_volume=f"{Decimal(base) / 2:.8f}",
        taker_buy_quote_volume=f"{Decimal(quote) / 2:.8f}",
        source=source,
        received_at=event_time * 1000 + 3,
    )
    fields.update(extra)
    assert tuple(fields) == KLINE_FIELDS  # the contract: kline.avsc's fields, in its order
    return fields


def kline_line(record: dict[str, Any]) -> bytes:
    """One compact JSON object and a newline (the raw lake's line)."""
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def gz_lines(records: list[dict[str, Any]]) -> bytes:
    """A raw kline object's body: gzip JSONL, as the S3 consumer writes it."""
    return JsonlGzipFormat().compress(b"".join(kline_line(record) for record in records))
