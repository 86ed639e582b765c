"""1-minute candles from miniTicker updates, against values worked out by hand."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from crypto_live.lake.candles import Candle, Tick, build_candles, traded

# A minute boundary: 1_795_000_200_000 = 29_916_670 * 60_000 (2026-11-18T11:10:00Z).
T = 1_795_000_200_000


def tick(offset_ms: int, price: str, base: str, quote: str) -> Tick:
    return Tick(T + offset_ms, D(price), D(base), D(quote))


PREVIOUS = tick(-5_000, "100", "1000", "100000")
TICKS = [
    tick(1_000, "101", "1002.5", "100253"),  # +2.5 / +253
    tick(20_000, "99.5", "1004", "100402.25"),  # +1.5 / +149.25
    tick(59_999, "100.25", "1003", "100300"),  # the 24 h total fell: a roll, counts 0
    tick(60_000, "100.75", "1003.5", "100350.5"),  # next minute: +0.5 / +50.5 from the roll
    tick(180_500, "102", "1010", "101000"),  # minute 3 (minute 2 had no update): +6.5 / +649.5
]


def test_candles_by_hand() -> None:
    candles = build_candles("BTCUSDT", TICKS, PREVIOUS)
    assert candles == [
        Candle(
            symbol="BTCUSDT",
            open=D("101"),
            close=D("100.25"),
            high=D("101"),
            low=D("99.5"),
            base_volume=D("4.0"),  # 2.5 + 1.5 + 0 (roll)
            quote_volume=D("402.25"),  # 253 + 149.25 + 0 (roll)
            updates=3,
            open_time=T,
            close_time=T + 59_999,
        ),
        Candle(
            "BTCUSDT",
            D("100.75"),
            D("100.75"),
            D("100.75"),
            D("100.75"),
            D("0.5"),
            D("50.5"),
            1,
            T + 60_000,
            T + 119_999,
        ),
        Candle(
            "BTCUSDT",
            D("102"),
            D("102"),
            D("102"),
            D("102"),
            D("6.5"),
            D("649.5"),
            1,
            T + 180_000,
            T + 239_999,
        ),
    ]


def test_volume_is_never_negative_across_the_window_roll() -> None:
    rolled = [
        tick(0, "1", "500", "500"),
        tick(1_000, "1", "20", "20"),
        tick(2_000, "1", "25", "25"),
    ]
    (candle,) = build_candles("X", rolled, tick(-1, "1", "400", "400"))
    # +100 (400 -> 500), then the total dropped to 20: 0, then +5.
    assert candle.base_volume == D("105")
    assert candle.quote_volume == D("105")
    assert traded(D("500"), D("20")) == 0
    assert traded(D("20"), D("25")) == D("5")


def test_first_update_without_a_previous_only_sets_the_base() -> None:
    first, *_ = build_candles("BTCUSDT", TICKS)
    assert first.base_volume == D("1.5")  # 0 for the first update, then +1.5, then the roll
    assert first.quote_volume == D("149.25")
    assert first.updates == 3


def test_no_ticks_no_candles() -> None:
    assert build_candles("BTCUSDT", [], PREVIOUS) == []


def test_exact_decimals_stay_exact() -> None:
    ticks = [
        tick(0, "0.00002400", "0.10000000", "0.00000001"),
        tick(1, "0.00002401", "0.30000000", "0.00000003"),
    ]
    (candle,) = build_candles("SHIBUSDT", ticks)
    assert candle.base_volume == D("0.2")  # not 0.19999999999999998
    assert str(candle.quote_volume) == "2E-8"
    assert candle.high == D("0.00002401")


def test_ticks_must_ascend() -> None:
    with pytest.raises(ValueError, match="ascend"):
        build_candles("BTCUSDT", [TICKS[1], TICKS[0]])
    with pytest.raises(ValueError, match="ascend"):
        build_candles("BTCUSDT", TICKS, tick(5_000, "1", "1", "1"))
