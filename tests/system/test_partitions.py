"""Consumers under network partitions: requests accepted and never answered, then healed.

Each consumer runs as a process behind a FaultProxy. The DynamoDB consumer loses every
DynamoDB call (its history and latest tables and its lease table: they are one service), the
S3 consumer loses its S3 PUTs (its leases are in DynamoDB, still reachable); under a Kinesis
partition both groups lose their reads (GetRecords, GetShardIterator, ListShards). Records
keep arriving in Kinesis meanwhile. Nothing may be lost or written differently from a
fault-free run, the consumer catches up once healed, and SIGTERM, also during the partition,
ends it promptly with exit code 0.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from consumers.dynamodb.items import ticker_attributes
from core.aws import AwsClients
from core.metrics import Counters
from core.settings import Settings
from crypto_live.provision import provision
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.pipeline import (
    ServiceProcess,
    count_items,
    launch_consumer,
    provisioned,
    published,
    scan_all,
)
from tests.support.system import (
    S3_WINDOW,
    consume_fault_free,
    history_of,
    history_table,
    keyed,
    operation,
    s3_objects,
    s3_rows,
    scrape,
    until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(150)]

PARTITION_SECONDS = 8.0
# Bounded shutdown: SHUTDOWN_TIMEOUT_SECONDS for in-flight writes, then a few seconds more.
SHUTDOWN_TIMEOUT = "5"
STOP_BOUND_SECONDS = 15.0


def dynamodb_calls(method: str, path: str, headers: dict[str, str]) -> bool:
    return operation(method, path, headers).startswith("DynamoDB.")


def s3_puts(method: str, path: str, headers: dict[str, str]) -> bool:
    return operation(method, path, headers) == "S3.PUT"


KINESIS_READS = ("Kinesis.GetRecords", "Kinesis.GetShardIterator", "Kinesis.ListShards")


def kinesis_reads(method: str, path: str, headers: dict[str, str]) -> bool:
    return operation(method, path, headers) in KINESIS_READS


def expected_latest(records: list[dict[str, Any]]) -> dict[tuple[str, ...], Any]:
    newest: dict[str, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: r["event_time"]):
        newest[record["symbol"]] = record
    return {(symbol,): ticker_attributes(r) for symbol, r in newest.items()}


def assert_dynamodb_exact(aws: AwsClients, settings: Settings, records: list[Any]) -> None:
    assert history_table(aws, settings.dynamo_table_name) == history_of(settings, records)
    latest = keyed(scan_all(aws, settings.dynamo_latest_table_name), ("symbol",))
    assert latest == expected_latest(records)


def reads_from_start(service: ServiceProcess) -> list[str]:
    """Its "reading <shard> from TRIM_HORIZON" lines: a shard read again from scratch shows."""
    return [m for m in service.messages() if m.startswith("reading ") and "TRIM_HORIZON" in m]


def checkpointed(aws: AwsClients, lease_table: str, shards: int) -> bool:
    """Every shard's lease has a checkpoint past TRIM_HORIZON: a read that starts again after
    this starts from it, not from the shard's start."""
    try:
        items = aws.dynamodb.scan(TableName=lease_table, ConsistentRead=True)["Items"]
    except aws.dynamodb.exceptions.ResourceNotFoundException:
        return False
    marks = [item["checkpoint"]["S"] for item in items]
    return len(marks) == shards and all(mark.isdigit() for mark in marks)


def stop_timed(service: ServiceProcess) -> tuple[int, float]:
    started = time.monotonic()
    code = service.terminate(timeout=60)
    return code, time.monotonic() - started


# -- DynamoDB -------------------------------------------------------------------------------


def test_dynamodb_partition_loses_nothing_and_catches_up_after_heal(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    settings = provisioned(aws_settings, aws, 2)
    records = published(settings, aws, range(2_000))
    with (
        FaultProxy(settings.aws_endpoint_url or "") as proxy,
        launch_consumer(
            settings,
            "dynamodb",
            tmp_path / "d.log",
            AWS_ENDPOINT_URL=proxy.url,
            SHUTDOWN_TIMEOUT_SECONDS=SHUTDOWN_TIMEOUT,
        ) as consumer,
    ):
        until([consumer], lambda: count_items(aws, settings.dynamo_table_name) >= 2_000, 60)
        # The lease table is DynamoDB too: partition only once both shards are checkpointed
        # (a checkpoint follows its batch's latest rows), so "never read again from the start"
        # below is about the partition, not about a first checkpoint it cut off.
        until([consumer], lambda: checkpointed(aws, "crypto-live-dynamodb-leases", 2), 30)
        proxy.partition(dynamodb_calls)
        records += published(settings, aws, range(2_000, 3_000))  # Kinesis is still reachable
        time.sleep(PARTITION_SECONDS / 2)
        records += published(settings, aws, range(3_000, 4_000))
        time.sleep(PARTITION_SECONDS / 2)
        during = count_items(aws, settings.dynamo_table_name)
        held = proxy.held
        proxy.heal()
        healed = time.monotonic()
        until([consumer], lambda: count_items(aws, settings.dynamo_table_name) >= 4_000, 90)
        catch_up = time.monotonic() - healed
        # Checkpointed too, not just written: the lease table shows no lag left.
        metrics = scrape(consumer)
        code, stopped_in = stop_timed(consumer)

    written = int(metrics[Counters.DYNAMODB_ITEMS_WRITTEN])
    print(
        f"\nDynamoDB partition {PARTITION_SECONDS:.0f}s: {held} requests held, caught up "
        f"{catch_up:.1f}s after heal, {written - len(records)} items written twice, "
        f"stopped in {stopped_in:.1f}s"
    )
    assert held > 0 and during == 2_000  # the partition was real: nothing got through
    assert code == 0 and stopped_in < STOP_BOUND_SECONDS
    assert_dynamodb_exact(aws, settings, records)
    # One worker, never a lost lease: no shard was read again from its start, and the only
    # rewrites are batches in flight when the partition began (retried after it).
    assert len(reads_from_start(consumer)) == 2, reads_from_start(consumer)
    assert not [m for m in consumer.messages() if m.startswith("lost lease")]
    assert written - len(records) <= 2_000


def test_sigterm_during_dynamodb_partition_exits_promptly_and_loses_nothing(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    settings = provisioned(aws_settings, aws, 2)
    records = published(settings, aws, range(1_000))
    with (
        FaultProxy(settings.aws_endpoint_url or "") as proxy,
        launch_consumer(
            settings,
            "dynamodb",
            tmp_path / "first.log",
            AWS_ENDPOINT_URL=proxy.url,
            SHUTDOWN_TIMEOUT_SECONDS=SHUTDOWN_TIMEOUT,
        ) as first,
    ):
        until([first], lambda: count_items(aws, settings.dynamo_table_name) >= 1_000, 60)
        proxy.partition(dynamodb_calls)
        records += published(settings, aws, range(1_000, 2_000))
        time.sleep(3)  # its writes, renewals and checkpoints now hang
        code, stopped_in = stop_timed(first)
        proxy.heal()
    print(f"\nSIGTERM during a DynamoDB partition: exit {code} in {stopped_in:.1f}s")
    assert code == 0 and stopped_in < STOP_BOUND_SECONDS, first.messages()[-10:]

    # Its leases could not be released; they expire and the next worker resumes from the
    # checkpoints, so everything the first one could not write is written now.
    with launch_consumer(settings, "dynamodb", tmp_path / "second.log") as second:
        until([second], lambda: count_items(aws, settings.dynamo_table_name) >= 2_000, 60)
        time.sleep(2)  # its latest rows too
        assert second.terminate() == 0
    assert_dynamodb_exact(aws, settings, records)


# -- S3 -------------------------------------------------------------------------------------


def _clean(settings: Settings, aws: AwsClients) -> Settings:
    clean = settings.with_overrides(
        dynamo_table_name="clean-miniticker",
        dynamo_latest_table_name="clean-ticker-latest",
        s3_jsonl_dir_path="clean",
        max_batch_timeout=int(S3_WINDOW["MAX_BATCH_TIMEOUT"]),
        failover_seconds=3,
        shard_discovery_seconds=2,
        idle_time_between_reads_ms=100,
    )
    provision(clean, aws)
    return clean


def test_s3_partition_loses_nothing_and_writes_the_fault_free_objects(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    settings = provisioned(aws_settings, aws, 2)
    clean = _clean(settings, aws)
    records = published(settings, aws, range(2_000))
    with (
        FaultProxy(settings.aws_endpoint_url or "") as proxy,
        launch_consumer(
            settings,
            "s3",
            tmp_path / "s.log",
            AWS_ENDPOINT_URL=proxy.url,
            SHUTDOWN_TIMEOUT_SECONDS=SHUTDOWN_TIMEOUT,
            **S3_WINDOW,
        ) as consumer,
    ):
        until([consumer], lambda: len(s3_rows(aws, settings)) >= 2_000, 60)
        proxy.partition(s3_puts)
        records += published(settings, aws, range(2_000, 3_000))
        time.sleep(PARTITION_SECONDS / 2)
        records += published(settings, aws, range(3_000, 4_000))
        time.sleep(PARTITION_SECONDS / 2)
        during = len(s3_rows(aws, settings))
        held = proxy.held
        proxy.heal()
        healed = time.monotonic()
        until([consumer], lambda: len(s3_rows(aws, settings)) >= 4_000, 90)
        catch_up = time.monotonic() - healed
        metrics = scrape(consumer)
        code, stopped_in = stop_timed(consumer)

    rewritten = int(metrics[Counters.S3_RECORDS_WRITTEN]) - len(records)
    print(
        f"\nS3 partition {PARTITION_SECONDS:.0f}s: {held} PUTs held, caught up {catch_up:.1f}s "
        f"after heal, {rewritten} rows written twice, stopped in {stopped_in:.1f}s"
    )
    assert held > 0 and during == 2_000
    assert code == 0 and stopped_in < STOP_BOUND_SECONDS
    assert not [m for m in consumer.messages() if m.startswith("lost lease")]
    assert len(reads_from_start(consumer)) == 2, reads_from_start(consumer)
    consume_fault_free(clean, len(records))
    lake = s3_objects(aws, settings.s3_bucket, settings.s3_jsonl_dir_path)
    assert lake == s3_objects(aws, settings.s3_bucket, "clean")  # same keys, same bytes
    rows = s3_rows(aws, settings)
    assert sorted(r["iso_timestamp"] + r["symbol"] for r in rows) == sorted(
        r["iso_timestamp"] + r["symbol"] for r in records
    )
    assert rewritten <= 2_000


def test_sigterm_during_s3_partition_exits_promptly_and_loses_nothing(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    settings = provisioned(aws_settings, aws, 2)
    records = published(settings, aws, range(1_000))
    with (
        FaultProxy(settings.aws_endpoint_url or "") as proxy,
        launch_consumer(
            settings,
            "s3",
            tmp_path / "first.log",
            AWS_ENDPOINT_URL=proxy.url,
            SHUTDOWN_TIMEOUT_SECONDS=SHUTDOWN_TIMEOUT,
            **S3_WINDOW,
        ) as first,
    ):
        until([first], lambda: len(s3_rows(aws, settings)) >= 1_000, 60)
        proxy.partition(s3_puts)
        records += published(settings, aws, range(1_000, 2_000))
        time.sleep(5)  # a window closed: its PUT hangs
        code, stopped_in = stop_timed(first)
        proxy.heal()
    print(f"\nSIGTERM during an S3 partition: exit {code} in {stopped_in:.1f}s")
    assert code == 0 and stopped_in < STOP_BOUND_SECONDS, first.messages()[-10:]

    with launch_consumer(settings, "s3", tmp_path / "second.log", **S3_WINDOW) as second:
        until([second], lambda: len(s3_rows(aws, settings)) >= 2_000, 60)
        assert second.terminate() == 0
    rows = s3_rows(aws, settings)
    assert sorted(r["iso_timestamp"] + r["symbol"] for r in rows) == sorted(
        r["iso_timestamp"] + r["symbol"] for r in records
    )


# -- Kinesis --------------------------------------------------------------------------------

# Longer than botocore's four attempts of 5 s read timeout: GetRecords and ListShards fail
# for good at least once, so the readers' own backoff and the lease cycle's retry both run.
KINESIS_PARTITION_SECONDS = 22.0
EXPIRED = Fault(
    400,
    json.dumps({"__type": "ExpiredIteratorException", "message": "Iterator expired"}).encode(),
)


class ExpireIterators:
    """Once ``armed``, answers the next ``count`` GetRecords with ExpiredIteratorException, as
    AWS does for an iterator older than 5 minutes: after a long hang a reader must re-open
    its shard where it was, neither from the start nor past unread records."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.armed = False
        self.answered = 0

    def __call__(self, method: str, path: str, headers: dict[str, str]) -> Fault | None:
        if not self.armed or operation(method, path, headers) != "Kinesis.GetRecords":
            return None
        if self.answered >= self.count:
            return None
        self.answered += 1
        return EXPIRED


def test_kinesis_partition_of_both_groups_loses_nothing_and_writes_the_fault_free_sinks(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    settings = provisioned(aws_settings, aws, 2)
    clean = _clean(settings, aws)
    records = published(settings, aws, range(2_000))
    history = settings.dynamo_table_name

    expire = {"dynamodb": ExpireIterators(2), "s3": ExpireIterators(2)}

    def sinks() -> tuple[int, int]:
        return count_items(aws, history), len(s3_rows(aws, settings))

    with (
        FaultProxy(settings.aws_endpoint_url or "", expire["dynamodb"]) as to_dynamodb,
        FaultProxy(settings.aws_endpoint_url or "", expire["s3"]) as to_s3,
        launch_consumer(
            settings,
            "dynamodb",
            tmp_path / "d.log",
            AWS_ENDPOINT_URL=to_dynamodb.url,
            SHUTDOWN_TIMEOUT_SECONDS=SHUTDOWN_TIMEOUT,
        ) as dynamodb,
        launch_consumer(
            settings,
            "s3",
            tmp_path / "s.log",
            AWS_ENDPOINT_URL=to_s3.url,
            SHUTDOWN_TIMEOUT_SECONDS=SHUTDOWN_TIMEOUT,
            **S3_WINDOW,
        ) as s3,
    ):
        consumers = [dynamodb, s3]
        until(consumers, lambda: sinks() >= (2_000, 2_000), 60)
        for proxy in (to_dynamodb, to_s3):
            proxy.partition(kinesis_reads)
        records += published(settings, aws, range(2_000, 3_000))  # puts still get through
        time.sleep(KINESIS_PARTITION_SECONDS / 2)
        records += published(settings, aws, range(3_000, 4_000))
        time.sleep(KINESIS_PARTITION_SECONDS / 2)
        during = sinks()
        held = (to_dynamodb.held, to_s3.held)
        for expiry in expire.values():
            expiry.armed = True  # the iterators held through the partition have expired
        for proxy in (to_dynamodb, to_s3):
            proxy.heal()
        healed = time.monotonic()
        until(consumers, lambda: sinks() >= (4_000, 4_000), 90)
        catch_up = time.monotonic() - healed
        newest = expected_latest(records)
        latest = settings.dynamo_latest_table_name
        until(consumers, lambda: keyed(scan_all(aws, latest), ("symbol",)) == newest, 30)
        metrics = [scrape(consumer) for consumer in consumers]
        stops = [stop_timed(consumer) for consumer in consumers]

    retries = [int(m[Counters.GET_RECORDS_RETRIES]) for m in metrics]
    print(
        f"\nKinesis partition {KINESIS_PARTITION_SECONDS:.0f}s: {held} reads held, "
        f"GetRecords retries {retries}, 2 expired iterators each, both caught up "
        f"{catch_up:.1f}s after heal, stopped in {[f'{t:.1f}s' for _, t in stops]}"
    )
    assert all(held) and during == (2_000, 2_000)  # nothing read during the partition
    assert [expiry.answered for expiry in expire.values()] == [2, 2]
    assert all(code == 0 and took < STOP_BOUND_SECONDS for code, took in stops), stops
    for consumer in consumers:
        assert not [m for m in consumer.messages() if m.startswith("lost lease")]
        assert len(reads_from_start(consumer)) == 2, reads_from_start(consumer)
    assert_dynamodb_exact(aws, settings, records)
    consume_fault_free(clean, len(records))
    lake = s3_objects(aws, settings.s3_bucket, settings.s3_jsonl_dir_path)
    assert lake == s3_objects(aws, settings.s3_bucket, "clean")  # same keys, same bytes
