"""What the shard engine hands to a sink: decoded records with their shard position.

Position and ConsumedRecord are NamedTuples (immutable, compared and ordered by value like the
frozen dataclasses they were): there is one of each per user record, and a tuple is built in
one call where a frozen dataclass sets every field through object.__setattr__ (ConsumedRecord
1.1 -> 0.5 µs, Position 0.5 -> 0.4 µs).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from schemas.codec import MINITICKER_SCHEMA


class Position(NamedTuple):
    """A user record's place in a shard: the Kinesis record's sequence number (as an int,
    so it orders correctly) and the KPL sub-sequence number inside an aggregate."""

    sequence: int
    sub_sequence: int = 0

    @property
    def sequence_number(self) -> str:
        return str(self.sequence)

    def __str__(self) -> str:
        return f"{self.sequence}:{self.sub_sequence}"


class ConsumedRecord(NamedTuple):
    """One decoded record (Avro field names), its schema and where it came from.

    One stream carries several record types: ``schema`` is the writer schema's full name
    (``crypto_live.v1.MiniTicker``, ``crypto_live.v1.Kline``), which sinks route by; ``data``
    is the user record's bytes, kept so a sink can dead-letter a type it has no handler for.
    """

    shard_id: str
    position: Position
    arrival: datetime  # ApproximateArrivalTimestamp of the Kinesis record, UTC
    partition_key: str
    record: dict[str, Any]
    schema: str = MINITICKER_SCHEMA
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class UndecodableRecord:
    """A user record that could not be deaggregated or decoded, kept as a dead letter."""

    shard_id: str
    position: Position
    arrival: datetime
    data: bytes
    reason: str
