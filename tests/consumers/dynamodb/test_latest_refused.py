"""A latest-table update DynamoDB refuses for good is dead-lettered, not fatal to the book."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from consumers.dynamodb.items import LatestUpdate, coalesce_latest
from consumers.dynamodb.processor import DynamoDbProcessorFactory
from consumers.dynamodb.writer import (
    DynamoDbRetriesExhaustedError,
    DynamoDbWriteError,
    MemoryDynamoDbWriter,
)
from consumers.engine.records import ConsumedRecord, Position
from core.dead_letters import MemoryDeadLetterStore
from core.metrics import Counters, Metrics
from tests.support.pipeline import ticker

pytestmark = pytest.mark.timeout(30)

SHARDS = ("shardId-000000000000", "shardId-000000000001")
START_MS = 1_795_000_000_000
BAD = "BADUSDT"
SOURCE = "crypto-live-dynamodb"


class RefusingWriter(MemoryDynamoDbWriter):
    """Refuses every latest-table update of one symbol, as DynamoDB does a malformed row."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: list[str] = []

    def update_latest(self, updates: Sequence[LatestUpdate]) -> None:
        if any(u.symbol == BAD for u in updates):
            self.refused.extend(u.symbol for u in updates if u.symbol == BAD)
            raise DynamoDbWriteError(f"PutItem {BAD} failed: ValidationException: bad row")
        super().update_latest(updates)


def at_the_tip() -> int:
    """A wall clock (µs) at which these records are fresh (tip behaviour: no hold)."""
    return START_MS * 1000


def consumed(shard_id: str, symbols: Sequence[str], count: int) -> list[ConsumedRecord]:
    arrival = datetime.fromtimestamp(START_MS / 1000, UTC)
    records = [ticker(symbols[i % len(symbols)], START_MS + i, f"{i}.0") for i in range(count)]
    return [
        ConsumedRecord(shard_id, Position(i + 1), arrival, r["symbol"], r)
        for i, r in enumerate(records)
    ]


def test_a_refused_symbol_is_dead_lettered_and_every_shard_goes_on() -> None:
    metrics = Metrics("consumer-dynamodb")
    writer = RefusingWriter()
    store = MemoryDeadLetterStore()
    factory = DynamoDbProcessorFactory(
        writer,
        1,
        metrics,
        latest_wait=5.0,
        dead_letters=store,
        dead_letter_source=SOURCE,
        wall_clock_us=at_the_tip,
    )
    batches = {
        SHARDS[0]: consumed(SHARDS[0], ["AAAUSDT", BAD, "BBBUSDT"], 30),
        SHARDS[1]: consumed(SHARDS[1], ["CCCUSDT", "DDDUSDT"], 20),
    }

    async def run() -> dict[str, list[Position | None]]:
        out: dict[str, list[Position | None]] = {}
        for shard_id, records in batches.items():
            processor = factory(shard_id)
            out[shard_id] = [
                await processor.process(records[:15]),
                await processor.process(records[15:]),
                await processor.shard_ended(),
            ]
        assert factory.book.first_blocked(SHARDS[0]) is None  # the book did not fail
        return out

    try:
        positions = asyncio.run(run())
    finally:
        factory.close()
    # Each batch is checkpointed as soon as it is written: the refused row holds nothing up.
    assert positions[SHARDS[0]] == [Position(15), Position(30), None]
    assert positions[SHARDS[1]] == [Position(15), Position(20), None]
    everything = [c.record for records in batches.values() for c in records]
    expected = {u.symbol: u.event_time for u in coalesce_latest(everything) if u.symbol != BAD}
    assert {s: int(item["event_time"]["N"]) for s, item in writer.latest.items()} == expected
    assert len(writer.history) == 50  # records in = records out
    # One dead letter per refused update (one per batch of shard 0), with the reason.
    letters = [letter for key in sorted(store.objects) for letter in store.objects[key]]
    assert all(key.startswith(f"errors/{SOURCE}/") for key in store.objects)
    assert len(letters) == 2 and set(writer.refused) == {BAD}
    assert all("ValidationException" in letter.reason for letter in letters)
    rows: list[dict[str, Any]] = [json.loads(letter.raw) for letter in letters]
    assert [row["symbol"]["S"] for row in rows] == [BAD, BAD]
    assert metrics.value(Counters.DEAD_LETTERS) == 2


def test_without_a_dead_letter_store_a_refusal_still_fails_the_book() -> None:
    writer = RefusingWriter()
    factory = DynamoDbProcessorFactory(writer, 1, latest_wait=5.0, wall_clock_us=at_the_tip)

    async def run() -> None:
        await factory(SHARDS[0]).process(consumed(SHARDS[0], [BAD], 3))

    try:
        with pytest.raises(DynamoDbRetriesExhaustedError, match="refused"):
            asyncio.run(run())
    finally:
        factory.close()
