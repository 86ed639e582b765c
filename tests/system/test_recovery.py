"""Recovery operations against moto over HTTP: replay, archive rebuild, status, checkpoint reset;
replay, status and checkpoint reset on kinesis-mock's Kinesis too (``kinesis_backend``)."""

from __future__ import annotations

import asyncio
import gzip
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from consumers.app import ConsumerKind, run_consumer
from consumers.operations.lag import group_leases, list_shards, shard_lag
from core.aws import AwsClients
from core.metrics import Counters, Metrics
from core.settings import Settings
from crypto_live.provision import provision
from tests.support.pipeline import endpoint_env, make_record, publish, scan_all

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
FAST = {
    "kinesis_shard_count": 2,
    "max_batch_timeout": 2,
    "batch_grace_ms": 300,
    "failover_seconds": 3,
    "shard_discovery_seconds": 1,
    "idle_time_between_reads_ms": 100,
}
KEY_TIME = re.compile(r"year=(\d+)/month=(\d+)/day=(\d+)/hour=(\d+)/")


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `crypto-live ARGS` as an operator would, against the test endpoint."""
    env_settings = {
        **endpoint_env(settings),
        "KINESIS_STREAM_NAME": settings.kinesis_stream_name,
        "MAX_BATCH_TIMEOUT": str(settings.max_batch_timeout),
        "BATCH_GRACE_MS": str(settings.batch_grace_ms),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "crypto_live.cli", *args],
        env={**os.environ, **env_settings},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )


def consume(settings: Settings, kind: ConsumerKind, until: Any, app: str | None = None) -> Metrics:
    """Run one in-process worker until ``until(metrics)`` holds."""

    async def run() -> Metrics:
        metrics = Metrics(kind)
        stop = asyncio.Event()
        effective = settings.with_overrides(consumer_app_name=app) if app else settings
        task = asyncio.create_task(run_consumer(effective, kind, stop, metrics))
        async with asyncio.timeout(90):
            while not until(metrics):
                await asyncio.sleep(0.1)
                if task.done():
                    task.result()
        stop.set()
        await task
        return metrics

    return asyncio.run(run())


def lake(aws: AwsClients, settings: Settings) -> dict[str, bytes]:
    out = {}
    for page in aws.s3.get_paginator("list_objects_v2").paginate(
        Bucket=settings.s3_bucket, Prefix=settings.s3_jsonl_dir_path + "/"
    ):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = aws.s3.get_object(Bucket=settings.s3_bucket, Key=obj["Key"])[
                "Body"
            ].read()
    return out


def tables(aws: AwsClients, settings: Settings) -> tuple[dict[Any, Any], dict[Any, Any]]:
    history = {
        (i["stream_type"]["S"], i["iso_timestamp"]["S"]): i
        for i in scan_all(aws, settings.dynamo_table_name)
    }
    latest = {i["symbol"]["S"]: i for i in scan_all(aws, settings.dynamo_latest_table_name)}
    return history, latest


def delete_all_items(aws: AwsClients, settings: Settings) -> None:
    for table, keys in (
        (settings.dynamo_table_name, ("stream_type", "iso_timestamp")),
        (settings.dynamo_latest_table_name, ("symbol",)),
    ):
        for item in scan_all(aws, table):
            aws.dynamodb.delete_item(TableName=table, Key={k: item[k] for k in keys})
    assert tables(aws, settings) == ({}, {})


Pipeline = tuple[Settings, list[dict[str, Any]]]


@pytest.fixture
def pipeline(aws_settings: Settings, aws: AwsClients) -> Pipeline:
    """Three bursts of records a few batch windows apart, consumed by both groups (moto)."""
    return _pipeline(aws_settings, aws)


@pytest.fixture
def backend_pipeline(kinesis_backend: Settings, aws: AwsClients) -> Pipeline:
    """``pipeline`` on each Kinesis backend."""
    return _pipeline(kinesis_backend, aws)


def _pipeline(base: Settings, aws: AwsClients) -> Pipeline:
    settings = base.with_overrides(**FAST)
    provision(settings, aws)
    records = [make_record(i) for i in range(3_000)]
    for burst in range(3):
        publish(settings, aws, records[burst * 1_000 : (burst + 1) * 1_000])
        time.sleep(2.5)
    consume(settings, "dynamodb", lambda m: m.value(Counters.DYNAMODB_ITEMS_WRITTEN) >= 3_000)
    consume(settings, "s3", lambda m: m.value(Counters.S3_RECORDS_WRITTEN) >= 3_000)
    return settings, records


def test_table_lost_replay_from_trim_horizon_restores_it(
    backend_pipeline: Pipeline, aws: AwsClients
) -> None:
    settings, _ = backend_pipeline
    before = tables(aws, settings)
    delete_all_items(aws, settings)

    result = cli(settings, "replay", "--consumer", "dynamodb", "--from", "TRIM_HORIZON")

    assert result.returncode == 0, result.stderr
    assert "replayed 3,000 records into dynamodb" in result.stdout
    assert tables(aws, settings) == before
    # The live group's leases were not touched by the replay.
    assert all(
        lease.owner is None
        for lease in group_leases(aws.dynamodb, "crypto-live-dynamodb-leases").values()
    )


def test_replaying_a_window_of_s3_rewrites_byte_identical_objects(
    backend_pipeline: Pipeline, aws: AwsClients
) -> None:
    settings, _ = backend_pipeline
    before = lake(aws, settings)
    assert len(before) >= 3
    # Lose the whole hour (every object), then re-drive that hour.
    first = min(before)
    hour = datetime(*map(int, KEY_TIME.search(first).groups()), tzinfo=UTC)  # type: ignore[union-attr, misc]
    for key in before:
        aws.s3.delete_object(Bucket=settings.s3_bucket, Key=key)
    end = hour + timedelta(hours=2)  # the run may cross an hour boundary

    result = cli(
        settings, "replay", "--consumer", "s3", "--from", hour.isoformat(), "--to", end.isoformat()
    )

    assert result.returncode == 0, result.stderr
    assert lake(aws, settings) == before  # same keys, same bytes


def test_replaying_a_middle_range_rewrites_only_those_objects(
    pipeline: Pipeline, aws: AwsClients
) -> None:
    settings, _ = pipeline
    before = lake(aws, settings)
    # Lose the objects of the second burst (records 1000..1999), then re-drive that range.
    second = [
        key
        for key, body in before.items()
        if all(1_000 <= _index(line) < 2_000 for line in gzip.decompress(body).splitlines())
    ]
    assert second
    for key in second:
        aws.s3.delete_object(Bucket=settings.s3_bucket, Key=key)

    result = cli(
        settings,
        "replay",
        "--consumer",
        "s3",
        "--from",
        _burst_start(aws, settings, 1_000).isoformat(),
        "--to",
        _burst_start(aws, settings, 2_000).isoformat(),
    )

    assert result.returncode == 0, result.stderr
    assert lake(aws, settings) == before  # the lost objects are back, byte for byte


def _index(line: bytes) -> int:
    import json

    return int(json.loads(line)["event_time"]) - 1_795_000_000_000


def _burst_start(aws: AwsClients, settings: Settings, index: int) -> datetime:
    """Kinesis arrival time of record ``index`` (first of a burst)."""
    from consumers.operations.stream_dump import read_stream

    for rows in read_stream(aws.kinesis, settings.kinesis_stream_name).values():
        for row in rows:
            if row.record["event_time"] - 1_795_000_000_000 == index:
                return _arrival(aws, settings, row.shard_id, row.sequence_number)
    raise AssertionError(f"record {index} not in the stream")


def _arrival(aws: AwsClients, settings: Settings, shard_id: str, sequence: str) -> datetime:
    iterator = aws.kinesis.get_shard_iterator(
        StreamName=settings.kinesis_stream_name,
        ShardId=shard_id,
        ShardIteratorType="AT_SEQUENCE_NUMBER",
        StartingSequenceNumber=sequence,
    )["ShardIterator"]
    return aws.kinesis.get_records(ShardIterator=iterator, Limit=1)["Records"][0][
        "ApproximateArrivalTimestamp"
    ]


def test_rebuild_dynamodb_from_the_s3_archive(pipeline: Pipeline, aws: AwsClients) -> None:
    settings, _ = pipeline
    before = tables(aws, settings)
    delete_all_items(aws, settings)

    result = cli(settings, "replay", "--from-archive", f"s3://{settings.s3_bucket}/batch_jsonl/")

    assert result.returncode == 0, result.stderr
    assert "rebuilt 3,000 records from the archive" in result.stdout
    assert tables(aws, settings) == before


def test_status_shows_lag_while_stopped_and_zero_after_catching_up(
    kinesis_backend: Settings, aws: AwsClients
) -> None:
    settings = kinesis_backend.with_overrides(**FAST)
    provision(settings, aws)
    publish(settings, aws, [make_record(i) for i in range(1_000)])
    consume(settings, "dynamodb", lambda m: m.value(Counters.DYNAMODB_ITEMS_WRITTEN) >= 1_000)
    publish(settings, aws, [make_record(i) for i in range(1_000, 1_600)])  # consumer stopped
    time.sleep(0.3)

    def lag() -> tuple[int, int]:
        leases = group_leases(aws.dynamodb, "crypto-live-dynamodb-leases")
        lags = [
            shard_lag(
                aws.kinesis,
                settings.kinesis_stream_name,
                s,
                leases.get(s["ShardId"]),
                "TRIM_HORIZON",
            )
            for s in list_shards(aws.kinesis, settings.kinesis_stream_name)
        ]
        return sum(x.records for x in lags), max(x.millis for x in lags)

    records, millis = lag()
    assert records == 600 and millis >= 300
    lagging = cli(settings, "status", "--consumer", "dynamodb", "--max-lag-ms", "100")
    assert lagging.returncode == 1 and "LAGGING" in lagging.stdout

    consume(settings, "dynamodb", lambda m: m.value(Counters.DYNAMODB_ITEMS_WRITTEN) >= 600)
    assert lag() == (0, 0)
    healthy = cli(settings, "status", "--consumer", "dynamodb", "--max-lag-ms", "100")
    assert healthy.returncode == 0 and "healthy" in healthy.stdout


def test_checkpoint_reset_to_trim_horizon_replays_into_the_live_group(
    kinesis_backend: Settings, aws: AwsClients
) -> None:
    settings = kinesis_backend.with_overrides(**FAST)
    provision(settings, aws)
    publish(settings, aws, [make_record(i) for i in range(800)])
    consume(settings, "dynamodb", lambda m: m.value(Counters.DYNAMODB_ITEMS_WRITTEN) >= 800)
    before = tables(aws, settings)

    refused = cli(settings, "checkpoint", "reset", "--consumer", "dynamodb", "--to", "TRIM_HORIZON")
    assert refused.returncode == 2 and "--yes" in refused.stderr  # no terminal, no --yes
    reset = cli(
        settings, "checkpoint", "reset", "--consumer", "dynamodb", "--to", "TRIM_HORIZON", "--yes"
    )
    assert reset.returncode == 0, reset.stderr
    shown = cli(settings, "checkpoint", "show", "--consumer", "dynamodb")
    assert shown.stdout.count("TRIM_HORIZON") == 2

    again = consume(settings, "dynamodb", lambda m: m.value(Counters.RECORDS_CONSUMED) >= 800)
    assert again.value(Counters.RECORDS_CONSUMED) == 800  # everything re-read once
    assert tables(aws, settings) == before
