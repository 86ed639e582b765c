"""The simulated exchange's kline streams as pure logic: which minutes a tick closes, payloads
equal to the REST klines of the same trades, memoised per tick, rendered per subscription."""

from __future__ import annotations

import json
from typing import Any

from crypto_live.exchange.account import SimulatedAccount
from crypto_live.exchange.kline_frames import (
    MAX_CLOSED_PER_TICK,
    KlineStreams,
    KlineTick,
    closed_minutes,
    trade_id,
)
from crypto_live.exchange.protocol import Subscription, TickFrames
from crypto_live.exchange.rest import RestApi
from crypto_live.exchange.trades import MS_PER_MINUTE, TradeModel
from producer.validation import validate_message

MINUTE = 29_916_667  # epoch minutes: 2026-11-18T11:07:00Z
T0 = MINUTE * MS_PER_MINUTE
LISTED = T0 - 24 * 3_600_000
SYMBOLS = {"btcusdt": "BTCUSDT", "ethusdt": "ETHUSDT"}
MODEL = TradeModel(seed=11)


def tick(previous_ms: int | None, now_ms: int, listed_ms: int = LISTED) -> KlineTick:
    return KlineTick(MODEL, SYMBOLS, listed_ms=listed_ms, previous_ms=previous_ms, now_ms=now_ms)


def rest_kline(symbol: str, open_ms: int, now_ms: int) -> list[Any]:
    """GET /api/v3/klines of one minute, from a REST API over the same model at ``now_ms``."""
    api = RestApi(
        list(SYMBOLS.values()),
        MODEL,
        SimulatedAccount(MODEL, origin_ms=LISTED),
        listed_ms=LISTED,
        clock=lambda: now_ms,
    )
    target = f"/api/v3/klines?symbol={symbol}&interval=1m&startTime={open_ms}&limit=1"
    response = api.handle(target, "127.0.0.1")
    assert response.status == 200
    (row,) = json.loads(response.body)
    return list(row)


def as_row(k: dict[str, Any]) -> list[Any]:
    """A websocket kline in the REST row's order."""
    return [k[key] for key in ("t", "o", "h", "l", "c", "v", "T", "q", "n", "V", "Q", "B")]


def first_trade_ms(symbol: str, minute: int) -> int:
    return MODEL.minute_trades(symbol, minute)[0].time_ms


def test_minutes_close_when_the_next_one_begins() -> None:
    assert closed_minutes(None, T0 + 5_000) == range(0)  # first tick: nothing before it
    assert list(closed_minutes(T0 + 1_000, T0 + 59_999)) == []
    assert list(closed_minutes(T0 + 59_999, T0 + 60_000)) == [MINUTE]
    assert list(closed_minutes(T0 + 60_000, T0 + 61_000)) == []  # closed on the tick before
    assert list(closed_minutes(T0 + 30_000, T0 + 3 * 60_000 + 5)) == [
        MINUTE,
        MINUTE + 1,
        MINUTE + 2,
    ]
    assert list(closed_minutes(T0 + 30_000, T0)) == []  # a clock stepping back closes nothing
    long_stall = closed_minutes(T0, T0 + 10 * MAX_CLOSED_PER_TICK * MS_PER_MINUTE)
    assert len(long_stall) == MAX_CLOSED_PER_TICK
    assert long_stall[-1] == MINUTE + 10 * MAX_CLOSED_PER_TICK - 1  # the latest ones


def test_a_closed_kline_is_the_rest_kline_of_its_minute_string_for_string() -> None:
    now = first_trade_ms("BTCUSDT", MINUTE + 1) + 250  # the next minute has begun trading
    closed, current = tick(T0 + 59_000, now).payloads("BTCUSDT")
    assert closed["E"] == current["E"] == now
    assert closed["k"]["x"] is True and current["k"]["x"] is False
    assert as_row(closed["k"]) == rest_kline("BTCUSDT", T0, now)
    # Asked much later the REST kline is the same: the minute is final.
    assert as_row(closed["k"]) == rest_kline("BTCUSDT", T0, now + 3_600_000)
    candle = MODEL.candle("BTCUSDT", T0, MS_PER_MINUTE, now)
    assert candle is not None and closed["k"]["n"] == candle.trades
    assert (closed["k"]["f"], closed["k"]["L"]) == (
        trade_id(MINUTE, 0),
        trade_id(MINUTE, candle.trades - 1),
    )
    assert closed["k"]["s"] == closed["s"] == "BTCUSDT" and closed["k"]["i"] == "1m"


def test_the_open_kline_holds_the_trades_so_far_and_grows_into_the_closed_one() -> None:
    first = first_trade_ms("ETHUSDT", MINUTE)
    assert tick(T0, first - 1).payloads("ETHUSDT") == []  # no trade yet: no open kline
    seen = []
    for now in range(first, T0 + 60_000, 7_000):
        (current,) = tick(T0, now).payloads("ETHUSDT")
        partial = MODEL.candle("ETHUSDT", T0, MS_PER_MINUTE, now)
        assert partial is not None and current["k"]["n"] == partial.trades
        assert as_row(current["k"]) == rest_kline("ETHUSDT", T0, now)  # REST sees it too
        seen.append(current["k"]["n"])
    assert seen == sorted(seen)
    closed = tick(T0 + 59_000, T0 + 60_000).payloads("ETHUSDT")[0]
    assert closed["k"]["x"] is True and closed["k"]["n"] >= seen[-1]


def test_several_minutes_jumped_are_each_sent_closed_oldest_first_then_the_current() -> None:
    now = first_trade_ms("BTCUSDT", MINUTE + 3) + 1
    payloads = tick(T0 + 10_000, now).payloads("BTCUSDT")
    assert [(p["k"]["t"], p["k"]["x"], p["E"]) for p in payloads] == [
        (T0, True, now),
        (T0 + 60_000, True, now),
        (T0 + 120_000, True, now),
        (T0 + 180_000, False, now),
    ]
    for payload in payloads[:3]:
        assert as_row(payload["k"]) == rest_kline("BTCUSDT", payload["k"]["t"], now)


def test_nothing_before_the_listing_as_on_the_rest_side() -> None:
    assert tick(T0 - 1_000, T0 + 1_000, listed_ms=T0 + 60_000).payloads("BTCUSDT") == []
    now = T0 + 60_000 + 59_999
    payloads = tick(T0 + 1_000, now, listed_ms=T0 + 60_000).payloads("BTCUSDT")
    assert [(p["k"]["t"], p["k"]["x"]) for p in payloads] == [(T0 + 60_000, False)]


def test_each_frame_passes_the_producers_validation_as_a_kline() -> None:
    klines = tick(T0 + 50_000, T0 + 60_000 + 59_999)
    frames = TickFrames([], klines).frames_for(Subscription(("btcusdt@kline_1m",), True))
    assert len(frames) == 2
    for text in frames:
        records, rejects = validate_message(json.loads(text), 1)
        assert rejects == [] and records[0]["event_type"] == "kline"
        assert records[0]["stream_type"] == "btcusdt@kline_1m"


def test_frames_go_only_to_the_streams_subscribed_and_are_computed_once_per_tick() -> None:
    calls: list[str] = []

    class Counting(KlineTick):
        def payloads(self, symbol: str) -> list[dict[str, Any]]:
            calls.append(symbol)
            return super().payloads(symbol)

    now = T0 + 60_000 + 59_999
    klines = Counting(MODEL, SYMBOLS, listed_ms=LISTED, previous_ms=T0 + 50_000, now_ms=now)
    frames = TickFrames([], klines)
    btc = Subscription(("btcusdt@kline_1m",), combined=True)
    raw = Subscription(("BTCUSDT@kline_1m",), combined=False)
    tickers = Subscription(("btcusdt@miniTicker", "!miniTicker@arr"), combined=True)
    unknown = Subscription(("nosuchusdt@kline_1m", "btcusdt@kline_5m"), combined=True)
    combined = frames.frames_for(btc)
    assert [json.loads(text)["stream"] for text in combined] == ["btcusdt@kline_1m"] * 2
    assert [json.loads(text)["data"]["s"] for text in combined] == ["BTCUSDT"] * 2
    assert [json.loads(text) for text in frames.frames_for(raw)] == [
        json.loads(text)["data"] for text in combined
    ]
    assert frames.frames_for(tickers) == []  # no tickers this tick, and no klines there
    assert frames.frames_for(unknown) == []
    assert calls == ["BTCUSDT"]  # ETHUSDT never computed; BTCUSDT once for two subscriptions


def test_kline_streams_remember_the_previous_tick() -> None:
    streams = KlineStreams(MODEL, SYMBOLS, LISTED)
    first = streams.tick(T0 + 59_999).payloads("BTCUSDT")
    assert [p["k"]["x"] for p in first] == [False]
    second = streams.tick(T0 + 2 * 60_000 + 59_999).payloads("BTCUSDT")
    assert [(p["k"]["t"], p["k"]["x"]) for p in second] == [
        (T0, True),
        (T0 + 60_000, True),
        (T0 + 120_000, False),
    ]
    # A clock stepping back neither repeats nor loses a closed minute.
    back = streams.tick(T0 + 60_000 + 59_999).payloads("BTCUSDT")
    assert [p["k"]["x"] for p in back] == [False]
    again = streams.tick(T0 + 3 * 60_000 + 59_999).payloads("BTCUSDT")
    assert [(p["k"]["t"], p["k"]["x"]) for p in again] == [
        (T0 + 120_000, True),
        (T0 + 180_000, False),
    ]
