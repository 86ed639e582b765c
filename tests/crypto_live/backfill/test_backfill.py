"""A backfill run over python-binance's Client calls (answered by the simulated exchange's pure
RestApi) on a fake clock: pages, closed minutes only, weight pauses, 429/418 after Retry-After."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from crypto_live.backfill import BackfillError
from crypto_live.backfill.fetch import KlineFetcher
from crypto_live.backfill.minutes import MS_PER_MINUTE, MinuteRange, last_closed_open
from crypto_live.backfill.pacing import WeightPacer
from crypto_live.backfill.rows import kline_record
from crypto_live.backfill.run import BackfillJob, BackfillSummary, backfill
from tests.crypto_live.backfill.fakes import FakeBinance, FakeClock, RecordingSink

M = MS_PER_MINUTE


def run(
    binance: FakeBinance,
    clock: FakeClock,
    jobs: list[BackfillJob],
    *,
    max_weight: int = 4_800,
    max_wait: float = 600,
    sink: RecordingSink | None = None,
) -> tuple[BackfillSummary, RecordingSink]:
    sink = sink or RecordingSink()
    fetcher = KlineFetcher(
        binance,
        WeightPacer(max_weight),
        sleep=clock.sleep,
        clock_ms=clock,
        max_wait_seconds=max_wait,
    )
    summary = asyncio.run(backfill(jobs, fetcher, sink, "stream", clock_us=clock.us))
    return summary, sink


def expected(binance: FakeBinance, symbol: str, span: MinuteRange, clock: FakeClock) -> list[Any]:
    return [
        {**kline_record(symbol, binance.candle(symbol, t), 0), "received_at": None}
        for t in span.open_times()
    ]


def without_clock(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "received_at": None} for r in records]


def test_every_wanted_minute_is_published_once_from_pages_of_1000() -> None:
    clock = FakeClock()
    binance = FakeBinance(clock)
    last = last_closed_open(clock()) - 10 * M
    btc = MinuteRange(last - 2_499 * M, last)
    eth = MinuteRange(last - 9 * M, last)
    summary, sink = run(
        binance, clock, [BackfillJob("BTCUSDT", (btc,)), BackfillJob("ETHUSDT", (eth,))]
    )

    assert without_clock(sink.records) == expected(binance, "BTCUSDT", btc, clock) + expected(
        binance, "ETHUSDT", eth, clock
    )
    assert sink.closed
    assert (summary.fetched, summary.published, summary.pages, summary.retries) == (
        2_510,
        2_510,
        4,
        0,
    )
    assert summary.wanted == 2_510 and not summary.not_served and summary.pauses == 0
    assert summary.served == {"BTCUSDT": [btc], "ETHUSDT": [eth]}
    klines = [params for endpoint, params in binance.calls if endpoint == "klines"]
    assert [p["limit"] for p in klines] == [1000, 1000, 500, 10]
    assert all(r["received_at"] == clock.us() for r in sink.records[-10:])
    assert summary.line() == "2,510 candles fetched, 2,510 published, 4 pages, 0 retries"


def test_a_record_is_the_rest_row_exactly() -> None:
    clock = FakeClock()
    binance = FakeBinance(clock)
    minute = last_closed_open(clock())
    _, sink = run(binance, clock, [BackfillJob("BTCUSDT", (MinuteRange(minute, minute),))])
    row = binance.candle("BTCUSDT", minute)
    (record,) = sink.records
    assert record == {
        "event_type": "kline",
        "event_time": minute + M,
        "stream_type": "btcusdt@kline_1m",
        "symbol": "BTCUSDT",
        "interval": "1m",
        "open_time": minute,
        "close_time": minute + M - 1,
        "first_trade_id": -1,
        "last_trade_id": -1,
        "open_price": row[1],
        "high_price": row[2],
        "low_price": row[3],
        "close_price": row[4],
        "base_volume": row[5],
        "quote_volume": row[7],
        "trades": row[8],
        "closed": True,
        "taker_buy_base_volume": row[9],
        "taker_buy_quote_volume": row[10],
        "source": "backfill",
        "iso_timestamp": record["iso_timestamp"],
        "received_at": clock.us(),
    }
    assert record["iso_timestamp"].endswith(":00.000Z")


def test_only_minutes_closed_by_binances_clock_are_fetched() -> None:
    # Binance's clock is 45 s behind ours: at 30.5 s into our minute, its previous minute is
    # still open, so the last closed one is two minutes back.
    clock = FakeClock()
    binance = FakeBinance(clock, skew_ms=-45_000)
    ours = last_closed_open(clock())
    summary, sink = run(
        binance, clock, [BackfillJob("BTCUSDT", (MinuteRange(ours - 4 * M, ours + 60 * M),))]
    )
    assert [r["open_time"] for r in sink.records] == [ours - 4 * M + i * M for i in range(4)]
    assert summary.wanted == 4 and not summary.not_served


def test_minutes_binance_has_no_kline_for_are_reported() -> None:
    clock = FakeClock()
    last = last_closed_open(clock())
    binance = FakeBinance(clock, listed_ms=last - 2 * M)  # listed three minutes ago
    summary, sink = run(
        binance, clock, [BackfillJob("BTCUSDT", (MinuteRange(last - 9 * M, last),))]
    )
    assert [r["open_time"] for r in sink.records] == [last - 2 * M, last - M, last]
    assert summary.not_served == {"BTCUSDT": [MinuteRange(last - 9 * M, last - 3 * M)]}
    assert summary.line().endswith("; Binance had no kline for 7 minutes")


def test_weight_budget_spent_pauses_until_the_next_minute_without_a_429() -> None:
    clock = FakeClock()
    # time (1) + a page (2) = 3; another page would make 5, past the budget of 4 (and past
    # the exchange's limit of 4): pause; in the next minute two pages make 4.
    binance = FakeBinance(clock, weight_limit=4)
    last = last_closed_open(clock()) - 100 * M
    span = MinuteRange(last - 2_499 * M, last)  # 3 pages
    started = clock()
    summary, sink = run(binance, clock, [BackfillJob("BTCUSDT", (span,))], max_weight=4)
    assert [r["open_time"] for r in sink.records] == list(span.open_times())
    assert summary.pauses == 1 and summary.pages == 3 and summary.retries == 0
    # paused until 1 s past the exchange's next minute
    assert clock.sleeps == [pytest.approx((60_000 - started % 60_000 + 1_000) / 1000)]
    assert binance.rest.limiter.used("10.0.0.1", clock()) == 4


def test_429_is_retried_after_its_retry_after() -> None:
    clock = FakeClock()
    binance = FakeBinance(clock, weight_limit=5)  # time (1) + 2 pages, then 429
    last = last_closed_open(clock()) - 100 * M
    span = MinuteRange(last - 2_999 * M, last)
    summary, sink = run(binance, clock, [BackfillJob("BTCUSDT", (span,))], max_weight=6_000)
    assert [r["open_time"] for r in sink.records] == list(span.open_times())
    assert summary.retries == 1 and summary.pages == 3 and summary.requests == 5
    assert clock.sleeps == [
        30.0
    ]  # the exchange's Retry-After: 29.5 s to its next minute, rounded up


def test_418_ban_is_respected_and_a_long_one_stops_the_run_with_one_line() -> None:
    clock = FakeClock()
    binance = FakeBinance(clock, ban=(418, "120"))
    last = last_closed_open(clock())
    summary, sink = run(binance, clock, [BackfillJob("BTCUSDT", (MinuteRange(last, last),))])
    assert clock.sleeps == [120.0] and summary.retries == 1 and len(sink.records) == 1

    clock = FakeClock()
    banned = FakeBinance(clock, ban=(418, "86400"))
    with pytest.raises(BackfillError) as caught:
        run(banned, clock, [BackfillJob("BTCUSDT", (MinuteRange(last, last),))], max_wait=600)
    assert str(caught.value) == (
        "Binance asked to wait 86400 s before the next request (Retry-After), more than "
        "--max-wait 600 s: stopped; run it again after that"
    )
    assert clock.sleeps == [] and len(banned.calls) == 1


def test_a_failure_midway_still_publishes_what_was_fetched() -> None:
    clock = FakeClock()
    binance = FakeBinance(clock, symbols=("BTCUSDT",))
    last = last_closed_open(clock())
    sink = RecordingSink()
    jobs = [
        BackfillJob("BTCUSDT", (MinuteRange(last, last),)),
        BackfillJob("NOPEUSDT", (MinuteRange(last, last),)),
    ]
    with pytest.raises(
        BackfillError, match=r"^Binance rejected the request: invalid symbol \(-1121\)$"
    ):
        run(binance, clock, jobs, sink=sink)
    assert sink.closed and [r["symbol"] for r in sink.records] == ["BTCUSDT"]
