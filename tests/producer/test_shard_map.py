"""Behaviour of producer.shard_map: Kinesis' hash rule and open-shard routing."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from core.errors import CryptoLiveError
from producer.shard_map import MAX_HASH_KEY, ShardMap, ShardMapError, ShardRange, hash_key

SYMBOLS = [f"SYM{i}" for i in range(200)] + ["BTCUSDT", "ETHUSDT", "BNBUSDT", "é€"]


def shard(
    shard_id: str, start: int, end: int, *, closed: bool = False, parent: str | None = None
) -> dict[str, Any]:
    """One entry of a boto3 list_shards ``Shards`` list."""
    sequence_range = {"StartingSequenceNumber": "49600000000000000000000000000000000000000000"}
    if closed:
        sequence_range["EndingSequenceNumber"] = "49600000000000000000000000000000000000009999"
    description: dict[str, Any] = {
        "ShardId": shard_id,
        "HashKeyRange": {"StartingHashKey": str(start), "EndingHashKey": str(end)},
        "SequenceNumberRange": sequence_range,
    }
    if parent is not None:
        description["ParentShardId"] = parent
    return description


def even_shards(count: int) -> list[dict[str, Any]]:
    """Shards as CreateStream lays them out: equal ranges, the last one takes the rest."""
    width = (MAX_HASH_KEY + 1) // count
    return [
        shard(
            f"shardId-{i:012d}",
            i * width,
            MAX_HASH_KEY if i == count - 1 else (i + 1) * width - 1,
        )
        for i in range(count)
    ]


def expected_shard(ranges: list[tuple[str, int, int]], key: str) -> str:
    """Linear-scan oracle for shard_for."""
    value = int(hashlib.md5(key.encode("utf-8")).hexdigest(), 16)
    (shard_id,) = [sid for sid, start, end in ranges if start <= value <= end]
    return shard_id


def test_hash_key_is_md5_as_big_endian_128_bit_integer() -> None:
    assert hash_key("") == 0xD41D8CD98F00B204E9800998ECF8427E
    assert hash_key("BTCUSDT") == int(hashlib.md5(b"BTCUSDT").hexdigest(), 16)
    assert hash_key("é") == int(hashlib.md5("é".encode()).hexdigest(), 16)
    assert 0 <= hash_key("anything") <= MAX_HASH_KEY


def test_one_shard_takes_every_key() -> None:
    shard_map = ShardMap.from_list_shards(even_shards(1))
    assert {shard_map.shard_for(key) for key in SYMBOLS} == {"shardId-000000000000"}
    assert len(shard_map) == 1
    assert shard_map.shard_ids == ("shardId-000000000000",)


@pytest.mark.parametrize("count", [2, 4])
def test_even_shards_route_like_a_linear_scan(count: int) -> None:
    shards = even_shards(count)
    shard_map = ShardMap.from_list_shards(shards)
    ranges = [(r.shard_id, r.start, r.end) for r in shard_map.ranges]
    assert [r[0] for r in ranges] == [s["ShardId"] for s in shards]
    assert [(r[1], r[2]) for r in ranges] == [
        (int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
        for s in shards
    ]
    for key in SYMBOLS:
        assert shard_map.shard_for(key) == expected_shard(ranges, key)
        assert shard_map.shard_for(key) == expected_shard(ranges, key)  # cached answer
    assert len({shard_map.shard_for(key) for key in SYMBOLS}) == count
    assert len(shard_map) == count


def test_known_keys_on_two_shards() -> None:
    shard_map = ShardMap.from_list_shards(even_shards(2))
    # md5("BTCUSDT") starts 0xab.. (upper half); md5("ETHUSDT") starts 0x2c.. (lower half).
    assert hash_key("BTCUSDT") >> 127 == 1
    assert hash_key("ETHUSDT") >> 127 == 0
    assert shard_map.shard_for("BTCUSDT") == "shardId-000000000001"
    assert shard_map.shard_for("ETHUSDT") == "shardId-000000000000"


def test_range_boundaries_are_inclusive() -> None:
    h = hash_key("BTCUSDT")
    ends_at_key = ShardMap([ShardRange("b", h + 1, MAX_HASH_KEY), ShardRange("a", 0, h)])
    assert ends_at_key.ranges == (ShardRange("a", 0, h), ShardRange("b", h + 1, MAX_HASH_KEY))
    assert ends_at_key.shard_for("BTCUSDT") == "a"
    starts_at_key = ShardMap([ShardRange("a", 0, h - 1), ShardRange("b", h, MAX_HASH_KEY)])
    assert starts_at_key.shard_for("BTCUSDT") == "b"


def test_after_split_the_closed_parent_is_ignored_and_children_take_its_range() -> None:
    half = (MAX_HASH_KEY + 1) // 2
    split_at = hash_key("BTCUSDT")  # the child starting here gets BTCUSDT
    shards = [
        shard("shardId-000000000000", 0, half - 1),
        shard("shardId-000000000001", half, MAX_HASH_KEY, closed=True),
        shard("shardId-000000000002", half, split_at - 1, parent="shardId-000000000001"),
        shard("shardId-000000000003", split_at, MAX_HASH_KEY, parent="shardId-000000000001"),
    ]
    shard_map = ShardMap.from_list_shards(shards)
    assert shard_map.shard_ids == (
        "shardId-000000000000",
        "shardId-000000000002",
        "shardId-000000000003",
    )
    assert "shardId-000000000001" not in shard_map
    assert "shardId-000000000002" in shard_map
    assert shard_map.shard_for("BTCUSDT") == "shardId-000000000003"
    assert shard_map.shard_for("ETHUSDT") == "shardId-000000000000"
    ranges = [(r.shard_id, r.start, r.end) for r in shard_map.ranges]
    for key in SYMBOLS:
        assert shard_map.shard_for(key) == expected_shard(ranges, key)


def test_shard_ids_are_sorted_whatever_the_input_order() -> None:
    shard_map = ShardMap.from_list_shards(list(reversed(even_shards(4))))
    assert shard_map.shard_ids == tuple(f"shardId-{i:012d}" for i in range(4))
    assert repr(shard_map).startswith("ShardMap(['shardId-000000000000'")


@pytest.mark.parametrize(
    ("shards", "message"),
    [
        ([], "no open shards"),
        ([shard("a", 0, MAX_HASH_KEY, closed=True)], "no open shards"),
        ([shard("a", 1, MAX_HASH_KEY)], "gap at 0 before a"),
        ([shard("a", 0, 10), shard("b", 12, MAX_HASH_KEY)], "gap at 11 before b"),
        ([shard("a", 0, 10), shard("b", 10, MAX_HASH_KEY)], "overlap at 11 before b"),
        ([shard("a", 0, MAX_HASH_KEY - 1)], f"it ends at {MAX_HASH_KEY - 1}"),
        ([shard("a", 0, 10), shard("a", 11, MAX_HASH_KEY)], "duplicate shard ids"),
        ([{"ShardId": "a"}], "malformed shard description"),
        ([shard("a", 0, 10) | {"HashKeyRange": {"StartingHashKey": "x"}}], "malformed"),
    ],
)
def test_incomplete_or_broken_maps_raise(shards: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ShardMapError, match=message) as caught:
        ShardMap.from_list_shards(shards)
    assert isinstance(caught.value, CryptoLiveError)
    assert caught.value.retriable is False


def test_backwards_range_raises() -> None:
    with pytest.raises(ShardMapError, match="ends before it starts"):
        ShardMap([ShardRange("a", 0, 10), ShardRange("b", 11, 5)])


def test_cache_stays_correct_past_its_limit() -> None:
    shard_map = ShardMap.from_list_shards(even_shards(4))
    ranges = [(r.shard_id, r.start, r.end) for r in shard_map.ranges]
    keys = [f"key-{i}" for i in range(10_000)]
    assert [shard_map.shard_for(k) for k in keys] == [expected_shard(ranges, k) for k in keys]
