"""Publisher over an in-memory Kinesis: per-shard order through partial failures, backpressure,
resharding, and a background failure surfacing in its owner. No network, no wall-clock races:
every wait is on a condition or a gate."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from core.backoff import Backoff
from core.metrics import Counters, Metrics
from producer.aggregation import PutEntry
from producer.publisher import Publisher
from producer.undelivered import NOT_SENT
from schemas.codec import default_codec
from tests.producer.fakes import StreamFake, accepted, shard_map, until
from tests.support.pipeline import make_record

pytestmark = pytest.mark.timeout(30)

FAST = Backoff(base=0.001, cap=0.001)


def records(count: int, symbols: int = 16) -> list[tuple[str, bytes]]:
    codec = default_codec()
    return [(r["symbol"], codec.encode(r)) for r in (make_record(i, symbols) for i in range(count))]


def first_sent_order(fake: StreamFake) -> list[PutEntry]:
    seen: set[int] = set()
    order: list[PutEntry] = []
    for request in fake.requests:
        for entry in request:
            if id(entry) not in seen:
                seen.add(id(entry))
                order.append(entry)
    return order


def by_shard(entries: Sequence[PutEntry]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for entry in entries:
        out.setdefault(entry.shard_id, []).append(id(entry))
    return out


def test_each_shard_keeps_its_order_through_partial_failures_and_nothing_is_lost() -> None:
    def answer(call: int, entries: Sequence[PutEntry]) -> dict[str, Any]:
        response = accepted(entries)
        if call % 2 == 0:  # every other request: its first entry throttled
            response["Records"][0] = {"ErrorCode": "ProvisionedThroughputExceededException"}
        return response

    fake = StreamFake(answer, [shard_map(4)])
    metrics = Metrics("t")

    async def scenario() -> list[Any]:
        publisher = Publisher(fake, metrics, max_bytes=1024, max_in_flight=4, backoff=FAST)
        await publisher.start()
        for key, data in records(600):
            await publisher.add(key, data)
        return await publisher.close(10.0)

    undelivered = asyncio.run(scenario())
    assert undelivered == []
    assert sum(entry.user_records for entry in fake.stored) == 600  # records in = records out
    assert len({id(entry) for entry in fake.stored}) == len(fake.stored)  # each stored once
    assert by_shard(fake.stored) == by_shard(first_sent_order(fake))  # per-shard order kept
    assert metrics.value(Counters.RECORDS_PUT) == 600
    assert metrics.value(Counters.PUT_RETRIES) == fake.calls // 2
    # A shard is in at most one request at a time, so never twice in one request either.
    assert all(len({e.shard_id for e in r}) == len(r) for r in fake.requests)


def test_add_waits_while_too_much_is_pending_and_resumes_when_kinesis_answers() -> None:
    fake = StreamFake()
    gate = fake.gate = threading.Semaphore(0)  # Kinesis answers only when permitted
    batch = records(400)

    async def scenario() -> tuple[int, int, list[Any]]:
        publisher = Publisher(
            fake,
            Metrics("t"),
            max_bytes=1024,
            max_in_flight=2,
            max_pending_bytes=4096,
            backoff=FAST,
        )
        await publisher.start()
        added = 0

        async def produce() -> None:
            nonlocal added
            for key, data in batch:
                await publisher.add(key, data)
                added += 1

        producing = asyncio.create_task(produce())
        await until(lambda: not publisher._space.is_set())  # the bound is reached
        for _ in range(50):  # the loop runs freely, and nothing more gets in
            await asyncio.sleep(0)
        held_at, buffered = added, publisher.buffered_records
        gate.release(10_000)
        await producing
        return held_at, buffered, await publisher.close(10.0)

    try:
        held_at, buffered, undelivered = asyncio.run(scenario())
    finally:
        gate.release(10_000)
    assert held_at < len(batch) and buffered == held_at  # pushed back, nothing dropped
    assert undelivered == []
    assert sum(entry.user_records for entry in fake.stored) == 400


def test_a_resharded_stream_is_noticed_and_the_new_shards_get_the_rest() -> None:
    old, new = shard_map(2), shard_map(3, prefix="shardId-new-")
    resharded = threading.Event()

    def answer(call: int, entries: Sequence[PutEntry]) -> dict[str, Any]:
        if resharded.is_set():  # records land on the new shards, not where the map said
            return accepted(entries, lambda entry: "shardId-new-0")
        return accepted(entries)

    fake = StreamFake(answer, [old, new])
    metrics = Metrics("t")
    first, second = records(200), records(200)

    async def scenario() -> list[Any]:
        publisher = Publisher(fake, metrics, max_bytes=1024, max_buffered_time=0.004, backoff=FAST)
        await publisher.start()
        for key, data in first:
            await publisher.add(key, data)
        await until(lambda: publisher.buffered_records == 0)
        resharded.set()
        for key, data in first[:10]:
            await publisher.add(key, data)
        await until(lambda: metrics.value(Counters.RESHARDS) == 1)
        for key, data in second:
            await publisher.add(key, data)
        return await publisher.close(10.0)

    undelivered = asyncio.run(scenario())
    assert undelivered == []
    assert fake.list_calls >= 2
    assert sum(entry.user_records for entry in fake.stored) == 410
    after = [e for request in fake.requests[-3:] for e in request]
    assert after and all(e.shard_id.startswith("shardId-new-") for e in after)


def test_an_unexpected_put_failure_surfaces_in_add_and_close_hands_every_record_back() -> None:
    class Bug(Exception):
        pass

    def answer(call: int, entries: Sequence[PutEntry]) -> dict[str, Any]:
        raise Bug("a bug in the writer")

    fake = StreamFake(answer)

    async def scenario() -> list[Any]:
        publisher = Publisher(fake, Metrics("t"), max_bytes=1024, max_in_flight=1, backoff=FAST)
        await publisher.start()
        data = records(100)
        for key, value in data[:50]:
            await publisher.add(key, value)
        await until(lambda: fake.calls >= 1 and publisher._failure is not None)
        with pytest.raises(Bug, match="a bug"):
            for key, value in data[50:]:
                await publisher.add(key, value)
        calls = fake.calls
        for _ in range(50):
            await asyncio.sleep(0)
        assert fake.calls == calls  # no hot loop resending into the bug
        return await publisher.close(1.0)

    undelivered = asyncio.run(scenario())
    assert sum(item.entry.user_records for item in undelivered) == 50  # every record accepted
    assert {item.reason for item in undelivered} == {NOT_SENT}


def test_add_many_buffers_like_add_and_hands_back_records_too_large_for_kinesis() -> None:
    batch = records(300)
    huge = ("HUGE", b"x" * (1024 * 1024))  # over Kinesis' 1 MiB with its key
    one_by_one, batched = (
        StreamFake(answer=None, maps=[shard_map(4)]),
        StreamFake(answer=None, maps=[shard_map(4)]),
    )

    async def scenario() -> list[tuple[int, str]]:
        single = Publisher(one_by_one, Metrics("a"), max_bytes=1024)
        many = Publisher(batched, Metrics("b"), max_bytes=1024)
        await single.start()
        await many.start()
        for key, data in batch:
            await single.add(key, data)
        refused = []
        for start in range(0, len(batch), 64):
            chunk = batch[start : start + 64]
            if start == 128:
                chunk = [*chunk[:10], huge, *chunk[10:]]
            refused += [(start + i, str(err)) for i, err in await many.add_many(chunk)]
        assert await single.close(10.0) == [] and await many.close(10.0) == []
        return refused

    refused = asyncio.run(scenario())
    assert [index for index, _ in refused] == [138] and "exceeds 1048576 bytes" in refused[0][1]

    # The same aggregates, byte for byte, in the same order per shard.
    def contents(fake: StreamFake) -> dict[str, list[tuple[str, bytes, int]]]:
        out: dict[str, list[tuple[str, bytes, int]]] = {}
        for e in fake.stored:
            out.setdefault(e.shard_id, []).append((e.partition_key, e.data, e.user_records))
        return out

    assert contents(batched) == contents(one_by_one)
    assert sum(entry.user_records for entry in batched.stored) == 300
