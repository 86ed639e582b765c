"""BatchCutter: windows, count/byte cuts, tip flush, duplicates, and replay determinism."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone

import pytest

from consumers.engine.records import ConsumedRecord, Position
from consumers.s3.batching import Batch, BatchCutter, epoch_ms
from consumers.s3.format import jsonl_line

SHARD = "shardId-000000000000"
T0 = 1_795_000_000_000  # a multiple of 10 s, so window arithmetic below is easy to read
SEQ0 = 49_650_000_000_000_000_000_000_000_000_000_000_000_000_000_000


def record(
    n: int, arrival_ms: int, *, symbol: str = "BTCUSDT", event_time: int | None = None, sub: int = 0
) -> ConsumedRecord:
    fields = {
        "event_type": "24hrMiniTicker",
        "event_time": arrival_ms - 50 if event_time is None else event_time,
        "stream_type": f"{symbol.lower()}@miniTicker",
        "symbol": symbol,
        "close_price": f"{65000 + n}.12000000",
        "open_price": "64000.00000000",
        "high_price": "66000.00000000",
        "low_price": "63000.00000000",
        "base_volume": "1234.56780000",
        "quote_volume": "80000000.00000001",
        "iso_timestamp": "2026-11-18T19:33:20.000Z",
        "received_at": arrival_ms * 1000 - 20_000,
    }
    return ConsumedRecord(
        shard_id=SHARD,
        position=Position(SEQ0 + n * 1000, sub),
        arrival=datetime.fromtimestamp(arrival_ms / 1000, UTC),
        partition_key=symbol,
        record=fields,
    )


def positions(batch: Batch) -> list[int]:
    return [(r.position.sequence - SEQ0) // 1000 for r in batch.records]


def test_epoch_ms_is_exact_and_handles_naive_and_other_zones() -> None:
    aware = datetime(2026, 11, 23, 3, 23, 38, 123_999, tzinfo=UTC)
    assert epoch_ms(aware) == 1_795_404_218_123
    assert epoch_ms(aware.replace(tzinfo=None)) == epoch_ms(aware)
    assert epoch_ms(aware.astimezone(timezone(timedelta(hours=8)))) == epoch_ms(aware)


def test_window_is_aligned_to_the_first_records_arrival() -> None:
    cutter = BatchCutter(window_seconds=10)
    assert cutter.add([record(0, T0 + 3_500), record(1, T0 + 9_999)]) == []
    assert cutter.window_end_ms == T0 + 10_000
    # Arriving exactly at the window end starts the next window.
    (batch,) = cutter.add([record(2, T0 + 10_000)])
    assert positions(batch) == [0, 1]
    assert batch.window_start_ms == T0
    assert batch.first == Position(SEQ0, 0)
    assert batch.last == Position(SEQ0 + 1000, 0)
    assert batch.first_arrival == datetime.fromtimestamp((T0 + 3_500) / 1000, UTC)
    assert cutter.window_end_ms == T0 + 20_000


def test_window_of_a_later_batch_comes_from_its_own_first_record() -> None:
    cutter = BatchCutter(window_seconds=10)
    batches = cutter.add([record(0, T0 + 1_000), record(1, T0 + 37_000), record(2, T0 + 39_999)])
    assert [positions(b) for b in batches] == [[0]]
    assert cutter.window_end_ms == T0 + 40_000
    (last,) = cutter.flush()
    assert last.window_start_ms == T0 + 30_000
    assert positions(last) == [1, 2]


def test_count_cut_closes_a_full_batch_when_the_next_new_record_arrives() -> None:
    cutter = BatchCutter(max_rows=3)
    batches = cutter.add([record(n, T0 + n) for n in range(7)])
    assert [positions(b) for b in batches] == [[0, 1, 2], [3, 4, 5]]
    assert cutter.buffered == 1
    assert [positions(b) for b in cutter.flush()] == [[6]]
    assert cutter.buffered == 0
    assert cutter.flush() == []


def test_byte_cut_before_exceeding_max_bytes() -> None:
    records = [record(n, T0 + n) for n in range(5)]
    size = len(jsonl_line(records[0].record))
    assert all(len(jsonl_line(r.record)) == size for r in records)
    cutter = BatchCutter(max_bytes=2 * size)  # exactly two lines fit
    batches = cutter.add(records)
    assert [positions(b) for b in batches] == [[0, 1], [2, 3]]
    assert all(b.size == 2 * size == sum(map(len, b.lines)) for b in batches)
    assert [positions(b) for b in cutter.flush()] == [[4]]


def test_a_record_larger_than_max_bytes_goes_alone() -> None:
    cutter = BatchCutter(max_bytes=10)
    batches = cutter.add([record(0, T0), record(1, T0 + 1)])
    assert [positions(b) for b in batches] == [[0]]
    assert [positions(b) for b in cutter.flush()] == [[1]]


def test_tip_flush_waits_for_window_end_plus_grace() -> None:
    cutter = BatchCutter(window_seconds=10, grace_ms=2_000)
    assert cutter.at_tip(T0 + 50_000) == []  # nothing open
    cutter.add([record(0, T0 + 4_000)])
    assert cutter.at_tip(T0 + 11_999) == []
    (batch,) = cutter.at_tip(T0 + 12_000)
    assert positions(batch) == [0]
    assert cutter.at_tip(T0 + 13_000) == []


def test_reset_drops_the_open_batch() -> None:
    cutter = BatchCutter()
    cutter.add([record(0, T0), record(1, T0 + 1)])
    cutter.reset()
    assert cutter.buffered == 0
    assert cutter.flush() == []


def test_duplicates_in_a_batch_are_dropped_keeping_the_first() -> None:
    cutter = BatchCutter(max_rows=3)
    original = record(0, T0, event_time=T0 - 7)
    retry = record(1, T0 + 5, event_time=T0 - 7)  # a producer retry: same event, new position
    other_symbol = record(2, T0 + 6, symbol="ETHUSDT", event_time=T0 - 7)
    (batch,) = cutter.add([original, retry, other_symbol, record(3, T0 + 7), record(4, T0 + 8)])
    assert positions(batch) == [0, 2, 3]  # the duplicate did not count toward max_rows
    assert batch.duplicates == 1
    assert cutter.buffered == 1


def test_a_retry_right_behind_a_full_batch_is_dropped_in_that_batch() -> None:
    cutter = BatchCutter(max_rows=2)
    full = [record(0, T0, event_time=1), record(1, T0 + 1, event_time=2)]
    retry = record(2, T0 + 2, event_time=2)  # the last row sent again
    (batch,) = cutter.add([*full, retry, record(3, T0 + 3, event_time=3)])
    assert positions(batch) == [0, 1]
    assert batch.duplicates == 1 and batch.last == retry.position


def test_duplicate_position_counts_as_consumed() -> None:
    cutter = BatchCutter()
    cutter.add([record(0, T0, event_time=1), record(1, T0 + 1, event_time=1)])
    (batch,) = cutter.flush()
    assert positions(batch) == [0]
    assert batch.last == Position(SEQ0 + 1000, 0)


def test_duplicates_across_batches_are_kept() -> None:
    cutter = BatchCutter(window_seconds=10)
    batches = cutter.add([record(0, T0, event_time=1), record(1, T0 + 10_000, event_time=1)])
    batches += cutter.flush()
    assert [positions(b) for b in batches] == [[0], [1]]


def test_bad_limits_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_rows"):
        BatchCutter(max_rows=0)
    with pytest.raises(ValueError, match="grace_ms"):
        BatchCutter(grace_ms=-1)


def random_stream(rng: random.Random, count: int) -> list[ConsumedRecord]:
    """Bursty arrivals, KPL sub-sequences, producer-retry duplicates, varied line sizes."""
    out: list[ConsumedRecord] = []
    arrival = T0 + rng.randrange(10_000)
    n = 0
    while len(out) < count:
        arrival += rng.choice((0, 0, 1, 7, 150, 900, 4_000, 13_000))
        symbol = rng.choice(("BTCUSDT", "ETHUSDT", "SOLUSDT", "A" * rng.randrange(1, 40)))
        for sub in range(rng.choice((1, 1, 3))):
            out.append(record(n, arrival, symbol=symbol, sub=sub, event_time=arrival - sub))
            if rng.random() < 0.05:  # the retry lands right behind the original
                out.append(record(n, arrival, symbol=symbol, sub=sub + 1, event_time=arrival - sub))
        n += 1
    return out[:count]


def chunks(rng: random.Random, items: Sequence[ConsumedRecord]) -> Iterator[list[ConsumedRecord]]:
    i = 0
    while i < len(items):
        size = rng.choice((1, 2, 10, 37, 500))
        yield list(items[i : i + size])
        i += size


def run(
    cutter: BatchCutter, rng: random.Random, stream: Sequence[ConsumedRecord], tip: bool
) -> list[Batch]:
    """Feed ``stream`` in random chunks; with ``tip``, call at_tip between chunks as an engine
    at the tip would: its clock is at most ``grace_ms`` past the next unread record's arrival."""
    out: list[Batch] = []
    fed = 0
    for chunk in chunks(rng, stream):
        out += cutter.add(chunk)
        fed += len(chunk)
        if tip and fed < len(stream):
            out += cutter.at_tip(epoch_ms(stream[fed].arrival) + cutter.grace_ms)
    return out + cutter.flush()


@pytest.mark.parametrize("seed", range(6))
def test_replay_from_any_batch_start_cuts_identical_batches(seed: int) -> None:
    rng = random.Random(seed)
    stream = random_stream(rng, 1500)
    limits = {
        "max_rows": rng.choice((5, 50, 1000)),
        "window_seconds": rng.choice((1, 10, 60)),
        "max_bytes": rng.choice((1_000, 20_000, 64 * 2**20)),
        "grace_ms": 2_000,
    }
    clean = run(BatchCutter(**limits), rng, stream, tip=False)
    assert run(BatchCutter(**limits), rng, stream, tip=True) == clean
    assert sum(len(b) + b.duplicates for b in clean) == len(stream)
    index = {r.position: i for i, r in enumerate(stream)}
    for k in rng.sample(range(len(clean)), min(15, len(clean))):
        restart = index[clean[k].first]
        replayed = run(BatchCutter(**limits), rng, stream[restart:], tip=rng.random() < 0.5)
        assert replayed == clean[k:], f"replay from batch {k} differs"
