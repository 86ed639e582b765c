"""Readers for the backfill and gap-repair tests: a stream with every user record decoded by
its own schema (miniTickers and klines side by side), the candles table, and the REST klines of
the simulated exchange, compared as the values of Binance's kline rows."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import SecretStr

from consumers.engine.deaggregation import deaggregate
from core.aws import AwsClients
from core.settings import Settings
from crypto_live.orders.binance_api import ApiCredentials, binance_client
from schemas.codec import KLINE_SCHEMA, default_codec
from tests.support.pipeline import scan_all

# A candle's values in the order of Binance's REST row after the open time (ignore excluded).
ROW_FIELDS = (
    "open_price", "high_price", "low_price", "close_price", "base_volume", "close_time",
    "quote_volume", "trades", "taker_buy_base_volume", "taker_buy_quote_volume",
)  # fmt: skip
Values = tuple[Decimal, ...]


@dataclass(frozen=True)
class TypedRecord:
    shard_id: str
    partition_key: str
    schema: str
    record: dict[str, Any]


def stream_records_typed(aws: AwsClients, stream: str) -> list[TypedRecord]:
    """Every user record of every shard, TRIM_HORIZON to the tip, with its schema name."""
    codec = default_codec()
    out: list[TypedRecord] = []
    for shard in aws.kinesis.list_shards(StreamName=stream)["Shards"]:
        shard_id = shard["ShardId"]
        iterator = aws.kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            response = aws.kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            for raw in response["Records"]:
                for user in deaggregate(raw):
                    schema, record = codec.decode_typed(user.data)
                    out.append(TypedRecord(shard_id, user.partition_key, schema, record))
            if not response["Records"] and response.get("MillisBehindLatest", 0) == 0:
                break
            iterator = response.get("NextShardIterator")
    return out


def stream_klines(aws: AwsClients, stream: str) -> list[TypedRecord]:
    """The stream's kline records."""
    return [r for r in stream_records_typed(aws, stream) if r.schema == KLINE_SCHEMA]


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
