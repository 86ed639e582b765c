"""Raw kline objects (the S3 consumer's gzip JSONL of closed klines) into candle rows.

``klines_jsonl/year=YYYY/month=MM/day=DD/hour=HH/<shard>-<seq>-<sub>.jsonl.gz``, filed by
Kinesis arrival hour like the miniTicker raw lake; one JSON object per line with the field
names of schemas/kline.avsc (decimals as exact strings, times as ints). A row's hour is the
hour of its ``open_time``; the last minute of an hour closes, and so arrives, in the next.
"""

from __future__ import annotations

from typing import Any, Final

from crypto_live.lake.arrow import pa, pc
from crypto_live.lake.candles import MS_PER_MINUTE
from crypto_live.lake.minute_candles import KLINE, MinuteCandle
from crypto_live.lake.reader import DECIMAL_TYPE, ParsedObject, RawFormat, parse_jsonl
from schemas.kline import INTERVAL

DEFAULT_KLINES_PREFIX: Final = "klines_jsonl"
_PRICES: Final = ("open_price", "close_price", "high_price", "low_price")
# The kline.avsc fields a candle needs; the others (trade ids, taker volumes, ...) are ignored.
KLINE_SCHEMA: Final = pa.schema(
    [
        pa.field("symbol", pa.string()),
        pa.field("interval", pa.string()),
        pa.field("open_time", pa.int64()),
        pa.field("close_time", pa.int64()),
        *[pa.field(name, DECIMAL_TYPE) for name in _PRICES],
        pa.field("base_volume", DECIMAL_TYPE),
        pa.field("quote_volume", DECIMAL_TYPE),
        pa.field("trades", pa.int64()),
        pa.field("closed", pa.bool_()),
    ]
)


def parse_klines(body: bytes) -> ParsedObject:
    """The closed 1-minute klines of one raw object; any other line (broken, a field missing
    or mistyped, not closed, another interval, times not one whole minute) is a bad line."""
    parsed = parse_jsonl(body, KLINE_SCHEMA)
    table = parsed.table
    if table.num_rows == 0:
        return parsed
    open_time, close_time = table["open_time"], table["close_time"]
    valid = pc.and_(table["closed"], pc.equal(table["interval"], INTERVAL))
    minute = pc.multiply(pc.divide(open_time, MS_PER_MINUTE), MS_PER_MINUTE)  # ints: floor
    valid = pc.and_(valid, pc.equal(open_time, minute))
    valid = pc.and_(valid, pc.equal(close_time, pc.add(open_time, MS_PER_MINUTE - 1)))
    kept = table.filter(valid)
    return ParsedObject(kept, parsed.bad_lines + table.num_rows - kept.num_rows)


KLINE_FORMAT: Final = RawFormat(parse_klines, KLINE_SCHEMA, "open_time")


def kline_candles(table: Any) -> list[MinuteCandle]:
    """Rows of ``parse_klines`` as candles (``source`` kline), in table order."""
    return [
        MinuteCandle(
            symbol=row["symbol"],
            open=row["open_price"],
            close=row["close_price"],
            high=row["high_price"],
            low=row["low_price"],
            base_volume=row["base_volume"],
            quote_volume=row["quote_volume"],
            trades=row["trades"],
            open_time=row["open_time"],
            close_time=row["close_time"],
            source=KLINE,
        )
        for row in table.to_pylist()
    ]
