"""Consumers under network partitions: requests accepted and never answered, then healed.

Each consumer runs as a process behind a FaultProxy. The DynamoDB consumer loses every
DynamoDB call (its history and latest tables and its lease table: they are one service), the
S3 consumer loses its S3 PUTs (its leases are in DynamoDB, still reachable). Records keep
arriving in Kinesis meanwhile. Nothing may be lost or written differently from a fault-free run,
the consumer catches up once healed, and SIGTERM, also during the partition, ends it promptly
with exit code 0.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from consumers.dynamodb.items import ticker_attributes
from core.aws import AwsClients
from core.metrics import Counters
from core.settings import Settings
from crypto_live.provision import provision
from tests.support.fault_proxy import FaultProxy
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
