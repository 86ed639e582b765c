"""Publisher against moto Kinesis over HTTP: injected partial failures, throttling, resharding."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from botocore.exceptions import ClientError

from core.aws import AwsClients
from core.backoff import Backoff
from core.metrics import Counters, Metrics
from core.settings import Settings
from crypto_live.provision import provision
from producer.aggregation import PutEntry
from producer.kinesis import KinesisStreamWriter
from producer.publisher import Publisher
from producer.shard_map import ShardMap, hash_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


class FlakyWriter:
    """Really writes to Kinesis, but fails some entries or whole calls, as Kinesis can.

    Odd calls send only every other entry and report the rest as throttled; every fifth
    call raises ProvisionedThroughputExceededException without writing anything.
    """

    def __init__(self, real: KinesisStreamWriter) -> None:
        self._real = real
        self.calls = 0
        self.failed_entries = 0

    def list_shards(self) -> ShardMap:
        return self._real.list_shards()

    def put_records(self, entries: Sequence[PutEntry]) -> dict[str, Any]:
        self.calls += 1
        if self.calls % 5 == 0:
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}},
                "PutRecords",
            )
        if self.calls % 2 == 0 or len(entries) == 1:
            return self._real.put_records(entries)
        sent = [entry for index, entry in enumerate(entries) if index % 2 == 0]
        response = self._real.put_records(sent)
        results = iter(response["Records"])
        records: list[dict[str, Any]] = []
        for index in range(len(entries)):
            if index % 2 == 0:
                records.append(next(results))
            else:
                self.failed_entries += 1
                records.append(
                    {
                        "ErrorCode": "ProvisionedThroughputExceededException",
                        "ErrorMessage": "Rate exceeded for shard",
                    }
                )
        return {"FailedRecordCount": self.failed_entries, "Records": records}


class RecordingWriter:
    """The real writer, remembering every entry it was asked to put."""

    def __init__(self, real: KinesisStreamWriter) -> None:
        self._real = real
        self.entries: list[PutEntry] = []

    def list_shards(self) -> ShardMap:
        return self._real.list_shards()

    def put_records(self, entries: Sequence[PutEntry]) -> dict[str, Any]:
        self.entries.extend(entries)
        return self._real.put_records(entries)


def user_records(count: int, symbols: int = 16) -> list[tuple[str, bytes]]:
    return [(f"SYM{i % symbols}USDT", f"record-{i:06d}".encode()) for i in range(count)]


async def publish(publisher: Publisher, records: list[tuple[str, bytes]]) -> list[PutEntry]:
    await publisher.start()
    for key, data in records:
        await publisher.add(key, data)
    return await publisher.close(60)


def stream_contents(aws: AwsClients, stream: str) -> list[tuple[str, str, bytes]]:
    from consumers.engine.deaggregation import deaggregate

    out: list[tuple[str, str, bytes]] = []
    for shard in aws.kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = aws.kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            response = aws.kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            for raw in response["Records"]:
                out.extend(
                    (shard["ShardId"], user.partition_key, user.data) for user in deaggregate(raw)
                )
            if not response["Records"]:
                break
            iterator = response["NextShardIterator"]
    return out


@pytest.mark.parametrize("aggregate", [True, False], ids=["aggregated", "unaggregated"])
def test_partial_failures_lose_and_duplicate_nothing(
    aws_settings: Settings, aws: AwsClients, aggregate: bool
) -> None:
    settings = aws_settings.with_overrides(kinesis_shard_count=4)
    provision(settings, aws)
    flaky = FlakyWriter(KinesisStreamWriter(aws.kinesis, settings.kinesis_stream_name))
    metrics = Metrics("producer")
    publisher = Publisher(
        flaky,
        metrics,
        max_bytes=2_000,  # small aggregates: many entries, many requests, many failures
        aggregate=aggregate,
        backoff=Backoff(base=0.001, cap=0.01),
    )
    records = user_records(3_000)

    undelivered = asyncio.run(publish(publisher, records))

    assert undelivered == []
    assert flaky.failed_entries > 0 and flaky.calls >= 5
    assert metrics.value(Counters.PUT_RETRIES) > 0
    got = stream_contents(aws, settings.kinesis_stream_name)
    assert Counter((key, data) for _, key, data in got) == Counter(records)  # exactly once
    if not aggregate:
        return  # unaggregated, like KPL, a partial failure may reorder a key's records
    # Per-key order survives retries: one entry per shard per request, one request per shard.
    for key in {key for key, _ in records}:
        assert [d for _, k, d in got if k == key] == [d for k, d in records if k == key]


def test_records_follow_a_reshard(aws_settings: Settings, aws: AwsClients) -> None:
    settings = aws_settings.with_overrides(kinesis_shard_count=2)
    provision(settings, aws)
    stream = settings.kinesis_stream_name
    writer = RecordingWriter(KinesisStreamWriter(aws.kinesis, stream))
    records = user_records(2_000)

    async def scenario() -> list[PutEntry]:
        publisher = Publisher(writer, Metrics("producer"), refresh_seconds=0.2)
        await publisher.start()
        for key, data in records[:1_000]:
            await publisher.add(key, data)
        await asyncio.sleep(0.3)
        first = aws.kinesis.list_shards(StreamName=stream)["Shards"][0]
        start = int(first["HashKeyRange"]["StartingHashKey"])
        end = int(first["HashKeyRange"]["EndingHashKey"])
        aws.kinesis.split_shard(
            StreamName=stream,
            ShardToSplit=first["ShardId"],
            NewStartingHashKey=str((start + end) // 2),
        )
        await asyncio.sleep(0.6)  # the periodic refresh notices the new map
        for key, data in records[1_000:]:
            await publisher.add(key, data)
        return await publisher.close(30)

    assert asyncio.run(scenario()) == []
    shards = {s["ShardId"]: s for s in aws.kinesis.list_shards(StreamName=stream)["Shards"]}
    assert len(shards) == 4  # parent closed, two children, the untouched shard
    got = stream_contents(aws, stream)
    assert Counter((key, data) for _, key, data in got) == Counter(records)
    # Every record sits in a shard whose hash range holds its key.
    for shard_id, key, _ in got:
        low = int(shards[shard_id]["HashKeyRange"]["StartingHashKey"])
        high = int(shards[shard_id]["HashKeyRange"]["EndingHashKey"])
        assert low <= hash_key(key) <= high
    # After the refresh the publisher grouped new records by the children's ranges,
    # and Kinesis stored them there.
    children = {sid for sid, s in shards.items() if "ParentShardId" in s}
    assert children & {entry.shard_id for entry in writer.entries}
    for entry in writer.entries:
        if entry.shard_id in children:
            low = int(shards[entry.shard_id]["HashKeyRange"]["StartingHashKey"])
            high = int(shards[entry.shard_id]["HashKeyRange"]["EndingHashKey"])
            assert low <= hash_key(entry.partition_key) <= high
    assert any(shard_id in children for shard_id, _, _ in got)
