"""The adaptive GetRecords Limit: pages hold a bounded number of user records, aggregated or not."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

# The library's generated protobuf code imports its siblings by bare name; its deaggregator
# module puts them on sys.path, so import it before messages_pb2.
import aws_kinesis_agg.deaggregator  # noqa: F401
import pytest
from aws_kinesis_agg import messages_pb2

from consumers.engine.deaggregation import MAGIC
from consumers.engine.executors import EngineExecutors, InlineRunner
from consumers.engine.leases import Lease, MemoryLeaseStore
from consumers.engine.memory_kinesis import MemoryKinesis
from consumers.engine.read_limit import (
    FIRST_LIMIT,
    PACED_FLOOR,
    PAGE_SECONDS,
    ReadLimit,
    ReadPace,
)
from consumers.engine.records import ConsumedRecord, Position
from consumers.engine.shard_reader import LeaseHandle, Outcome, ReaderConfig, ShardReader
from tests.consumers.engine import virtual_time
from tests.consumers.engine.fakes import CODEC, MemorySink, no_dead_letters, record

SHARD = "shardId-000000000000"

# -- the limit alone ----------------------------------------------------------------------------


def test_before_any_page_the_limit_is_ten_records_at_most() -> None:
    assert ReadLimit(10_000, 10_000).next == FIRST_LIMIT == 10  # at most 10 MiB, whatever
    assert ReadLimit(5, 10_000).next == 5
    assert ReadLimit(10_000, 3).next == 3  # every Kinesis record holds one user record at least


def test_unaggregated_pages_open_the_limit_to_the_kinesis_limit() -> None:
    limit = ReadLimit(10_000, 10_000)
    limit.observe(10, 10)
    assert limit.next == 10_000


def test_aggregates_shrink_the_limit_so_a_page_holds_at_most_the_bound() -> None:
    limit = ReadLimit(10_000, 10_000)
    limit.observe(100, 22_000)  # 220 user records per Kinesis record
    assert limit.next == 45  # 45 x 220 = 9,900 user records
    assert limit.next * 220 <= 10_000 < (limit.next + 1) * 220


def test_the_limit_follows_the_highest_average_seen_not_the_last_page() -> None:
    limit = ReadLimit(10_000, 10_000)
    limit.observe(10, 2_000)  # full aggregates: 200 each
    limit.observe(1, 30)  # a small one at the tip (flushed by the producer's timer)
    assert limit.next == 50  # still sized for full aggregates
    limit.observe(4, 1_000)  # bigger ones: 250 each
    assert limit.next == 40


def test_pages_that_yielded_nothing_tell_nothing() -> None:
    limit = ReadLimit(10_000, 1_000)
    limit.observe(0, 0)  # empty, or every record at or before the checkpoint
    assert limit.next == FIRST_LIMIT
    limit.observe(2, 1)  # fewer user records than Kinesis records (some undecodable)
    assert limit.next == 1_000


def test_the_limit_is_never_below_one() -> None:
    limit = ReadLimit(10_000, 100)
    limit.observe(1, 5_000)  # one aggregate larger than the bound
    assert limit.next == 1


def test_a_slow_sink_gets_pages_of_about_two_seconds_of_its_pace() -> None:
    limit = ReadLimit(10_000, 10_000)
    limit.observe(10, 2_200)  # 220 user records per Kinesis record
    limit.handed(2_200, 0.55)  # the sink took 0.55 s over them: 4,000 a second
    assert PAGE_SECONDS == 2.0
    assert limit.next == 36  # 36 x 220 = 7,920 user records: about two seconds of it
    limit.handed(7_920, 0.01)  # it caught up: fast again
    assert limit.next == 45  # the bound by user records, 10,000


def test_the_pace_never_bounds_a_page_below_the_floor() -> None:
    limit = ReadLimit(10_000, 10_000)
    limit.observe(10, 10)  # unaggregated
    limit.handed(50, 2.0)  # a small page at the tip, waited on
    assert limit.next == PACED_FLOOR == 2_000


def test_a_page_that_handed_nothing_or_took_no_time_tells_nothing_of_the_pace() -> None:
    limit = ReadLimit(10_000, 10_000)
    limit.observe(10, 10)
    limit.handed(0, 1.0)
    limit.handed(100, 0.0)
    assert limit.next == 10_000


@pytest.mark.parametrize(("kinesis", "users"), [(0, 10), (10, 0), (-1, 10)])
def test_bounds_below_one_are_refused(kinesis: int, users: int) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        ReadLimit(kinesis, users)


# -- a shard reader over a backlog of aggregates --------------------------------------------------


def aggregate(payloads: Sequence[bytes], key: str) -> bytes:
    """A KPL aggregate of ``payloads`` under one partition key."""
    message = messages_pb2.AggregatedRecord()
    message.partition_key_table.append(key)
    for payload in payloads:
        entry = message.records.add()
        entry.partition_key_index = 0
        entry.data = payload
    body = message.SerializeToString()
    return MAGIC + body + hashlib.md5(body).digest()


class BatchSizes(MemorySink):
    """A MemorySink that also keeps the size of each batch handed to the processor."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def write(self, owner: str, shard_id: str, records: Sequence[ConsumedRecord]) -> None:
        self.batches.append(len(records))
        await super().write(owner, shard_id, records)


def backlog(records: int) -> MemoryKinesis:
    """One shard holding ``records`` user records in aggregates of 20."""
    kinesis = MemoryKinesis(1)
    for first in range(0, records, 20):
        payloads = [CODEC.encode(record(i)) for i in range(first, first + 20)]
        kinesis.put_record(aggregate(payloads, f"key-{first}"), f"key-{first}")
    return kinesis


def read_until(
    kinesis: MemoryKinesis, sink: MemorySink, config: ReaderConfig, seconds: float
) -> LeaseHandle:
    """A reader of the shard into ``sink`` for ``seconds`` of virtual time; its lease handle."""
    store = MemoryLeaseStore()
    store.create(SHARD, (), "TRIM_HORIZON")
    handle = LeaseHandle(
        store.take(Lease(SHARD, None, 0, "TRIM_HORIZON"), "me"), store, run=InlineRunner()
    )
    reader = ShardReader(
        handle,
        kinesis,
        kinesis.stream,
        sink.processor("me", SHARD),
        CODEC,
        no_dead_letters,
        config=config,
        parents_done=lambda: True,
        closed_ending=lambda: None,
        executors=EngineExecutors.inline(),
    )

    async def run() -> Outcome:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        return await reader.run(stop)

    assert virtual_time.run(run()) is Outcome.STOPPED
    return handle


def test_a_reader_far_behind_holds_at_most_the_bound_after_its_first_page() -> None:
    kinesis = backlog(600)  # 30 aggregates of 20 user records
    sink = BatchSizes()
    config = ReaderConfig(idle_seconds=0.5, limit=500, max_user_records=50, wall_clock_ms=int)

    handle = read_until(kinesis, sink, config, 30.0)

    # The first page knows nothing yet (FIRST_LIMIT aggregates, not 500); then 50 // 20 = 2
    # aggregates a page.
    assert sink.batches == [200] + [40] * 10
    assert sink.writes == dict.fromkeys(range(600), 1)
    last = kinesis.records(SHARD)[-1]["SequenceNumber"]
    assert handle.lease.position == Position(int(last), 19)


class SlowSink(BatchSizes):
    """Writes 100 user records a second (virtual time): a sink far slower than the reads."""

    async def write(self, owner: str, shard_id: str, records: Sequence[ConsumedRecord]) -> None:
        await asyncio.sleep(len(records) / 100)
        await super().write(owner, shard_id, records)


def test_a_reader_over_a_slow_sink_holds_about_two_seconds_of_its_pace() -> None:
    sink = SlowSink()

    read_until(backlog(6_200), sink, ReaderConfig(idle_seconds=0.5, wall_clock_ms=int), 200.0)

    # The first page: FIRST_LIMIT aggregates (200 records, 2 s at 100 a second); after it, the
    # floor of 2,000 user records (two seconds of this sink are 200), not the 10,000 bound.
    assert sink.batches[0] == 200
    assert set(sink.batches[1:]) == {PACED_FLOOR}
    assert sink.writes == dict.fromkeys(range(6_200), 1)


def test_pace_at_the_tip_waits_the_idle_time_from_the_last_read() -> None:
    pace = ReadPace(idle_seconds=0.5)
    pace.started(10.0)
    assert pace.pause(10.1, behind=False) == pytest.approx(0.4)
    assert pace.pause(10.7, behind=False) == 0.0


def test_pace_while_behind_reads_on_at_most_five_times_a_second() -> None:
    pace = ReadPace(idle_seconds=0.5)
    for at in (10.0, 10.05, 10.1, 10.15):
        pace.started(at)
        assert pace.pause(at + 0.01, behind=True) == 0.0  # fewer than 5 in the last second
    pace.started(10.2)
    assert pace.pause(10.25, behind=True) == pytest.approx(0.75)  # the 6th waits for 11.0
    pace.started(11.0)
    assert pace.pause(11.01, behind=True) == pytest.approx(0.04)  # the window moved on
