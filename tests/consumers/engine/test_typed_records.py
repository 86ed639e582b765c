"""The shard reader decodes every registered type and says which it is; bytes of an unknown
type stay dead letters (in-memory Kinesis, virtual time)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from consumers.engine.executors import EngineExecutors, InlineRunner
from consumers.engine.leases import Lease, MemoryLeaseStore
from consumers.engine.memory_kinesis import MemoryKinesis
from consumers.engine.records import ConsumedRecord, Position, UndecodableRecord
from consumers.engine.shard_reader import LeaseHandle, Outcome, ReaderConfig, ShardReader
from schemas.codec import KLINE_SCHEMA, MINITICKER_SCHEMA, SingleObjectCodec
from tests.consumers.engine import virtual_time
from tests.consumers.engine.fakes import record
from tests.support.klines import (
    HEARTBEAT_SCHEMA,
    encode,
    heartbeat,
    kline,
    registry_with_heartbeat,
    unknown_fingerprint,
)

SHARD = "shardId-000000000000"


class Capture:
    """A ShardProcessor keeping every record it was given (durable at once)."""

    def __init__(self) -> None:
        self.records: list[ConsumedRecord] = []

    async def process(self, records: Sequence[ConsumedRecord]) -> Position | None:
        self.records.extend(records)
        return records[-1].position if records else None

    async def at_tip(self, now_ms: int) -> Position | None:
        return None

    async def shard_ended(self) -> Position | None:
        return None

    async def shutdown(self) -> Position | None:
        return None

    def abandon(self) -> None:
        """Nothing buffered."""


def read_all(kinesis: MemoryKinesis, codec: SingleObjectCodec) -> tuple[Capture, list[str]]:
    store = MemoryLeaseStore()
    store.create(SHARD, (), "TRIM_HORIZON")
    lease = store.take(Lease(SHARD, None, 0, "TRIM_HORIZON"), "me")
    capture = Capture()
    dead: list[UndecodableRecord] = []
    reader = ShardReader(
        LeaseHandle(lease, store, run=InlineRunner()),
        kinesis,
        kinesis.stream,
        capture,
        codec,
        dead.extend,
        config=ReaderConfig(idle_seconds=0.5, limit=10, wall_clock_ms=lambda: 0),
        parents_done=lambda: True,
        closed_ending=lambda: None,
        executors=EngineExecutors.inline(),
    )

    async def go() -> Outcome:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(10.0, stop.set)
        return await reader.run(stop)

    assert virtual_time.run(go()) is Outcome.STOPPED
    return capture, [d.reason for d in dead]


def test_each_record_carries_its_schema_and_bytes_and_unknown_ones_are_dead_letters() -> None:
    kinesis = MemoryKinesis(1)
    records = [record(0), kline("BTCUSDT", 0, closed=False), kline("BTCUSDT", 0), record(1)]
    records.append(heartbeat("BTCUSDT", 5))
    entries = [encode(r) for r in records]
    for key, data in entries:
        kinesis.put_record(data, key)
    kinesis.put_record(unknown_fingerprint(entries[0][1]), "x")

    capture, reasons = read_all(kinesis, SingleObjectCodec(registry_with_heartbeat()))

    assert [(c.schema, c.record) for c in capture.records] == [
        (MINITICKER_SCHEMA, records[0]),
        (KLINE_SCHEMA, records[1]),
        (KLINE_SCHEMA, records[2]),
        (MINITICKER_SCHEMA, records[3]),
        (HEARTBEAT_SCHEMA, records[4]),  # decoded: the sink decides what to do with it
    ]
    assert [c.data for c in capture.records] == [data for _, data in entries]
    assert len(reasons) == 1 and reasons[0].startswith("unknown schema fingerprint 0000000000")
