"""Redrive planning, pure: which dead-lettered user records are put again, given what the
stream already holds. Entries whose outcome is unknown are checked; the others are not."""

from __future__ import annotations

from aws_kinesis_agg.aggregator import RecordAggregator

from consumers.engine.deaggregation import deaggregate
from core.dead_letters import dead_letter_line
from producer.aggregation import PutEntry
from producer.redrive import (
    CHECK_MARGIN_US,
    check_from_us,
    plan_redrive,
    record_key,
    sort_lines,
)
from producer.shard_map import ShardMap
from producer.undelivered import NOT_SENT, UNANSWERED, Undelivered
from schemas.codec import default_codec
from tests.support.pipeline import make_record

CODEC = default_codec()
ONE_SHARD = ShardMap.from_list_shards(
    [
        {
            "ShardId": "shardId-0",
            "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": str(2**128 - 1)},
        }
    ]
)


def aggregate(indexes: range) -> tuple[PutEntry, list[tuple[str, bytes]]]:
    """A KPL aggregate of ``make_record`` of each index, and its (key, data) user records."""
    records = [(r["symbol"], CODEC.encode(r)) for r in map(make_record, indexes)]
    aggregator = RecordAggregator()
    for key, data in records:
        assert aggregator.add_user_record(key, data) is None
    agg = aggregator.clear_and_get()
    assert agg is not None
    key, hash_key, data = agg.get_contents()
    return PutEntry("shardId-0", key, data, hash_key or None, len(records)), records


def split(entry: PutEntry) -> list[tuple[str, bytes]]:
    raw = {
        "Data": entry.data,
        "PartitionKey": entry.partition_key,
        "SequenceNumber": "0",
        "ApproximateArrivalTimestamp": None,
    }
    return [(user.partition_key, user.data) for user in deaggregate(raw)]


def lines_of(*letters: tuple[PutEntry, str, bool, int]) -> list[bytes]:
    return [
        dead_letter_line(Undelivered(entry, reason, unknown).dead_letter(at), "producer")
        for entry, reason, unknown, at in letters
    ]


def test_unknown_outcome_records_in_the_stream_are_not_put_again() -> None:
    landed, landed_records = aggregate(range(0, 10))
    lost, _ = aggregate(range(10, 20))
    not_sent, _ = aggregate(range(20, 30))
    file = sort_lines(
        lines_of(
            (landed, UNANSWERED, True, 1),
            (lost, UNANSWERED, True, 1),
            (not_sent, NOT_SENT, False, 1),
        )
    )
    assert file.unknown == [True, True, False]
    present = {record_key(key, data) for key, data in landed_records}

    plan = plan_redrive(file, present, split)

    assert plan.found == 10 and plan.unchecked == 0
    assert plan.whole == [lost, not_sent]  # nothing of them in the stream: put as they were
    assert plan.records == [] and plan.user_records == 20
    assert plan.entries(lambda: ONE_SHARD) == [lost, not_sent]


def test_partly_present_entries_are_reaggregated_and_records_are_planned_once() -> None:
    entry, records = aggregate(range(0, 10))
    present = {record_key(key, data) for key, data in records[:4]}
    twice = sort_lines(lines_of((entry, UNANSWERED, True, 1), (entry, UNANSWERED, True, 1)))

    plan = plan_redrive(twice, present, split)

    assert plan.found == 4 + 10  # the second copy finds what the first one planned
    assert plan.whole == [] and plan.records == records[4:]
    entries = plan.entries(lambda: ONE_SHARD)
    assert [user for e in entries for user in split(e)] == records[4:]
    assert sum(e.user_records for e in entries) == 6


def test_not_sent_entries_are_put_unchecked_and_unreadable_unknown_ones_whole() -> None:
    entry, records = aggregate(range(0, 5))
    broken = PutEntry("shardId-0", "k", b"\xf3\x89\x9a\xc2" + b"x" * 40, None, 5)
    file = sort_lines(lines_of((entry, NOT_SENT, False, 1), (broken, UNANSWERED, True, 1)))
    present = {record_key(key, data) for key, data in records}

    def strict_split(e: PutEntry) -> list[tuple[str, bytes]]:
        if e is broken or e.data == broken.data:
            raise ValueError("corrupt")
        return split(e)

    plan = plan_redrive(file, present, strict_split)

    assert plan.whole == [entry, broken] and plan.found == 0 and plan.unchecked == 1


def test_the_check_starts_before_the_earliest_unknown_record_was_received() -> None:
    early, _ = aggregate(range(0, 3))  # received_at of make_record(0) is BASE_MS*1000 + 5
    late, _ = aggregate(range(100, 103))
    file = sort_lines(lines_of((late, UNANSWERED, True, 10**18), (early, NOT_SENT, False, 1)))
    first = make_record(100)["received_at"]
    assert check_from_us([file], split, CODEC) == first - CHECK_MARGIN_US
    assert check_from_us([sort_lines(lines_of((early, NOT_SENT, False, 1)))], split, CODEC) is None
