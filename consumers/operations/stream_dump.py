"""A whole stream read back, deaggregated and decoded, shard by shard (tests, benches, audits)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consumers.engine.deaggregation import deaggregate
from schemas.codec import MINITICKER_SCHEMA, default_codec


@dataclass(frozen=True)
class ReadRecord:
    shard_id: str
    partition_key: str
    sequence_number: str
    sub_sequence_number: int
    aggregated: bool
    record: dict[str, Any]
    schema: str = MINITICKER_SCHEMA  # the writer schema's name (the stream carries several)


def read_stream(kinesis: Any, stream: str) -> dict[str, list[ReadRecord]]:
    """Every user record of every shard, from TRIM_HORIZON to the current tip, in order, each
    decoded in its own schema (miniTickers and klines share the stream)."""
    codec = default_codec()
    out: dict[str, list[ReadRecord]] = {}
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        shard_id = shard["ShardId"]
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        rows: list[ReadRecord] = []
        while iterator:
            response = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            for raw in response["Records"]:
                for user in deaggregate(raw):
                    schema, record = codec.decode_typed(user.data)
                    rows.append(
                        ReadRecord(
                            shard_id,
                            user.partition_key,
                            user.sequence_number,
                            user.sub_sequence_number,
                            user.aggregated,
                            record,
                            schema,
                        )
                    )
            if not response["Records"] and response.get("MillisBehindLatest", 0) == 0:
                break
            iterator = response.get("NextShardIterator")
        out[shard_id] = rows
    return out
