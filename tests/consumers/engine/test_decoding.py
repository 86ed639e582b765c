"""decode_page: KPL aggregates and plain records of a GetRecords page into ConsumedRecords past
the checkpoint, and dead letters for what cannot be read."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from aws_kinesis_agg.aggregator import AggRecord

from consumers.engine.deaggregation import MAGIC, deaggregate
from consumers.engine.decoding import decode_page
from consumers.engine.records import ConsumedRecord, Position
from schemas.codec import KLINE_SCHEMA, MINITICKER_SCHEMA
from tests.consumers.engine.fakes import CODEC, record
from tests.support.klines import kline

SHARD = "shardId-000000000003"
ARRIVAL = datetime(2026, 11, 23, 3, 0, 0, 123_000, tzinfo=UTC)
KLINE = kline("BTCUSDT", 0)
KLINE_CODEC = CODEC.for_writer(KLINE_SCHEMA)


def aggregate(sequence: int, users: list[tuple[str, bytes]]) -> dict[str, Any]:
    """One boto3 GetRecords record holding ``users`` (partition key, data) as a KPL aggregate."""
    agg = AggRecord()
    for key, data in users:
        assert agg.add_user_record(key, data)
    _, _, body = agg.get_contents()
    return plain(sequence, "aggregate-key", body)


def plain(sequence: int, key: str, data: bytes) -> dict[str, Any]:
    return {
        "SequenceNumber": str(sequence),
        "ApproximateArrivalTimestamp": ARRIVAL.astimezone(timezone(timedelta(hours=8))),
        "Data": data,
        "PartitionKey": key,
    }


def tickers(first: int, count: int) -> list[tuple[str, bytes]]:
    return [(f"key-{i}", CODEC.encode(record(i))) for i in range(first, first + count)]


PAGE = [
    aggregate(100, tickers(0, 3)),
    plain(101, "key-3", CODEC.encode(record(3))),
    aggregate(102, [*tickers(4, 1), ("kline", KLINE_CODEC.encode(KLINE)), *tickers(5, 1)]),
]


def test_aggregates_and_plain_records_in_shard_order_with_their_positions() -> None:
    records, bad = decode_page(SHARD, CODEC, PAGE, None)

    assert bad == []
    assert [r.position for r in records] == [
        Position(100, 0),
        Position(100, 1),
        Position(100, 2),
        Position(101, 0),
        Position(102, 0),
        Position(102, 1),
        Position(102, 2),
    ]
    assert [r.partition_key for r in records] == [
        "key-0", "key-1", "key-2", "key-3", "key-4", "kline", "key-5"
    ]  # fmt: skip
    assert [r.schema for r in records].count(KLINE_SCHEMA) == 1
    assert records[5].record == KLINE
    assert records[0] == ConsumedRecord(
        SHARD,
        Position(100, 0),
        ARRIVAL,
        "key-0",
        record(0),
        MINITICKER_SCHEMA,
        CODEC.encode(record(0)),
    )
    assert all(r.arrival.tzinfo is UTC and r.arrival == ARRIVAL for r in records)


def test_the_same_user_records_as_deaggregate_gives() -> None:
    records, _ = decode_page(SHARD, CODEC, PAGE, None)
    users = [user for raw in PAGE for user in deaggregate(raw)]
    assert [(r.position, r.partition_key, r.data) for r in records] == [
        (Position(int(u.sequence_number), u.sub_sequence_number), u.partition_key, u.data)
        for u in users
    ]


def test_records_at_or_before_the_checkpoint_are_skipped_inside_an_aggregate() -> None:
    records, _ = decode_page(SHARD, CODEC, PAGE, Position(100, 1))
    assert [r.position for r in records][:2] == [Position(100, 2), Position(101, 0)]

    records, _ = decode_page(SHARD, CODEC, PAGE, Position(101, 0))
    assert [r.position for r in records] == [Position(102, sub) for sub in range(3)]


def test_undecodable_user_records_and_corrupt_aggregates_are_dead_letters() -> None:
    corrupt = aggregate(200, tickers(10, 2))
    body = bytearray(corrupt["Data"])
    body[4:8] = b"\xff\xff\xff\xff"  # inside the protobuf, the digest recomputed below
    corrupt["Data"] = _with_digest(bytes(body[:-16]))
    garbage = aggregate(201, [("key-a", b"not avro"), *tickers(11, 1)])

    records, bad = decode_page(SHARD, CODEC, [corrupt, garbage], None)

    assert [r.position for r in records] == [Position(201, 1)]
    assert [(b.position, b.data) for b in bad] == [
        (Position(200), corrupt["Data"]),
        (Position(201, 0), b"not avro"),
    ]
    assert "corrupt KPL aggregate at sequence 200" in bad[0].reason

    # A corrupt aggregate at or before the checkpoint was dead-lettered by the reader before.
    _, bad = decode_page(SHARD, CODEC, [corrupt], Position(200, 0))
    assert bad == []


def test_a_float_arrival_is_epoch_seconds() -> None:
    raw = {**plain(5, "k", CODEC.encode(record(0))), "ApproximateArrivalTimestamp": 1.5}
    (consumed,), _ = decode_page(SHARD, CODEC, [raw], None)
    assert consumed.arrival == datetime(1970, 1, 1, 0, 0, 1, 500_000, tzinfo=UTC)


def _with_digest(body: bytes) -> bytes:
    return MAGIC + body + hashlib.md5(body).digest()  # the KPL digest
