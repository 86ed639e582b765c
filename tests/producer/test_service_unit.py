"""ProducerService over in-memory fakes (scripted source, in-memory Kinesis, memory dead
letters): reader -> encoder -> publisher, bad input to dead letters, a failing stage surfacing
in run(), and a bounded shutdown under a Kinesis that never answers. No network."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from core.backoff import Backoff
from core.dead_letters import DeadLetter, MemoryDeadLetterStore
from core.metrics import Metrics
from producer.aggregation import PutEntry
from producer.publisher import Publisher
from producer.service import EXIT_UNDELIVERED, ProducerService, ProducerSummary
from producer.undelivered import UNDELIVERED_PREFIX
from schemas.codec import default_codec
from tests.producer.fakes import ScriptedSource, StreamFake, frame, until

pytestmark = pytest.mark.timeout(30)

FAST = Backoff(base=0.001, cap=0.001)
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def frames(count: int) -> list[dict[str, Any]]:
    return [frame(SYMBOLS[i % len(SYMBOLS)], i) for i in range(count)]


def service(
    source: Any, fake: StreamFake, store: MemoryDeadLetterStore, **options: Any
) -> ProducerService:
    publisher = Publisher(fake, Metrics("t"), max_bytes=2048, backoff=FAST)
    metrics = publisher._metrics  # one collector, as the app wires it
    return ProducerService(
        source,
        publisher,
        default_codec(),
        store,
        metrics,
        dead_letter_flush_seconds=0.01,
        **options,
    )


def letters(store: MemoryDeadLetterStore) -> list[DeadLetter]:
    return [letter for key in sorted(store.objects) for letter in store.objects[key]]


def stored_records(fake: StreamFake) -> int:
    return sum(entry.user_records for entry in fake.stored)


def user_records(letters: Sequence[DeadLetter]) -> int:
    return sum(int((letter.put_entry or {})["user_records"]) for letter in letters)


def run(producer: ProducerService) -> ProducerSummary:
    return asyncio.run(producer.run(asyncio.Event()))


def test_every_frame_reaches_kinesis_or_a_dead_letter_with_exact_counts() -> None:
    bad = [{"stream": "btcusdt@miniTicker", "data": {"e": "24hrMiniTicker", "s": "BTCUSDT"}}] * 5
    source, fake, store = (
        ScriptedSource([*frames(300), *bad]),
        StreamFake(),
        MemoryDeadLetterStore(),
    )
    summary = run(service(source, fake, store))
    assert (summary.messages, summary.records_valid, summary.rejected) == (305, 300, 5)
    assert summary.records_put == stored_records(fake) == 300  # records in = records out
    assert summary.undelivered == 0 and summary.exit_code == 0
    rejected = letters(store)
    assert len(rejected) == 5 and all(letter.reason for letter in rejected)
    assert all(key.startswith("errors/producer/") for key in store.objects)


def test_a_failing_source_surfaces_in_run_and_what_it_gave_is_still_delivered() -> None:
    class Broken:
        def __init__(self) -> None:
            self.taken = 0

        async def messages(self, stop: asyncio.Event) -> AsyncIterator[Any]:
            for message in frames(40):
                self.taken += 1
                yield message
            raise RuntimeError("socket layer bug")

    source, fake, store = Broken(), StreamFake(), MemoryDeadLetterStore()
    producer = service(source, fake, store)
    with pytest.raises(RuntimeError, match="socket layer bug"):
        run(producer)
    assert stored_records(fake) == source.taken == 40  # flushed at shutdown all the same
    assert producer.summary().exit_code == 0


def test_a_publisher_failure_surfaces_in_run_and_every_record_is_dead_lettered() -> None:
    class Bug(Exception):
        pass

    def answer(call: int, entries: Sequence[PutEntry]) -> dict[str, Any]:
        raise Bug("writer bug")

    source = ScriptedSource(frames(200), stop_at_end=False)
    fake, store = StreamFake(answer), MemoryDeadLetterStore()
    producer = service(source, fake, store, shutdown_timeout=1.0)
    with pytest.raises(Bug, match="writer bug"):
        run(producer)
    undelivered = [letter for letter in letters(store) if letter.put_entry is not None]
    assert user_records(undelivered) == producer.summary().records_valid
    assert producer.summary().exit_code == EXIT_UNDELIVERED


def test_shutdown_is_bounded_when_kinesis_never_answers_and_keeps_every_record() -> None:
    fake, store = StreamFake(), MemoryDeadLetterStore()
    gate = fake.gate = threading.Semaphore(0)  # a partition: no put ever answers
    source = ScriptedSource(frames(120), stop_at_end=False)
    producer = service(source, fake, store, shutdown_timeout=0.05)

    async def scenario() -> ProducerSummary:
        stop = asyncio.Event()
        running = asyncio.create_task(producer.run(stop))
        await until(lambda: source.taken == 120 and fake.calls >= 1)
        stop.set()
        return await running

    try:
        summary = asyncio.run(scenario())
    finally:
        gate.release(10_000)
    assert summary.records_valid == 120 and summary.undelivered == 120
    assert summary.exit_code == EXIT_UNDELIVERED
    undelivered = [letter for letter in letters(store) if letter.put_entry is not None]
    assert all(letter.reason.startswith(UNDELIVERED_PREFIX) for letter in undelivered)
    assert user_records(undelivered) == 120
    assert any((letter.put_entry or {})["outcome_unknown"] for letter in undelivered)
