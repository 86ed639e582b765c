"""ShardReader against the in-memory Kinesis and lease store, on virtual time (no network)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest

from consumers.dynamodb.writer import DynamoDbRetriesExhaustedError
from consumers.engine.executors import EngineExecutors, InlineRunner
from consumers.engine.leases import SHARD_END, Lease, MemoryLeaseStore
from consumers.engine.memory_kinesis import MemoryKinesis, ShardEnd, throttled, unavailable
from consumers.engine.records import ConsumedRecord, Position
from consumers.engine.shard_reader import LeaseHandle, Outcome, ReaderConfig, ShardReader
from consumers.s3.writer import S3PutRejectedError, S3PutRetriesExhaustedError
from core.backoff import Backoff
from core.errors import CryptoLiveError
from tests.consumers.engine import virtual_time
from tests.consumers.engine.fakes import CODEC, MemoryProcessor, MemorySink, no_dead_letters, put

SHARD = "shardId-000000000000"
CONFIG = ReaderConfig(
    idle_seconds=0.5, limit=10, retry_backoff=Backoff(base=1.0, cap=4.0), wall_clock_ms=lambda: 0
)


class Harness:
    """One shard, one lease owned by "me", one reader; the store records checkpoints."""

    def __init__(
        self,
        kinesis: MemoryKinesis,
        processor: MemoryProcessor | None = None,
        config: ReaderConfig = CONFIG,
    ) -> None:
        self.kinesis = kinesis
        self.store = MemoryLeaseStore()
        self.store.create(SHARD, (), "TRIM_HORIZON")
        lease = self.store.take(Lease(SHARD, None, 0, "TRIM_HORIZON"), "me")
        self.handle = LeaseHandle(lease, self.store, run=InlineRunner())
        self.sink = processor.sink if processor else MemorySink()
        self.processor = processor or self.sink.processor("me", SHARD)
        self.reader = ShardReader(
            self.handle,
            kinesis,
            kinesis.stream,
            self.processor,
            CODEC,
            no_dead_letters,
            config=config,
            parents_done=lambda: True,
            closed_ending=self.closed_ending,
            executors=EngineExecutors.inline(),
        )

    def closed_ending(self) -> int | None:
        shard = next(s for s in self.kinesis.list_shards() if s.shard_id == SHARD)
        return shard.ending_sequence

    def stored(self) -> Lease:
        return next(lease for lease in self.store.list_leases() if lease.shard_id == SHARD)

    def run(self, stop_after: float | None = 30.0) -> Outcome:
        async def go() -> Outcome:
            stop = asyncio.Event()
            if stop_after is not None:
                asyncio.get_running_loop().call_later(stop_after, stop.set)
            return await self.reader.run(stop)

        return virtual_time.run(go())


def last_sequence(kinesis: MemoryKinesis) -> str:
    return str(kinesis.records(SHARD)[-1]["SequenceNumber"])


def test_open_shard_read_to_the_tip_then_stopped_with_the_checkpoint_at_the_last_record() -> None:
    kinesis = MemoryKinesis(1)
    put(kinesis, range(25))
    harness = Harness(kinesis)

    assert harness.run(stop_after=30.0) is Outcome.STOPPED

    assert harness.sink.writes == dict.fromkeys(range(25), 1)  # each record exactly once
    assert harness.stored().checkpoint == last_sequence(kinesis)
    methods = [m for _, _, m in harness.sink.calls]
    assert methods[:3] == ["process"] * 3  # pages of 10, 10, 5
    assert "at_tip" in methods
    assert methods[-1] == "shutdown"


@pytest.mark.parametrize("shard_end", ["aws", "moto"])
def test_closed_shard_ends_both_ways(shard_end: ShardEnd) -> None:
    kinesis = MemoryKinesis(1, shard_end=shard_end)
    put(kinesis, range(23))
    kinesis.split_shard(SHARD, 2**127)
    harness = Harness(kinesis)

    assert harness.run(stop_after=None) is Outcome.SHARD_END  # ends on its own

    assert harness.sink.writes == dict.fromkeys(range(23), 1)
    assert harness.stored().checkpoint == SHARD_END
    assert [m for _, _, m in harness.sink.calls][-1] == "shard_ended"
    # AWS: the third page (3 records) carried the null iterator; moto: one more empty read
    # after which ListShards' EndingSequenceNumber says everything was read.
    assert kinesis.calls["GetRecords"] == (3 if shard_end == "aws" else 4)


@pytest.mark.parametrize("shard_end", ["aws", "moto"])
def test_empty_closed_shard_ends_both_ways(shard_end: ShardEnd) -> None:
    kinesis = MemoryKinesis(1, shard_end=shard_end)
    kinesis.split_shard(SHARD, 2**127)
    harness = Harness(kinesis)

    assert harness.run(stop_after=None) is Outcome.SHARD_END
    assert harness.stored().checkpoint == SHARD_END
    assert not harness.sink.writes


def test_closed_shard_resumed_from_a_checkpoint_at_its_last_record_ends_in_moto_mode() -> None:
    kinesis = MemoryKinesis(1, shard_end="moto")
    put(kinesis, range(5))
    kinesis.split_shard(SHARD, 2**127)
    harness = Harness(kinesis)
    harness.handle.lease = harness.store.checkpoint(harness.handle.lease, last_sequence(kinesis))

    assert harness.run(stop_after=None) is Outcome.SHARD_END
    assert not harness.sink.writes  # the record at the checkpoint is already durable


class ExpiringProcessor(MemoryProcessor):
    """Expires every iterator after each batch, as five idle minutes would."""

    kinesis: MemoryKinesis

    async def process(self, records: Sequence[ConsumedRecord]) -> Position | None:
        position = await super().process(records)
        self.kinesis.expire_iterators()
        return position


def test_expired_iterator_is_reopened_after_the_last_record_read() -> None:
    kinesis = MemoryKinesis(1)
    put(kinesis, range(35))
    processor = ExpiringProcessor(MemorySink(), "me", SHARD)
    processor.kinesis = kinesis
    harness = Harness(kinesis, processor)

    assert harness.run() is Outcome.STOPPED

    assert harness.sink.writes == dict.fromkeys(range(35), 1)  # nothing skipped, nothing twice
    assert kinesis.calls["GetShardIterator"] == 5  # the first, then one per batch's expiry


class GatedProcessor(MemoryProcessor):
    """Holds its second batch until ``release`` is set; tells when it is held."""

    release: asyncio.Event
    held: asyncio.Event
    batches: int = 0

    async def process(self, records: Sequence[ConsumedRecord]) -> Position | None:
        if records:
            self.batches += 1
            if self.batches == 2:
                self.held.set()
                await self.release.wait()
        return await super().process(records)


def run_with_gate(harness: Harness, during_hold: Callable[[], None]) -> Outcome:
    processor = harness.processor
    assert isinstance(processor, GatedProcessor)

    async def go() -> Outcome:
        processor.release, processor.held = asyncio.Event(), asyncio.Event()
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(60, stop.set)
        task = asyncio.create_task(harness.reader.run(stop))
        await processor.held.wait()
        during_hold()
        await asyncio.sleep(5)  # the sink stays stalled a while
        processor.release.set()
        return await task

    return virtual_time.run(go())


def test_lease_lost_mid_batch_is_never_checkpointed() -> None:
    kinesis = MemoryKinesis(1)
    put(kinesis, range(30))
    harness = Harness(kinesis, GatedProcessor(MemorySink(), "me", SHARD))
    first_checkpoint: list[str] = []

    def steal() -> None:
        first_checkpoint.append(harness.stored().checkpoint)
        harness.store.take(harness.stored(), "thief")

    assert run_with_gate(harness, steal) is Outcome.LOST

    stored = harness.stored()
    assert stored.owner == "thief"
    assert stored.checkpoint == first_checkpoint[0]  # still the end of batch one
    assert int(stored.checkpoint) == int(kinesis.records(SHARD)[9]["SequenceNumber"])
    assert harness.processor.abandoned == 1  # buffers dropped, nothing more written
    assert sum(harness.sink.writes.values()) == 20  # batch two was written, not checkpointed


def test_checkpoint_moves_only_after_the_processor_confirmed() -> None:
    kinesis = MemoryKinesis(1)
    put(kinesis, range(30))
    harness = Harness(kinesis, GatedProcessor(MemorySink(), "me", SHARD))
    while_held: list[str] = []

    assert run_with_gate(harness, lambda: while_held.append(harness.stored().checkpoint)) is (
        Outcome.STOPPED
    )
    assert while_held == [str(kinesis.records(SHARD)[9]["SequenceNumber"])]
    assert harness.stored().checkpoint == last_sequence(kinesis)
    assert harness.sink.writes == dict.fromkeys(range(30), 1)


@pytest.mark.parametrize(
    "error",
    [
        S3PutRetriesExhaustedError("PUT failed 12 times"),
        DynamoDbRetriesExhaustedError("gave up after 600s of retries"),
    ],
)
def test_sink_out_of_retries_backs_off_and_rereads_from_the_checkpoint(
    error: CryptoLiveError,
) -> None:
    kinesis = MemoryKinesis(1)
    put(kinesis, range(30))

    class Failing(MemoryProcessor):
        """Its second batch fails twice, as a sink whose retries ran out."""

        failures_left = 2
        batches_done = 0

        async def process(self, records: Sequence[ConsumedRecord]) -> Position | None:
            if records and self.batches_done == 1 and self.failures_left:
                self.failures_left -= 1
                raise error
            position = await super().process(records)
            self.batches_done += bool(records)
            return position

    harness = Harness(kinesis, Failing(MemorySink(), "me", SHARD))

    assert harness.run(stop_after=60) is Outcome.STOPPED  # the reader lived on

    assert harness.sink.writes == dict.fromkeys(range(30), 1)
    assert harness.processor.abandoned == 2  # once per failure, buffers dropped
    assert harness.stored().checkpoint == last_sequence(kinesis)
    # Each retry re-opened the shard at the checkpoint (end of batch one).
    assert kinesis.calls["GetShardIterator"] == 3


def test_backoff_starts_again_after_a_pass_that_checkpointed() -> None:
    """Failures in a row back off further each time; once a re-read pass has checkpointed
    progress, the next failure is a new one and waits the shortest backoff again."""
    kinesis = MemoryKinesis(1)
    put(kinesis, range(50))
    attempts: list[int] = []

    class Recording(Backoff):
        def delay(self, attempt: int, rand: Callable[[], float] = lambda: 1.0) -> float:
            attempts.append(attempt)
            return super().delay(attempt, lambda: 1.0)

    failures_left = {1: 2, 3: 1}  # batch two fails twice in a row; batch four once

    class Failing(MemoryProcessor):
        batches_done = 0

        async def process(self, records: Sequence[ConsumedRecord]) -> Position | None:
            if records and failures_left.get(self.batches_done):
                failures_left[self.batches_done] -= 1
                raise DynamoDbRetriesExhaustedError("gave up after 600s of retries")
            position = await super().process(records)
            self.batches_done += bool(records)
            return position

    harness = Harness(
        kinesis,
        Failing(MemorySink(), "me", SHARD),
        replace(CONFIG, retry_backoff=Recording(base=1.0, cap=4.0)),
    )

    assert harness.run(stop_after=60) is Outcome.STOPPED
    assert harness.sink.writes == dict.fromkeys(range(50), 1)
    assert attempts == [0, 1, 0]


def test_permanent_sink_error_is_raised_to_the_owner() -> None:
    kinesis = MemoryKinesis(1)
    put(kinesis, range(5))
    sink = MemorySink()

    class Rejecting(MemoryProcessor):
        async def process(self, records: Sequence[ConsumedRecord]) -> Position | None:
            raise S3PutRejectedError("AccessDenied")

    harness = Harness(kinesis, Rejecting(sink, "me", SHARD))
    with pytest.raises(S3PutRejectedError):
        harness.run()
    assert harness.stored().checkpoint == "TRIM_HORIZON"


def test_throttled_and_unavailable_reads_are_retried() -> None:
    kinesis = MemoryKinesis(1)
    put(kinesis, range(25))
    kinesis.fail_next("GetRecords", throttled(), 3)
    kinesis.fail_next("GetRecords", unavailable(), 2)
    harness = Harness(kinesis)

    assert harness.run() is Outcome.STOPPED
    assert harness.sink.writes == dict.fromkeys(range(25), 1)
    assert kinesis.calls["GetShardIterator"] == 1  # the iterator was kept, not re-opened


def test_kinesis_outage_during_the_read_loses_nothing() -> None:
    kinesis = MemoryKinesis(1)
    put(kinesis, range(25))
    harness = Harness(kinesis)

    async def go() -> Outcome:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, kinesis.outage, unavailable())
        loop.call_later(20, kinesis.outage, None)
        loop.call_later(20.5, put, kinesis, range(25, 40))
        loop.call_later(60, stop.set)
        return await harness.reader.run(stop)

    assert virtual_time.run(go()) is Outcome.STOPPED
    assert harness.sink.writes == dict.fromkeys(range(40), 1)


def test_getshard_iterator_outage_backs_off_and_retries() -> None:
    kinesis = MemoryKinesis(1)
    put(kinesis, range(5))
    kinesis.fail_next("GetShardIterator", unavailable("GetShardIterator"), 2)
    harness = Harness(kinesis)

    assert harness.run() is Outcome.STOPPED
    assert harness.sink.writes == dict.fromkeys(range(5), 1)
    assert kinesis.calls["GetShardIterator"] == 3
