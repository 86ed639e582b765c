"""An in-memory Kinesis stream behind the engine's ``KinesisShards`` interface.

Models what the engine depends on: shards with hash ranges, splits and merges (the parent
closes with an EndingSequenceNumber, children carry their ParentShardIds), both shard-end
behaviours (``shard_end="aws"``: a closed shard read to its end answers a null NextShardIterator
and its ChildShards; ``"moto"``: never a null iterator, and an empty closed shard has
EndingSequenceNumber 0), expired iterators (after ``iterator_ttl_calls`` GetRecords calls on
the stream, the one using it counted, or on demand) and injected failures (one-off or an
outage) raised as the project's errors. Deterministic: sequence numbers count up from one
stream-wide counter, arrival times come from an injectable clock. Thread-safe.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from consumers.engine.kinesis import ExpiredIteratorError, IteratorType, RecordsPage, ShardInfo
from core.errors import AwsError

ShardEnd = Literal["aws", "moto"]
Operation = Literal["ListShards", "GetShardIterator", "GetRecords"]
MAX_HASH: Final = 2**128 - 1
FIRST_SEQUENCE: Final = 49_000_000_000_000_000_000  # AWS-sized, and still ordered as ints


def throttled(operation: str = "GetRecords") -> AwsError:
    """The error a throttled Kinesis call raises through the engine's interface."""
    return AwsError(
        f"{operation} failed: ProvisionedThroughputExceededException (injected)",
        retriable=True,
        throttled=True,
        code="ProvisionedThroughputExceededException",
    )


def unavailable(operation: str = "GetRecords") -> AwsError:
    """The error a call raises while Kinesis is unreachable (a connection-level failure)."""
    return AwsError(f"{operation} failed: Could not connect (injected)", retriable=True)


@dataclass
class _Record:
    sequence: int
    partition_key: str
    data: bytes
    arrival: datetime

    def to_boto(self) -> dict[str, Any]:
        return {
            "SequenceNumber": str(self.sequence),
            "ApproximateArrivalTimestamp": self.arrival,
            "Data": self.data,
            "PartitionKey": self.partition_key,
        }


@dataclass
class _Shard:
    shard_id: str
    starting_hash: int
    ending_hash: int
    starting_sequence: int
    parents: tuple[str, ...] = ()
    ending_sequence: int | None = None
    children: tuple[str, ...] = ()
    records: list[_Record] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Iterator:
    shard_id: str
    index: int  # of the next record to return
    issued_at: int  # GetRecords calls made when it was issued
    serial: int


class MemoryKinesis:
    """One stream of ``shard_count`` shards splitting the hash space evenly."""

    def __init__(
        self,
        shard_count: int = 1,
        *,
        stream: str = "memory-stream",
        shard_end: ShardEnd = "aws",
        iterator_ttl_calls: int | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if shard_count < 1:
            raise ValueError(f"shard_count must be >= 1: {shard_count}")
        self._stream = stream
        self._shard_end = shard_end
        self._ttl = iterator_ttl_calls
        self._clock = clock
        self._lock = threading.Lock()
        self._shards: dict[str, _Shard] = {}
        self._sequences = itertools.count(FIRST_SEQUENCE)
        self._tokens = itertools.count()
        self._expired_below = 0  # iterators with a lower serial have expired
        self._faults: dict[str, deque[Exception]] = {}
        self._outage: Exception | None = None
        self.calls: Counter[str] = Counter()  # per operation, failed calls included
        width = (MAX_HASH + 1) // shard_count
        for index in range(shard_count):
            end = MAX_HASH if index == shard_count - 1 else (index + 1) * width - 1
            self._new_shard(index * width, end, ())

    @property
    def stream(self) -> str:
        return self._stream

    # -- the engine's interface ----------------------------------------------------------

    def list_shards(self) -> list[ShardInfo]:
        with self._lock:
            self._call("ListShards")
            return [
                ShardInfo(
                    s.shard_id,
                    s.parents,
                    s.starting_hash,
                    s.ending_hash,
                    s.starting_sequence,
                    self._ending_as_listed(s),
                )
                for s in self._shards.values()
            ]

    def shard_iterator(
        self,
        shard_id: str,
        iterator_type: IteratorType,
        *,
        sequence: str | None = None,
        timestamp: datetime | None = None,
    ) -> str:
        with self._lock:
            self._call("GetShardIterator")
            shard = self._shard(shard_id)
            records = shard.records
            if iterator_type == "TRIM_HORIZON":
                index = 0
            elif iterator_type == "LATEST":
                index = len(records)
            elif iterator_type == "AT_TIMESTAMP":
                if timestamp is None:
                    raise _invalid("AT_TIMESTAMP needs a Timestamp")
                index = next(
                    (i for i, r in enumerate(records) if r.arrival >= timestamp), len(records)
                )
            else:
                if sequence is None or not sequence.isdigit():
                    raise _invalid(f"{iterator_type} needs a StartingSequenceNumber")
                wanted = int(sequence)
                after = iterator_type == "AFTER_SEQUENCE_NUMBER"
                index = next(
                    (
                        i
                        for i, r in enumerate(records)
                        if r.sequence > wanted or (r.sequence == wanted and not after)
                    ),
                    len(records),
                )
            return self._issue(shard_id, index)

    def get_records(self, iterator: str, limit: int) -> RecordsPage:
        with self._lock:
            self._call("GetRecords")
            state = self._decode(iterator)
            expired = state.serial < self._expired_below or (
                self._ttl is not None and self.calls["GetRecords"] - state.issued_at > self._ttl
            )
            if expired:
                raise ExpiredIteratorError(f"GetRecords: iterator of {state.shard_id} expired")
            shard = self._shards[state.shard_id]
            page = shard.records[state.index : state.index + limit]
            index = state.index + len(page)
            at_tip = index >= len(shard.records)
            behind = 0
            if page and not at_tip:
                gap = shard.records[-1].arrival - page[-1].arrival
                behind = max(1, int(gap.total_seconds() * 1000))
            if at_tip and shard.ending_sequence is not None and self._shard_end == "aws":
                return RecordsPage([r.to_boto() for r in page], None, 0, shard.children)
            return RecordsPage(
                [r.to_boto() for r in page], self._issue(shard.shard_id, index), behind
            )

    # -- the producer's and the operator's side ------------------------------------------

    def put_record(
        self, data: bytes, partition_key: str, explicit_hash_key: int | None = None
    ) -> tuple[str, str]:
        """Append to the open shard owning the key's hash; returns (shard id, sequence)."""
        key = explicit_hash_key
        if key is None:
            key = int(hashlib.md5(partition_key.encode()).hexdigest(), 16)  # noqa: S324 - Kinesis
        with self._lock:
            shard = next(
                s
                for s in self._shards.values()
                if s.ending_sequence is None and s.starting_hash <= key <= s.ending_hash
            )
            record = _Record(next(self._sequences), partition_key, bytes(data), self._clock())
            shard.records.append(record)
            return shard.shard_id, str(record.sequence)

    def split_shard(self, shard_id: str, new_starting_hash: int) -> tuple[str, str]:
        """Close ``shard_id``; returns the two children (low half, high half)."""
        with self._lock:
            parent = self._open_shard(shard_id)
            if not parent.starting_hash < new_starting_hash <= parent.ending_hash:
                raise _invalid(f"hash {new_starting_hash} is not inside {shard_id}")
            self._close(parent)
            low = self._new_shard(parent.starting_hash, new_starting_hash - 1, (shard_id,))
            high = self._new_shard(new_starting_hash, parent.ending_hash, (shard_id,))
            parent.children = (low.shard_id, high.shard_id)
            return low.shard_id, high.shard_id

    def merge_shards(self, shard_id: str, adjacent_id: str) -> str:
        """Close both shards (adjacent hash ranges); returns the child covering both."""
        with self._lock:
            first, second = self._open_shard(shard_id), self._open_shard(adjacent_id)
            low, high = sorted((first, second), key=lambda s: s.starting_hash)
            if low.ending_hash + 1 != high.starting_hash:
                raise _invalid(f"{shard_id} and {adjacent_id} are not adjacent")
            self._close(first)
            self._close(second)
            child = self._new_shard(low.starting_hash, high.ending_hash, (shard_id, adjacent_id))
            first.children = second.children = (child.shard_id,)
            return child.shard_id

    def records(self, shard_id: str) -> list[dict[str, Any]]:
        """Every record of a shard, boto3-shaped (for assertions)."""
        with self._lock:
            return [r.to_boto() for r in self._shard(shard_id).records]

    # -- fault injection -----------------------------------------------------------------

    def fail_next(self, operation: Operation, error: Exception, times: int = 1) -> None:
        """The next ``times`` calls of ``operation`` raise ``error``."""
        with self._lock:
            self._faults.setdefault(operation, deque()).extend([error] * times)

    def outage(self, error: Exception | None) -> None:
        """Every call raises ``error`` until ``outage(None)``."""
        with self._lock:
            self._outage = error

    def expire_iterators(self) -> None:
        """Every iterator issued so far raises ExpiredIteratorError when used."""
        with self._lock:
            self._expired_below = next(self._tokens)

    # -- internals (called with the lock held) -------------------------------------------

    def _call(self, operation: str) -> None:
        self.calls[operation] += 1
        if self._outage is not None:
            raise self._outage
        queued = self._faults.get(operation)
        if queued:
            raise queued.popleft()

    def _issue(self, shard_id: str, index: int) -> str:
        # The token carries its whole state, so iterators can be reused (as on AWS) for free.
        return f"{self._stream}/{shard_id}/{index}/{self.calls['GetRecords']}/{next(self._tokens)}"

    def _decode(self, iterator: str) -> _Iterator:
        try:
            stream, shard_id, index, issued_at, serial = iterator.split("/")
            state = _Iterator(shard_id, int(index), int(issued_at), int(serial))
        except ValueError:
            state = None
        if state is None or stream != self._stream or shard_id not in self._shards:
            raise _invalid(f"invalid shard iterator {iterator!r}")
        return state

    def _new_shard(self, start: int, end: int, parents: tuple[str, ...]) -> _Shard:
        shard_id = f"shardId-{len(self._shards):012d}"
        shard = _Shard(shard_id, start, end, next(self._sequences), parents)
        self._shards[shard_id] = shard
        return shard

    def _close(self, shard: _Shard) -> None:
        shard.ending_sequence = shard.records[-1].sequence if shard.records else 0

    def _ending_as_listed(self, shard: _Shard) -> int | None:
        if shard.ending_sequence == 0 and self._shard_end == "aws":
            return shard.starting_sequence  # AWS: a real number even for an empty shard
        return shard.ending_sequence

    def _shard(self, shard_id: str) -> _Shard:
        shard = self._shards.get(shard_id)
        if shard is None:
            raise AwsError(
                f"shard {shard_id} not found", retriable=False, code="ResourceNotFoundException"
            )
        return shard

    def _open_shard(self, shard_id: str) -> _Shard:
        shard = self._shard(shard_id)
        if shard.ending_sequence is not None:
            raise _invalid(f"shard {shard_id} is closed")
        return shard


def _invalid(message: str) -> AwsError:
    return AwsError(message, retriable=False, code="InvalidArgumentException")
