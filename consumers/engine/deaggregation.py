"""KPL deaggregation of GetRecords output, with aws-kinesis-agg's protobuf message."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aws_kinesis_agg

# The library's generated protobuf code imports its siblings by bare name; its deaggregator
# module puts them on sys.path, so import it before messages_pb2.
import aws_kinesis_agg.deaggregator
from aws_kinesis_agg import messages_pb2
from google.protobuf.message import DecodeError as ProtobufDecodeError

from core.errors import CryptoLiveError

MAGIC: bytes = aws_kinesis_agg.MAGIC
DIGEST_SIZE: int = aws_kinesis_agg.DIGEST_SIZE


class DeaggregationError(CryptoLiveError):
    """An aggregated record whose digest matched but whose contents cannot be read."""


@dataclass(frozen=True, slots=True)
class UserRecord:
    """One user record: position in the shard (sequence + sub-sequence), key and bytes."""

    sequence_number: str
    sub_sequence_number: int
    partition_key: str
    data: bytes
    arrival: datetime
    aggregated: bool


def deaggregate(record: Mapping[str, Any]) -> list[UserRecord]:
    """The user records inside one boto3 GetRecords record (itself, if not aggregated)."""
    sequence = record["SequenceNumber"]
    arrival = record["ApproximateArrivalTimestamp"]
    inner = aggregated_records(record)
    if inner is None:
        return [UserRecord(sequence, 0, record["PartitionKey"], record["Data"], arrival, False)]
    keys, data = inner
    return [
        UserRecord(sequence, index, key, body, arrival, True)
        for index, (key, body) in enumerate(zip(keys, data, strict=True))
    ]


def aggregated_records(record: Mapping[str, Any]) -> tuple[list[str], list[bytes]] | None:
    """The partition keys and the data of the user records inside a KPL aggregate, in
    sub-sequence order (the index is the sub-sequence number); None for a record that is not
    an aggregate. Two lists, not a pair per record: the consumers' decode makes no object
    per record here that the cyclic garbage collector would have to track."""
    data: bytes = record["Data"]
    body = data[len(MAGIC) : -DIGEST_SIZE]
    is_aggregate = (
        data.startswith(MAGIC)
        and len(data) > len(MAGIC) + DIGEST_SIZE
        and hashlib.md5(body).digest() == data[-DIGEST_SIZE:]  # noqa: S324 - KPL format
    )
    if not is_aggregate:
        return None
    message = messages_pb2.AggregatedRecord()
    try:
        message.ParseFromString(body)
        table = list(message.partition_key_table)
        keys: list[str] = []
        bodies: list[bytes] = []
        for user in message.records:  # one pass: each access makes a protobuf wrapper
            keys.append(table[user.partition_key_index])
            bodies.append(user.data)
        return keys, bodies
    except (ProtobufDecodeError, IndexError) as err:
        sequence = record["SequenceNumber"]
        raise DeaggregationError(f"corrupt KPL aggregate at sequence {sequence}: {err}") from err
