"""A stream read back with every user record decoded by its own schema (miniTickers and
klines side by side), for the backfill and gap-repair tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consumers.engine.deaggregation import deaggregate
from core.aws import AwsClients
from schemas.codec import KLINE_SCHEMA, default_codec


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
