"""The lake jobs on the embedded stack: moto's S3 over HTTP, raw objects from the S3 consumer."""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from consumers.app import run_consumer
from consumers.s3.format import JsonlGzipFormat, jsonl_line
from core.aws import AwsClients
from core.metrics import Counters, Metrics
from core.settings import Settings
from crypto_live.lake.arrow import pa
from crypto_live.lake.jobs.candles import run_candles
from crypto_live.lake.jobs.compact import run_compact
from crypto_live.lake.jobs.report import run_report
from crypto_live.lake.layout import day_of_hour, hour_label, raw_folder
from crypto_live.lake.parquet import from_parquet
from crypto_live.lake.store import S3LakeStore
from crypto_live.provision import provision
from tests.support.pipeline import make_record, publish

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

FAST = {
    "kinesis_shard_count": 2,
    "max_batch_timeout": 2,
    "batch_grace_ms": 500,
    "failover_seconds": 3,
    "shard_discovery_seconds": 1,
    "idle_time_between_reads_ms": 100,
}
MS_PER_HOUR = 3_600_000
H0 = 1_795_392_000_000 // MS_PER_HOUR - 2  # 2026-11-22T22: two hours before a midnight
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def snapshot(aws: AwsClients, bucket: str) -> dict[str, tuple[bytes, str, Any]]:
    """Every object: bytes, ETag and Last-Modified."""
    out: dict[str, tuple[bytes, str, Any]] = {}
    for page in aws.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            body = aws.s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            out[item["Key"]] = (body, item["ETag"], item["LastModified"])
    return out


def plain_rows(table: Any) -> list[dict[str, Any]]:
    """Rows with decimals back as the raw lake's eight-decimal strings."""
    return [
        {k: f"{v:.8f}" if isinstance(v, Decimal) else v for k, v in row.items()}
        for row in table.to_pylist()
    ]


def record(symbol: str, event_time: int, index: int) -> dict[str, Any]:
    seconds, millis = divmod(event_time, 1000)
    volume = Decimal(index % 500) + Decimal(index) / 1000  # falls every 500 updates: a roll
    return {
        "event_type": "24hrMiniTicker",
        "event_time": event_time,
        "stream_type": f"{symbol.lower()}@miniTicker",
        "symbol": symbol,
        "close_price": f"{Decimal(100 + index % 37) + Decimal(index % 9) / 8:.8f}",
        "open_price": "100.00000000",
        "high_price": "200.00000000",
        "low_price": "50.00000000",
        "base_volume": f"{volume:.8f}",
        "quote_volume": f"{volume * 100:.8f}",
        "iso_timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        + f".{millis:03d}Z",
        "received_at": event_time * 1000 + 11,
    }


def put_raw(
    aws: AwsClients, bucket: str, folder: int, name: str, rows: list[dict[str, Any]]
) -> None:
    aws.s3.put_object(
        Bucket=bucket,
        Key=f"{raw_folder('batch_jsonl', folder)}{name}.jsonl.gz",
        Body=JsonlGzipFormat().compress(b"".join(jsonl_line(r) for r in rows)),
        ContentType="application/x-ndjson",
        ContentEncoding="gzip",
    )


def write_hours(aws: AwsClients, bucket: str, hours: range, every_s: int = 30) -> int:
    """Each hour's updates in two objects of its folder; its last minute arrives in the next
    hour's folder (late), as when a batch's first record arrived after the hour."""
    total = 0
    for hour in hours:
        rows = [
            record(symbol, hour * MS_PER_HOUR + second * 1000, hour * 1000 + second // every_s)
            for second in range(0, 3600, every_s)
            for symbol in SYMBOLS
        ]
        on_time = [r for r in rows if r["event_time"] % MS_PER_HOUR < 59 * 60_000]
        late = [r for r in rows if r["event_time"] % MS_PER_HOUR >= 59 * 60_000]
        half = len(on_time) // 2
        put_raw(aws, bucket, hour, f"shardId-000000000000-{hour}1-0", on_time[:half])
        put_raw(aws, bucket, hour, f"shardId-000000000001-{hour}2-0", on_time[half:])
        put_raw(aws, bucket, hour + 1, f"shardId-000000000000-{hour}3-0", late)
        total += len(rows)
    return total


def all_jobs(store: S3LakeStore, hours: range, force: bool = False) -> list[Any]:
    day = day_of_hour(hours[-1])
    return [
        run_compact(store, "batch_jsonl", hours),
        run_candles(store, hours),
        run_report(store, day, force=force),
    ]


def consume_s3(settings: Settings, expected_records: int) -> None:
    """Run an in-process S3 worker until every record was read and is in S3 (or dropped as a
    duplicate within its batch)."""

    def done(metrics: Metrics) -> bool:
        handled = metrics.value(Counters.S3_RECORDS_WRITTEN)
        handled += metrics.value(Counters.S3_DUPLICATES_DROPPED)
        return handled >= expected_records

    async def run() -> None:
        metrics = Metrics("s3-lake-test")
        stop = asyncio.Event()
        task = asyncio.create_task(run_consumer(settings, "s3", stop, metrics))
        async with asyncio.timeout(90):
            while not done(metrics):
                await asyncio.sleep(0.2)
                if task.done():
                    task.result()
        stop.set()
        await task

    asyncio.run(run())


def raw_rows(aws: AwsClients, bucket: str) -> list[dict[str, Any]]:
    rows = []
    for page in aws.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="batch_"):
        for item in page.get("Contents", []):
            body = aws.s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            rows.extend(json.loads(line) for line in gzip.decompress(body).splitlines())
    return rows


def test_compaction_of_what_the_s3_consumer_wrote_equals_its_input(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    settings = aws_settings.with_overrides(**FAST)
    provision(settings, aws)
    now_ms = time.time_ns() // 1_000_000
    records = []
    for i in range(1_200):  # the last 50 minutes, so each lands within an hour of its folder
        fields = make_record(i, symbols=6)
        fields["event_time"] = now_ms - 50 * 60_000 + i * 2_500
        seconds, millis = divmod(fields["event_time"], 1000)
        fields["iso_timestamp"] = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
        )
        records.append(fields)
    publish(settings, aws, records)
    time.sleep(2.5)  # past the 2 s batch window: the duplicates land in other S3 objects
    publish(settings, aws, records[:100])  # retried puts
    consume_s3(settings, len(records) + 100)
    raw = raw_rows(aws, settings.s3_bucket)
    assert len(raw) > len(records)  # duplicates in different batches stay in the raw lake

    hour = now_ms // MS_PER_HOUR
    start = datetime.fromtimestamp((hour - 2) * 3600, UTC).strftime("%Y-%m-%dT%H")
    end = datetime.fromtimestamp((hour + 2) * 3600, UTC).strftime("%Y-%m-%dT%H")
    command = [sys.executable, "-m", "crypto_live.cli", "lake", "compact", "--from", start]
    command += ["--to", end, "--no-progress", "--endpoint-url", settings.aws_endpoint_url or ""]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert f"{len(raw):,} rows in, {len(records):,} rows out" in done.stdout

    store = S3LakeStore(aws.s3, settings.s3_bucket)
    compacted = []
    for info in store.list("parquet/"):
        table = from_parquet(store.get(info.key) or b"")
        assert info.key.startswith(f"parquet/stream=miniTicker/symbol={table['symbol'][0]}/")
        compacted.extend(plain_rows(table))
    assert len(compacted) == len(records)
    unique = {json.dumps(r, sort_keys=True) for r in raw}
    assert sorted(json.dumps(r, sort_keys=True) for r in compacted) == sorted(unique)


def test_rerunning_any_job_changes_no_object(aws_settings: Settings, aws: AwsClients) -> None:
    provision(aws_settings, aws)
    bucket = aws_settings.s3_bucket
    rows = write_hours(aws, bucket, range(H0, H0 + 4))
    store = S3LakeStore(aws.s3, bucket)
    hours = range(H0, H0 + 5)
    compact, candles, _ = all_jobs(store, range(H0 - 1, H0 + 2))  # the first day's hours
    assert compact.rows_out == 2 * 120 * len(SYMBOLS)
    compact, candles, report = all_jobs(store, hours)
    assert compact.rows_out == rows - 2 * 120 * len(SYMBOLS)
    assert report.computed == ["2026-11-23"]
    assert candles.rows_out == 60 * 2 * len(SYMBOLS)
    before = snapshot(aws, bucket)
    assert any(key.startswith("reports/") for key in before)

    results = all_jobs(store, range(H0 - 1, H0 + 2)) + all_jobs(store, hours)
    results += all_jobs(store, hours, force=True)  # the report is computed again: same bytes
    assert snapshot(aws, bucket) == before  # keys, bytes, ETags and Last-Modified
    assert sum(result.written for result in results) == 0


def test_manifest_skips_done_hours_and_picks_up_late_data(
    aws_settings: Settings, aws: AwsClients
) -> None:
    provision(aws_settings, aws)
    bucket = aws_settings.s3_bucket
    write_hours(aws, bucket, range(H0, H0 + 6))
    store = S3LakeStore(aws.s3, bucket)
    hours = range(H0, H0 + 6)
    assert len(run_compact(store, "batch_jsonl", hours).computed) == 6
    again = run_compact(store, "batch_jsonl", hours)
    assert again.computed == [] and len(again.skipped) == 6 and again.objects_read == 0

    # A consumer that lagged files a batch of hour H0+2's events late, under folder H0+3.
    late = [record("BTCUSDT", (H0 + 2) * MS_PER_HOUR + 1_234, 7)]
    put_raw(aws, bucket, H0 + 3, "shardId-000000000001-999-0", late)
    picked = run_compact(store, "batch_jsonl", hours)
    assert picked.computed == [hour_label(h) for h in (H0 + 2, H0 + 3, H0 + 4)]
    assert picked.rows_out == 3 * 120 * len(SYMBOLS) + 1
    key = "parquet/stream=miniTicker/symbol=BTCUSDT/date=2026-11-23/part-00.parquet"
    times = from_parquet(store.get(key) or b"")["event_time"].to_pylist()
    assert (H0 + 2) * MS_PER_HOUR + 1_234 in times
    assert times == sorted(times)
    candles = run_candles(store, hours)
    assert len(candles.computed) == 6  # first run
    assert run_candles(store, hours).computed == []


class RecordingStore(S3LakeStore):
    """Notes the order of reads and writes, and Arrow's allocated bytes at every read."""

    def __init__(self, s3: Any, bucket: str) -> None:
        super().__init__(s3, bucket)
        self.events: list[tuple[str, str]] = []
        self._baseline = pa.total_allocated_bytes()
        self.peak_arrow_bytes = 0

    def get(self, key: str) -> bytes | None:
        self.events.append(("get", key))
        held = pa.total_allocated_bytes() - self._baseline
        self.peak_arrow_bytes = max(self.peak_arrow_bytes, held)
        return super().get(key)

    def put(self, key: str, body: bytes, content_type: str) -> str:
        self.events.append(("put", key))
        return super().put(key, body, content_type)


def _folder_hour(key: str) -> int:
    parts = dict(p.split("=", 1) for p in key.split("/") if "=" in p)
    when = datetime(
        int(parts["year"]), int(parts["month"]), int(parts["day"]), int(parts["hour"]), tzinfo=UTC
    )
    return int(when.timestamp()) // 3600


def _reads_before_writes(events: list[tuple[str, str]]) -> Iterator[tuple[int, int]]:
    """(hour written, furthest folder read so far) for every compacted file written."""
    furthest = -1
    for kind, key in events:
        if kind == "get" and key.startswith("batch_jsonl/"):
            furthest = max(furthest, _folder_hour(key))
        elif kind == "put" and key.startswith("parquet/"):
            day = key.split("date=")[1][:10]
            hour = int(key.rsplit("part-", 1)[1][:2])
            written = int(datetime.fromisoformat(f"{day}T{hour:02d}:00+00:00").timestamp()) // 3600
            yield written, furthest


@pytest.mark.slow
def test_memory_stays_bounded_by_streaming_hour_by_hour(
    aws_settings: Settings, aws: AwsClients
) -> None:
    provision(aws_settings, aws)
    bucket = aws_settings.s3_bucket
    per_hour = 720 * len(SYMBOLS)
    write_hours(aws, bucket, range(H0, H0 + 16), every_s=5)
    short = RecordingStore(aws.s3, bucket)
    run_compact(short, "batch_jsonl", range(H0, H0 + 3))
    aws.s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": i.key} for i in short.list("meta/") + short.list("parquet/")]},
    )
    long = RecordingStore(aws.s3, bucket)
    result = run_compact(long, "batch_jsonl", range(H0, H0 + 16))
    assert result.rows_out == 16 * per_hour
    # Each hour is written before any folder more than one hour ahead is read...
    pairs = list(_reads_before_writes(long.events))
    assert len(pairs) == 16 * len(SYMBOLS)
    assert all(furthest <= written + 1 for written, furthest in pairs)
    # ...so at most about two hours of rows are held, and Arrow memory does not grow with the
    # range: sixteen hours peak like three.
    assert result.peak_pending_rows <= 2 * per_hour
    assert long.peak_arrow_bytes <= 1.5 * short.peak_arrow_bytes
