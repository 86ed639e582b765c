"""Per-shard KPL aggregation of user records and grouping into PutRecords requests."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from aws_kinesis_agg.aggregator import AggRecord, RecordAggregator

from core.errors import CryptoLiveError
from producer.shard_map import ShardMap

MAX_RECORD_BYTES: Final = 1024 * 1024  # Kinesis: data + partition key of one record
MAX_PARTITION_KEY_CHARS: Final = 256
# 256 characters of up to 4 UTF-8 bytes each; kept free so an aggregate never tops 1 MiB.
MAX_PARTITION_KEY_BYTES: Final = 4 * MAX_PARTITION_KEY_CHARS
DEFAULT_MAX_BYTES: Final = 51_200
MAX_REQUEST_RECORDS: Final = 500
MAX_REQUEST_BYTES: Final = 5 * 1024 * 1024
# KPL magic header (4 bytes) + MD5 digest (16 bytes) around the protobuf body.
_AGG_OVERHEAD: Final = 4 + 16
# Upper bound of all framing around one record's key and data in an aggregate (varints of a
# <=1 KiB key and <1 MiB data); below it the exact check in fits_empty_aggregate is skipped.
_MAX_FRAMING: Final = _AGG_OVERHEAD + (1 + 2) + (1 + 3) + (3 + 3)


class RecordTooLargeError(CryptoLiveError):
    """A user record (data + partition key) exceeds what Kinesis accepts in one record."""


class PartitionKeyError(CryptoLiveError):
    """A partition key is empty or longer than Kinesis' 256 characters."""


@dataclass(frozen=True, slots=True)
class PutEntry:
    """One Kinesis record to put: a KPL aggregate or a single raw user record."""

    shard_id: str
    partition_key: str
    data: bytes
    explicit_hash_key: str | None
    user_records: int

    @property
    def size(self) -> int:
        """Bytes Kinesis counts against its limits: data plus UTF-8 partition key."""
        return len(self.data) + len(self.partition_key.encode())

    def to_request(self) -> dict[str, Any]:
        """Return this entry as one item of a PutRecords ``Records`` list."""
        request: dict[str, Any] = {"Data": self.data, "PartitionKey": self.partition_key}
        if self.explicit_hash_key is not None:
            request["ExplicitHashKey"] = self.explicit_hash_key
        return request


class ShardAggregator:
    """Aggregates user records per shard so each aggregate lands whole in its shard."""

    __slots__ = ("_aggregate", "_aggregators", "_buffered", "_map", "_max_bytes")

    def __init__(
        self, shard_map: ShardMap, max_bytes: int = DEFAULT_MAX_BYTES, aggregate: bool = True
    ) -> None:
        limit = MAX_RECORD_BYTES - MAX_PARTITION_KEY_BYTES
        if not _AGG_OVERHEAD < max_bytes <= limit:
            raise ValueError(f"max_bytes must be in {_AGG_OVERHEAD + 1}..{limit}: {max_bytes}")
        self._map = shard_map
        self._max_bytes = max_bytes
        self._aggregate = aggregate
        self._aggregators: dict[str, RecordAggregator] = {}
        self._buffered = 0

    @property
    def buffered_records(self) -> int:
        """User records waiting in partially filled aggregates."""
        return self._buffered

    @property
    def shard_map(self) -> ShardMap:
        """The map records are currently routed by."""
        return self._map

    def add(self, partition_key: str, data: bytes) -> list[PutEntry]:
        """Add one user record; return the aggregates of its shard that became full."""
        key_bytes = len(partition_key.encode())
        _check_record(partition_key, key_bytes, data)
        shard_id = self._map.shard_for(partition_key)
        if not self._aggregate:
            return [PutEntry(shard_id, partition_key, data, None, 1)]
        aggregator = self._aggregators.get(shard_id)
        if aggregator is None:
            aggregator = self._aggregators[shard_id] = RecordAggregator(max_size=self._max_bytes)
        data_bytes = len(data)
        if key_bytes + data_bytes + _MAX_FRAMING > self._max_bytes and not fits_empty_aggregate(
            key_bytes, data_bytes, self._max_bytes
        ):
            # The library would drop this record; send it raw, after what is buffered for its
            # shard so per-key order holds.
            out = self._drain(shard_id, aggregator)
            out.append(PutEntry(shard_id, partition_key, data, None, 1))
            return out
        full = aggregator.add_user_record(partition_key, data)
        self._buffered += 1
        if full is None:
            return []
        return [self._entry(shard_id, full)]

    def flush(self) -> list[PutEntry]:
        """Return every partially filled aggregate and empty the buffers."""
        out: list[PutEntry] = []
        for shard_id, aggregator in self._aggregators.items():
            out.extend(self._drain(shard_id, aggregator))
        return out

    def replace_map(self, new_map: ShardMap) -> list[PutEntry]:
        """Flush everything aggregated under the old map, then route by new_map (on reshard)."""
        out = self.flush()
        self._map = new_map
        self._aggregators = {}
        return out

    def _drain(self, shard_id: str, aggregator: RecordAggregator) -> list[PutEntry]:
        """Take the shard's partial aggregate, if any, as a list of zero or one entry."""
        record = aggregator.clear_and_get()
        return [] if record is None else [self._entry(shard_id, record)]

    def _entry(self, shard_id: str, record: AggRecord) -> PutEntry:
        """Turn a finished AggRecord into a PutEntry and update the buffered count."""
        count = record.get_num_user_records()
        self._buffered -= count
        partition_key, explicit_hash_key, data = record.get_contents()
        return PutEntry(shard_id, partition_key, data, explicit_hash_key or None, count)


def fits_empty_aggregate(key_bytes: int, data_bytes: int, max_bytes: int) -> bool:
    """Whether one record alone fits a KPL aggregate of max_bytes (the library's size rule)."""
    inner = 2 + 1 + _varint_size(data_bytes) + data_bytes  # key index 0, then data field
    body = 1 + _varint_size(key_bytes) + key_bytes + 1 + _varint_size(inner) + inner
    return _AGG_OVERHEAD + body <= max_bytes


def plan_requests(
    entries: Iterable[PutEntry],
    max_records: int = MAX_REQUEST_RECORDS,
    max_bytes: int = MAX_REQUEST_BYTES,
) -> list[list[PutEntry]]:
    """Group entries, in order, into PutRecords requests within both limits."""
    if max_records < 1:
        raise ValueError(f"max_records must be positive: {max_records}")
    requests: list[list[PutEntry]] = []
    current: list[PutEntry] = []
    current_bytes = 0
    for entry in entries:
        size = entry.size
        if size > max_bytes:
            raise RecordTooLargeError(f"entry of {size} bytes exceeds a request of {max_bytes}")
        if current and (len(current) >= max_records or current_bytes + size > max_bytes):
            requests.append(current)
            current, current_bytes = [], 0
        current.append(entry)
        current_bytes += size
    if current:
        requests.append(current)
    return requests


def _check_record(partition_key: str, key_bytes: int, data: bytes) -> None:
    """Raise unless Kinesis would accept this user record on its own."""
    if not 0 < len(partition_key) <= MAX_PARTITION_KEY_CHARS:
        raise PartitionKeyError(
            f"partition key must be 1..{MAX_PARTITION_KEY_CHARS} characters: {len(partition_key)}"
        )
    if key_bytes + len(data) > MAX_RECORD_BYTES:
        raise RecordTooLargeError(
            f"record of {len(data)} data bytes with key {partition_key!r} exceeds"
            f" {MAX_RECORD_BYTES} bytes"
        )


def _varint_size(value: int) -> int:
    """Bytes a protobuf varint takes for a non-negative value."""
    return max(1, (value.bit_length() + 6) // 7)
