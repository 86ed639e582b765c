"""The S3 sink against moto S3 over HTTP: layout, replay after a crash, duplicates, PUT failures."""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from consumers.engine.records import ConsumedRecord, Position
from consumers.routing import Route
from consumers.s3.batching import SegmentCutter, epoch_ms
from consumers.s3.format import JsonlGzipFormat
from consumers.s3.processor import S3Processor, S3ProcessorFactory
from consumers.s3.writer import (
    BatchWriter,
    MemoryBatchWriter,
    S3BatchWriter,
    S3PutRejectedError,
    S3PutRetriesExhaustedError,
)
from core.aws import AwsClients
from core.backoff import Backoff
from core.metrics import Counters, Metrics
from core.settings import Settings
from crypto_live.provision import provision

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PREFIX = "batch_jsonl"
SYMBOLS = [f"SYM{i:02d}USDT" for i in range(20)]
START_MS = epoch_ms(datetime(2026, 11, 23, 3, 58, 40, tzinfo=UTC))  # the run crosses hour=04
SEQ0 = 49_650_000_000_000_000_000_000_000_000_000_000_000_000_000_000
FAST_BACKOFF = Backoff(base=0.001, cap=0.01)
KEY_RE = re.compile(
    rf"^{PREFIX}/year=(\d{{4}})/month=(\d\d)/day=(\d\d)/hour=(\d\d)/"
    r"(shardId-\d{12})-(\d+)-(\d+)\.jsonl\.gz$"
)


def shard_id(shard: int) -> str:
    return f"shardId-{shard:012d}"


def shard_stream(
    shard: int, count: int, *, seed: int, fast_phases: bool = True, retries: float = 0.0
) -> list[ConsumedRecord]:
    """A shard as the engine hands it over: KPL aggregates (several sub-sequences under one
    sequence number), phases fast enough for count cuts and slow enough for window cuts, and
    with ``retries`` > 0 producer retries (same event, next sequence number, same arrival)."""
    rng = random.Random(seed)
    out: list[ConsumedRecord] = []
    arrival, sequence, n = START_MS + shard * 777, SEQ0 + shard * 10**40, 0
    while len(out) < count:
        fast = fast_phases and (len(out) // 1500) % 2 == 0
        arrival += rng.randint(1, 6) if fast else rng.randint(20, 60)
        sequence += rng.randint(2, 10**6)
        users = rng.choice((1, 1, 4))
        for sub in range(users):
            fields = ticker(rng, n * 2 + shard)
            position = Position(sequence, sub if users > 1 else 0)
            out.append(ConsumedRecord(shard_id(shard), position, at(arrival), "pk", fields))
            n += 1
        if users == 1 and rng.random() < retries:
            retry = Position(sequence + 1, 0)
            out.append(ConsumedRecord(shard_id(shard), retry, at(arrival), "pk", fields))
    return out[:count]


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def ticker(rng: random.Random, n: int) -> dict[str, Any]:
    symbol = SYMBOLS[n % len(SYMBOLS)]
    event_time = START_MS + n
    price = lambda: f"{rng.randint(0, 10**6)}.{rng.randint(0, 10**8 - 1):08d}"  # noqa: E731
    return {
        "event_type": "24hrMiniTicker",
        "event_time": event_time,
        "stream_type": f"{symbol.lower()}@miniTicker",
        "symbol": symbol,
        "close_price": price(),
        "open_price": price(),
        "high_price": price(),
        "low_price": price(),
        "base_volume": price(),
        "quote_volume": price(),
        "iso_timestamp": at(event_time).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "received_at": event_time * 1000 + 1234,
    }


def chunked(records: Sequence[ConsumedRecord], size: int) -> Iterator[Sequence[ConsumedRecord]]:
    for i in range(0, len(records), size):
        yield records[i : i + size]


async def drive(
    processor: S3Processor,
    records: Sequence[ConsumedRecord],
    *,
    end: Literal["tip", "shard_end", "none"] = "tip",
    chunk: int = 500,
) -> list[Position]:
    """Play the engine: GetRecords-sized chunks, then a late tip or SHARD_END."""
    results = [await processor.process(part) for part in chunked(records, chunk)]
    checkpoints = [position for position in results if position is not None]
    if end == "tip":
        final = await processor.at_tip(epoch_ms(records[-1].arrival) + 60_000)
    elif end == "shard_end":
        final = await processor.shard_ended()
    else:
        final = None
    if final is not None:
        checkpoints.append(final)
    return checkpoints


def s3_objects(s3: Any, bucket: str, prefix: str = PREFIX) -> dict[str, bytes]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def empty_bucket(s3: Any, bucket: str) -> None:
    for key in s3_objects(s3, bucket):
        s3.delete_object(Bucket=bucket, Key=key)


def key_match(key: str) -> re.Match[str]:
    match = KEY_RE.match(key)
    assert match, f"key not in the designed layout: {key}"
    return match


def rows_by_shard(objects: dict[str, bytes]) -> dict[str, list[dict[str, Any]]]:
    """Every object's rows, per shard, objects in first-position order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for key in sorted(objects, key=lambda k: (key_match(k)[5], int(key_match(k)[6]))):
        lines = gzip.decompress(objects[key]).decode().splitlines()
        out.setdefault(key_match(key)[5], []).extend(map(json.loads, lines))
    return out


@pytest.fixture
def bucket(aws_settings: Settings, aws: AwsClients) -> str:
    provision(aws_settings, aws)
    return aws_settings.s3_bucket


def factory(
    writer: BatchWriter, metrics: Metrics | None = None, **limits: int
) -> S3ProcessorFactory:
    return S3ProcessorFactory(writer, PREFIX, metrics=metrics, **limits)


def test_two_shards_land_exactly_once_with_designed_keys(aws: AwsClients, bucket: str) -> None:
    metrics = Metrics("s3")
    make = factory(S3BatchWriter(aws.s3, bucket, metrics), metrics)
    streams = {shard: shard_stream(shard, 10_000, seed=shard) for shard in (0, 1)}

    async def main() -> list[list[Position]]:
        return await asyncio.gather(
            drive(make(shard_id(0)), streams[0], end="tip"),
            drive(make(shard_id(1)), streams[1], end="shard_end"),
        )

    checkpoints = asyncio.run(main())
    for shard, positions in enumerate(checkpoints):
        assert positions == sorted(positions)
        assert positions[-1] == streams[shard][-1].position

    objects = s3_objects(aws.s3, bucket)
    rows = rows_by_shard(objects)
    assert rows == {shard_id(s): [r.record for r in streams[s]] for s in (0, 1)}
    assert metrics.value(Counters.S3_OBJECTS_WRITTEN) == len(objects)
    assert metrics.value(Counters.S3_RECORDS_WRITTEN) == 20_000

    by_event = {(r.shard_id, r.record["event_time"]): r for s in (0, 1) for r in streams[s]}
    hours, sizes = set(), []
    for key, body in objects.items():
        match = key_match(key)
        lines = gzip.decompress(body).splitlines()
        sizes.append(len(lines))
        first = by_event[(match[5], json.loads(lines[0])["event_time"])]
        assert (int(match[6]), int(match[7])) == (
            first.position.sequence,
            first.position.sub_sequence,
        )
        assert match.group(1, 2, 3, 4) == tuple(first.arrival.strftime("%Y %m %d %H").split())
        hours.add(match[4])
        head = aws.s3.head_object(Bucket=bucket, Key=key)
        assert (head["ContentEncoding"], head["ContentType"]) == ("gzip", "application/x-ndjson")
    assert hours == {"03", "04"}
    assert max(sizes) == 1000 and min(sizes) < 1000  # both count cuts and window cuts happened


@pytest.mark.skipif(
    shutil.which("jq") is None or shutil.which("gzip") is None,
    reason="jq or gzip not installed; the Python gzip/json checks above still run",
)
def test_objects_read_with_gzip_and_jq(aws: AwsClients, bucket: str, tmp_path: Any) -> None:
    make = factory(S3BatchWriter(aws.s3, bucket, Metrics("s3")), max_rows=300)
    records = shard_stream(0, 2_000, seed=5)
    asyncio.run(drive(make(shard_id(0)), records, end="shard_end"))
    decoded: list[dict[str, Any]] = []
    for key, body in sorted(s3_objects(aws.s3, bucket).items()):
        path = tmp_path / key.rsplit("/", 1)[1]
        path.write_bytes(body)
        plain = subprocess.run(["gzip", "-dc", str(path)], capture_output=True, check=True)
        out = subprocess.run(["jq", "-c", "."], input=plain.stdout, capture_output=True, check=True)
        decoded.extend(json.loads(line) for line in out.stdout.splitlines())
    assert sorted(decoded, key=lambda r: r["event_time"]) == [r.record for r in records]


@pytest.mark.parametrize("stop", ["abandon", "shutdown"])
def test_crash_then_replay_writes_the_clean_runs_objects(
    aws: AwsClients, bucket: str, stop: str
) -> None:
    metrics = Metrics("s3")
    make = factory(S3BatchWriter(aws.s3, bucket, metrics), metrics, max_rows=400)
    records = shard_stream(0, 8_000, seed=11)
    asyncio.run(drive(make(shard_id(0)), records))
    clean = s3_objects(aws.s3, bucket)
    empty_bucket(aws.s3, bucket)
    clean_puts = metrics.value(Counters.S3_OBJECTS_WRITTEN)

    async def crash_and_resume() -> None:
        first = make(shard_id(0))
        checkpoints = await drive(first, records[:5_123], end="none", chunk=333)
        assert first.buffered > 0  # an open batch is lost with the worker
        if stop == "abandon":
            first.abandon()
            # The worker died between a PUT and its checkpoint: resume from an older one.
            resume_after = checkpoints[-3]
        else:
            assert await first.shutdown() is None
            resume_after = checkpoints[-1]
        rest = [r for r in records if r.position > resume_after]
        await drive(make(shard_id(0)), rest)

    asyncio.run(crash_and_resume())
    assert s3_objects(aws.s3, bucket) == clean
    rewritten = metrics.value(Counters.S3_OBJECTS_WRITTEN) - 2 * clean_puts
    if stop == "abandon":
        assert rewritten >= 2  # the batches between the lost and the older checkpoint
    else:
        assert rewritten == 0


def test_injected_duplicates_appear_once(aws: AwsClients, bucket: str) -> None:
    metrics = Metrics("s3")
    make = factory(S3BatchWriter(aws.s3, bucket, metrics), metrics)
    records = shard_stream(0, 5_000, seed=3, fast_phases=False, retries=0.15)
    seen: set[tuple[str, int]] = set()
    unique = []
    for record in records:
        key = (record.record["stream_type"], record.record["event_time"])
        if key not in seen:
            seen.add(key)
            unique.append(record.record)
    injected = len(records) - len(unique)
    assert injected > 100
    asyncio.run(drive(make(shard_id(0)), records))
    assert rows_by_shard(s3_objects(aws.s3, bucket)) == {shard_id(0): unique}
    assert metrics.value(Counters.S3_DUPLICATES_DROPPED) == injected


class FlakyS3:
    """The real S3 client whose first puts fail the way S3 and networks do."""

    def __init__(self, real: Any, failures: Sequence[Exception]) -> None:
        self._real = real
        self._failures = list(failures)
        self.calls = 0

    def put_object(self, **params: Any) -> Any:
        self.calls += 1
        if self._failures:
            raise self._failures.pop(0)
        return self._real.put_object(**params)


def client_error(code: str, status: int) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": code}}
    response["ResponseMetadata"] = {"HTTPStatusCode": status}
    return ClientError(response, "PutObject")


def test_transient_put_failures_are_retried_and_nothing_is_lost(
    aws: AwsClients, bucket: str
) -> None:
    failures = [
        client_error("SlowDown", 503),
        client_error("InternalError", 500),
        EndpointConnectionError(endpoint_url="http://s3"),
        client_error("Whatever", 503),
        client_error("RequestTimeout", 400),
    ]
    flaky = FlakyS3(aws.s3, failures)
    metrics = Metrics("s3")
    make = factory(S3BatchWriter(flaky, bucket, metrics, backoff=FAST_BACKOFF), metrics)
    records = shard_stream(1, 6_000, seed=8)
    asyncio.run(drive(make(shard_id(1)), records, end="shard_end"))
    assert rows_by_shard(s3_objects(aws.s3, bucket)) == {shard_id(1): [r.record for r in records]}
    assert metrics.value(Counters.S3_PUT_RETRIES) == len(failures)
    assert flaky.calls == metrics.value(Counters.S3_OBJECTS_WRITTEN) + len(failures)


def test_failed_put_never_lets_the_checkpoint_pass_its_batch(aws: AwsClients, bucket: str) -> None:
    flaky = FlakyS3(aws.s3, [client_error("AccessDenied", 403)])
    writer = S3BatchWriter(flaky, bucket, Metrics("s3"), backoff=FAST_BACKOFF)
    processor = factory(writer, max_rows=100)(shard_id(0))
    records = shard_stream(0, 1_000, seed=2)

    async def main() -> None:
        with pytest.raises(S3PutRejectedError):
            await processor.process(records[:250])
        assert flaky.calls == 1  # not retried: it cannot succeed
        assert s3_objects(aws.s3, bucket) == {}
        # If the engine carries on, the unwritten batches go first, in order.
        assert await processor.process(records[250:]) is not None
        assert await processor.shard_ended() == records[-1].position

    asyncio.run(main())
    assert rows_by_shard(s3_objects(aws.s3, bucket)) == {shard_id(0): [r.record for r in records]}


def test_retries_give_up_with_a_retriable_error(aws: AwsClients, bucket: str) -> None:
    flaky = FlakyS3(aws.s3, [client_error("SlowDown", 503)] * 1000)
    writer = S3BatchWriter(flaky, bucket, Metrics("s3"), backoff=FAST_BACKOFF, give_up_after=0.05)
    with pytest.raises(S3PutRetriesExhaustedError) as caught:
        writer.put("k", b"x")
    assert caught.value.retriable
    assert flaky.calls > 1


def test_sse_parameters_reach_s3(aws: AwsClients, bucket: str) -> None:
    S3BatchWriter(aws.s3, bucket, Metrics("s3"), sse="AES256").put("a.gz", b"x")
    assert aws.s3.head_object(Bucket=bucket, Key="a.gz")["ServerSideEncryption"] == "AES256"
    kms = S3BatchWriter(aws.s3, bucket, Metrics("s3"), sse="aws:kms", kms_key_id="alias/lake")
    kms.put("b.gz", b"x")
    head = aws.s3.head_object(Bucket=bucket, Key="b.gz")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", "alias/lake")
    with pytest.raises(ValueError, match="sse"):
        S3BatchWriter(aws.s3, bucket, Metrics("s3"), sse="des")
    with pytest.raises(ValueError, match="kms_key_id"):
        S3BatchWriter(aws.s3, bucket, Metrics("s3"), kms_key_id="alias/lake")


# One contract, two writers: the fake must behave like S3 where the processor can tell.
Reader = Callable[[str], tuple[bytes, str, str]]


@pytest.fixture(params=["memory", "s3"])
def writer_and_reader(request: pytest.FixtureRequest) -> tuple[BatchWriter, Reader]:
    if request.param == "memory":
        memory = MemoryBatchWriter()

        def read_memory(key: str) -> tuple[bytes, str, str]:
            stored = memory.objects[key]
            return stored.body, stored.content_type, stored.content_encoding

        return memory, read_memory
    aws: AwsClients = request.getfixturevalue("aws")
    bucket_name: str = request.getfixturevalue("bucket")

    def read_s3(key: str) -> tuple[bytes, str, str]:
        got = aws.s3.get_object(Bucket=bucket_name, Key=key)
        return got["Body"].read(), got["ContentType"], got["ContentEncoding"]

    return S3BatchWriter(aws.s3, bucket_name, Metrics("s3")), read_s3


def test_contract_put_stores_body_and_headers(
    writer_and_reader: tuple[BatchWriter, Reader],
) -> None:
    writer, read = writer_and_reader
    body = JsonlGzipFormat().compress(b'{"a":1}\n')
    writer.put("p/x.jsonl.gz", body)
    assert read("p/x.jsonl.gz") == (body, "application/x-ndjson", "gzip")


def test_contract_same_key_overwrites(writer_and_reader: tuple[BatchWriter, Reader]) -> None:
    writer, read = writer_and_reader
    writer.put("p/y.jsonl.gz", b"first")
    writer.put("p/y.jsonl.gz", b"second")
    assert read("p/y.jsonl.gz")[0] == b"second"


def test_processor_returns_only_written_batch_ends() -> None:
    writer = MemoryBatchWriter()
    fmt = JsonlGzipFormat()
    cutter = SegmentCutter({Route.TICKER: fmt.line}, max_rows=70)
    processor = S3Processor(shard_id(0), writer, cutter, fmt, {Route.TICKER: PREFIX})
    records = shard_stream(0, 3_000, seed=9)

    async def main() -> None:
        fed, checkpoint = 0, Position(0)
        for part in chunked(records, 97):
            checkpoint = await processor.process(part) or checkpoint
            fed += len(part)
            written = [
                row["event_time"] for row in rows_by_shard(writer.bodies()).get(shard_id(0), [])
            ]
            durable = [r.record["event_time"] for r in records if r.position <= checkpoint]
            assert written == durable  # the checkpoint is exactly the last written row
            assert processor.buffered == fed - len(written)
        assert processor.buffered > 0
        assert await processor.shutdown() is None  # the open batch is not written early
        assert processor.buffered == 0

    asyncio.run(main())
    assert writer.puts == len(writer.objects)


def test_memory_writer_failure_keeps_the_batch_pending() -> None:
    writer = MemoryBatchWriter(fail_first=1)
    processor = S3ProcessorFactory(writer, PREFIX, max_rows=10)(shard_id(0))
    records = shard_stream(0, 25, seed=1)  # all inside one 10 s window

    async def main() -> None:
        with pytest.raises(S3PutRetriesExhaustedError):
            await processor.process(records[:15])
        assert processor.buffered == 15
        assert writer.objects == {}
        assert await processor.process(records[15:]) == records[19].position
        assert await processor.shard_ended() == records[24].position

    asyncio.run(main())
    assert rows_by_shard(writer.bodies()) == {shard_id(0): [r.record for r in records]}
    assert len(writer.objects) == 3


def test_factory_makes_independent_processors() -> None:
    make = S3ProcessorFactory(MemoryBatchWriter(), PREFIX, max_rows=5, window_seconds=30)
    first, second = make(shard_id(0)), make(shard_id(1))
    assert first is not second and first.shard_id == shard_id(0)
    asyncio.run(first.process(shard_stream(0, 3, seed=1)))
    assert (first.buffered, second.buffered) == (3, 0)
