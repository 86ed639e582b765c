"""The engine's Kinesis interface: the in-memory fake (both shard-end modes) and moto over HTTP
(through BotoKinesisShards) give the same answers for shards, iterators, paging and shard end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consumers.engine.kinesis import BotoKinesisShards, ExpiredIteratorError, KinesisShards
from consumers.engine.memory_kinesis import MAX_HASH, MemoryKinesis
from core.aws import AwsClients
from core.errors import AwsError


@dataclass
class Stream:
    """A one-shard stream under test: the interface plus producer/operator actions."""

    shards: KinesisShards
    kind: str
    _memory: MemoryKinesis | None = None
    _aws: AwsClients | None = None

    def put(self, data: bytes, hash_key: int = 0) -> str:
        if self._memory is not None:
            return self._memory.put_record(data, "k", explicit_hash_key=hash_key)[1]
        assert self._aws is not None
        answer = self._aws.kinesis.put_record(
            StreamName=self.shards.stream,
            Data=data,
            PartitionKey="k",
            ExplicitHashKey=str(hash_key),
        )
        return str(answer["SequenceNumber"])

    def split(self, shard_id: str, new_starting_hash: int) -> None:
        if self._memory is not None:
            self._memory.split_shard(shard_id, new_starting_hash)
            return
        assert self._aws is not None
        self._aws.kinesis.split_shard(
            StreamName=self.shards.stream,
            ShardToSplit=shard_id,
            NewStartingHashKey=str(new_starting_hash),
        )


@pytest.fixture(
    params=["memory-aws", "memory-moto", pytest.param("moto", marks=pytest.mark.integration)]
)
def stream(request: pytest.FixtureRequest) -> Iterator[Stream]:
    if request.param.startswith("memory"):
        fake = MemoryKinesis(1, shard_end=request.param.removeprefix("memory-"))
        yield Stream(fake, request.param, _memory=fake)
        return
    aws: AwsClients = request.getfixturevalue("aws")
    name = "contract-stream"
    aws.kinesis.create_stream(StreamName=name, ShardCount=1)
    aws.kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50}
    )
    yield Stream(BotoKinesisShards(aws.kinesis, name), "moto", _aws=aws)


def read_all(shards: KinesisShards, iterator: str, limit: int = 10) -> list[list[dict[str, Any]]]:
    """Pages until a read returns nothing (open shard) or the shard ends."""
    pages: list[list[dict[str, Any]]] = []
    while True:
        page = shards.get_records(iterator, limit)
        if not page.records:
            return pages
        pages.append(page.records)
        if page.next_iterator is None:
            return pages
        iterator = page.next_iterator


def read_to_shard_end(shards: KinesisShards, shard_id: str) -> list[str]:
    """The engine's rule: a null iterator (AWS), or closed per ListShards and every record up
    to its EndingSequenceNumber read (moto, where 0 means an empty shard)."""
    ending = next(s for s in shards.list_shards() if s.shard_id == shard_id).ending_sequence
    assert ending is not None
    iterator: str | None = shards.shard_iterator(shard_id, "TRIM_HORIZON")
    sequences: list[str] = []
    for _ in range(100):
        assert iterator is not None
        page = shards.get_records(iterator, 10)
        sequences += [r["SequenceNumber"] for r in page.records]
        last = int(sequences[-1]) if sequences else None
        if page.next_iterator is None or (
            not page.records and (ending == 0 or (last is not None and last >= ending))
        ):
            return sequences
        iterator = page.next_iterator
    raise AssertionError("shard end never detected")


def only_shard(stream: Stream) -> str:
    [shard] = stream.shards.list_shards()
    return shard.shard_id


def test_one_open_shard_covers_the_whole_hash_range(stream: Stream) -> None:
    [shard] = stream.shards.list_shards()
    assert (shard.starting_hash, shard.ending_hash) == (0, MAX_HASH)
    assert shard.parents == ()
    assert not shard.closed


def test_trim_horizon_pages_in_order_with_the_data_put(stream: Stream) -> None:
    sequences = [stream.put(f"r{i}".encode()) for i in range(25)]
    shard_id = only_shard(stream)

    pages = read_all(stream.shards, stream.shards.shard_iterator(shard_id, "TRIM_HORIZON"))

    assert [len(page) for page in pages] == [10, 10, 5]
    records = [r for page in pages for r in page]
    assert [r["SequenceNumber"] for r in records] == sequences
    assert [r["Data"] for r in records] == [f"r{i}".encode() for i in range(25)]
    assert all(r["PartitionKey"] == "k" for r in records)
    assert all(isinstance(r["ApproximateArrivalTimestamp"], datetime) for r in records)
    assert [int(s) for s in sequences] == sorted(int(s) for s in sequences)


def test_at_and_after_sequence_number(stream: Stream) -> None:
    sequences = [stream.put(f"r{i}".encode()) for i in range(8)]
    shard_id = only_shard(stream)

    at = stream.shards.shard_iterator(shard_id, "AT_SEQUENCE_NUMBER", sequence=sequences[4])
    after = stream.shards.shard_iterator(shard_id, "AFTER_SEQUENCE_NUMBER", sequence=sequences[4])

    assert [r["SequenceNumber"] for p in read_all(stream.shards, at) for r in p] == sequences[4:]
    assert [r["SequenceNumber"] for p in read_all(stream.shards, after) for r in p] == (
        sequences[5:]
    )


def test_latest_sees_only_later_records(stream: Stream) -> None:
    stream.put(b"old")
    shard_id = only_shard(stream)
    iterator = stream.shards.shard_iterator(shard_id, "LATEST")
    page = stream.shards.get_records(iterator, 10)
    assert page.records == []
    assert page.next_iterator is not None
    stream.put(b"new")
    records = [r for p in read_all(stream.shards, page.next_iterator) for r in p]
    assert [r["Data"] for r in records] == [b"new"]


def test_at_timestamp_before_and_after_every_record(stream: Stream) -> None:
    stream.put(b"a")
    stream.put(b"b")
    shard_id = only_shard(stream)
    early = datetime.now(UTC) - timedelta(hours=1)
    late = datetime.now(UTC) + timedelta(hours=1)

    from_early = stream.shards.shard_iterator(shard_id, "AT_TIMESTAMP", timestamp=early)
    from_late = stream.shards.shard_iterator(shard_id, "AT_TIMESTAMP", timestamp=late)

    assert [r["Data"] for p in read_all(stream.shards, from_early) for r in p] == [b"a", b"b"]
    assert read_all(stream.shards, from_late) == []


def test_an_iterator_can_be_read_twice(stream: Stream) -> None:
    stream.put(b"a")
    iterator = stream.shards.shard_iterator(only_shard(stream), "TRIM_HORIZON")
    first = stream.shards.get_records(iterator, 10).records
    again = stream.shards.get_records(iterator, 10).records
    assert [r["Data"] for r in first] == [r["Data"] for r in again] == [b"a"]


def test_split_closes_the_parent_and_its_end_is_detected(stream: Stream) -> None:
    before = [stream.put(f"p{i}".encode(), hash_key=i) for i in range(15)]
    parent = only_shard(stream)

    stream.split(parent, 2**127)
    after_low = stream.put(b"low", hash_key=1)
    after_high = stream.put(b"high", hash_key=2**127 + 1)

    shards = {s.shard_id: s for s in stream.shards.list_shards()}
    assert len(shards) == 3
    closed = shards[parent]
    assert closed.closed
    assert closed.ending_sequence is not None and closed.ending_sequence >= int(before[-1])
    children = sorted((s for s in shards.values() if s.parents), key=lambda s: s.starting_hash)
    assert [c.parents for c in children] == [(parent,), (parent,)]
    assert [(c.starting_hash, c.ending_hash) for c in children] == [
        (0, 2**127 - 1),
        (2**127, MAX_HASH),
    ]
    assert read_to_shard_end(stream.shards, parent) == before  # nothing new in the parent
    low = stream.shards.shard_iterator(children[0].shard_id, "TRIM_HORIZON")
    high = stream.shards.shard_iterator(children[1].shard_id, "TRIM_HORIZON")
    assert [r["SequenceNumber"] for p in read_all(stream.shards, low) for r in p] == [after_low]
    assert [r["SequenceNumber"] for p in read_all(stream.shards, high) for r in p] == [after_high]
    # (Not compared: on AWS and in the fake children's sequence numbers are above the parent's;
    # moto numbers each shard from 1. The engine only ever compares within one shard.)


def test_an_empty_closed_shard_ends_too(stream: Stream) -> None:
    parent = only_shard(stream)
    stream.split(parent, 2**127)
    assert read_to_shard_end(stream.shards, parent) == []


def test_unknown_shard_is_a_permanent_aws_error(stream: Stream) -> None:
    with pytest.raises(AwsError) as raised:
        stream.shards.shard_iterator("shardId-000000000099", "TRIM_HORIZON")
    assert raised.value.code == "ResourceNotFoundException"
    assert not raised.value.retriable


# -- fake-only behaviour (moto does not expire iterators or report ChildShards) -------------


def test_fake_aws_mode_ends_a_closed_shard_with_a_null_iterator_and_its_children() -> None:
    fake = MemoryKinesis(1, shard_end="aws")
    fake.put_record(b"a", "k")
    low, high = fake.split_shard("shardId-000000000000", 2**127)
    page = fake.get_records(fake.shard_iterator("shardId-000000000000", "TRIM_HORIZON"), 10)
    assert [r["Data"] for r in page.records] == [b"a"]
    assert page.next_iterator is None
    assert page.child_shards == (low, high)


def test_fake_moto_mode_never_returns_a_null_iterator() -> None:
    fake = MemoryKinesis(1, shard_end="moto")
    fake.put_record(b"a", "k")
    fake.split_shard("shardId-000000000000", 2**127)
    iterator = fake.shard_iterator("shardId-000000000000", "TRIM_HORIZON")
    for _ in range(3):
        page = fake.get_records(iterator, 10)
        assert page.next_iterator is not None
        iterator = page.next_iterator


def test_fake_iterators_expire_after_n_calls_and_on_demand() -> None:
    fake = MemoryKinesis(2, iterator_ttl_calls=3)  # the call using it counts
    old = fake.shard_iterator("shardId-000000000000", "TRIM_HORIZON")
    other = fake.shard_iterator("shardId-000000000001", "TRIM_HORIZON")
    for _ in range(2):
        other = fake.get_records(other, 10).next_iterator or ""
    fake.get_records(old, 10)  # the 3rd call since it was issued: still valid
    fake.get_records(other, 10)
    with pytest.raises(ExpiredIteratorError):
        fake.get_records(old, 10)  # the 5th
    fresh = fake.shard_iterator("shardId-000000000000", "TRIM_HORIZON")
    fake.expire_iterators()
    with pytest.raises(ExpiredIteratorError) as raised:
        fake.get_records(fresh, 10)
    assert raised.value.retriable


def test_fake_merge_makes_one_child_with_both_parents() -> None:
    fake = MemoryKinesis(2)
    child = fake.merge_shards("shardId-000000000000", "shardId-000000000001")
    shards = {s.shard_id: s for s in fake.list_shards()}
    assert shards[child].parents == ("shardId-000000000000", "shardId-000000000001")
    assert (shards[child].starting_hash, shards[child].ending_hash) == (0, MAX_HASH)
    assert all(shards[p].closed for p in shards[child].parents)


@pytest.mark.integration
def test_moto_kinesis_errors_arrive_as_aws_errors(aws: AwsClients) -> None:
    shards = BotoKinesisShards(aws.kinesis, "no-such-stream")
    started = time.monotonic()
    with pytest.raises(AwsError) as raised:
        shards.list_shards()
    assert raised.value.code == "ResourceNotFoundException"
    assert not raised.value.retriable
    assert time.monotonic() - started < 10
