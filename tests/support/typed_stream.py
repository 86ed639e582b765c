"""A whole stream read back with every record decoded by its own fingerprint (miniTicker,
kline, ...): for tests of a stream that carries more than one type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consumers.engine.deaggregation import deaggregate
from schemas.codec import default_codec


@dataclass(frozen=True)
class TypedRecord:
    shard_id: str
    partition_key: str
    schema: str  # e.g. crypto_live.v1.Kline
    record: dict[str, Any]


def read_typed(kinesis: Any, stream: str) -> list[TypedRecord]:
    """Every user record, shard by shard in order, from TRIM_HORIZON to the tip."""
    codec = default_codec()
    out: list[TypedRecord] = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        shard_id = shard["ShardId"]
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            response = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            for raw in response["Records"]:
                for user in deaggregate(raw):
                    name, record = codec.decode_typed(user.data)
                    out.append(TypedRecord(shard_id, user.partition_key, name, record))
            if not response["Records"] and response.get("MillisBehindLatest", 0) == 0:
                break
            iterator = response.get("NextShardIterator")
    return out
