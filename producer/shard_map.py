"""Which open Kinesis shard a partition key lands in, from a ListShards response."""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from core.errors import CryptoLiveError

MAX_HASH_KEY: Final = 2**128 - 1
_CACHE_LIMIT: Final = 4096


class ShardMapError(CryptoLiveError):
    """The open shards do not cover the hash key space 0..2**128-1 exactly once."""


def hash_key(partition_key: str) -> int:
    """Kinesis' hash key of a partition key: MD5 of its UTF-8 bytes as a big-endian integer."""
    digest = hashlib.md5(partition_key.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True, slots=True)
class ShardRange:
    """One open shard and its inclusive hash key range."""

    shard_id: str
    start: int
    end: int


class ShardMap:
    """Routes partition keys to open shards; built once per ListShards, replaced on reshard."""

    __slots__ = ("_cache", "_id_set", "_ranges", "_shard_ids", "_starts")

    def __init__(self, ranges: Iterable[ShardRange]) -> None:
        ordered = tuple(sorted(ranges, key=lambda r: r.start))
        _check_coverage(ordered)
        self._ranges = ordered
        self._starts = [r.start for r in ordered]
        self._shard_ids = tuple(sorted(r.shard_id for r in ordered))
        self._id_set = frozenset(self._shard_ids)
        if len(self._id_set) != len(ordered):
            raise ShardMapError(f"duplicate shard ids in {list(self._shard_ids)!r}")
        self._cache: dict[str, str] = {}

    @classmethod
    def from_list_shards(cls, shards: list[dict[str, Any]]) -> ShardMap:
        """Build from the ``Shards`` of boto3 ``list_shards``, keeping only open shards."""
        ranges = []
        for shard in shards:
            if "EndingSequenceNumber" in shard.get("SequenceNumberRange", {}):
                continue  # closed by a split or merge: no longer takes writes
            try:
                key_range = shard["HashKeyRange"]
                ranges.append(
                    ShardRange(
                        shard_id=shard["ShardId"],
                        start=int(key_range["StartingHashKey"]),
                        end=int(key_range["EndingHashKey"]),
                    )
                )
            except (KeyError, TypeError, ValueError) as err:
                raise ShardMapError(f"malformed shard description: {shard!r}") from err
        return cls(ranges)

    def shard_for(self, partition_key: str) -> str:
        """Return the id of the open shard whose hash key range holds this partition key."""
        shard_id = self._cache.get(partition_key)
        if shard_id is None:
            index = bisect_right(self._starts, hash_key(partition_key)) - 1
            shard_id = self._ranges[index].shard_id
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()  # keys are symbols, so this only trips on odd input
            self._cache[partition_key] = shard_id
        return shard_id

    @property
    def shard_ids(self) -> tuple[str, ...]:
        """Open shard ids, sorted."""
        return self._shard_ids

    @property
    def ranges(self) -> tuple[ShardRange, ...]:
        """Open shard ranges in hash key order; equal tuples mean equal maps."""
        return self._ranges

    def __len__(self) -> int:
        return len(self._ranges)

    def __contains__(self, shard_id: object) -> bool:
        return shard_id in self._id_set

    def __repr__(self) -> str:
        return f"ShardMap({list(self._shard_ids)!r})"


def _check_coverage(ordered: tuple[ShardRange, ...]) -> None:
    """Raise ShardMapError unless the ranges tile 0..MAX_HASH_KEY with no gap or overlap."""
    if not ordered:
        raise ShardMapError("no open shards")
    expected_start = 0
    for shard in ordered:
        if shard.start != expected_start:
            kind = "gap" if shard.start > expected_start else "overlap"
            raise ShardMapError(
                f"open shards do not cover the hash key space: {kind} at {expected_start}"
                f" before {shard.shard_id}"
            )
        if shard.end < shard.start:
            raise ShardMapError(f"shard {shard.shard_id} ends before it starts")
        expected_start = shard.end + 1
    if expected_start != MAX_HASH_KEY + 1:
        raise ShardMapError(
            f"open shards do not cover the hash key space: it ends at {expected_start - 1}"
        )
