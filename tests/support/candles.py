"""Readers for the backfill and gap-repair tests: a stream with every user record decoded by
its own schema (miniTickers and klines side by side), the candles table, and the REST klines of
the simulated exchange, compared as the values of Binance's kline rows."""

from __future__ import annotations

import warnings
from decimal import Decimal
from typing import Any

from pydantic import SecretStr

from consumers.operations.stream_dump import ReadRecord, read_stream
from core.aws import AwsClients
from core.settings import Settings
from crypto_live.orders.binance_api import ApiCredentials, binance_client
from schemas.codec import KLINE_SCHEMA
from tests.support.pipeline import scan_all

# A candle's values in the order of Binance's REST row after the open time (ignore excluded).
ROW_FIELDS = (
    "open_price", "high_price", "low_price", "close_price", "base_volume", "close_time",
    "quote_volume", "trades", "taker_buy_base_volume", "taker_buy_quote_volume",
)  # fmt: skip
Values = tuple[Decimal, ...]


def stream_klines(aws: AwsClients, stream: str) -> list[ReadRecord]:
    """The stream's kline records, shard by shard in order."""
    shards = read_stream(aws.kinesis, stream).values()
    return [row for rows in shards for row in rows if row.schema == KLINE_SCHEMA]


def table_candles(aws: AwsClients, table: str) -> dict[tuple[str, int], Values]:
    """The candles table as (symbol, open_time) -> its row values; fails on a duplicate key."""
    out: dict[tuple[str, int], Values] = {}
    for item in scan_all(aws, table):
        key = (item["symbol"]["S"], int(item["open_time"]["N"]))
        assert key not in out, f"duplicate candle {key}"
        out[key] = tuple(Decimal(item[name]["N"]) for name in ROW_FIELDS)
    return out


def row_values(row: list[Any]) -> Values:
    """A REST kline row's values (numbers compared as numbers: DynamoDB drops trailing zeros)."""
    return tuple(Decimal(str(value)) for value in row[1:11])


def rest_klines(url: str, symbol: str, start: int, end: int) -> list[list[Any]]:
    """What python-binance's own get_historical_klines reads from ``url`` for [start, end)."""
    no_key = ApiCredentials(SecretStr(""), SecretStr(""))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with binance_client(Settings(binance_api_url=url), no_key) as client:
            rows: list[list[Any]] = client.get_historical_klines(symbol, "1m", start, end - 1)
    return rows
