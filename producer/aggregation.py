"""Per-shard KPL aggregation of user records and grouping into PutRecords requests."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pybase64 import b64encode

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
KPL_MAGIC: Final = b"\xf3\x89\x9a\xc2"
# Below these no exact check is needed: a key of <= 256 characters is at most 1 KiB of UTF-8.
_QUICK_LIMIT: Final = MAX_RECORD_BYTES - MAX_PARTITION_KEY_BYTES
_PREFIX_CACHE: Final = 4096
# A record's framing around its data is at most this long (tag, length, key index, data tag,
# data length), and an aggregate's own overhead is _AGG_OVERHEAD: below their sum plus the
# key field and data, a record surely fits an empty aggregate.
_MAX_FRAMING: Final = 1 + 5 + 1 + 5 + 1 + 5 + 20


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
        """Return this entry as one item of a PutRecords ``Records`` list, as sent on the wire
        (JSON: the data base64-encoded)."""
        request: dict[str, Any] = {
            "Data": b64encode(self.data).decode(),
            "PartitionKey": self.partition_key,
        }
        if self.explicit_hash_key is not None:
            request["ExplicitHashKey"] = self.explicit_hash_key
        return request


class _Aggregate:
    """One shard's KPL aggregate being filled: its key table and its records, already framed
    as protobuf fields, so closing it is one join and one MD5 (no per-record size books)."""

    __slots__ = ("first_key", "key_index", "keys", "records", "size")

    def __init__(self) -> None:
        self.first_key = ""
        self.key_index: dict[str, int] = {}
        self.keys: list[bytes] = []  # the partition key table's fields
        self.records: list[bytes] = []  # each record's framing, then its data
        self.size = _AGG_OVERHEAD  # bytes of the finished aggregate: magic + body + digest


class ShardAggregator:
    """Aggregates user records per shard so each aggregate lands whole in its shard.

    Writes the KPL aggregated-record format itself (aws-kinesis-agg's deaggregator reads it:
    tests/producer/test_kpl_format.py): magic, the protobuf ``AggregatedRecord`` (partition
    key table, then records with a key index and the data; no explicit hash keys), MD5. The
    aggregate's own partition key is its first record's, which hashes into its shard. Sizes
    are exact, so an aggregate never tops ``max_bytes``.
    """

    __slots__ = (
        "_aggregate",
        "_aggregates",
        "_buffered",
        "_key_fields",
        "_map",
        "_max_bytes",
        "_prefixes",
    )

    def __init__(
        self, shard_map: ShardMap, max_bytes: int = DEFAULT_MAX_BYTES, aggregate: bool = True
    ) -> None:
        limit = MAX_RECORD_BYTES - MAX_PARTITION_KEY_BYTES
        if not _AGG_OVERHEAD < max_bytes <= limit:
            raise ValueError(f"max_bytes must be in {_AGG_OVERHEAD + 1}..{limit}: {max_bytes}")
        self._map = shard_map
        self._max_bytes = max_bytes
        self._aggregate = aggregate
        self._aggregates: dict[str, _Aggregate] = {}
        self._buffered = 0
        # (data length, key index) -> the record's framing before its data: key index and
        # data length repeat, so the framing is built once.
        self._prefixes: dict[int, bytes] = {}
        # partition key -> its entry in an aggregate's key table (tag, length, UTF-8 bytes)
        self._key_fields: dict[str, bytes] = {}

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
        if not 0 < len(partition_key) <= MAX_PARTITION_KEY_CHARS or len(data) > _QUICK_LIMIT:
            _check_record(partition_key, len(partition_key.encode()), data)
        shard_id = self._map.shard_for(partition_key)
        if not self._aggregate:
            return [PutEntry(shard_id, partition_key, data, None, 1)]
        current = self._aggregates.get(shard_id)
        if current is None:
            current = self._aggregates[shard_id] = _Aggregate()
        index = current.key_index.get(partition_key)
        if index is None:
            return self._add_slow(shard_id, current, partition_key, data)
        prefix = self._prefixes.get(len(data) << 32 | index)
        if prefix is None:
            prefix = self._prefix(len(data), index)
        size = current.size + len(prefix) + len(data)
        if size > self._max_bytes:
            return self._add_slow(shard_id, current, partition_key, data)
        current.size = size
        current.records += (prefix, data)
        self._buffered += 1
        return []

    def add_many(
        self, records: Sequence[tuple[str, bytes]]
    ) -> tuple[list[PutEntry], list[tuple[int, RecordTooLargeError]]]:
        """``add`` of each (partition key, data) in order: the aggregates that became full, and
        (index, error) of each record too large for Kinesis (not added)."""
        full: list[PutEntry] = []
        too_large: list[tuple[int, RecordTooLargeError]] = []
        aggregates, prefixes, max_bytes = self._aggregates, self._prefixes, self._max_bytes
        shard_for, aggregating = self._map.shard_for, self._aggregate
        added = 0  # records put in place here, without add(); counted in once at the end
        for index, (partition_key, data) in enumerate(records):
            # add()'s common case inline: a key already in its shard's aggregate, room left.
            if aggregating and 0 < len(partition_key) <= MAX_PARTITION_KEY_CHARS:
                current = aggregates.get(shard_for(partition_key))
                if current is not None:
                    key_index = current.key_index.get(partition_key)
                    if key_index is not None:
                        prefix = prefixes.get(len(data) << 32 | key_index)
                        if prefix is not None:
                            size = current.size + len(prefix) + len(data)
                            if size <= max_bytes:  # so data is below _QUICK_LIMIT too
                                current.size = size
                                current.records += (prefix, data)
                                added += 1
                                continue
            try:
                full += self.add(partition_key, data)
            except RecordTooLargeError as err:
                too_large.append((index, err))
        self._buffered += added
        return full, too_large

    def _add_slow(
        self, shard_id: str, current: _Aggregate, partition_key: str, data: bytes
    ) -> list[PutEntry]:
        """Add a record whose key is new to its aggregate, or that may not fit it."""
        key_field = self._key_fields.get(partition_key)
        if key_field is None:
            key = partition_key.encode()
            key_field = b"\x0a" + _varint(len(key)) + key
            if len(self._key_fields) >= _PREFIX_CACHE:
                self._key_fields.clear()
            self._key_fields[partition_key] = key_field
        if len(key_field) + len(data) + _MAX_FRAMING > self._max_bytes and not (
            fits_empty_aggregate(len(partition_key.encode()), len(data), self._max_bytes)
        ):
            # Too big for any aggregate: send it raw, after what is buffered for its shard,
            # so per-key order holds.
            out = self._drain(shard_id)
            out.append(PutEntry(shard_id, partition_key, data, None, 1))
            return out
        out = []
        for _ in range(2):  # into the current aggregate, or else into a fresh one
            known = current.key_index.get(partition_key)
            index = len(current.key_index) if known is None else known
            new_key = key_field if known is None else b""
            prefix = self._prefixes.get(len(data) << 32 | index) or self._prefix(len(data), index)
            size = current.size + len(new_key) + len(prefix) + len(data)
            if size <= self._max_bytes:
                break
            out = self._drain(shard_id)
            current = self._aggregates[shard_id] = _Aggregate()
        if new_key:
            if not current.key_index:
                current.first_key = partition_key
            current.key_index[partition_key] = index
            current.keys.append(new_key)
        current.size = size
        current.records += (prefix, data)
        self._buffered += 1
        return out

    def _prefix(self, data_bytes: int, index: int) -> bytes:
        """A record field's framing up to its data: tag, length, key index, data tag, length."""
        inner = b"\x08" + _varint(index) + b"\x1a" + _varint(data_bytes)
        prefix = b"\x1a" + _varint(len(inner) + data_bytes) + inner
        if len(self._prefixes) >= _PREFIX_CACHE:
            self._prefixes.clear()
        self._prefixes[data_bytes << 32 | index] = prefix
        return prefix

    def flush(self) -> list[PutEntry]:
        """Return every partially filled aggregate and empty the buffers."""
        out: list[PutEntry] = []
        for shard_id in list(self._aggregates):
            out.extend(self._drain(shard_id))
        return out

    def replace_map(self, new_map: ShardMap) -> list[PutEntry]:
        """Flush everything aggregated under the old map, then route by new_map (on reshard)."""
        out = self.flush()
        self._map = new_map
        self._aggregates = {}
        return out

    def _drain(self, shard_id: str) -> list[PutEntry]:
        """Take the shard's partial aggregate, if any, as a list of zero or one entry."""
        current = self._aggregates.pop(shard_id, None)
        if current is None or not current.records:
            return []
        count = len(current.records) // 2  # a framing and the data of each record
        self._buffered -= count
        # Field 1 (the key table) before field 3 (the records), as protobuf serialises them.
        body = b"".join(current.keys + current.records)
        data = b"".join((KPL_MAGIC, body, hashlib.md5(body, usedforsecurity=False).digest()))
        return [PutEntry(shard_id, current.first_key, data, None, count)]


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


def _varint(value: int) -> bytes:
    """A non-negative value as a protobuf varint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _varint_size(value: int) -> int:
    """Bytes a protobuf varint takes for a non-negative value."""
    return max(1, (value.bit_length() + 6) // 7)
