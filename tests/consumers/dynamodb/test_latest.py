"""The latest-table book and pump: coalescing, which batches may be checkpointed, crash safety."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from consumers.dynamodb.candles import CandleItem
from consumers.dynamodb.items import Item, LatestUpdate, coalesce_latest, ticker_attributes
from consumers.dynamodb.latest import LatestBook, LatestPump
from consumers.dynamodb.processor import DynamoDbProcessorFactory
from consumers.dynamodb.writer import DynamoDbRetriesExhaustedError, MemoryDynamoDbWriter, Refused
from consumers.engine.records import ConsumedRecord, Position
from core.metrics import Counters, Gauges, Metrics
from tests.support.pipeline import ticker

SHARD_A, SHARD_B = "shardId-000000000000", "shardId-000000000001"
START_MS = 1_795_000_000_000


def update(symbol: str, event_time: int) -> LatestUpdate:
    return LatestUpdate(symbol, event_time, ticker_attributes(ticker(symbol, event_time, "1.0")))


# -- the book alone ---------------------------------------------------------------------------


def test_a_newer_update_replaces_a_waiting_one_in_place() -> None:
    metrics = Metrics("consumer-dynamodb")
    book = LatestBook(metrics)
    book.offer(SHARD_A, 1, [update("AAA", 10), update("BBB", 10)])
    book.offer(SHARD_A, 2, [update("AAA", 20), update("BBB", 5), update("CCC", 20)])
    taken = book.take(10)
    assert taken is not None
    # AAA kept its place ahead of BBB, so a busy symbol is never starved by quieter ones.
    assert [(e.update.symbol, e.update.event_time, e.batch) for e in taken] == [
        ("AAA", 20, 2),
        ("BBB", 10, 1),
        ("CCC", 20, 2),
    ]
    assert metrics.value(Counters.LATEST_COALESCED) == 2
    assert metrics.value(Gauges.LATEST_WAITING) == 0


def test_a_batch_is_blocked_until_its_updates_are_written_or_replaced() -> None:
    book = LatestBook()
    assert book.first_blocked(SHARD_A) is None
    book.offer(SHARD_A, 1, [update("AAA", 10), update("BBB", 10)])
    book.offer(SHARD_A, 2, [update("AAA", 20)])
    # AAA@10 is covered by AAA@20 (batch 2); BBB@10 still blocks batch 1.
    assert book.first_blocked(SHARD_A) == 1
    first = book.take(1)
    assert first is not None and first[0].update.symbol == "AAA"
    assert book.first_blocked(SHARD_A) == 1  # taken is not written yet
    book.done(first)
    assert book.first_blocked(SHARD_A) == 1
    rest = book.take(5)
    assert rest is not None
    book.done(rest)
    assert book.first_blocked(SHARD_A) is None
    assert book.wait_clear(SHARD_A, 2, timeout=0)


def test_a_replacement_from_another_shard_moves_the_block_there() -> None:
    book = LatestBook()
    book.offer(SHARD_A, 7, [update("AAA", 10)])
    book.offer(SHARD_B, 3, [update("AAA", 11)])
    assert book.first_blocked(SHARD_A) is None
    assert book.first_blocked(SHARD_B) == 3


def test_wait_clear_times_out_then_sees_the_write() -> None:
    book = LatestBook()
    book.offer(SHARD_A, 1, [update("AAA", 10)])
    assert not book.wait_clear(SHARD_A, 1, timeout=0.05)
    assert book.wait_clear(SHARD_B, 1, timeout=0)  # other shards are not held up
    taken = book.take(1)
    assert taken is not None
    threading.Timer(0.05, book.done, [taken]).start()
    assert book.wait_clear(SHARD_A, 1, timeout=5)


def test_drop_forgets_only_the_waiting_updates_of_that_shard() -> None:
    book = LatestBook()
    book.offer(SHARD_A, 1, [update("AAA", 10)])
    in_flight = book.take(1)
    assert in_flight is not None
    book.offer(SHARD_A, 2, [update("AAA", 20), update("BBB", 20)])
    book.offer(SHARD_B, 1, [update("CCC", 20)])
    assert book.drop(SHARD_A) == 2
    assert book.waiting == 1
    assert book.first_blocked(SHARD_A) == 1  # the write in flight still counts
    book.done(in_flight)
    assert book.first_blocked(SHARD_A) is None


def test_a_failure_reaches_every_caller_and_close_ends_take() -> None:
    book = LatestBook()
    book.offer(SHARD_A, 1, [update("AAA", 10)])
    book.fail(DynamoDbRetriesExhaustedError("gave up"))
    with pytest.raises(DynamoDbRetriesExhaustedError, match="gave up"):
        book.first_blocked(SHARD_A)
    with pytest.raises(DynamoDbRetriesExhaustedError):
        book.wait_clear(SHARD_A, 1, timeout=None)
    with pytest.raises(DynamoDbRetriesExhaustedError):
        book.offer(SHARD_A, 2, [update("BBB", 10)])
    book.close()
    assert book.take(1) is None


# -- the pump alone ---------------------------------------------------------------------------


class HeldSink:
    """An AsyncDynamoDbSink whose latest-row calls (one update each) run until the test ends
    them, in any order; records the order the calls started in."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self._ends: dict[str, asyncio.Event] = {}
        self._changed = asyncio.Condition()

    async def put_history(self, items: Sequence[Item]) -> None:
        raise AssertionError("not used")

    async def put_candles(self, items: Sequence[CandleItem]) -> None:
        raise AssertionError("not used")

    async def put_latest(self, updates: Sequence[LatestUpdate]) -> list[Refused]:
        (one,) = updates
        end = self._ends.setdefault(one.symbol, asyncio.Event())
        async with self._changed:
            self.started.append(one.symbol)
            self._changed.notify_all()
        await end.wait()
        return []

    def end(self, symbol: str) -> None:
        self._ends.setdefault(symbol, asyncio.Event()).set()

    async def until_started(self, count: int) -> list[str]:
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.started) >= count)
        for _ in range(3):  # let any further (wrong) start happen before the caller looks
            await asyncio.sleep(0)
        return list(self.started)


def test_the_pump_starts_the_next_write_as_soon_as_any_call_ends_not_after_a_round() -> None:
    sink = HeldSink()
    pump = LatestPump(sink, concurrency=2)
    symbols = ["AAA", "BBB", "CCC", "DDD", "EEE"]

    async def run() -> list[list[str]]:
        pump.book.offer(SHARD_A, 1, [update(symbol, 10) for symbol in symbols])
        seen = [await sink.until_started(2)]  # two calls in flight, oldest first
        sink.end("BBB")  # the second call ends first; AAA is still in flight
        seen.append(await sink.until_started(3))  # rounds of two would wait for AAA here
        sink.end("CCC")
        seen.append(await sink.until_started(4))
        for symbol in symbols:
            sink.end(symbol)
        await pump.drain()
        return seen

    seen = asyncio.run(run())
    assert seen == [symbols[:2], symbols[:3], symbols[:4]]
    assert sink.started == symbols
    assert pump.book.first_blocked(SHARD_A) is None


# -- processors over the in-memory writer -------------------------------------------------------


class GatedWriter(MemoryDynamoDbWriter):
    """Latest-table writes wait for a permit; ``crash`` fails the rest, like a killed process."""

    def __init__(self) -> None:
        super().__init__()
        self.permits = threading.Semaphore(0)
        self.crashed = threading.Event()
        self.latest_calls = 0

    def update_latest(self, updates: Sequence[LatestUpdate]) -> None:
        while not self.permits.acquire(timeout=0.01):
            if self.crashed.is_set():
                raise DynamoDbRetriesExhaustedError("crashed")
        self.latest_calls += 1
        super().update_latest(updates)

    def crash(self) -> None:
        self.crashed.set()


def consumed(records: Sequence[dict[str, Any]], first_sequence: int = 1) -> list[ConsumedRecord]:
    arrival = datetime.fromtimestamp(START_MS / 1000, UTC)
    return [
        ConsumedRecord(SHARD_A, Position(first_sequence + i), arrival, r["symbol"], r)
        for i, r in enumerate(records)
    ]


def market(count: int, symbols: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        # Mostly increasing event times per symbol, with some late (older) events mixed in.
        event_time = START_MS + i * 10 - (rng.randrange(500) if rng.random() < 0.2 else 0)
        out.append(ticker(f"S{rng.randrange(symbols)}USDT", event_time, f"{i}.00000000"))
    return out


def expected_latest(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    return {u.symbol: u.event_time for u in coalesce_latest(records)}


def stored_latest(writer: MemoryDynamoDbWriter) -> dict[str, int]:
    return {symbol: int(item["event_time"]["N"]) for symbol, item in writer.latest.items()}


def at_the_tip() -> int:
    """A wall clock (µs) at which market() records are fresh: the shard is at its tip."""
    return START_MS * 1000


def test_history_is_not_held_up_and_checkpoints_wait_for_the_latest_rows() -> None:
    writer = GatedWriter()
    factory = DynamoDbProcessorFactory(writer, 1, latest_wait=0.01, wall_clock_us=at_the_tip)
    processor = factory(SHARD_A)
    records = consumed(market(300, symbols=20, seed=1))

    async def run() -> list[Position | None]:
        positions = [await processor.process(records[i : i + 100]) for i in range(0, 300, 100)]
        assert len(writer.history) == 300  # every batch's history, latest rows still pending
        assert writer.latest == {}
        writer.permits.release(100)  # enough for everything waiting (at most 20 symbols)
        positions.append(await processor.shard_ended())
        return positions

    try:
        positions = asyncio.run(run())
    finally:
        factory.close()
    assert positions == [None, None, None, Position(300)]
    assert stored_latest(writer) == expected_latest([r.record for r in records])
    # Three batches of 20 symbols coalesced to one write per symbol, plus the 4 the pump's
    # lanes took (and could no longer coalesce) while their calls waited for a permit.
    assert writer.latest_calls == len(expected_latest([r.record for r in records])) + 4


@pytest.mark.parametrize("seed", range(12))
def test_a_crash_anywhere_then_rereading_from_the_checkpoint_ends_exactly_right(seed: int) -> None:
    rng = random.Random(seed)
    records = consumed(market(600, symbols=15, seed=seed))
    writer = GatedWriter()  # the "table" survives the crash; the process's memory does not
    checkpoint: Position | None = None

    async def run_until_crash(factory: DynamoDbProcessorFactory, start: int) -> None:
        nonlocal checkpoint
        processor = factory(SHARD_A)
        crash_after = rng.randrange(1, 8)
        for batch, index in enumerate(range(start, len(records), 50)):
            for _ in range(rng.randrange(4)):
                writer.permits.release()  # the latest table keeps up only now and then
            position = await processor.process(records[index : index + 50])
            if position is not None:
                assert checkpoint is None or position > checkpoint
                checkpoint = position
            if batch == crash_after:
                return

    for _ in range(3):  # three crashes, each followed by a restart from the checkpoint
        factory = DynamoDbProcessorFactory(writer, 1, latest_wait=0.001)
        start = 0 if checkpoint is None else checkpoint.sequence  # sequence n is records[n-1]
        asyncio.run(run_until_crash(factory, start))
        writer.crash()
        factory.close()
        writer.crashed.clear()
        writer.permits = threading.Semaphore(0)

    async def finish() -> None:
        processor = factory(SHARD_A)
        start = 0 if checkpoint is None else checkpoint.sequence
        for index in range(start, len(records), 50):
            await processor.process(records[index : index + 50])
        await processor.shard_ended()

    factory = DynamoDbProcessorFactory(writer, 1, latest_wait=0.001)
    writer.permits.release(10_000)
    try:
        asyncio.run(finish())
    finally:
        factory.close()
    assert stored_latest(writer) == expected_latest([r.record for r in records])
    assert len(writer.history) == len(
        {(r.record["stream_type"], r.record["iso_timestamp"]) for r in records}
    )


def test_drain_waits_for_every_queued_update_and_reports_a_failure() -> None:
    writer = GatedWriter()
    factory = DynamoDbProcessorFactory(writer, 1, latest_wait=0.001)
    records = consumed(market(200, symbols=10, seed=3))
    try:
        asyncio.run(factory(SHARD_A).process(records))
        assert writer.latest == {}  # a replay that stopped here would leave them unwritten
        threading.Timer(0.05, writer.permits.release, [100]).start()
        factory.drain()
        assert stored_latest(writer) == expected_latest([r.record for r in records])
        writer.permits = threading.Semaphore(0)  # the latest table stops answering
        asyncio.run(factory(SHARD_B).process(consumed(market(50, symbols=5, seed=4), 1000)))
        writer.crash()
        with pytest.raises(DynamoDbRetriesExhaustedError, match="crashed"):
            factory.drain()
    finally:
        factory.close()


def test_a_failed_lane_stops_the_others_taking_more() -> None:
    writer = GatedWriter()
    factory = DynamoDbProcessorFactory(writer, 1, latest_wait=0.001, latest_concurrency=3)
    records = consumed(market(200, symbols=10, seed=5))
    try:
        asyncio.run(factory(SHARD_A).process(records))
        writer.crash()  # the three calls waiting for a permit fail; nothing else is tried
        with pytest.raises(DynamoDbRetriesExhaustedError, match="crashed"):
            factory.drain()
        assert factory.book.take(1) is None  # the book refuses work once it failed
        # Each lane took at most one update after the restart (fewer when the first failure
        # came back before a lane's first take); the rest was never handed out.
        assert 10 - 3 <= factory.book.waiting < 10
    finally:
        factory.close()
    assert writer.latest_calls == 0


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_held_updates_coalesce_until_due_and_a_fresh_one_is_not_held() -> None:
    clock = Clock()
    book = LatestBook(clock=clock)
    book.offer(SHARD_A, 1, [update("AAAUSDT", 1), update("BBBUSDT", 1)], hold=1.0)
    clock.now += 0.5
    book.offer(SHARD_A, 2, [update("AAAUSDT", 2), update("BBBUSDT", 2)], hold=1.0)
    assert book.take(10) == []  # both held a second from when they first waited
    assert book.due_in() == pytest.approx(0.5)
    clock.now += 0.4
    book.offer(SHARD_B, 1, [update("BBBUSDT", 3)])  # fresh: due now, and its row with it
    taken = book.take(10)
    assert taken is not None
    assert [(e.update.symbol, e.update.event_time) for e in taken] == [("BBBUSDT", 3)]
    clock.now += 0.1
    taken = book.take(10)
    assert taken is not None
    assert [(e.update.symbol, e.update.event_time) for e in taken] == [("AAAUSDT", 2)]
    assert book.due_in() is None
    assert book.first_blocked(SHARD_A) == 2  # batch 1 covered by batch 2's update
    book.done(taken)
    assert book.first_blocked(SHARD_A) is None


def test_a_catch_up_batch_does_not_wait_for_its_held_latest_rows() -> None:
    writer = GatedWriter()  # no permits: a row written now would never finish
    factory = DynamoDbProcessorFactory(writer, 1, latest_wait=600.0)  # the real clock: records
    processor = factory(SHARD_A)  # of 2026-11 are long received, a catch-up
    records = consumed(market(200, symbols=10, seed=3))

    async def run() -> list[Position | None]:
        batches = [processor.process(records[i : i + 50]) for i in range(0, 200, 50)]
        positions = [await asyncio.wait_for(batch, 60) for batch in batches]
        assert writer.latest_calls == 0  # held: nothing started before the hold ends
        writer.permits.release(100)
        positions.append(await processor.shard_ended())
        return positions

    try:
        positions = asyncio.run(run())
    finally:
        factory.close()
    # A batch is safe once later batches' updates cover its rows; the last needs its own.
    assert positions[4] == Position(200)
    assert all(p is None or p < Position(200) for p in positions[:4])
    assert len(writer.history) == 200
    assert stored_latest(writer) == expected_latest([r.record for r in records])
    # Four batches of 10 symbols held together: one write per symbol.
    assert writer.latest_calls == len(expected_latest([r.record for r in records]))


def test_release_makes_a_shards_held_updates_due_at_once() -> None:
    clock = Clock()
    book = LatestBook(clock=clock)
    book.offer(SHARD_A, 1, [update("AAAUSDT", 1)], hold=5.0)
    book.offer(SHARD_B, 1, [update("BBBUSDT", 1)], hold=5.0)
    assert book.take(10) == []
    book.release(SHARD_A)  # shard A reached its tip
    taken = book.take(10)
    assert taken is not None
    assert [e.update.symbol for e in taken] == ["AAAUSDT"]
    assert book.due_in() == pytest.approx(5.0)  # shard B's still held
