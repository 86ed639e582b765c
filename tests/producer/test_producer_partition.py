"""The producer's Kinesis edge under a network partition: SIGTERM exits in bounded time, every
record is in Kinesis or a dead letter, and `crypto-live redrive` completes the stream.

A FaultProxy between the producer and moto holds PutRecords (and in the second case S3's
dead-letter writes) without an answer, as a partition does: accepted, read, never answered.
In the third the first held PutRecords is applied upstream and only its answer is lost, so
Kinesis holds records that are also dead-lettered with an unknown outcome: redrive must find
them in the stream and put only the rest, and both consumer groups write each record once.
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
from tests.support.fault_proxy import FaultProxy, Match
from tests.support.pipeline import (
    ServiceProcess,
    count_items,
    latest_event_times,
    launch_consumer,
    producer_env,
    provisioned,
    wait_until,
)
from tests.support.system import (
    S3_WINDOW,
    ExchangeThread,
    as_record,
    comparable,
    dead_letters,
    envelope,
    exact,
    header,
    history_of,
    history_table,
    operation,
    payload,
    s3_objects,
    s3_rows,
    scrape,
    stop_all,
    stream_records,
    until,
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


class FirstCalls:
    """Forward (apply) the first ``count`` calls a partition holds, first attempts only: the
    answers are lost. botocore's retries of a call share its invocation id and are held
    unapplied, as a later call is (a retry applied too would be a duplicate the producer made
    itself, before any redrive)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.invocations: set[str] = set()

    def __call__(self, method: str, path: str, headers: dict[str, str]) -> bool:
        first_attempt = "attempt=1;" in header(headers, "amz-sdk-request") + ";"
        if not first_attempt or len(self.invocations) >= self.count:
            return False
        self.invocations.add(header(headers, "amz-sdk-invocation-id"))
        return True


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
    settings: Settings,
    tmp_path: Path,
    match: Any,
    forward: bool | Match = False,
    **env: str,
) -> tuple[int, float, ServiceProcess]:
    """Send MESSAGES through a producer, partition AWS by ``match`` (applying the held calls
    ``forward`` picks) halfway, SIGTERM once all were received; (exit code, seconds from
    SIGTERM to exit, the process)."""
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
            proxy.partition(match, forward)
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
    assert not duplicated  # nothing held was applied: no unknown-outcome record was there
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


def test_applied_but_unanswered_puts_are_found_by_redrive_and_every_record_lands_once(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = provisioned(aws_settings, aws, 4)
    sent = [payload(i) for i in range(MESSAGES)]
    expected = {(p["s"], p["E"]) for p in sent}
    forward = FirstCalls(1)
    code, elapsed, producer = run_partitioned_producer(settings, tmp_path, kinesis_puts, forward)
    assert elapsed < EXIT_BOUND, elapsed
    assert code == EXIT_UNDELIVERED, producer.messages()[-5:]
    assert len(forward.invocations) == 1

    # The applied call's records are in Kinesis and in UNANSWERED dead letters too.
    in_stream = keys_of(stream_records(aws, settings))
    parked, unknown = undelivered_keys(s3_lines(aws, settings, "producer"))
    landed = unknown & set(in_stream)
    assert landed, "no applied-but-unanswered record"
    assert set(in_stream) | set(parked) == expected
    assert max(in_stream.values()) == 1

    assert redrive(settings, "--dry-run") == 0
    dry = capsys.readouterr().out
    assert f"{len(landed)} user records whose outcome was unknown were found" in dry, dry
    assert keys_of(stream_records(aws, settings)) == in_stream
    assert redrive(settings) == 0
    out = capsys.readouterr().out
    records = stream_records(aws, settings)
    after = keys_of(records)
    duplicates = sum(after.values()) - len(after)
    with capsys.disabled():
        print(
            f"\n{sum(in_stream.values())} in Kinesis, {sum(parked.values())} in dead letters, "
            f"{len(unknown)} with an unknown outcome of which {len(landed)} were in Kinesis; "
            f"{out.splitlines()[-1]}; {duplicates} duplicates"
        )
    assert f"({sum(parked.values()) - len(landed)} user records)" in out, out
    assert duplicates == 0
    assert sorted(map(comparable, records)) == sorted(map(as_record, sent))
    assert set(after) == expected
    assert dead_letters(aws, settings, "producer") == []
    assert redrive(settings) == 0  # idempotent: the objects were moved
    assert "put 0 Kinesis records" in capsys.readouterr().out

    # Both consumer groups write every record exactly once.
    newest = {s: max(p["E"] for p in sent if p["s"] == s) for s in {p["s"] for p in sent}}
    consumers = [
        launch_consumer(settings, "dynamodb", tmp_path / "dynamodb.log"),
        launch_consumer(settings, "s3", tmp_path / "s3.log", **S3_WINDOW),
    ]
    try:
        latest = settings.dynamo_latest_table_name
        until(consumers, lambda: count_items(aws, settings.dynamo_table_name) >= MESSAGES, 90)
        until(consumers, lambda: len(s3_rows(aws, settings)) >= MESSAGES, 90)
        until(consumers, lambda: latest_event_times(aws, latest) == newest, 30)
        codes = [consumer.terminate() for consumer in consumers]
    finally:
        stop_all(*consumers)
    assert codes == [0, 0]
    assert history_table(aws, settings.dynamo_table_name) == history_of(settings, records)
    assert latest_event_times(aws, latest) == newest
    assert sorted(map(exact, s3_rows(aws, settings))) == sorted(map(exact, records))
