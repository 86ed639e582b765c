"""The producer's Kinesis edge under a network partition: SIGTERM exits in bounded time, every
record is in Kinesis or a dead letter, and `crypto-live redrive` completes the stream.

A FaultProxy between the producer and moto holds PutRecords (and in the second case S3's
dead-letter writes) without an answer, as a partition does: accepted, read, never answered.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from consumers.engine.deaggregation import deaggregate
from core.aws import AwsClients
from core.dead_letters import parse_dead_letter_line
from core.metrics import Counters
from core.settings import Settings
from crypto_live.cli import main
from producer.service import EXIT_LOCAL_DEAD_LETTERS, EXIT_UNDELIVERED
from producer.undelivered import UNANSWERED
from schemas.codec import default_codec
from tests.support.fault_proxy import FaultProxy
from tests.support.pipeline import ServiceProcess, producer_env, provisioned, wait_until
from tests.support.system import (
    ExchangeThread,
    dead_letters,
    envelope,
    operation,
    payload,
    s3_objects,
    scrape,
    stream_records,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

MESSAGES = 4_000
SHUTDOWN_TIMEOUT = 3.0
EXIT_BOUND = SHUTDOWN_TIMEOUT + 5.0

Key = tuple[str, int]


def kinesis_puts(method: str, path: str, headers: dict[str, str]) -> bool:
    return operation(method, path, headers) == "Kinesis.PutRecords"


def kinesis_puts_and_dead_letters(method: str, path: str, headers: dict[str, str]) -> bool:
    return kinesis_puts(method, path, headers) or (method == "PUT" and "/errors/" in path)


def keys_of(records: list[dict[str, Any]]) -> Counter[Key]:
    return Counter((r["symbol"], r["event_time"]) for r in records)


def metric(producer: ServiceProcess, name: str) -> float:
    """One of the producer's /metrics, 0 before its server is up."""
    try:
        return scrape(producer).get(name, 0.0)
    except (StopIteration, OSError):
        return 0.0


def s3_lines(aws: AwsClients, settings: Settings, source: str) -> list[bytes]:
    blobs = s3_objects(aws, settings.s3_bucket, f"errors/{source}")
    return [line for blob in blobs.values() for line in blob.splitlines()]


def undelivered_keys(lines: list[bytes]) -> tuple[Counter[Key], set[Key]]:
    """(keys of the user records in undelivered dead letters, those with an unknown outcome)."""
    codec = default_codec()
    keys: Counter[Key] = Counter()
    unknown: set[Key] = set()
    for line in lines:
        letter = parse_dead_letter_line(line)
        if letter.put_entry is None:
            continue
        record = {
            "Data": letter.raw,
            "PartitionKey": letter.put_entry["partition_key"],
            "SequenceNumber": "0",
            "ApproximateArrivalTimestamp": None,
        }
        for user in deaggregate(record):
            decoded = codec.decode(user.data)
            key = (decoded["symbol"], decoded["event_time"])
            keys[key] += 1
            if letter.reason == UNANSWERED:
                unknown.add(key)
    return keys, unknown


def run_partitioned_producer(
    settings: Settings, tmp_path: Path, match: Any, **env: str
) -> tuple[int, float, ServiceProcess]:
    """Send MESSAGES through a producer, partition AWS by ``match`` halfway, SIGTERM once all
    were received; (exit code, seconds from SIGTERM to exit, the process)."""
    sent = [payload(i) for i in range(MESSAGES)]
    with (
        ExchangeThread() as exchange,
        FaultProxy(settings.aws_endpoint_url or "") as proxy,
    ):
        environment = {
            **producer_env(settings, exchange.exchange.url, proxy.url),
            "SHUTDOWN_TIMEOUT_SECONDS": str(SHUTDOWN_TIMEOUT),
            **env,
        }
        producer = ServiceProcess(["producer"], environment, tmp_path / "producer.log")
        try:
            exchange.wait_for_connections(1)
            half = MESSAGES // 2
            exchange.send([envelope(data) for data in sent[:half]])
            wait_until(lambda: metric(producer, Counters.RECORDS_PUT) >= half, 60)
            proxy.partition(match)
            exchange.send([envelope(data) for data in sent[half:]])
            wait_until(lambda: proxy.held >= 1, 30)
            wait_until(lambda: metric(producer, Counters.MESSAGES_RECEIVED) >= MESSAGES, 30)
            time.sleep(1.0)  # a few more puts hang, and the dead-letter flush timer runs
            started = time.monotonic()
            code = producer.terminate(timeout=60)
            elapsed = time.monotonic() - started
            proxy.heal()
        finally:
            producer.stop()
    return code, elapsed, producer


def redrive(settings: Settings, *extra: str) -> int:
    return main(["redrive", "--endpoint-url", settings.aws_endpoint_url or "", *extra])


def test_partition_then_sigterm_exits_in_time_and_redrive_completes_the_stream(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = provisioned(aws_settings, aws, 2)
    expected = {(p["s"], p["E"]) for p in map(payload, range(MESSAGES))}
    code, elapsed, producer = run_partitioned_producer(settings, tmp_path, kinesis_puts)
    with capsys.disabled():
        print(f"\nexit {code} {elapsed:.2f}s after SIGTERM under a Kinesis partition")
    assert elapsed < EXIT_BOUND, elapsed
    assert code == EXIT_UNDELIVERED, producer.messages()[-5:]

    # Kinesis and the dead letters hold every record.
    in_stream = keys_of(stream_records(aws, settings))
    parked, unknown = undelivered_keys(s3_lines(aws, settings, "producer"))
    assert parked, "the partition left nothing undelivered"
    assert set(in_stream) | set(parked) == set(expected)
    report = (
        f"{sum(in_stream.values())} in Kinesis, {sum(parked.values())} in dead letters "
        f"({len(unknown)} with an unknown outcome)"
    )

    # Healed: redrive puts them back; duplicates only where the outcome was unknown.
    assert redrive(settings, "--dry-run") == 0
    assert "would put" in capsys.readouterr().out
    assert keys_of(stream_records(aws, settings)) == in_stream  # a dry run puts nothing
    assert redrive(settings) == 0
    out = capsys.readouterr().out
    after = keys_of(stream_records(aws, settings))
    duplicated = {key for key, count in after.items() if count > 1}
    with capsys.disabled():
        print(f"{report}; redrive: {out.splitlines()[-1]}; {len(duplicated)} duplicates")
    assert set(after) == set(expected)
    assert duplicated <= unknown
    assert dead_letters(aws, settings, "producer") == []
    assert dead_letters(aws, settings, "producer-redriven")

    # A second run puts nothing.
    assert redrive(settings) == 0
    assert "put 0 Kinesis records" in capsys.readouterr().out
    assert keys_of(stream_records(aws, settings)) == after


def test_partition_of_kinesis_and_s3_falls_back_to_a_local_file_and_redrive_reads_it(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = provisioned(aws_settings, aws, 2)
    expected = {(p["s"], p["E"]) for p in map(payload, range(MESSAGES))}
    local = tmp_path / "dead-letters"
    code, elapsed, producer = run_partitioned_producer(
        settings, tmp_path, kinesis_puts_and_dead_letters, DEAD_LETTER_DIR=str(local)
    )
    with capsys.disabled():
        print(f"\nexit {code} {elapsed:.2f}s after SIGTERM under a Kinesis and S3 partition")
    assert elapsed < EXIT_BOUND, elapsed
    assert code == EXIT_LOCAL_DEAD_LETTERS, producer.messages()[-5:]
    files = sorted(local.glob("producer-*.jsonl"))
    assert len(files) == 1
    assert any(str(files[0]) in message for message in producer.messages())

    in_stream = keys_of(stream_records(aws, settings))
    in_s3, _ = undelivered_keys(s3_lines(aws, settings, "producer"))
    in_file, _ = undelivered_keys(files[0].read_bytes().splitlines())
    assert set(in_stream) | set(in_s3) | set(in_file) == expected

    assert redrive(settings, "--file", str(files[0])) == 0
    assert redrive(settings) == 0  # and whatever reached S3 before the partition
    out = capsys.readouterr().out
    with capsys.disabled():
        print(out)
    assert set(keys_of(stream_records(aws, settings))) == expected
    assert not files[0].exists() and files[0].with_name(files[0].name + ".redriven").exists()
