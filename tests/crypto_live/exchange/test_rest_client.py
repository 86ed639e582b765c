"""The simulated exchange's REST side through python-binance's own Client over loopback HTTP."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from core.settings import load_settings
from crypto_live.exchange.account import SimulatedAccount
from crypto_live.exchange.rest import SIM_API_KEY, SIM_API_SECRET, RestApi
from crypto_live.exchange.trades import MS_PER_MINUTE, TradeModel
from crypto_live.orders.binance_api import ApiCredentials, binance_client
from tests.crypto_live.exchange.loopback import exchange_on_loopback

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from binance.exceptions import BinanceAPIException

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def sim_client(url: str, key: str = SIM_API_KEY, secret: str = SIM_API_SECRET) -> Any:
    """python-binance's Client on ``url``, made as `orders snapshot` makes it (its own loop)."""
    return binance_client(
        load_settings(binance_api_url=url), ApiCredentials(SecretStr(key), SecretStr(secret))
    )


def _rest(weight_limit: int = 6_000, weight_clock: Any = None) -> RestApi:
    model = TradeModel(seed=5)
    now = time.time_ns() // 1_000_000
    return RestApi(
        ["BTCUSDT", "ETHUSDT"],
        model,
        SimulatedAccount(model, origin_ms=now - 3_600_000, count=2_000),
        weight_limit=weight_limit,
        weight_clock=weight_clock,
        listed_ms=now - now % MS_PER_MINUTE - 7 * 24 * 3_600_000,
    )


@pytest.fixture
def client() -> Iterator[tuple[Any, RestApi]]:
    rest = _rest()
    with exchange_on_loopback(rest) as url, sim_client(url) as binance:
        yield binance, rest


def test_historical_klines_page_by_1000_without_gaps(client: tuple[Any, RestApi]) -> None:
    binance, rest = client
    now = time.time_ns() // 1_000_000
    start = now - now % MS_PER_MINUTE - 2_400 * MS_PER_MINUTE
    end = start + 2_100 * MS_PER_MINUTE - 1
    rows = binance.get_historical_klines("BTCUSDT", "1m", start, end)
    assert [row[0] for row in rows] == list(range(start, end, MS_PER_MINUTE))
    expected = rest.model.candle("BTCUSDT", rows[1234][0], MS_PER_MINUTE, now)
    assert expected is not None and rows[1234] == expected.as_binance()
    assert int(binance.response.headers["X-MBX-USED-WEIGHT-1M"]) >= 2 * 3


def test_exchange_info_and_signed_all_orders(client: tuple[Any, RestApi]) -> None:
    binance, _ = client
    info = binance.get_symbol_info("ETHUSDT")
    assert info["symbol"] == "ETHUSDT" and info["quoteAsset"] == "USDT"
    orders = binance.get_all_orders(symbol="BTCUSDT", limit=1000)
    assert [o["orderId"] for o in orders] == list(range(1_001, 2_001))
    assert binance.get_all_orders(symbol="BTCUSDT", orderId=1, limit=3)[-1]["orderId"] == 3


def test_bad_signature_and_unknown_key_are_binances_errors(client: tuple[Any, RestApi]) -> None:
    binance, _ = client
    with (
        sim_client(binance.API_URL, secret="wrong-secret") as forger,
        pytest.raises(BinanceAPIException) as caught,
    ):
        forger.get_all_orders(symbol="BTCUSDT")
    assert (caught.value.status_code, caught.value.code) == (400, -1022)
    with (
        sim_client(binance.API_URL, key="nobody") as stranger,
        pytest.raises(BinanceAPIException) as caught,
    ):
        stranger.get_all_orders(symbol="BTCUSDT")
    assert (caught.value.status_code, caught.value.code) == (401, -2015)


def test_too_much_weight_is_429_with_retry_after() -> None:
    # The exchange counts weight per UTC minute, as Binance does: a frozen weight clock, 30 s
    # into a minute, keeps the three calls in one minute whenever the test runs.
    frozen = time.time_ns() // 1_000_000 // MS_PER_MINUTE * MS_PER_MINUTE + 30_000
    rest = _rest(weight_limit=45, weight_clock=lambda: frozen)
    with exchange_on_loopback(rest) as url, sim_client(url) as binance:
        binance.get_exchange_info()
        binance.get_exchange_info()
        with pytest.raises(BinanceAPIException) as caught:
            binance.get_exchange_info()
    assert (caught.value.status_code, caught.value.code) == (429, -1003)
    assert caught.value.response.headers["Retry-After"] == "30"
    assert caught.value.response.headers["X-MBX-USED-WEIGHT-1M"] == "40"
