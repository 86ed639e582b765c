"""The DynamoDB consumer through resharding and replay, against moto over HTTP."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from consumers.app import dead_letter_writer, processor_factory, run_consumer, worker_config
from consumers.engine.leases import DynamoLeaseStore
from consumers.engine.processor import ProcessorFactory, ShardProcessor
from consumers.engine.records import ConsumedRecord, Position
from consumers.engine.worker import Worker
from core.aws import AwsClients
from core.metrics import Counters, Metrics
from core.settings import Settings
from crypto_live.provision import provision
from schemas.codec import default_codec
from tests.support.pipeline import count_items, make_record, publish, scan_all

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

FAST = {"failover_seconds": 3, "shard_discovery_seconds": 0.5, "idle_time_between_reads_ms": 100}


class Recorder:
    """Wraps each shard's real processor and notes when it processed what."""

    def __init__(self, inner: ProcessorFactory) -> None:
        self._inner = inner
        self.events: list[tuple[float, str, str, list[int]]] = []

    def __call__(self, shard_id: str) -> ShardProcessor:
        return _Recording(self, shard_id, self._inner(shard_id))


class _Recording:
    def __init__(self, recorder: Recorder, shard_id: str, inner: ShardProcessor) -> None:
        self._recorder = recorder
        self._shard = shard_id
        self._inner = inner

    def _note(self, kind: str, times: list[int]) -> None:
        self._recorder.events.append((time.monotonic(), self._shard, kind, times))

    async def process(self, records: Sequence[ConsumedRecord]) -> Position | None:
        self._note("process", [r.record["event_time"] for r in records])
        return await self._inner.process(records)

    async def at_tip(self, now_ms: int) -> Position | None:
        return await self._inner.at_tip(now_ms)

    async def shard_ended(self) -> Position | None:
        position = await self._inner.shard_ended()
        self._note("ended", [])
        return position

    async def shutdown(self) -> Position | None:
        return await self._inner.shutdown()

    def abandon(self) -> None:
        self._inner.abandon()


def test_split_while_records_flow_children_wait_for_their_parent(
    aws_settings: Settings, aws: AwsClients
) -> None:
    settings = aws_settings.with_overrides(kinesis_shard_count=2, **FAST)
    provision(settings, aws)
    stream = settings.kinesis_stream_name
    records = [make_record(i) for i in range(6_000)]
    metrics = Metrics("consumer")
    recorder = Recorder(processor_factory(settings, aws, "dynamodb", metrics).processors)
    worker = Worker(
        kinesis=aws.kinesis,
        stream=stream,
        leases=DynamoLeaseStore(aws.dynamodb, "split-test-leases"),
        processors=recorder,
        codec=default_codec(),
        dead_letters=dead_letter_writer(aws, settings, "split-test", metrics),
        config=worker_config(settings),
        metrics=metrics,
    )

    def produce_and_split() -> None:
        publish(settings, aws, records[:3_000])
        parent = aws.kinesis.list_shards(StreamName=stream)["Shards"][0]
        low = int(parent["HashKeyRange"]["StartingHashKey"])
        high = int(parent["HashKeyRange"]["EndingHashKey"])
        aws.kinesis.split_shard(
            StreamName=stream,
            ShardToSplit=parent["ShardId"],
            NewStartingHashKey=str((low + high) // 2),
        )
        publish(settings, aws, records[3_000:])  # a new publisher: it sees the children

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        producer = threading.Thread(target=produce_and_split)
        producer.start()
        async with asyncio.timeout(90):
            while producer.is_alive() or count_items(aws, settings.dynamo_table_name) < len(
                records
            ):
                await asyncio.sleep(0.5)
        stop.set()
        await running

    asyncio.run(scenario())

    shards = {s["ShardId"]: s for s in aws.kinesis.list_shards(StreamName=stream)["Shards"]}
    children = {sid: s["ParentShardId"] for sid, s in shards.items() if "ParentShardId" in s}
    assert len(children) == 2
    ended = {shard: t for t, shard, kind, _ in recorder.events if kind == "ended"}
    parent = next(iter(children.values()))
    assert parent in ended  # the parent was read to its end and checkpointed SHARD_END
    processed_children = [
        (t, s) for t, s, kind, _ in recorder.events if kind == "process" and s in children
    ]
    assert processed_children, "no record reached a child shard"
    assert all(t > ended[parent] for t, _ in processed_children)
    items = scan_all(aws, settings.dynamo_table_name)
    assert sorted((i["stream_type"]["S"], i["iso_timestamp"]["S"]) for i in items) == sorted(
        (r["stream_type"], r["iso_timestamp"]) for r in records
    )
    store = DynamoLeaseStore(aws.dynamodb, "split-test-leases")
    leases = {lease.shard_id: lease for lease in store.list_leases()}
    assert leases[parent].finished and leases[parent].owner is None


def _snapshot(aws: AwsClients, table: str, key: tuple[str, ...]) -> dict[Any, Any]:
    return {tuple(item[k]["S"] for k in key): item for item in scan_all(aws, table)}


def test_replay_from_trim_horizon_changes_nothing(aws_settings: Settings, aws: AwsClients) -> None:
    settings = aws_settings.with_overrides(kinesis_shard_count=2, **FAST)
    provision(settings, aws)
    records = [make_record(i) for i in range(3_000)]
    publish(settings, aws, records)

    async def consume(app: str) -> None:
        stop = asyncio.Event()
        metrics = Metrics(app)
        running = asyncio.create_task(
            run_consumer(settings.with_overrides(consumer_app_name=app), "dynamodb", stop, metrics)
        )
        async with asyncio.timeout(60):
            while metrics.value(Counters.RECORDS_CONSUMED) < len(records):
                await asyncio.sleep(0.2)
        stop.set()
        await running

    asyncio.run(consume("live"))
    history = _snapshot(aws, settings.dynamo_table_name, ("stream_type", "iso_timestamp"))
    latest = _snapshot(aws, settings.dynamo_latest_table_name, ("symbol",))
    assert len(history) == 3_000 and len(latest) == 16

    # A new consumer group starts at TRIM_HORIZON: the whole stream is applied again.
    asyncio.run(consume("replay"))
    assert _snapshot(aws, settings.dynamo_table_name, ("stream_type", "iso_timestamp")) == history
    assert _snapshot(aws, settings.dynamo_latest_table_name, ("symbol",)) == latest
