"""How far a consumer group is behind, per shard, measured by reading from its checkpoint."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from consumers.engine.deaggregation import deaggregate
from consumers.engine.leases import DynamoLeaseStore, Lease
from consumers.engine.records import Position
from core.aws import list_shards
from core.errors import AwsError

__all__ = ["DEFAULT_RECORD_CAP", "ShardLag", "group_leases", "list_shards", "shard_lag"]

# Counting stops here: a group this far behind is lagging whatever the exact number.
DEFAULT_RECORD_CAP = 1_000_000


@dataclass(frozen=True, slots=True)
class ShardLag:
    """One shard of one group: who reads it, from where, and what is still unread."""

    shard_id: str
    owner: str | None
    checkpoint: str
    heartbeat_ms: int
    records: int  # user records after the checkpoint
    capped: bool  # counting stopped at the cap
    millis: int  # age of the oldest unread record (0 when none)
    closed: bool

    @property
    def records_text(self) -> str:
        return f">={self.records:,}" if self.capped else f"{self.records:,}"


def group_leases(dynamodb: Any, table: str) -> dict[str, Lease]:
    """The group's leases by shard; empty when the group never ran (no table)."""
    try:
        return {lease.shard_id: lease for lease in DynamoLeaseStore(dynamodb, table).list_leases()}
    except AwsError as err:  # the lease store raises the project's errors, not botocore's
        if err.code == "ResourceNotFoundException":
            return {}
        raise


def shard_lag(
    kinesis: Any,
    stream: str,
    shard: dict[str, Any],
    lease: Lease | None,
    initial_position: str,
    cap: int = DEFAULT_RECORD_CAP,
) -> ShardLag:
    """Read from the checkpoint to the tip, counting user records (at most ``cap``)."""
    shard_id = shard["ShardId"]
    closed = "EndingSequenceNumber" in shard["SequenceNumberRange"]
    checkpoint = lease.checkpoint if lease else initial_position
    base = ShardLag(
        shard_id,
        lease.owner if lease else None,
        checkpoint,
        lease.heartbeat_ms if lease else 0,
        0,
        False,
        0,
        closed,
    )
    if lease is not None and lease.finished:
        return base
    skip = lease.position if lease else None
    iterator = _iterator(kinesis, stream, shard_id, checkpoint, skip)
    records, oldest = 0, None
    while iterator and records < cap:
        response = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
        for raw in response["Records"]:
            for user in deaggregate(raw):
                position = Position(int(user.sequence_number), user.sub_sequence_number)
                if skip is not None and position <= skip:
                    continue
                records += 1
                oldest = oldest or user.arrival
        if not response["Records"] and response.get("MillisBehindLatest", 0) == 0:
            break
        iterator = response.get("NextShardIterator")
    return ShardLag(
        shard_id,
        base.owner,
        checkpoint,
        base.heartbeat_ms,
        min(records, cap),
        records >= cap,
        _age_ms(oldest),
        closed,
    )


def _age_ms(oldest: datetime | None) -> int:
    if oldest is None:
        return 0
    return max(0, int(time.time() * 1000 - oldest.timestamp() * 1000))


def _iterator(
    kinesis: Any, stream: str, shard_id: str, checkpoint: str, skip: Position | None
) -> str | None:
    params: dict[str, Any] = {"StreamName": stream, "ShardId": shard_id}
    if skip is not None:
        params.update(ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber=checkpoint)
    elif checkpoint.startswith("AT_TIMESTAMP:"):
        when = datetime.fromisoformat(checkpoint.removeprefix("AT_TIMESTAMP:"))
        params.update(ShardIteratorType="AT_TIMESTAMP", Timestamp=when)
    else:
        params.update(ShardIteratorType=checkpoint)
    iterator = kinesis.get_shard_iterator(**params)["ShardIterator"]
    return str(iterator) if iterator else None
