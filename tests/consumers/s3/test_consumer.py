"""The S3 consumer end to end: Kinesis (moto over HTTP; kinesis-mock too where a test takes
``kinesis_backend``) -> engine -> gzipped JSONL in S3."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from consumers.app import run_consumer
from consumers.engine.leases import DynamoLeaseStore
from core.aws import AwsClients
from core.metrics import Counters, Metrics
from core.settings import Settings
from crypto_live.provision import provision
from schemas.record import FIELD_ORDER
from tests.support.fault_proxy import FaultProxy
from tests.support.pipeline import ServiceProcess, consumer_env, make_record, publish, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

KEY = re.compile(
    r"^(?P<prefix>[a-z]+)/year=\d{4}/month=\d\d/day=\d\d/hour=\d\d/"
    r"(?P<shard>shardId-\d{12})-(?P<seq>\d+)-(?P<sub>\d+)\.jsonl\.gz$"
)
FAST = {
    "kinesis_shard_count": 2,
    "max_batch_timeout": 2,
    "batch_grace_ms": 500,
    "failover_seconds": 3,
    "shard_discovery_seconds": 1,
    "idle_time_between_reads_ms": 100,
}


def objects(aws: AwsClients, bucket: str, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix``, keyed without the prefix."""
    out: dict[str, bytes] = {}
    for page in aws.s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix + "/"
    ):
        for obj in page.get("Contents", []):
            body = aws.s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            out[obj["Key"].removeprefix(prefix + "/")] = body
    return out


def rows(blobs: dict[str, bytes]) -> list[dict[str, Any]]:
    return [
        json.loads(line) for blob in blobs.values() for line in gzip.decompress(blob).splitlines()
    ]


def consume(settings: Settings, app: str, expected_rows: int) -> Metrics:
    """Run one in-process S3 worker until ``expected_rows`` rows are in S3, then stop it."""

    async def run() -> Metrics:
        metrics = Metrics(app)
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_consumer(settings.with_overrides(consumer_app_name=app), "s3", stop, metrics)
        )
        async with asyncio.timeout(90):
            while metrics.value(Counters.S3_RECORDS_WRITTEN) < expected_rows:
                await asyncio.sleep(0.2)
                if task.done():
                    task.result()
        stop.set()
        await task
        return metrics

    return asyncio.run(run())


def test_twenty_thousand_records_become_exactly_those_rows(
    kinesis_backend: Settings, aws: AwsClients
) -> None:
    settings = kinesis_backend.with_overrides(**FAST)
    provision(settings, aws)
    records = [make_record(i) for i in range(20_000)]
    publish(settings, aws, records)

    consume(settings, "s3-test", len(records))

    blobs = objects(aws, settings.s3_bucket, settings.s3_jsonl_dir_path)
    got = rows(blobs)
    assert len(got) == len(records)  # no duplicates, nothing missing
    assert Counter(json.dumps(r, sort_keys=True) for r in got) == Counter(
        json.dumps(r, sort_keys=True) for r in records
    )
    assert all(list(row) == list(FIELD_ORDER) for row in got)  # stable field order
    assert all(isinstance(row["close_price"], str) for row in got)  # exact decimal strings
    shards = {m["shard"] for key in blobs if (m := KEY.match(f"x/{key}"))}
    assert len(shards) == 2 and all(KEY.match(f"x/{key}") for key in blobs)
    assert max(len(gzip.decompress(b).splitlines()) for b in blobs.values()) <= 1000
    head = aws.s3.head_object(Bucket=settings.s3_bucket, Key=f"batch_jsonl/{next(iter(blobs))}")
    assert head["ContentEncoding"] == "gzip" and head["ContentType"] == "application/x-ndjson"
    if shutil.which("jq"):
        for blob in list(blobs.values())[:5]:
            out = subprocess.run(
                ["sh", "-c", "gzip -dc | jq -c ."], input=blob, capture_output=True, check=True
            )
            assert len(out.stdout.splitlines()) == len(gzip.decompress(blob).splitlines())


def test_sigkill_between_put_and_checkpoint_then_restart_matches_a_clean_run(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    settings = aws_settings.with_overrides(**FAST)
    provision(settings, aws)
    records = [make_record(i) for i in range(8_000)]
    publish(settings, aws, records)
    consume(settings.with_overrides(s3_jsonl_dir_path="clean"), "clean", len(records))
    clean = objects(aws, settings.s3_bucket, "clean")

    victim: dict[str, int] = {}
    puts: list[str] = []

    def decide(method: str, path: str, headers: dict[str, str]) -> Any:
        if method == "PUT" and "/crash/" in path:
            puts.append(path)
            if len(puts) == 3:
                return lambda: os.kill(victim["pid"], signal.SIGKILL)  # PUT applied, no checkpoint
        return None

    env = consumer_env(
        settings,
        S3_JSONL_DIR_PATH="crash",
        CONSUMER_APP_NAME="crash",
        MAX_BATCH_TIMEOUT="2",
        BATCH_GRACE_MS="500",
    )
    with FaultProxy(settings.aws_endpoint_url or "", decide) as proxy:
        first = ServiceProcess(
            ["consume", "s3"], {**env, "AWS_ENDPOINT_URL": proxy.url}, tmp_path / "1.log"
        )
        victim["pid"] = first.proc.pid
        assert first.wait(timeout=60) == -signal.SIGKILL
    crashed = objects(aws, settings.s3_bucket, "crash")
    assert 3 <= len(crashed) < len(clean)
    leases = DynamoLeaseStore(aws.dynamodb, "crash-leases").list_leases()
    written_last = {
        m["shard"]: int(m["seq"]) for key in crashed if (m := KEY.match(f"crash/{key}"))
    }
    # The killed worker never checkpointed its last PUT: some object lies beyond a checkpoint.
    assert any(
        lease.position is None or lease.position.sequence < written_last.get(lease.shard_id, -1)
        for lease in leases
    )

    second = ServiceProcess(["consume", "s3"], env, tmp_path / "2.log")
    try:
        wait_until(
            lambda: len(rows(objects(aws, settings.s3_bucket, "crash"))) >= len(records), 60, 1
        )
        wait_until(lambda: objects(aws, settings.s3_bucket, "crash") == clean, 15, 1)
    finally:
        assert second.terminate() == 0
    assert objects(aws, settings.s3_bucket, "crash") == clean  # same keys, same bytes


def test_reset_to_trim_horizon_rewrites_nothing_new(
    kinesis_backend: Settings, aws: AwsClients
) -> None:
    settings = kinesis_backend.with_overrides(**FAST)
    provision(settings, aws)
    records = [make_record(i) for i in range(5_000)]
    publish(settings, aws, records)
    consume(settings, "lake", len(records))
    before = objects(aws, settings.s3_bucket, settings.s3_jsonl_dir_path)

    store = DynamoLeaseStore(aws.dynamodb, "lake-leases")
    for lease in store.list_leases():  # what `checkpoint reset` does, through the protocol
        taken = store.take(lease, "operator")
        store.release(store.checkpoint(taken, "TRIM_HORIZON"))
    consume(settings, "lake", len(records))

    assert objects(aws, settings.s3_bucket, settings.s3_jsonl_dir_path) == before


def test_producer_duplicates_appear_once(aws_settings: Settings, aws: AwsClients) -> None:
    settings = aws_settings.with_overrides(**FAST)
    provision(settings, aws)
    records = [make_record(i) for i in range(3_000)]
    with_retries = []
    for index, record in enumerate(records):
        with_retries.append(record)
        if index % 7 == 0:
            with_retries.append(dict(record, received_at=record["received_at"] + 1))  # a retry
    publish(settings, aws, with_retries)

    metrics = consume(settings, "dups", len(records))

    got = rows(objects(aws, settings.s3_bucket, settings.s3_jsonl_dir_path))
    assert len(got) == len(records)
    assert sorted((r["stream_type"], r["event_time"]) for r in got) == sorted(
        (r["stream_type"], r["event_time"]) for r in records
    )
    assert metrics.value(Counters.S3_DUPLICATES_DROPPED) == len(with_retries) - len(records)
