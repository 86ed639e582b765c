"""Kinesis I/O for the producer: each method is one AWS call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from core.aws import list_shards
from producer.aggregation import PutEntry
from producer.shard_map import ShardMap


class StreamWriter(Protocol):
    """What the publisher needs from Kinesis."""

    def list_shards(self) -> ShardMap: ...

    def put_records(self, entries: Sequence[PutEntry]) -> dict[str, Any]: ...


class KinesisStreamWriter:
    """boto3 implementation of StreamWriter for one stream."""

    def __init__(self, kinesis: Any, stream_name: str) -> None:
        self._kinesis = kinesis
        self._stream = stream_name

    @property
    def stream_name(self) -> str:
        return self._stream

    def list_shards(self) -> ShardMap:
        """The open shards of the stream."""
        return ShardMap.from_list_shards(list_shards(self._kinesis, self._stream))

    def put_records(self, entries: Sequence[PutEntry]) -> dict[str, Any]:
        """One PutRecords call; partial failures come back in the response."""
        response: dict[str, Any] = self._kinesis.put_records(
            StreamName=self._stream, Records=[entry.to_request() for entry in entries]
        )
        return response
