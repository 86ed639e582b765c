"""Our KPL aggregates, read back by aws-kinesis-agg (the format reference): every record, its
partition key and its bytes exactly, in order, over random records and sizes near the limits."""

from __future__ import annotations

import base64
import hashlib
import random
from datetime import UTC, datetime

import pytest
from aws_kinesis_agg.deaggregator import iter_deaggregate_records

from producer.aggregation import (
    KPL_MAGIC,
    MAX_RECORD_BYTES,
    PutEntry,
    ShardAggregator,
    fits_empty_aggregate,
)
from producer.shard_map import MAX_HASH_KEY, ShardMap, ShardRange

KEYS = [
    "BTCUSDT",
    "ETHUSDT",
    "K",
    "é",
    "日本語キー",
    "k" * 256,
    "x" * 255 + "é",
    "\U0001f600" * 256,
]


def even_map(count: int) -> ShardMap:
    width = (MAX_HASH_KEY + 1) // count
    ends = [(i + 1) * width - 1 for i in range(count - 1)] + [MAX_HASH_KEY]
    return ShardMap(ShardRange(f"shardId-{i:012d}", i * width, end) for i, end in enumerate(ends))


def read_back(entry: PutEntry) -> list[tuple[str, str | None, bytes]]:
    """(partition key, explicit hash key, data) of each user record, as the library reads them."""
    kinesis_record = {
        "SequenceNumber": "1",
        "ApproximateArrivalTimestamp": datetime(2026, 1, 1, tzinfo=UTC),
        "PartitionKey": entry.partition_key,
        "Data": entry.data,
    }
    out = []
    for user in iter_deaggregate_records([kinesis_record], data_format="Boto3"):
        body = user["kinesis"]
        aggregated = body.get("aggregated", False)
        assert aggregated == (entry.data[:4] == KPL_MAGIC)
        data = base64.b64decode(body["data"]) if aggregated else body["data"]
        out.append((body["partitionKey"], body.get("explicitHashKey"), data))
    return out


def check_protobuf(entry: PutEntry) -> None:
    """The body is the canonical protobuf of what it holds (the library would write the same
    bytes), with a correct MD5, and the entry's key routes it to its own shard."""
    if entry.data[:4] != KPL_MAGIC:
        return
    # Its generated code imports siblings by bare name, on the path once the deaggregator is in.
    from aws_kinesis_agg import messages_pb2

    body, digest = entry.data[4:-16], entry.data[-16:]
    assert hashlib.md5(body, usedforsecurity=False).digest() == digest
    message = messages_pb2.AggregatedRecord()
    message.ParseFromString(body)
    assert message.SerializeToString() == body
    assert len(message.records) == entry.user_records
    assert list(message.explicit_hash_key_table) == []
    assert message.partition_key_table[message.records[0].partition_key_index] == (
        entry.partition_key
    )


def run(aggregator: ShardAggregator, sent: list[tuple[str, bytes]]) -> list[PutEntry]:
    entries = [entry for key, data in sent for entry in aggregator.add(key, data)]
    return entries + aggregator.flush()


def assert_exact(
    shard_map: ShardMap, sent: list[tuple[str, bytes]], entries: list[PutEntry], max_bytes: int
) -> None:
    assert sum(e.user_records for e in entries) == len(sent)
    by_shard: dict[str, list[tuple[str, bytes]]] = {}
    for entry in entries:
        check_protobuf(entry)
        if entry.data[:4] == KPL_MAGIC:
            assert len(entry.data) <= max_bytes
        users = read_back(entry)
        assert len(users) == entry.user_records
        assert all(ehk is None for _, ehk, _ in users)
        assert {shard_map.shard_for(key) for key, _, _ in users} == {entry.shard_id}
        assert shard_map.shard_for(entry.partition_key) == entry.shard_id
        by_shard.setdefault(entry.shard_id, []).extend((key, data) for key, _, data in users)
    for shard_id in shard_map.shard_ids:
        expected = [(k, d) for k, d in sent if shard_map.shard_for(k) == shard_id]
        assert by_shard.get(shard_id, []) == expected  # every record once, in order


@pytest.mark.parametrize("seed", range(6))
def test_random_records_read_back_exactly(seed: int) -> None:
    rng = random.Random(seed)
    max_bytes = rng.choice([200, 1_000, 4_096, 51_200, 300_000])
    shard_map = even_map(rng.choice([1, 2, 4]))
    keys = [*KEYS, *(f"SYM{n}" for n in range(rng.choice([3, 200])))]
    sizes = [0, 1, 126, 127, 128, 129, 16_383, 16_384, max_bytes - 40, max_bytes - 20]
    sent = []
    for i in range(2_000):
        size = rng.choice([rng.randrange(0, 300), rng.choice(sizes), rng.randrange(0, max_bytes)])
        sent.append((rng.choice(keys), rng.randbytes(max(0, size)) + i.to_bytes(3, "big")))
    aggregator = ShardAggregator(shard_map, max_bytes=max_bytes)
    assert_exact(shard_map, sent, run(aggregator, sent), max_bytes)


@pytest.mark.parametrize(
    ("max_bytes", "key"),
    [
        (150, "BTCUSDT"),
        (51_200, "BTCUSDT"),
        (51_200, "é" * 256),  # the longest key: 512 bytes
        (MAX_RECORD_BYTES - 1024, "BTCUSDT"),
        (MAX_RECORD_BYTES - 1024, "é" * 256),
    ],
)
def test_sizes_at_the_aggregate_limit(max_bytes: int, key: str) -> None:
    key_bytes = len(key.encode())
    largest = max(
        n
        for n in range(max(0, max_bytes - 1100), max_bytes)
        if fits_empty_aggregate(key_bytes, n, max_bytes)
    )
    sent = [
        (key, bytes([i]) * size)
        for i, size in enumerate(
            [
                largest,
                largest + 1,
                largest - 1,
                1,
                largest,
                0,
                largest + 1,
                largest // 2,
                largest // 2,
            ]
        )
    ]
    shard_map = even_map(1)
    entries = run(ShardAggregator(shard_map, max_bytes=max_bytes), sent)
    assert_exact(shard_map, sent, entries, max_bytes)
    full = [e for e in entries if e.data[:4] == KPL_MAGIC and e.user_records == 1]
    assert any(len(e.data) == max_bytes for e in full)  # exactly at the limit, not above


def test_aggregates_fill_to_the_byte() -> None:
    # Exact sizes: an aggregate is closed only when the next record would not fit.
    shard_map = even_map(1)
    rng = random.Random(3)
    sent = [(rng.choice(KEYS), rng.randbytes(rng.randrange(50, 150))) for _ in range(5_000)]
    entries = run(ShardAggregator(shard_map, max_bytes=10_000), sent)
    assert_exact(shard_map, sent, entries, 10_000)
    position = 0
    for entry in entries[:-1]:
        position += entry.user_records
        key, data = sent[position]
        # The record that opened the next aggregate would have pushed this one over.
        room = 10_000 - len(entry.data)
        assert room < len(data) + 2 + 1 + len(key.encode()) + 4  # its smallest framing
