"""The S3 consumer on one stream of every type (moto over HTTP): each closed kline exactly once
under the kline prefix, miniTickers under theirs as before, open klines in neither, other types
dead letters; a replay group rewrites identical objects under identical keys."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from typing import Any

import pytest

from consumers.klines import KLINE_FIELD_ORDER
from core.aws import AwsClients
from core.metrics import Counters
from core.settings import Settings
from crypto_live.provision import provision
from schemas.record import FIELD_ORDER
from tests.support.klines import (
    consume_typed,
    dead_letters,
    encode,
    mixed_stream,
    publish_encoded,
    unknown_fingerprint,
)
from tests.support.system import s3_objects

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT")
KEY = re.compile(r"^year=\d{4}/month=\d\d/day=\d\d/hour=\d\d/shardId-\d{12}-\d+-\d+\.jsonl\.gz$")
FAST = {
    "kinesis_shard_count": 2,
    "max_batch_size": 40,  # many segments, cut by either kind
    "max_batch_timeout": 2,
    "batch_grace_ms": 500,
    "failover_seconds": 3,
    "shard_discovery_seconds": 0.5,
    "idle_time_between_reads_ms": 100,
}


def rows(blobs: dict[str, bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for b in blobs.values() for line in gzip.decompress(b).splitlines()]


def as_text(records: list[dict[str, Any]]) -> Counter[str]:
    return Counter(json.dumps(r, sort_keys=True) for r in records)


def test_a_stream_of_every_type_lands_each_kind_under_its_prefix_exactly_once(
    aws_settings: Settings, aws: AwsClients
) -> None:
    settings = aws_settings.with_overrides(**FAST, consumer_app_name="lake-klines")
    provision(settings, aws)
    records = mixed_stream(SYMBOLS, minutes=6, resend=False)
    entries = [encode(r) for r in records]
    garbled = unknown_fingerprint(entries[0][1])
    publish_encoded(settings, aws, [*entries, ("BTCUSDT", garbled)])
    tickers = [r for r in records if r.get("event_type") == "24hrMiniTicker"]
    closed = [r for r in records if r.get("closed") is True]
    open_klines = [r for r in records if r.get("closed") is False]
    heartbeats = [r for r in records if "event_type" not in r]

    def everything_written(metrics: Any) -> bool:
        return metrics.value(Counters.S3_RECORDS_WRITTEN) >= len(tickers) + len(closed)

    metrics = consume_typed(settings, aws, "s3", everything_written)

    bucket = settings.s3_bucket
    ticker_blobs = s3_objects(aws, bucket, settings.s3_jsonl_dir_path)
    kline_blobs = s3_objects(aws, bucket, settings.s3_klines_dir_path)
    assert as_text(rows(kline_blobs)) == as_text(closed)  # each closed kline exactly once
    assert as_text(rows(ticker_blobs)) == as_text(tickers)  # the miniTicker lake as before
    assert all(list(row) == list(KLINE_FIELD_ORDER) for row in rows(kline_blobs))
    assert all(list(row) == list(FIELD_ORDER) for row in rows(ticker_blobs))
    assert all(KEY.match(key) for key in [*kline_blobs, *ticker_blobs])
    head = aws.s3.head_object(Bucket=bucket, Key=f"klines_jsonl/{next(iter(kline_blobs))}")
    assert head["ContentEncoding"] == "gzip" and head["ContentType"] == "application/x-ndjson"
    assert metrics.value(Counters.OPEN_KLINES_SKIPPED) == len(open_klines)

    letters = dead_letters(aws, bucket, "lake-klines")
    unhandled = [d for d in letters if d.reason.startswith("no handler")]
    heartbeat_bytes = [
        data for r, (_, data) in zip(records, entries, strict=True) if r in heartbeats
    ]
    assert sorted(d.raw for d in unhandled) == sorted(heartbeat_bytes)
    assert {d.reason for d in unhandled} == {
        "no handler for schema crypto_live.v1.Heartbeat in consumer-s3"
    }
    assert [d.raw for d in letters if d not in unhandled] == [garbled]

    # Another group from TRIM_HORIZON into the same prefixes: same keys, same bytes.
    replay = settings.with_overrides(consumer_app_name="lake-klines-replay")
    consume_typed(replay, aws, "s3", everything_written)
    assert s3_objects(aws, bucket, settings.s3_klines_dir_path) == kline_blobs
    assert s3_objects(aws, bucket, settings.s3_jsonl_dir_path) == ticker_blobs
