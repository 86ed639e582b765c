"""Klines through the producer service over in-memory fakes: each record encoded by the schema
of its type, partitioned by symbol, in order per symbol, bad klines to dead letters. No network;
the redrive check and the rotation dedupe also read klines right."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest

from consumers.engine.deaggregation import deaggregate
from core.dead_letters import MemoryDeadLetterStore, dead_letter_line
from core.metrics import Metrics
from producer.aggregation import PutEntry
from producer.publisher import Publisher
from producer.redrive import CHECK_MARGIN_US, check_from_us, sort_lines
from producer.rotation import OverlapFilter, event_key
from producer.service import ProducerService
from producer.undelivered import UNANSWERED, Undelivered
from producer.validation import validate_message
from schemas.codec import KLINE_SCHEMA, MINITICKER_SCHEMA, default_codec
from tests.producer.fakes import ScriptedSource, StreamFake, frame
from tests.producer.klines import OPEN_TIME, kline_message, kline_payload

pytestmark = pytest.mark.timeout(30)

CODEC = default_codec()
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def kline_frame(symbol: str, minute: int, *, closed: bool) -> dict[str, Any]:
    open_time = OPEN_TIME + minute * 60_000
    data = kline_payload(symbol, t=open_time, T=open_time + 59_999, x=closed, n=10 + minute)
    data["E"] = open_time + (60_000 if closed else 30_000)
    return kline_message(data)


def user_records(entry: PutEntry) -> list[tuple[str, bytes]]:
    raw = {
        "Data": entry.data,
        "PartitionKey": entry.partition_key,
        "SequenceNumber": "0",
        "ApproximateArrivalTimestamp": None,
    }
    return [(user.partition_key, user.data) for user in deaggregate(raw)]


def run_service(messages: list[Any]) -> tuple[StreamFake, MemoryDeadLetterStore, Any]:
    fake, store = StreamFake(), MemoryDeadLetterStore()
    publisher = Publisher(fake, Metrics("t"), max_bytes=2048)
    producer = ProducerService(
        ScriptedSource(messages),
        publisher,
        CODEC,
        store,
        publisher._metrics,
        dead_letter_flush_seconds=0.01,
    )
    summary = asyncio.run(producer.run(asyncio.Event()))
    return fake, store, summary


def test_klines_and_tickers_reach_kinesis_each_by_its_schema_in_order_per_symbol() -> None:
    messages: list[Any] = []
    for minute in range(20):
        for symbol in SYMBOLS:
            messages.append(frame(symbol, minute))
            messages.append(kline_frame(symbol, minute, closed=False))
            messages.append(kline_frame(symbol, minute, closed=True))
    bad = kline_message(kline_payload("BTCUSDT", i="5m"))
    fake, store, summary = run_service([*messages, bad])

    assert (summary.messages, summary.records_valid, summary.rejected) == (181, 180, 1)
    by_key: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for entry in fake.stored:
        for key, data in user_records(entry):
            by_key[key].append(CODEC.decode_typed(data))
    assert sorted(by_key) == sorted(SYMBOLS)  # the partition key stays the symbol
    for symbol, records in by_key.items():
        names = [name for name, _ in records]
        assert names == [MINITICKER_SCHEMA, KLINE_SCHEMA, KLINE_SCHEMA] * 20  # arrival order
        klines = [record for name, record in records if name == KLINE_SCHEMA]
        assert [(k["open_time"], k["closed"]) for k in klines] == [
            (OPEN_TIME + minute * 60_000, closed)
            for minute in range(20)
            for closed in (False, True)
        ]
        assert all(k["symbol"] == symbol and k["source"] == "websocket" for k in klines)
    (letter,) = [letter for letters in store.objects.values() for letter in letters]
    assert letter.reason == "unsupported interval '5m' (only 1m)"


def test_the_redrive_check_reads_the_receipt_time_of_kline_records_too() -> None:
    (record,), _ = validate_message(kline_message(kline_payload()), 1_000_000)
    data = CODEC.for_writer(KLINE_SCHEMA).encode(record)
    entry = PutEntry("shardId-0", "BTCUSDT", data, None, 1)
    letter = Undelivered(entry, UNANSWERED, True).dead_letter(10**18)  # dead-lettered much later
    file = sort_lines([dead_letter_line(letter, "producer")])

    def split(e: PutEntry) -> list[tuple[str, bytes]]:
        return [(e.partition_key, e.data)]  # a raw, unaggregated record

    assert check_from_us([file], split, CODEC) == 1_000_000 - CHECK_MARGIN_US


def test_rotation_keeps_a_closed_kline_and_the_next_minutes_first_one_of_one_event_time() -> None:
    closed = kline_frame("BTCUSDT", 0, closed=True)
    opening = kline_frame("BTCUSDT", 1, closed=False)
    opening["data"]["E"] = closed["data"]["E"]  # one event time, two events
    ticker = frame("BTCUSDT", 0)
    ticker["data"]["E"] = closed["data"]["E"]  # another stream: never the same event
    overlap = OverlapFilter(linger_seconds=1.0)
    overlap.start()
    first = [overlap.admit(event_key(m), 0.0) for m in (closed, opening, ticker)]
    again = [overlap.admit(event_key(m), 0.0) for m in (closed, opening, ticker)]
    assert first == [True, True, True]
    assert again == [False, False, False]  # the second connection's copies
    assert event_key(closed) == ("btcusdt@kline_1m", closed["data"]["E"], OPEN_TIME, True)


@pytest.mark.parametrize(
    "k", [[1], {"t": "soon", "x": True}, {"t": OPEN_TIME, "x": 1}, {"t": OPEN_TIME}]
)
def test_a_malformed_kline_or_array_element_is_never_deduplicated_and_never_crashes(
    k: object,
) -> None:
    parsed = {"stream": "btcusdt@kline_1m", "data": {"E": 5, "k": k}}
    assert event_key(parsed) is None
    array = {"stream": "!miniTicker@arr", "data": [{"s": ["A"], "E": {"x": 1}}]}
    overlap = OverlapFilter(linger_seconds=1.0)
    overlap.start()
    assert overlap.admit(event_key(array), 0.0)  # hashable although its values are not
    assert not overlap.admit(event_key(array), 0.0)
