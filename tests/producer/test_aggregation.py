"""Behaviour of producer.aggregation, checked through the real aws-kinesis-agg deaggregator."""

from __future__ import annotations

import base64
import random
from collections import defaultdict
from datetime import UTC, datetime

import pytest
from aws_kinesis_agg.aggregator import AggRecord, RecordAggregator
from aws_kinesis_agg.deaggregator import iter_deaggregate_records

from producer.aggregation import (
    MAX_RECORD_BYTES,
    PartitionKeyError,
    PutEntry,
    RecordTooLargeError,
    ShardAggregator,
    fits_empty_aggregate,
    plan_requests,
)
from producer.shard_map import MAX_HASH_KEY, ShardMap, ShardRange, hash_key

SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT"]


def even_map(count: int) -> ShardMap:
    width = (MAX_HASH_KEY + 1) // count
    ends = [(i + 1) * width - 1 for i in range(count - 1)] + [MAX_HASH_KEY]
    return ShardMap(ShardRange(f"shardId-{i:012d}", i * width, end) for i, end in enumerate(ends))


def deaggregate(entry: PutEntry) -> list[tuple[str, bytes]]:
    """User records of one entry, as a consumer reading it from Kinesis would see them."""
    kinesis_record = {
        "SequenceNumber": "1",
        "ApproximateArrivalTimestamp": datetime(2026, 1, 1, tzinfo=UTC),
        "PartitionKey": entry.partition_key,
        "Data": entry.data,
    }
    out = []
    for user in iter_deaggregate_records([kinesis_record], data_format="Boto3"):
        body = user["kinesis"]
        # The library base64-encodes deaggregated data but passes plain records through raw.
        data = base64.b64decode(body["data"]) if body.get("aggregated") else body["data"]
        out.append((body["partitionKey"], data))
    return out


def all_user_records(entries: list[PutEntry]) -> list[tuple[str, bytes]]:
    return [user for entry in entries for user in deaggregate(entry)]


def by_key(records: list[tuple[str, bytes]]) -> dict[str, list[bytes]]:
    grouped: dict[str, list[bytes]] = defaultdict(list)
    for key, data in records:
        grouped[key].append(data)
    return dict(grouped)


def record(key: str, index: int, size: int) -> tuple[str, bytes]:
    prefix = f"{key}:{index}:".encode()
    return key, (prefix + b"x" * size)[: max(size, len(prefix))]


def test_put_entry_size_and_request() -> None:
    entry = PutEntry("shardId-0", "é", b"abc", None, 1)
    assert entry.size == 5
    assert entry.to_request() == {"Data": "YWJj", "PartitionKey": "é"}
    hashed = PutEntry("shardId-0", "k", b"", "123", 1)
    assert hashed.to_request() == {"Data": "", "PartitionKey": "k", "ExplicitHashKey": "123"}


def test_small_records_are_buffered_until_flush() -> None:
    aggregator = ShardAggregator(even_map(1))
    assert aggregator.add("BTCUSDT", b"one") == []
    assert aggregator.add("ETHUSDT", b"two") == []
    assert aggregator.buffered_records == 2
    (entry,) = aggregator.flush()
    assert (entry.shard_id, entry.partition_key, entry.explicit_hash_key) == (
        "shardId-000000000000",
        "BTCUSDT",
        None,
    )
    assert entry.user_records == 2
    assert deaggregate(entry) == [("BTCUSDT", b"one"), ("ETHUSDT", b"two")]
    assert aggregator.buffered_records == 0
    assert aggregator.flush() == []


def test_aggregates_are_per_shard_and_land_in_their_shard() -> None:
    shard_map = even_map(2)
    aggregator = ShardAggregator(shard_map)
    for i in range(50):
        for symbol in SYMBOLS:
            assert aggregator.add(symbol, f"{symbol}-{i}".encode()) == []
    entries = aggregator.flush()
    assert sorted(e.shard_id for e in entries) == list(shard_map.shard_ids)
    for entry in entries:
        users = deaggregate(entry)
        assert entry.user_records == len(users)
        # Kinesis routes the aggregate by its partition key: it must hash into the same shard.
        assert shard_map.shard_for(entry.partition_key) == entry.shard_id
        assert {shard_map.shard_for(key) for key, _ in users} == {entry.shard_id}
    assert sum(e.user_records for e in entries) == 50 * len(SYMBOLS)


def test_full_aggregates_come_out_of_add_within_max_bytes() -> None:
    aggregator = ShardAggregator(even_map(1), max_bytes=2_000)
    sent = [("BTCUSDT", bytes([i % 256]) * 125) for i in range(100)]
    entries = [entry for key, data in sent for entry in aggregator.add(key, data)]
    assert len(entries) == 7  # ~14 records of 125 bytes + key overhead per 2,000 bytes
    assert all(len(e.data) <= 2_000 for e in entries)
    assert aggregator.buffered_records == 100 - sum(e.user_records for e in entries)
    entries += aggregator.flush()
    assert all_user_records(entries) == sent


def test_unaggregated_mode_emits_every_record_raw() -> None:
    shard_map = even_map(2)
    aggregator = ShardAggregator(shard_map, aggregate=False)
    assert aggregator.add("BTCUSDT", b"payload") == [
        PutEntry(shard_map.shard_for("BTCUSDT"), "BTCUSDT", b"payload", None, 1)
    ]
    assert aggregator.buffered_records == 0
    assert aggregator.flush() == []


def test_library_drops_a_record_that_alone_overflows_the_aggregate() -> None:
    # Why ShardAggregator checks sizes itself: the library returns an empty aggregate and
    # loses the record when it fits max_size without the 20 bytes of magic + digest.
    library = RecordAggregator(max_size=200)
    emitted = library.add_user_record("BTCUSDT", b"x" * 175)
    assert emitted is not None
    assert emitted.get_num_user_records() == 0
    assert library.get_num_user_records() == 0


@pytest.mark.parametrize("max_bytes", [64, 150, 300, 16_500])
def test_fits_empty_aggregate_matches_the_library(max_bytes: int) -> None:
    for key in ("K", "BTCUSDT", "k" * 200):
        for size in [*range(0, 300), *range(max_bytes - 300, max_bytes + 5)]:
            if size < 0:
                continue
            try:
                accepted = AggRecord(max_bytes).add_user_record(key, b"x" * size)
            except ValueError:
                accepted = False
            assert fits_empty_aggregate(len(key), size, max_bytes) is accepted, (key, size)


@pytest.mark.parametrize("max_bytes", [150, 1_000])
def test_no_record_is_lost_around_the_size_boundary(max_bytes: int) -> None:
    aggregator = ShardAggregator(even_map(2), max_bytes=max_bytes)
    sent = [
        record(SYMBOLS[i % len(SYMBOLS)], i, size)
        for i, size in enumerate(
            size for size in range(max_bytes - 60, max_bytes + 60) for _ in range(3)
        )
    ]
    entries = [entry for key, data in sent for entry in aggregator.add(key, data)]
    entries += aggregator.flush()
    received = all_user_records(entries)
    assert sorted(received) == sorted(sent)
    assert by_key(received) == by_key(sent)
    assert any(e.user_records == 1 and e.data[:4] != b"\xf3\x89\x9a\xc2" for e in entries)
    assert all(len(e.data) <= max_bytes for e in entries if e.data[:4] == b"\xf3\x89\x9a\xc2")


@pytest.mark.parametrize("max_bytes", [150, 16_500])
def test_largest_fitting_record_is_aggregated_and_one_byte_more_goes_raw(max_bytes: int) -> None:
    largest = max(n for n in range(max_bytes) if fits_empty_aggregate(7, n, max_bytes))
    aggregator = ShardAggregator(even_map(1), max_bytes=max_bytes)
    assert aggregator.add("BTCUSDT", b"a" * largest) == []
    (aggregate, raw) = aggregator.add("BTCUSDT", b"b" * (largest + 1))
    assert len(aggregate.data) == max_bytes
    assert deaggregate(aggregate) == [("BTCUSDT", b"a" * largest)]
    assert raw == PutEntry("shardId-000000000000", "BTCUSDT", b"b" * (largest + 1), None, 1)


def test_oversized_record_goes_raw_after_its_shards_buffer() -> None:
    aggregator = ShardAggregator(even_map(1), max_bytes=1_000)
    assert aggregator.add("BTCUSDT", b"first") == []
    big = b"B" * 5_000
    buffered, raw = aggregator.add("BTCUSDT", big)
    assert deaggregate(buffered) == [("BTCUSDT", b"first")]
    assert raw == PutEntry("shardId-000000000000", "BTCUSDT", big, None, 1)
    assert deaggregate(raw) == [("BTCUSDT", big)]
    assert aggregator.buffered_records == 0


def test_record_up_to_one_mib_is_accepted_and_over_it_raises() -> None:
    aggregator = ShardAggregator(even_map(1))
    limit = MAX_RECORD_BYTES - len("BTCUSDT")
    (entry,) = aggregator.add("BTCUSDT", b"x" * limit)
    assert entry.size == MAX_RECORD_BYTES
    assert entry.user_records == 1
    with pytest.raises(RecordTooLargeError, match="exceeds 1048576 bytes"):
        aggregator.add("BTCUSDT", b"x" * (limit + 1))
    with pytest.raises(RecordTooLargeError):
        aggregator.add("é", b"x" * (MAX_RECORD_BYTES - 1))  # 'é' is two UTF-8 bytes
    with pytest.raises(RecordTooLargeError):
        ShardAggregator(even_map(1), aggregate=False).add("K", b"x" * MAX_RECORD_BYTES)


@pytest.mark.parametrize("key", ["", "k" * 257])
def test_partition_key_length_is_checked(key: str) -> None:
    with pytest.raises(PartitionKeyError, match=r"1\.\.256 characters"):
        ShardAggregator(even_map(1)).add(key, b"x")


@pytest.mark.parametrize("max_bytes", [0, 20, MAX_RECORD_BYTES])
def test_max_bytes_is_validated(max_bytes: int) -> None:
    with pytest.raises(ValueError, match="max_bytes must be in"):
        ShardAggregator(even_map(1), max_bytes=max_bytes)


def test_per_key_order_holds_in_each_shard_with_mixed_sizes() -> None:
    rng = random.Random(7)
    shard_map = even_map(4)
    aggregator = ShardAggregator(shard_map, max_bytes=4_096)
    sent: list[tuple[str, bytes]] = []
    entries: list[PutEntry] = []
    for i in range(3_000):
        size = rng.choice([40, 125, 125, 125, 900, 4_000, 4_100, 9_000])
        key = rng.choice([*SYMBOLS, *(f"SYM{n}" for n in range(30))])
        sent.append(record(key, i, size))
        entries += aggregator.add(*sent[-1])
    entries += aggregator.flush()
    assert sum(e.user_records for e in entries) == len(sent)
    received_by_shard: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    for entry in entries:
        received_by_shard[entry.shard_id] += deaggregate(entry)
    for shard_id in shard_map.shard_ids:
        expected = [(k, d) for k, d in sent if shard_map.shard_for(k) == shard_id]
        assert received_by_shard[shard_id] == expected


def test_replace_map_flushes_then_routes_by_the_new_map() -> None:
    old = even_map(1)
    aggregator = ShardAggregator(old)
    aggregator.add("BTCUSDT", b"before")
    h = hash_key("BTCUSDT")
    new = ShardMap([ShardRange("shardId-a", 0, h - 1), ShardRange("shardId-b", h, MAX_HASH_KEY)])
    (flushed,) = aggregator.replace_map(new)
    assert flushed.shard_id == "shardId-000000000000"
    assert deaggregate(flushed) == [("BTCUSDT", b"before")]
    assert aggregator.shard_map is new
    aggregator.add("BTCUSDT", b"after")
    (entry,) = aggregator.flush()
    assert (entry.shard_id, deaggregate(entry)) == ("shardId-b", [("BTCUSDT", b"after")])


def entries_of_sizes(*sizes: int) -> list[PutEntry]:
    # Partition key "k" adds one byte to each entry's size.
    return [
        PutEntry("s", "k", bytes([i % 256]) * (size - 1), None, 1) for i, size in enumerate(sizes)
    ]


def test_plan_requests_splits_by_record_count_in_order() -> None:
    entries = entries_of_sizes(*([10] * 1_201))
    planned = plan_requests(entries)
    assert [len(r) for r in planned] == [500, 500, 201]
    flat = [e for r in planned for e in r]
    assert all(a is b for a, b in zip(flat, entries, strict=True))


def test_plan_requests_splits_by_bytes_in_order() -> None:
    entries = entries_of_sizes(40, 60, 1, 100, 30, 30, 41)
    planned = plan_requests(entries, max_records=3, max_bytes=100)
    assert planned == [entries[0:2], entries[2:3], entries[3:4], entries[4:6], entries[6:7]]


def test_plan_requests_default_limit_is_five_mib() -> None:
    entries = [PutEntry("s", "k", b"x" * (MAX_RECORD_BYTES - 1), None, 1) for _ in range(6)]
    assert [len(r) for r in plan_requests(entries)] == [5, 1]


def test_plan_requests_edge_cases() -> None:
    assert plan_requests([]) == []
    with pytest.raises(RecordTooLargeError, match="exceeds a request of 100"):
        plan_requests(entries_of_sizes(50, 101), max_bytes=100)
    with pytest.raises(ValueError, match="max_records must be positive"):
        plan_requests(entries_of_sizes(1), max_records=0)
