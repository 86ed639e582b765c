"""The simulated market: deterministic walk, Binance-shaped miniTicker payloads."""

from __future__ import annotations

import itertools
import re
from decimal import Decimal

import pytest

from crypto_live.exchange.price_walk import (
    MarketSimulator,
    MiniTickerPayload,
    format_amount,
    generate_symbols,
)

AMOUNT = re.compile(r"^\d+\.\d{8}$")
AMOUNT_KEYS = ("c", "o", "h", "l", "v", "q")


def _amounts(payload: MiniTickerPayload) -> list[str]:
    return [payload["c"], payload["o"], payload["h"], payload["l"], payload["v"], payload["q"]]


def _run(simulator: MarketSimulator, ticks: int) -> list[list[MiniTickerPayload]]:
    return [simulator.tick(1_700_000_000_000 + 1_000 * step) for step in range(ticks)]


def test_symbols_are_unique_uppercase_alnum_with_majors_first() -> None:
    symbols = generate_symbols(2_000)

    assert len(symbols) == len(set(symbols)) == 2_000
    assert all(re.fullmatch(r"[A-Z0-9]+", symbol) for symbol in symbols)
    assert symbols[:3] == ["BTCUSDT", "ETHUSDT", "BNBUSDT"]
    assert symbols[-1] == "SYM1999USDT"


def test_symbol_count_edges() -> None:
    assert generate_symbols(0) == []
    assert generate_symbols(1) == ["BTCUSDT"]
    assert len(set(generate_symbols(20_000))) == 20_000
    with pytest.raises(ValueError):
        generate_symbols(-1)


def test_same_seed_same_market_different_seed_different_market() -> None:
    first = _run(MarketSimulator(50, seed=7), 20)
    again = _run(MarketSimulator(50, seed=7), 20)
    other = _run(MarketSimulator(50, seed=8), 20)

    assert first == again
    assert first != other


def test_payload_has_binance_shape() -> None:
    (payload,) = MarketSimulator(1, seed=1).tick(1_700_000_000_123)

    assert set(payload) == {"e", "E", "s", *AMOUNT_KEYS}
    assert payload["e"] == "24hrMiniTicker"
    assert payload["E"] == 1_700_000_000_123
    assert payload["s"] == "BTCUSDT"
    for amount in _amounts(payload):
        assert AMOUNT.match(amount), amount


def test_every_tick_keeps_bounds_and_volumes_grow() -> None:
    history = _run(MarketSimulator(300, seed=3), 50)
    tolerance = Decimal("0.0001")

    for tick in history:
        assert len(tick) == 300
        for payload in tick:
            close, open_ = Decimal(payload["c"]), Decimal(payload["o"])
            high, low = Decimal(payload["h"]), Decimal(payload["l"])
            base, quote = Decimal(payload["v"]), Decimal(payload["q"])
            assert all(AMOUNT.match(amount) for amount in _amounts(payload))
            assert high >= max(open_, close)
            assert 0 < low <= min(open_, close)
            assert base > 0
            assert quote > 0
            # q is the sum of trades at prices inside [l, h], so its average price is too.
            assert low * (1 - tolerance) <= quote / base <= high * (1 + tolerance)
    for before, after in itertools.pairwise(history):
        for old, new in zip(before, after, strict=True):
            assert Decimal(new["v"]) >= Decimal(old["v"])
            assert Decimal(new["q"]) >= Decimal(old["q"])


def test_steps_are_small_and_prices_move() -> None:
    history = _run(MarketSimulator(100, seed=5), 30)

    moved = 0
    for before, after in itertools.pairwise(history):
        for old, new in zip(before, after, strict=True):
            change = abs(Decimal(new["c"]) / Decimal(old["c"]) - 1)
            assert change < Decimal("0.01")
            moved += change > 0
    assert moved > len(history) * 100 // 2


def test_two_thousand_symbols_tick() -> None:
    simulator = MarketSimulator(2_000, seed=11)

    payloads = simulator.tick(1)

    assert [payload["s"] for payload in payloads] == list(simulator.symbols)
    assert len({payload["s"] for payload in payloads}) == 2_000


def test_format_amount_is_fixed_point_with_eight_decimals() -> None:
    assert format_amount(Decimal("0.00000001")) == "0.00000001"
    assert format_amount(Decimal("1E-8")) == "0.00000001"
    assert format_amount(Decimal(65000)) == "65000.00000000"
    assert format_amount(Decimal("1.123456789")) == "1.12345679"


def test_rejects_empty_market() -> None:
    with pytest.raises(ValueError):
        MarketSimulator(0)
