"""Publisher close and error handling, and the producer's dead-letter buffer, over in-memory
fakes: puts that never answer, permanent errors, S3 down. No test waits on the wall clock
beyond a small injected deadline; every other wait is on a condition."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from core.backoff import Backoff
from core.dead_letters import DeadLetter, MemoryDeadLetterStore, parse_dead_letter_line
from core.metrics import Metrics
from producer.aggregation import PutEntry
from producer.publisher import Publisher
from producer.redrive import put_entries, sort_lines
from producer.service import EXIT_LOCAL_DEAD_LETTERS, ProducerService
from producer.shard_map import ShardMap
from producer.undelivered import (
    NOT_SENT,
    RETRIED_UNANSWERED,
    UNANSWERED,
    UNDELIVERED_PREFIX,
    Undelivered,
    entry_of,
)
from schemas.codec import default_codec
from tests.support.pipeline import make_record

pytestmark = pytest.mark.timeout(30)

MAX_HASH = 2**128 - 1
FAST = Backoff(base=0.001, cap=0.001)


def shard_map(count: int = 2) -> ShardMap:
    step = (MAX_HASH + 1) // count
    return ShardMap.from_list_shards(
        [
            {
                "ShardId": f"shardId-{i}",
                "HashKeyRange": {
                    "StartingHashKey": str(i * step),
                    "EndingHashKey": str(MAX_HASH if i == count - 1 else (i + 1) * step - 1),
                },
                "SequenceNumberRange": {"StartingSequenceNumber": "0"},
            }
            for i in range(count)
        ]
    )


def ok(entries: Sequence[PutEntry]) -> dict[str, Any]:
    return {
        "Records": [
            {"SequenceNumber": str(i), "ShardId": e.shard_id} for i, e in enumerate(entries)
        ]
    }


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "no"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutRecords",
    )


class FakeWriter:
    """An in-memory StreamWriter; ``answer(call_number, entries)`` decides each put, and
    ``hang`` makes every put block until ``release`` is set (a partition)."""

    def __init__(self, answer: Callable[[int, Sequence[PutEntry]], dict[str, Any]] | None = None):
        self.answer = answer or (lambda call, entries: ok(entries))
        self.hang = False
        self.release = threading.Event()
        self.calls = 0
        self.put: list[PutEntry] = []
        self.sent: list[PutEntry] = []
        self.first_size = 0
        self._lock = threading.Lock()

    def list_shards(self) -> ShardMap:
        return shard_map()

    def put_records(self, entries: Sequence[PutEntry]) -> dict[str, Any]:
        with self._lock:
            self.calls += 1
            call = self.calls
            self.sent.extend(entries)
            if call == 1:
                self.first_size = len(entries)
        if self.hang:
            self.release.wait()
            raise ConnectionError("partition healed, request dropped")
        response = self.answer(call, entries)
        self.put.extend(
            e for e, r in zip(entries, response["Records"], strict=True) if "ErrorCode" not in r
        )
        return response


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.001)


def records(count: int) -> list[tuple[str, bytes]]:
    codec = default_codec()
    return [(r["symbol"], codec.encode(r)) for r in map(make_record, range(count))]


def user_records(items: list[Undelivered]) -> int:
    return sum(item.entry.user_records for item in items)


# -- close under a partition -------------------------------------------------------------------


def test_close_returns_on_its_deadline_with_unanswered_entries_as_unknown_outcome() -> None:
    writer = FakeWriter()
    writer.hang = True

    async def scenario() -> tuple[list[Undelivered], int]:
        publisher = Publisher(writer, Metrics("t"), max_bytes=2048, max_in_flight=1, backoff=FAST)
        await publisher.start()
        for key, data in records(200):
            await publisher.add(key, data)
        await until(lambda: writer.calls >= 1)  # one request hangs, the rest waits behind it
        undelivered = await publisher.close(0.05)
        return undelivered, publisher.buffered_records

    try:
        undelivered, buffered = asyncio.run(scenario())
    finally:
        writer.release.set()
    assert user_records(undelivered) == 200  # every record handed back, none lost
    assert buffered == 0
    unknown = [item for item in undelivered if item.outcome_unknown]
    assert unknown and all(item.reason == UNANSWERED for item in unknown)
    assert {item.reason for item in undelivered if not item.outcome_unknown} == {NOT_SENT}
    assert writer.calls == 1


class SlowBackoff(Backoff):
    """Every retry waits a minute: what failed stays queued past a short close deadline."""

    def delay(self, attempt: int, rand: Callable[[], float] = lambda: 1.0) -> float:
        return 60.0


def test_entries_of_an_attempt_that_timed_out_stay_outcome_unknown_when_not_put_again() -> None:
    """A read timeout leaves a request's outcome unknown even though botocore gave up: if its
    entries are still waiting at the deadline, their dead letters must say so (redrive then
    looks them up in the stream instead of re-putting a possible duplicate)."""

    def answer(call: int, entries: Sequence[PutEntry]) -> dict[str, Any]:
        raise ReadTimeoutError(endpoint_url="https://kinesis.example")

    writer = FakeWriter(answer)

    async def scenario() -> list[Undelivered]:
        publisher = Publisher(
            writer, Metrics("t"), max_bytes=2048, max_in_flight=1, backoff=SlowBackoff()
        )
        await publisher.start()
        for key, data in records(200):
            await publisher.add(key, data)
        await until(lambda: writer.calls >= 1)
        return await publisher.close(0.2)

    undelivered = asyncio.run(scenario())
    timed_out = {id(entry) for entry in writer.sent}  # the one request, backed off for 60 s
    assert writer.calls == 1 and timed_out
    assert user_records(undelivered) == 200
    unknown = {id(item.entry) for item in undelivered if item.outcome_unknown}
    assert unknown == timed_out
    assert {item.reason for item in undelivered if item.outcome_unknown} == {RETRIED_UNANSWERED}
    assert {item.reason for item in undelivered if not item.outcome_unknown} == {NOT_SENT}


def test_undelivered_dead_letter_keeps_the_whole_entry() -> None:
    entry = PutEntry("shardId-1", "BTCUSDT", b"\xf3\x89\x9a\xc2binary", "1234", 7)
    letter = Undelivered(entry, UNANSWERED, True).dead_letter(1_700_000_000_000_000)
    from core.dead_letters import dead_letter_line

    parsed = parse_dead_letter_line(dead_letter_line(letter, "producer"))
    assert parsed.reason.startswith(UNDELIVERED_PREFIX)
    assert entry_of(parsed) == entry
    assert json.loads(dead_letter_line(letter, "producer"))["put_entry"]["outcome_unknown"]


# -- errors a retry cannot fix -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ResourceNotFoundException", 400),
        ("AccessDeniedException", 400),
        ("KMSAccessDeniedException", 400),
        ("ValidationException", 400),
    ],
)
def test_a_permanent_request_error_is_dead_lettered_not_retried(code: str, status: int) -> None:
    def answer(call: int, entries: Sequence[PutEntry]) -> dict[str, Any]:
        raise client_error(code, status)

    writer = FakeWriter(answer)

    async def live() -> tuple[list[Undelivered], list[Undelivered]]:
        publisher = Publisher(writer, Metrics("t"), max_buffered_time=0.001, backoff=FAST)
        await publisher.start()
        for key, data in records(20):
            await publisher.add(key, data)
        await until(lambda: user_records(publisher._rejected) == 20)
        taken = publisher.take_rejected()
        return taken, await publisher.close(1.0)

    taken, left = asyncio.run(live())
    assert user_records(taken) == 20 and left == []
    assert all(code in item.reason and item.reason.startswith(UNDELIVERED_PREFIX) for item in taken)
    assert len(writer.sent) == len(taken)  # each sent once: no retry


def test_per_record_kms_errors_are_dead_lettered_and_throttled_records_retried() -> None:
    def answer(call: int, entries: Sequence[PutEntry]) -> dict[str, Any]:
        if call > 1:
            return ok(entries)
        results: list[dict[str, Any]] = [
            {"ErrorCode": "KMSAccessDeniedException", "ErrorMessage": "key"},
            {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow"},
        ]
        return {"Records": results[: len(entries)], "FailedRecordCount": len(entries)}

    writer = FakeWriter(answer)

    async def scenario() -> tuple[list[Undelivered], list[Undelivered]]:
        publisher = Publisher(writer, Metrics("t"), backoff=FAST)
        await publisher.start()
        for key, data in records(40):
            await publisher.add(key, data)
        left = await publisher.close(5.0)  # waits on a condition, returns as soon as it holds
        return left, publisher.take_rejected()

    left, _ = asyncio.run(scenario())
    assert len(left) == 1 and "KMSAccessDeniedException" in left[0].reason
    assert sum(e.user_records for e in writer.put) + user_records(left) == 40


def test_throttling_and_5xx_request_errors_are_retried() -> None:
    def answer(call: int, entries: Sequence[PutEntry]) -> dict[str, Any]:
        if call == 1:
            raise client_error("ProvisionedThroughputExceededException", 400)
        if call == 2:
            raise client_error("InternalFailure", 500)
        return ok(entries)

    writer = FakeWriter(answer)

    async def scenario() -> list[Undelivered]:
        publisher = Publisher(writer, Metrics("t"), max_in_flight=1, backoff=FAST)
        await publisher.start()
        for key, data in records(10):
            await publisher.add(key, data)
        return await publisher.close(5.0)

    assert asyncio.run(scenario()) == []
    assert sum(e.user_records for e in writer.put) == 10 and writer.calls >= 3


def test_redrive_puts_entries_retrying_throttling_and_reports_refused() -> None:
    entries = [PutEntry("", f"k{i}", bytes([i]), None, 1) for i in range(3)]

    def answer(call: int, batch: Sequence[PutEntry]) -> dict[str, Any]:
        if call == 1:
            results: list[dict[str, Any]] = [
                {"SequenceNumber": "1", "ShardId": "shardId-0"},
                {"ErrorCode": "ProvisionedThroughputExceededException"},
                {"ErrorCode": "KMSNotFoundException", "ErrorMessage": "gone"},
            ]
            return {"Records": results}
        return ok(batch)

    writer = FakeWriter(answer)
    refused = put_entries(writer, entries, sleep=lambda seconds: None)
    assert [(e.partition_key, why) for e, why in refused] == [("k2", "KMSNotFoundException: gone")]
    assert [e.partition_key for e in writer.put] == ["k0", "k1"]


def test_redrive_sorts_undelivered_records_from_malformed_input() -> None:
    from core.dead_letters import dead_letter_line

    entry = PutEntry("shardId-0", "ETHUSDT", b"agg", None, 3)
    lines = [
        dead_letter_line(Undelivered(entry, NOT_SENT).dead_letter(1), "producer"),
        dead_letter_line(DeadLetter(b"{}", "missing field 'E'", 1), "producer"),
        b"not json",
    ]
    sorted_lines = sort_lines(lines)
    assert sorted_lines.entries == [entry] and sorted_lines.user_records == 3
    assert dict(sorted_lines.reasons) == {
        "missing field 'E'": 1,
        "unreadable dead-letter line": 1,
    }


# -- the dead-letter buffer ----------------------------------------------------------------------


class FlakyStore(MemoryDeadLetterStore):
    """S3 down until ``up`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.up = threading.Event()
        self.failures = 0

    def put(self, source: str, letters: list[DeadLetter], name: str | None = None) -> str:
        if not self.up.is_set():
            self.failures += 1
            raise ConnectionError("S3 unreachable")
        return super().put(source, letters, name)


class BadInput:
    """``count`` malformed messages, then nothing until stopped; counts what was taken."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.taken = 0

    async def messages(self, stop: asyncio.Event) -> AsyncIterator[Any]:
        for index in range(self.count):
            if stop.is_set():
                return
            self.taken += 1
            yield {"stream": "btcusdt@miniTicker", "data": {"e": "x", "pad": "p" * 500, "i": index}}
        await stop.wait()


def service(source: BadInput, store: MemoryDeadLetterStore, **options: Any) -> ProducerService:
    publisher = Publisher(FakeWriter(), Metrics("t"), backoff=FAST)
    return ProducerService(
        source,
        publisher,
        default_codec(),
        store,
        Metrics("t"),
        queue_size=10,
        dead_letter_flush_seconds=0.01,
        **options,
    )


def test_dead_letter_buffer_is_bounded_and_pushes_back_while_s3_is_down() -> None:
    store, source = FlakyStore(), BadInput(2_000)
    producer = service(source, store, dead_letter_max_bytes=8 * 1024)

    async def scenario() -> tuple[int, int, int]:
        stop = asyncio.Event()
        run = asyncio.create_task(producer.run(stop))
        await until(lambda: store.failures >= 3)
        await until(lambda: producer._dead_bytes >= 8 * 1024)
        taken_while_down = source.taken
        peak = producer._dead_bytes
        store.up.set()
        await until(lambda: source.taken == 2_000 and not producer._dead_buffer)
        stop.set()
        summary = await run
        return taken_while_down, peak, summary.exit_code

    taken_while_down, peak, code = asyncio.run(scenario())
    letter_bytes = len(json.dumps({"stream": "x", "data": {"pad": "p" * 500}}))
    assert peak < 8 * 1024 + 2 * letter_bytes  # the bound, give or take the letter that hit it
    # Pushed back: the reader stopped at what the buffer and the queues hold.
    assert taken_while_down < 8 * 1024 // 500 + 10 + 5
    assert sum(len(v) for v in store.objects.values()) == 2_000
    assert code == 0


def test_shutdown_writes_dead_letters_to_a_local_file_when_s3_cannot_take_them(
    tmp_path: Path,
) -> None:
    store, source = FlakyStore(), BadInput(50)
    producer = service(source, store, dead_letter_dir=tmp_path / "dl", final_flush_seconds=0.05)

    async def scenario() -> Any:
        stop = asyncio.Event()
        run = asyncio.create_task(producer.run(stop))
        await until(lambda: source.taken == 50 and store.failures >= 1)
        stop.set()
        return await run

    summary = asyncio.run(scenario())
    assert summary.exit_code == EXIT_LOCAL_DEAD_LETTERS and summary.dead_letters_local == 50
    files = list((tmp_path / "dl").glob("producer-*.jsonl"))
    assert [str(files[0])] == [summary.local_file]
    lines = files[0].read_bytes().splitlines()
    assert len(lines) == 50 and all(parse_dead_letter_line(line).reason for line in lines)
