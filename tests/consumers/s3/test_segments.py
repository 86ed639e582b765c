"""Several kinds of rows in one shard: segments cut every kind at once, records of no kind
are covered, and a re-read from any checkpoint rewrites exactly the same objects (pure, plus
S3Processor over the in-memory writer)."""

from __future__ import annotations

import asyncio
import gzip
import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from consumers.engine.records import ConsumedRecord, Position, UndecodableRecord
from consumers.klines import KLINE_FIELD_ORDER
from consumers.routing import Route, route_of
from consumers.s3.batching import Routed, Segment, SegmentCutter
from consumers.s3.format import JsonlGzipFormat
from consumers.s3.processor import S3ProcessorFactory
from consumers.s3.writer import MemoryBatchWriter
from core.metrics import Counters, Metrics
from schemas.codec import KLINE_SCHEMA, MINITICKER_SCHEMA
from schemas.record import FIELD_ORDER
from tests.support.klines import HEARTBEAT_SCHEMA, MINUTE_MS, encode, heartbeat, kline
from tests.support.pipeline import ticker

SHARD = "shardId-000000000003"
SEQ0 = 49_650_000_000_000_000_000_000_000_000_000_000_000_000_000_000
FMT = JsonlGzipFormat()
LINES = {Route.TICKER: FMT.line, Route.CANDLE: FMT.kline_line}
TICKERS, KLINES = "batch_jsonl", "klines_jsonl"


def schema_of(fields: dict[str, Any]) -> str:
    if "interval" in fields:
        return KLINE_SCHEMA
    return MINITICKER_SCHEMA if "event_type" in fields else HEARTBEAT_SCHEMA


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def consumed(n: int, fields: dict[str, Any], arrival_ms: int, sub: int = 0) -> ConsumedRecord:
    data = encode(fields)[1]
    position = Position(SEQ0 + n * 1000, sub)
    return ConsumedRecord(SHARD, position, at(arrival_ms), "pk", fields, schema_of(fields), data)


def routed(records: Sequence[ConsumedRecord]) -> list[Routed]:
    kinds = (Route.TICKER, Route.CANDLE)
    return [(r, route if (route := route_of(r)) in kinds else None) for r in records]


T0 = kline("BTCUSDT", 0)["open_time"]  # a whole minute


def test_a_window_end_closes_every_kind_at_once_into_one_segment() -> None:
    cutter = SegmentCutter(LINES, window_seconds=10)
    records = [
        consumed(0, ticker("BTCUSDT", T0 + 100, "1.0"), T0 + 150),
        consumed(1, kline("BTCUSDT", 0, closed=False), T0 + 1_100),  # no kind
        consumed(2, kline("ETHUSDT", -1), T0 + 2_000),
        consumed(3, ticker("ETHUSDT", T0 + 3_000, "2.0"), T0 + 3_050),
        consumed(4, kline("BTCUSDT", 0, closed=False, tick=1), T0 + 10_000),  # closes it
    ]
    (segment,) = cutter.add(routed(records))
    assert [b.kind for b in segment.batches] == [Route.TICKER, Route.CANDLE]
    tickers, candles = segment.batches
    assert [r.position for r in tickers.records] == [records[0].position, records[3].position]
    assert [r.position for r in candles.records] == [records[2].position]
    assert segment.last == records[3].position  # the record of no kind before is covered
    assert tickers.window_start_ms == candles.window_start_ms == T0
    assert segment.rows == 3
    # The open kline that closed it opened the next segment: no rows, but it is covered.
    (rest,) = cutter.flush()
    assert rest == Segment((), records[4].position)


def test_a_full_batch_of_one_kind_cuts_the_others_too() -> None:
    cutter = SegmentCutter(LINES, max_rows=2, window_seconds=60)
    records = [
        consumed(0, kline("BTCUSDT", 0), T0 + 1),
        consumed(1, ticker("BTCUSDT", T0 + 2, "1.0"), T0 + 2),
        consumed(2, ticker("ETHUSDT", T0 + 3, "1.0"), T0 + 3),
        consumed(3, ticker("SOLUSDT", T0 + 4, "1.0"), T0 + 4),  # a third ticker: cut
    ]
    (segment,) = cutter.add(routed(records))
    assert [(b.kind, len(b)) for b in segment.batches] == [(Route.CANDLE, 1), (Route.TICKER, 2)]
    assert segment.last == records[2].position
    assert cutter.buffered == 1


def test_retries_are_dropped_within_their_kind() -> None:
    cutter = SegmentCutter(LINES)
    closed = kline("BTCUSDT", 0)
    records = [consumed(0, closed, T0), consumed(1, dict(closed), T0 + 5)]  # a producer retry
    records.append(consumed(2, ticker("BTCUSDT", closed["event_time"], "1.0"), T0 + 6))
    cutter.add(routed(records))
    (segment,) = cutter.flush()
    candles = next(b for b in segment.batches if b.kind == Route.CANDLE)
    assert (len(candles), candles.duplicates, candles.last) == (1, 1, records[1].position)
    assert segment.rows == 2


def random_stream(rng: random.Random, count: int) -> list[ConsumedRecord]:
    """A shard of every type: tickers, open and closed klines, heartbeats, KPL sub-sequences,
    retries, bursts and lulls."""
    out: list[ConsumedRecord] = []
    arrival, n, minute = T0 + rng.randrange(5_000), 0, 0
    while len(out) < count:
        arrival += rng.choice((0, 1, 7, 150, 900, 4_000, 13_000))
        if arrival >= T0 + (minute + 1) * MINUTE_MS:
            minute += 1
        symbol = rng.choice(("BTCUSDT", "ETHUSDT", "SOLUSDT"))
        kind = rng.random()
        if kind < 0.55:
            fields = ticker(symbol, arrival - 3, f"{n}.{rng.randrange(100):02d}")
        elif kind < 0.8:
            fields = kline(symbol, minute, closed=False, tick=n % 50)
        elif kind < 0.97:
            fields = kline(symbol, minute - 1)
        else:
            fields = heartbeat(symbol, arrival)
        for sub in range(rng.choice((1, 1, 3))):
            out.append(consumed(n, fields, arrival, sub))
            if rng.random() < 0.05:
                out.append(consumed(n, dict(fields), arrival, sub + 1))  # a retry right behind
        n += 1
    return out[:count]


def run(cutter: SegmentCutter, rng: random.Random, stream: Sequence[ConsumedRecord]) -> list[Any]:
    out: list[Segment] = []
    i = 0
    while i < len(stream):
        size = rng.choice((1, 3, 40, 500))
        out += cutter.add(routed(stream[i : i + size]))
        i += size
        if i < len(stream) and rng.random() < 0.3:
            out += cutter.at_tip(int(stream[i].arrival.timestamp() * 1000) + cutter.grace_ms)
    return out + cutter.flush()


@pytest.mark.parametrize("seed", range(6))
def test_a_reread_from_any_segment_end_cuts_identical_segments(seed: int) -> None:
    rng = random.Random(seed)
    stream = random_stream(rng, 1500)
    limits = {
        "max_rows": rng.choice((3, 40, 1000)),
        "window_seconds": rng.choice((1, 10, 60)),
        "max_bytes": rng.choice((2_000, 64 * 2**20)),
        "grace_ms": 2_000,
    }
    clean = run(SegmentCutter(LINES, **limits), rng, stream)
    index = {r.position: i for i, r in enumerate(stream)}
    assert clean[-1].last == stream[-1].position
    kept = sum(len(b) + b.duplicates for s in clean for b in s.batches)
    assert kept == sum(1 for r in stream if route_of(r) in (Route.TICKER, Route.CANDLE))
    for k in rng.sample(range(len(clean) - 1), min(15, len(clean) - 1)):
        restart = index[clean[k].last] + 1  # the checkpoint is a segment's end
        replayed = run(SegmentCutter(LINES, **limits), rng, stream[restart:])
        assert replayed == clean[k + 1 :], f"re-read after segment {k} differs"


# -- S3Processor: routing, dead letters, checkpoints -------------------------------------------


def objects(writer: MemoryBatchWriter, prefix: str) -> dict[str, list[dict[str, Any]]]:
    return {
        key: [json.loads(line) for line in gzip.decompress(body).splitlines()]
        for key, body in writer.bodies().items()
        if key.startswith(prefix + "/")
    }


def first_position(key: str) -> Position:
    """The batch's first position, from its object name ``{shard}-{seq}-{sub}.jsonl.gz``."""
    _, sequence, sub = key.rsplit("/", 1)[1].removesuffix(".jsonl.gz").rsplit("-", 2)
    return Position(int(sequence), int(sub))


def drive(
    writer: MemoryBatchWriter,
    records: Sequence[ConsumedRecord],
    letters: list[UndecodableRecord],
    metrics: Metrics | None = None,
    chunk: int = 37,
) -> list[Position]:
    factory = S3ProcessorFactory(
        writer,
        TICKERS,
        max_rows=25,
        window_seconds=10,
        metrics=metrics,
        klines_prefix=KLINES,
        dead_letters=letters.extend,
    )
    processor = factory(SHARD)

    async def go() -> list[Position | None]:
        out = [
            await processor.process(records[i : i + chunk]) for i in range(0, len(records), chunk)
        ]
        return [*out, await processor.shard_ended()]

    return [p for p in asyncio.run(go()) if p is not None]


def test_each_kind_lands_under_its_prefix_once_and_a_takeover_rewrites_the_same_objects() -> None:
    rng = random.Random(42)
    stream = random_stream(rng, 2_000)
    writer, letters, metrics = MemoryBatchWriter(), [], Metrics("consumer-s3")
    checkpoints = drive(writer, stream, letters, metrics)

    assert checkpoints == sorted(set(checkpoints)) and checkpoints[-1] == stream[-1].position
    tickers = objects(writer, TICKERS)
    candles = objects(writer, KLINES)
    expected_tickers = {
        (r.record["stream_type"], r.record["event_time"])
        for r in stream
        if route_of(r) is Route.TICKER
    }
    got_tickers = [
        (row["stream_type"], row["event_time"]) for rows in tickers.values() for row in rows
    ]
    assert sorted(got_tickers) == sorted(expected_tickers)  # duplicates only across batches
    assert all(list(row) == list(FIELD_ORDER) for rows in tickers.values() for row in rows)
    closed = [r for r in stream if route_of(r) is Route.CANDLE]
    got_candles = [row for rows in candles.values() for row in rows]
    assert {json.dumps(r, sort_keys=True) for r in got_candles} == {
        json.dumps(r.record, sort_keys=True) for r in closed
    }
    assert all(list(row) == list(KLINE_FIELD_ORDER) and row["closed"] for row in got_candles)
    assert all(isinstance(row["open_price"], str) for row in got_candles)
    assert {d.reason for d in letters} == {
        "no handler for schema crypto_live.v1.Heartbeat in consumer-s3"
    }
    assert [d.position for d in letters] == [
        r.position for r in stream if r.schema == HEARTBEAT_SCHEMA
    ]
    open_klines = sum(1 for r in stream if route_of(r) is Route.OPEN_KLINE)
    assert metrics.value(Counters.OPEN_KLINES_SKIPPED) == open_klines
    clean = writer.bodies()

    # A new owner from any checkpoint writes the same keys with the same bytes, and no others.
    index = {r.position: i for i, r in enumerate(stream)}
    for checkpoint in rng.sample(checkpoints[:-1], 10):
        again = MemoryBatchWriter()
        drive(again, stream[index[checkpoint] + 1 :], [], chunk=rng.choice((1, 50, 500)))
        after = {k: body for k, body in clean.items() if first_position(k) > checkpoint}
        assert again.bodies() == after


def test_a_kline_only_stretch_still_moves_the_checkpoint() -> None:
    """Open klines alone write nothing, yet the checkpoint follows them (nothing to re-read)."""
    records = [
        consumed(i, kline("BTCUSDT", 0, closed=False, tick=i), T0 + i * 2_000) for i in range(12)
    ]
    writer = MemoryBatchWriter()
    checkpoints = drive(writer, records, [], chunk=3)
    assert writer.bodies() == {}
    assert checkpoints[-1] == records[-1].position
