"""One GetRecords page deaggregated and decoded into what the processor gets (pure): records
past the checkpoint in shard order, and dead letters for what cannot be read."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from itertools import count
from typing import Any, Final

from consumers.engine.deaggregation import DeaggregationError, aggregated_records
from consumers.engine.records import ConsumedRecord, Position, UndecodableRecord
from schemas.codec import DecodeError, SingleObjectCodec

# Position and ConsumedRecord are NamedTuples: tuple.__new__ builds one in a single C call,
# where their generated __new__ is a Python function (one of each per user record).
_new: Final = tuple.__new__


def decode_page(
    shard_id: str,
    codec: SingleObjectCodec,
    raw_records: Iterable[Mapping[str, Any]],
    skip: Position | None,
) -> tuple[list[ConsumedRecord], list[UndecodableRecord]]:
    """The user records of boto3 GetRecords records after ``skip`` (the checkpoint: durable in
    the sink already), each decoded as whichever registered type it is, and the dead letters
    of the records that cannot be deaggregated or decoded."""
    out: list[ConsumedRecord] = []
    bad: list[UndecodableRecord] = []
    decode = codec.decode_typed
    for raw in raw_records:
        arrival = arrival_utc(raw["ApproximateArrivalTimestamp"])
        sequence = int(raw["SequenceNumber"])
        try:
            inner = aggregated_records(raw)
        except DeaggregationError as err:
            position = Position(sequence)
            if skip is None or position > skip:
                bad.append(UndecodableRecord(shard_id, position, arrival, raw["Data"], str(err)))
            continue
        keys, users = ([raw["PartitionKey"]], [raw["Data"]]) if inner is None else inner
        # Only an aggregate holding the checkpoint has user records to skip.
        at_or_before = skip if skip is not None and sequence <= skip.sequence else None
        for sub, key, data in zip(count(), keys, users):
            position = _new(Position, (sequence, sub))
            if at_or_before is not None and position <= at_or_before:
                continue
            try:
                # Any registered type: the sink routes by the schema name (or dead-letters it).
                schema, record = decode(data)
            except DecodeError as err:
                bad.append(UndecodableRecord(shard_id, position, arrival, data, str(err)))
                continue
            fields = (shard_id, position, arrival, key, record, schema, data)
            out.append(_new(ConsumedRecord, fields))
    return out, bad


def arrival_utc(value: datetime | float) -> datetime:
    """ApproximateArrivalTimestamp in UTC (boto3 gives an aware datetime, raw JSON a float)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromtimestamp(value, UTC)
