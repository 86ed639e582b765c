"""In-memory processors and a sink for the engine's unit tests, plus records to put."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from consumers.engine.memory_kinesis import MemoryKinesis
from consumers.engine.records import ConsumedRecord, Position
from consumers.s3.writer import S3PutRetriesExhaustedError
from core.errors import CryptoLiveError
from schemas.codec import default_codec
from schemas.record import iso_timestamp

BASE_MS = 1_795_000_000_000
CODEC = default_codec()


def record(index: int, symbols: int = 8) -> dict[str, Any]:
    """A valid miniTicker record, unique per index (event_time = BASE_MS + index)."""
    symbol = f"SYM{index % symbols}USDT"
    event_time = BASE_MS + index
    return {
        "event_type": "24hrMiniTicker",
        "event_time": event_time,
        "stream_type": f"{symbol.lower()}@miniTicker",
        "symbol": symbol,
        "close_price": f"{100 + index}.00000000",
        "open_price": "100.00000000",
        "high_price": "200.00000000",
        "low_price": "0.00100000",
        "base_volume": f"{index}.12345678",
        "quote_volume": f"{index * 7}.87654321",
        "iso_timestamp": iso_timestamp(event_time),
        "received_at": event_time * 1000 + 5,
    }


def put(kinesis: MemoryKinesis, indexes: Sequence[int] | range) -> dict[int, str]:
    """Put one plain (not aggregated) record per index; returns index -> shard id."""
    return {i: kinesis.put_record(CODEC.encode(record(i)), f"key-{i}")[0] for i in indexes}


@dataclass
class MemorySink:
    """Where every processor writes: event_time -> times written, and per-shard checks.

    ``stall`` (while cleared) holds the writes of ``stalled`` owners (every owner when None);
    ``fail_writes`` makes that many writes raise like a sink whose retries ran out.
    ``overlaps`` counts writes that started while another worker's write of the same shard
    was in flight.
    """

    writes: Counter[int] = field(default_factory=Counter)
    stall: asyncio.Event | None = None
    stalled: str | None = None
    fail_writes: int = 0
    failures: int = 0
    overlaps: int = 0
    calls: list[tuple[str, str, str]] = field(default_factory=list)  # (owner, shard, method)
    _in_flight: dict[str, set[str]] = field(default_factory=dict)

    def processor(self, owner: str, shard_id: str) -> MemoryProcessor:
        return MemoryProcessor(self, owner, shard_id)

    async def write(self, owner: str, shard_id: str, records: Sequence[ConsumedRecord]) -> None:
        writers = self._in_flight.setdefault(shard_id, set())
        if writers - {owner}:
            self.overlaps += 1
        writers.add(owner)
        try:
            if self.stall is not None and self.stalled in (None, owner):
                await self.stall.wait()
            if self.fail_writes > 0:
                self.fail_writes -= 1
                self.failures += 1
                raise S3PutRetriesExhaustedError(f"injected: {shard_id} out of retries")
            for consumed in records:
                self.writes[int(consumed.record["event_time"]) - BASE_MS] += 1
        finally:
            writers.discard(owner)

    def missing(self, indexes: Sequence[int] | range) -> list[int]:
        return [i for i in indexes if self.writes[i] == 0]


@dataclass
class MemoryProcessor:
    """A ShardProcessor writing each batch before returning (checkpoint = its last position)."""

    sink: MemorySink
    owner: str
    shard_id: str
    abandoned: int = 0
    error: CryptoLiveError | None = None

    async def process(self, records: Sequence[ConsumedRecord]) -> Position | None:
        self.sink.calls.append((self.owner, self.shard_id, "process"))
        if not records:
            return None
        await self.sink.write(self.owner, self.shard_id, records)
        return records[-1].position

    async def at_tip(self, now_ms: int) -> Position | None:
        self.sink.calls.append((self.owner, self.shard_id, "at_tip"))
        return None

    async def shard_ended(self) -> Position | None:
        self.sink.calls.append((self.owner, self.shard_id, "shard_ended"))
        return None

    async def shutdown(self) -> Position | None:
        self.sink.calls.append((self.owner, self.shard_id, "shutdown"))
        return None

    def abandon(self) -> None:
        self.sink.calls.append((self.owner, self.shard_id, "abandon"))
        self.abandoned += 1


def no_dead_letters(records: Sequence[Any]) -> None:
    raise AssertionError(f"unexpected dead letters: {records}")
