"""The DynamoDB consumer through resharding (split, merge) and replay, on both Kinesis backends
(moto, kinesis-mock) with moto for DynamoDB."""

from __future__ import annotations

import asyncio
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
from tests.support.pipeline import count_items, make_record, publish, scan_all, wait_until

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


def _wait_active(aws: AwsClients, stream: str) -> None:
    """Resharding takes a while on AWS and kinesis-mock (at once on moto)."""
    wait_until(
        lambda: (
            aws.kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"][
                "StreamStatus"
            ]
            == "ACTIVE"
        ),
        30,
        0.1,
    )


def _consume_while_resharding(
    settings: Settings, aws: AwsClients, records: list[dict[str, Any]], reshard: Any
) -> Recorder:
    """One worker reads while half the records go in, ``reshard(shards)`` runs, and the other
    half go in through a new publisher (it sees the children); until all are in DynamoDB."""
    stream = settings.kinesis_stream_name
    metrics = Metrics("consumer")
    recorder = Recorder(processor_factory(settings, aws, "dynamodb", metrics).processors)
    worker = Worker(
        kinesis=aws.kinesis,
        stream=stream,
        leases=DynamoLeaseStore(aws.dynamodb, "reshard-test-leases"),
        processors=recorder,
        codec=default_codec(),
        dead_letters=dead_letter_writer(aws, settings, "reshard-test", metrics),
        config=worker_config(settings),
        metrics=metrics,
    )
    half = len(records) // 2

    def produce_and_reshard() -> None:
        publish(settings, aws, records[:half])
        reshard(aws.kinesis.list_shards(StreamName=stream)["Shards"])
        _wait_active(aws, stream)
        publish(settings, aws, records[half:])

    def state() -> str:
        """What the worker, its leases and the stream look like: the message of a timeout."""
        leases = DynamoLeaseStore(aws.dynamodb, "reshard-test-leases").list_leases()
        shards = aws.kinesis.list_shards(StreamName=stream)["Shards"]
        processed: dict[str, int] = {}
        for _, shard, _kind, times in recorder.events:
            processed[shard] = processed.get(shard, 0) + len(times)
        ended = sorted(shard for _, shard, kind, _ in recorder.events if kind == "ended")
        return "\n".join(
            [
                f"items {count_items(aws, settings.dynamo_table_name)} of {len(records)}",
                f"owned {worker.owned_shards}, lag {worker.lag_ms}",
                f"processed per shard {processed}, ended {ended}",
                *(
                    f"lease {x.shard_id} owner={x.owner} counter={x.counter} "
                    f"checkpoint={x.checkpoint} parents={x.parents}"
                    for x in leases
                ),
                *(
                    f"shard {s['ShardId']} parents="
                    f"{[s.get(k) for k in ('ParentShardId', 'AdjacentParentShardId')]} "
                    f"ending={s['SequenceNumberRange'].get('EndingSequenceNumber')}"
                    for s in shards
                ),
            ]
        )

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        producing = asyncio.create_task(asyncio.to_thread(produce_and_reshard))
        try:
            async with asyncio.timeout(90):
                while not producing.done() or count_items(aws, settings.dynamo_table_name) < len(
                    records
                ):
                    await asyncio.sleep(0.5)
                    for task in (running, producing):
                        if task.done():
                            task.result()  # a failure in the worker or the producer, at once
        except TimeoutError:
            raise AssertionError(f"not all records consumed in 90 s:\n{state()}") from None
        finally:
            stop.set()
            await running

    asyncio.run(scenario())
    return recorder


def _assert_children_after_parents(
    aws: AwsClients, settings: Settings, recorder: Recorder, records: list[dict[str, Any]]
) -> dict[str, tuple[str, ...]]:
    """Every parent was read to its end and checkpointed SHARD_END before any record of its
    children was processed; DynamoDB holds exactly the records. Returns child -> parents."""
    shards = aws.kinesis.list_shards(StreamName=settings.kinesis_stream_name)["Shards"]
    children = {
        s["ShardId"]: tuple(s[k] for k in ("ParentShardId", "AdjacentParentShardId") if k in s)
        for s in shards
        if "ParentShardId" in s
    }
    ended = {shard: t for t, shard, kind, _ in recorder.events if kind == "ended"}
    processed = [(t, s) for t, s, kind, _ in recorder.events if kind == "process" and s in children]
    assert processed, "no record reached a child shard"
    for t, child in processed:
        assert all(parent in ended and t > ended[parent] for parent in children[child])
    items = scan_all(aws, settings.dynamo_table_name)
    assert sorted((i["stream_type"]["S"], i["iso_timestamp"]["S"]) for i in items) == sorted(
        (r["stream_type"], r["iso_timestamp"]) for r in records
    )
    leases = {
        lease.shard_id: lease
        for lease in DynamoLeaseStore(aws.dynamodb, "reshard-test-leases").list_leases()
    }
    for parents in children.values():
        assert all(leases[p].finished and leases[p].owner is None for p in parents), leases
    return children


def test_split_while_records_flow_children_wait_for_their_parent(
    kinesis_backend: Settings, aws: AwsClients
) -> None:
    settings = kinesis_backend.with_overrides(kinesis_shard_count=2, **FAST)
    provision(settings, aws)
    records = [make_record(i) for i in range(6_000)]

    def split(shards: list[dict[str, Any]]) -> None:
        parent = shards[0]
        low = int(parent["HashKeyRange"]["StartingHashKey"])
        high = int(parent["HashKeyRange"]["EndingHashKey"])
        aws.kinesis.split_shard(
            StreamName=settings.kinesis_stream_name,
            ShardToSplit=parent["ShardId"],
            NewStartingHashKey=str((low + high) // 2),
        )

    recorder = _consume_while_resharding(settings, aws, records, split)

    children = _assert_children_after_parents(aws, settings, recorder, records)
    assert len(children) == 2 and len(set(children.values())) == 1


def test_merge_while_records_flow_the_child_waits_for_both_parents(
    kinesis_backend: Settings, aws: AwsClients
) -> None:
    settings = kinesis_backend.with_overrides(kinesis_shard_count=2, **FAST)
    provision(settings, aws)
    records = [make_record(i) for i in range(6_000)]

    def merge(shards: list[dict[str, Any]]) -> None:
        low, high = sorted(shards, key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]))
        aws.kinesis.merge_shards(
            StreamName=settings.kinesis_stream_name,
            ShardToMerge=low["ShardId"],
            AdjacentShardToMerge=high["ShardId"],
        )

    recorder = _consume_while_resharding(settings, aws, records, merge)

    children = _assert_children_after_parents(aws, settings, recorder, records)
    assert len(children) == 1 and len(next(iter(children.values()))) == 2


def _snapshot(aws: AwsClients, table: str, key: tuple[str, ...]) -> dict[Any, Any]:
    return {tuple(item[k]["S"] for k in key): item for item in scan_all(aws, table)}


def test_replay_from_trim_horizon_changes_nothing(
    kinesis_backend: Settings, aws: AwsClients
) -> None:
    settings = kinesis_backend.with_overrides(kinesis_shard_count=2, **FAST)
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
