"""The engine's view of Kinesis: list shards, open an iterator, read a page of records.

``BotoKinesisShards`` is the boto3 implementation; ``consumers.engine.memory_kinesis`` holds the
in-memory fake. Both raise the project's errors (``AwsError`` with ``retriable``, and
``ExpiredIteratorError``), never botocore's, so the engine's retry code checks one flag and a
fake can simulate throttling or an outage.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, Protocol, runtime_checkable

from botocore.exceptions import BotoCoreError, ClientError

from core.aws import list_shards
from core.aws_errors import aws_error, error_code
from core.errors import AwsError

IteratorType = Literal[
    "TRIM_HORIZON", "LATEST", "AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER", "AT_TIMESTAMP"
]
EXPIRED_ITERATOR: Final = "ExpiredIteratorException"


class ExpiredIteratorError(AwsError):
    """The shard iterator is older than five minutes: open a new one from the last position."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retriable=True, code=EXPIRED_ITERATOR)


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """One shard as ListShards describes it; ``ending_sequence`` is set once it is closed."""

    shard_id: str
    parents: tuple[str, ...]  # ParentShardId and AdjacentParentShardId, when present
    starting_hash: int
    ending_hash: int
    starting_sequence: int
    ending_sequence: int | None = None

    @property
    def closed(self) -> bool:
        return self.ending_sequence is not None

    @classmethod
    def from_boto(cls, shard: dict[str, Any]) -> ShardInfo:
        """From one entry of boto3's ``list_shards()["Shards"]``."""
        sequences = shard["SequenceNumberRange"]
        ending = sequences.get("EndingSequenceNumber")
        return cls(
            shard_id=shard["ShardId"],
            parents=tuple(
                parent
                for key in ("ParentShardId", "AdjacentParentShardId")
                if (parent := shard.get(key)) is not None
            ),
            starting_hash=int(shard["HashKeyRange"]["StartingHashKey"]),
            ending_hash=int(shard["HashKeyRange"]["EndingHashKey"]),
            starting_sequence=int(sequences["StartingSequenceNumber"]),
            ending_sequence=int(ending) if ending is not None else None,
        )


@dataclass(frozen=True, slots=True)
class RecordsPage:
    """One GetRecords answer. ``records`` are boto3-shaped dicts (``Data``, ``SequenceNumber``,
    ``PartitionKey``, ``ApproximateArrivalTimestamp``); ``next_iterator`` None means the shard
    is closed and fully read (AWS; moto never says so), ``child_shards`` then names its children."""

    records: list[dict[str, Any]]
    next_iterator: str | None
    millis_behind: int
    child_shards: tuple[str, ...] = ()


@runtime_checkable
class KinesisShards(Protocol):
    """What the engine calls on one stream; each method is one blocking Kinesis call
    (ListShards follows its pages). Errors are ``AwsError``; an expired iterator raises
    ``ExpiredIteratorError``."""

    @property
    def stream(self) -> str: ...

    def list_shards(self) -> list[ShardInfo]: ...

    def shard_iterator(
        self,
        shard_id: str,
        iterator_type: IteratorType,
        *,
        sequence: str | None = None,
        timestamp: datetime | None = None,
    ) -> str: ...

    def get_records(self, iterator: str, limit: int) -> RecordsPage: ...


class BotoKinesisShards:
    """``KinesisShards`` on a boto3 Kinesis client; botocore errors become ``AwsError``."""

    def __init__(self, kinesis: Any, stream: str) -> None:
        self._kinesis = kinesis
        self._stream = stream

    @property
    def stream(self) -> str:
        return self._stream

    def list_shards(self) -> list[ShardInfo]:
        try:
            shards = list_shards(self._kinesis, self._stream)
        except (BotoCoreError, ClientError) as err:
            raise _wrapped(err, "ListShards") from err
        return [ShardInfo.from_boto(shard) for shard in shards]

    def shard_iterator(
        self,
        shard_id: str,
        iterator_type: IteratorType,
        *,
        sequence: str | None = None,
        timestamp: datetime | None = None,
    ) -> str:
        params: dict[str, Any] = {
            "StreamName": self._stream,
            "ShardId": shard_id,
            "ShardIteratorType": iterator_type,
        }
        if sequence is not None:
            params["StartingSequenceNumber"] = sequence
        if timestamp is not None:
            params["Timestamp"] = timestamp
        try:
            response = self._kinesis.get_shard_iterator(**params)
        except (BotoCoreError, ClientError) as err:
            raise _wrapped(err, f"GetShardIterator {shard_id}") from err
        return str(response["ShardIterator"])

    def get_records(self, iterator: str, limit: int) -> RecordsPage:
        try:
            response = self._kinesis.get_records(ShardIterator=iterator, Limit=limit)
        except (BotoCoreError, ClientError) as err:
            raise _wrapped(err, "GetRecords") from err
        return RecordsPage(
            records=list(response.get("Records", [])),
            next_iterator=response.get("NextShardIterator"),
            millis_behind=int(response.get("MillisBehindLatest", 0)),
            child_shards=tuple(child["ShardId"] for child in response.get("ChildShards", [])),
        )


def shards_of(kinesis: Any, stream: str) -> KinesisShards:
    """``kinesis`` itself when it already is a ``KinesisShards``, else a boto3 client wrapped."""
    if isinstance(kinesis, KinesisShards):
        return kinesis
    return BotoKinesisShards(kinesis, stream)


def _wrapped(err: BotoCoreError | ClientError, what: str) -> AwsError:
    if error_code(err) == EXPIRED_ITERATOR:
        return ExpiredIteratorError(f"{what}: {err}")
    return aws_error(err, what)
