"""JsonlGzipFormat (deterministic gzip JSONL) and S3 object keys."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from consumers.engine.records import ConsumedRecord, Position
from consumers.s3.batching import Batch, BatchCutter
from consumers.s3.format import JsonlGzipFormat, jsonl_line
from consumers.s3.keys import object_key, partition_path
from schemas.record import FIELD_ORDER

SHARD = "shardId-000000000001"
SEQ = 49_650_000_000_000_000_000_000_000_000_000_000_000_000_000_123


def fields(n: int) -> dict[str, Any]:
    # Deliberately not in FIELD_ORDER, to show the output order does not come from the input.
    return {
        "received_at": 1_795_404_218_200_123 + n,
        "quote_volume": "0.00001000",
        "base_volume": "123456789012345678.12345678",
        "low_price": "0.00000001",
        "high_price": "66000.10000000",
        "open_price": "64000.00000000",
        "close_price": f"{65000 + n}.12000000",
        "symbol": "BTCUSDT",
        "stream_type": "btcusdt@miniTicker",
        "event_time": 1_795_404_218_123 + n,
        "event_type": "24hrMiniTicker",
        "iso_timestamp": "2026-11-23T03:23:38.123Z",
    }


def consumed(n: int, arrival: datetime, sub: int = 0) -> ConsumedRecord:
    return ConsumedRecord(SHARD, Position(SEQ + n, sub), arrival, "BTCUSDT", fields(n))


def one_batch(records: list[ConsumedRecord]) -> Batch:
    cutter = BatchCutter(window_seconds=3600)
    assert cutter.add(records) == []
    (batch,) = cutter.flush()
    return batch


ARRIVAL = datetime(2026, 11, 23, 3, 59, 59, 999_000, tzinfo=UTC)


def test_line_is_compact_in_field_order_with_exact_decimals() -> None:
    line = jsonl_line(fields(0))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert b" " not in line
    parsed = json.loads(line)
    assert list(parsed) == list(FIELD_ORDER)
    assert parsed["quote_volume"] == "0.00001000"
    assert parsed["base_volume"] == "123456789012345678.12345678"
    assert parsed["event_time"] == 1_795_404_218_123
    assert isinstance(parsed["received_at"], int)


def test_line_drops_unknown_fields_and_requires_every_known_one() -> None:
    assert jsonl_line({**fields(0), "extra": 1}) == jsonl_line(fields(0))
    incomplete = fields(0)
    del incomplete["symbol"]
    with pytest.raises(KeyError):
        jsonl_line(incomplete)


def test_serialize_roundtrips_through_gzip_and_json() -> None:
    records = [consumed(n, ARRIVAL) for n in range(50)]
    body = JsonlGzipFormat().serialize(one_batch(records))
    lines = gzip.decompress(body).split(b"\n")
    assert lines[-1] == b""  # every line, the last included, is newline-terminated
    assert [json.loads(line) for line in lines[:-1]] == [r.record for r in records]
    assert all(list(json.loads(line)) == list(FIELD_ORDER) for line in lines[:-1])


def test_serialize_is_byte_identical_for_equal_input() -> None:
    fmt = JsonlGzipFormat()
    first = fmt.serialize(one_batch([consumed(n, ARRIVAL) for n in range(20)]))
    again = JsonlGzipFormat().serialize(one_batch([consumed(n, ARRIVAL) for n in range(20)]))
    assert first == again
    assert first[4:8] == b"\x00\x00\x00\x00"  # gzip MTIME: no wall clock in the bytes
    assert first[3] & 0x08 == 0  # no FNAME field


def test_compresslevel_changes_bytes_not_content_and_is_validated() -> None:
    batch = one_batch([consumed(n, ARRIVAL) for n in range(20)])
    fast, best = JsonlGzipFormat(1).serialize(batch), JsonlGzipFormat(9).serialize(batch)
    assert gzip.decompress(fast) == gzip.decompress(best)
    with pytest.raises(ValueError, match="compresslevel"):
        JsonlGzipFormat(10)


def test_format_line_matches_the_serialized_line() -> None:
    record = consumed(3, ARRIVAL)
    fmt = JsonlGzipFormat()
    assert gzip.decompress(fmt.serialize(one_batch([record]))) == fmt.line(record)


def test_object_key_layout() -> None:
    batch = one_batch([consumed(0, ARRIVAL - timedelta(seconds=5), sub=7), consumed(1, ARRIVAL)])
    assert object_key("batch_jsonl", batch) == (
        f"batch_jsonl/year=2026/month=11/day=23/hour=03/shardId-000000000001-{SEQ}-7.jsonl.gz"
    )


def test_partitions_come_from_the_first_arrival_in_utc() -> None:
    local = ARRIVAL.astimezone(timezone(timedelta(hours=8)))  # 11:59 in UTC+8
    batch = one_batch([consumed(0, local)])
    assert partition_path("raw", batch) == "raw/year=2026/month=11/day=23/hour=03"
    new_year = one_batch([consumed(0, datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC))])
    assert partition_path("raw", new_year) == "raw/year=2026/month=12/day=31/hour=23"


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [("batch_jsonl/", "batch_jsonl/year"), ("/a/b", "a/b/year"), ("", "year")],
)
def test_prefix_slashes_are_normalised(prefix: str, expected: str) -> None:
    assert object_key(prefix, one_batch([consumed(0, ARRIVAL)])).startswith(expected + "=2026/")
