"""Kinesis I/O for the producer: each method is one AWS call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from core.aws import list_shards
from core.aws_json import AwsJsonApi
from producer.aggregation import PutEntry
from producer.shard_map import ShardMap


class StreamWriter(Protocol):
    """What the publisher needs from Kinesis."""

    def list_shards(self) -> ShardMap: ...

    def put_records(self, entries: Sequence[PutEntry]) -> dict[str, Any]: ...


class KinesisStreamWriter:
    """boto3 implementation of StreamWriter for one stream; PutRecords goes out as a signed
    request with a body serialised here (core.aws_json: a third of the producer's CPU per
    record was botocore's per-request machinery)."""

    def __init__(self, kinesis: Any, stream_name: str) -> None:
        self._kinesis = kinesis
        self._api = AwsJsonApi(kinesis)
        self._stream = stream_name

    @property
    def stream_name(self) -> str:
        return self._stream

    def list_shards(self) -> ShardMap:
        """The open shards of the stream."""
        return ShardMap.from_list_shards(list_shards(self._kinesis, self._stream))

    def put_records(self, entries: Sequence[PutEntry]) -> dict[str, Any]:
        """One PutRecords call; partial failures come back in the response."""
        records = [entry.to_request() for entry in entries]
        return self._api.call("PutRecords", {"StreamName": self._stream, "Records": records})
