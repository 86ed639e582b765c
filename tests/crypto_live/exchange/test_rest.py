"""The simulated exchange's REST API as pure logic: signatures, recvWindow, weights, paging."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest

from crypto_live.exchange.account import SimulatedAccount
from crypto_live.exchange.limits import RestRejection, WeightLimiter, check_signed, sign
from crypto_live.exchange.rest import SIM_API_KEY, SIM_API_SECRET, RestApi, RestResponse
from crypto_live.exchange.trades import MS_PER_MINUTE, TradeModel

NOW = 1_700_000_010_000  # 30 s into a minute
LISTED = NOW - NOW % 60_000 - 3 * 24 * 3_600_000
ORIGIN = NOW - 3_600_000


class Clock:
    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def make_api(
    clock: Clock | None = None, weight_limit: int = 6_000, count: int | None = None
) -> RestApi:
    model = TradeModel(seed=7)
    return RestApi(
        ["BTCUSDT", "ETHUSDT"],
        model,
        SimulatedAccount(model, origin_ms=ORIGIN, interval_ms=1_000, count=count),
        weight_limit=weight_limit,
        listed_ms=LISTED,
        clock=clock or Clock(),
    )


def body(response: RestResponse) -> Any:
    return json.loads(response.body)


def header(response: RestResponse, name: str) -> str | None:
    return dict(response.headers).get(name)


def signed_target(params: dict[str, Any], secret: str = SIM_API_SECRET) -> str:
    query = urlencode(params)
    return f"/api/v3/allOrders?{query}&signature={sign(secret, query)}"


# -- signatures and recvWindow ----------------------------------------------------------------


def test_a_correct_signature_passes_and_a_wrong_one_is_1022() -> None:
    secrets = {"key": "secret"}
    query = f"symbol=BTCUSDT&timestamp={NOW}"
    params = {"symbol": "BTCUSDT", "timestamp": str(NOW), "signature": sign("secret", query)}
    check_signed(f"{query}&signature={params['signature']}", params, "key", secrets, NOW)
    forged = {**params, "signature": sign("other", query)}
    with pytest.raises(RestRejection) as caught:
        check_signed(f"{query}&signature={forged['signature']}", forged, "key", secrets, NOW)
    assert (caught.value.status, caught.value.code) == (400, -1022)


def test_tampering_with_a_signed_parameter_breaks_the_signature() -> None:
    api = make_api()
    target = signed_target({"symbol": "BTCUSDT", "limit": 5, "timestamp": NOW})
    response = api.handle(target.replace("limit=5", "limit=6"), "1.2.3.4", SIM_API_KEY)
    assert response.status == 400
    assert body(response) == {"code": -1022, "msg": "Signature for this request is not valid."}


@pytest.mark.parametrize(
    ("api_key", "status", "code"), [(None, 401, -2014), ("unknown", 401, -2015)]
)
def test_missing_or_unknown_api_key(api_key: str | None, status: int, code: int) -> None:
    response = make_api().handle(
        signed_target({"symbol": "BTCUSDT", "timestamp": NOW}), "ip", api_key
    )
    assert (response.status, body(response)["code"]) == (status, code)


@pytest.mark.parametrize(
    ("timestamp", "window", "code"),
    [
        (NOW - 5_001, None, -1021),  # older than the default 5 s window
        (NOW - 9_000, 10_000, None),  # inside a 10 s window
        (NOW - 10_001, 10_000, -1021),
        (NOW + 1_001, None, -1021),  # more than 1 s ahead of the server
        (NOW + 999, None, None),
        (NOW, 60_001, -1131),
    ],
)
def test_timestamp_against_recv_window(
    timestamp: int, window: int | None, code: int | None
) -> None:
    params: dict[str, Any] = {"symbol": "BTCUSDT", "limit": 1, "timestamp": timestamp}
    if window is not None:
        params["recvWindow"] = window
    response = make_api().handle(signed_target(params), "ip", SIM_API_KEY)
    if code is None:
        assert response.status == 200
        assert len(body(response)) == 1
    else:
        assert response.status == 400
        assert body(response)["code"] == code


def test_missing_signature_is_1102() -> None:
    response = make_api().handle(
        f"/api/v3/allOrders?symbol=BTCUSDT&timestamp={NOW}", "ip", SIM_API_KEY
    )
    assert (response.status, body(response)["code"]) == (400, -1102)


# -- weights and 429 ----------------------------------------------------------------------------


def test_weight_headers_count_per_client_and_minute() -> None:
    clock = Clock()
    api = make_api(clock)
    assert header(api.handle("/api/v3/ping", "a"), "X-MBX-USED-WEIGHT-1M") == "1"
    assert header(api.handle("/api/v3/exchangeInfo", "a"), "X-MBX-USED-WEIGHT-1M") == "21"
    klines = "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1"
    assert header(api.handle(klines, "a"), "X-MBX-USED-WEIGHT-1M") == "23"
    assert header(api.handle("/api/v3/ping", "b"), "X-MBX-USED-WEIGHT-1M") == "1"
    clock.now += MS_PER_MINUTE  # the next minute starts from zero
    assert header(api.handle("/api/v3/ping", "a"), "X-MBX-USED-WEIGHT-1M") == "1"


def test_over_the_weight_limit_is_429_with_retry_after_until_the_minute_ends() -> None:
    clock = Clock()
    api = make_api(clock, weight_limit=50)
    statuses = [api.handle("/api/v3/exchangeInfo", "a").status for _ in range(3)]
    assert statuses == [200, 200, 429]
    refused = api.handle("/api/v3/exchangeInfo", "a")
    assert refused.status == 429
    assert body(refused)["code"] == -1003
    assert header(refused, "Retry-After") == "30"  # NOW is 30 s into its minute
    assert header(refused, "X-MBX-USED-WEIGHT-1M") == "40"  # refused requests are not charged
    assert api.handle("/api/v3/ping", "other-ip").status == 200
    clock.now += 30_000
    assert api.handle("/api/v3/exchangeInfo", "a").status == 200


def test_retry_after_is_at_least_one_second() -> None:
    assert WeightLimiter(1).retry_after_seconds(MS_PER_MINUTE - 1) == 1
    assert WeightLimiter(1).retry_after_seconds(MS_PER_MINUTE) == 60


# -- klines ---------------------------------------------------------------------------------------


def klines(api: RestApi, **params: Any) -> list[list[Any]]:
    response = api.handle("/api/v3/klines?" + urlencode({"symbol": "BTCUSDT", **params}), "ip")
    assert response.status == 200, response.body
    result: list[list[Any]] = body(response)
    return result


def test_klines_page_by_start_time_without_gaps_or_overlaps() -> None:
    api = make_api()
    start = NOW - 2_500 * MS_PER_MINUTE
    pages, cursor = [], start
    while True:
        page = klines(api, interval="1m", startTime=cursor, limit=1000)
        if not page:
            break
        pages.append(page)
        cursor = page[-1][0] + MS_PER_MINUTE
    assert [len(page) for page in pages] == [1000, 1000, 500]  # the last one is still open
    opens = [row[0] for page in pages for row in page]
    assert (
        opens
        == list(range(start - start % MS_PER_MINUTE + MS_PER_MINUTE, NOW, MS_PER_MINUTE))[
            : len(opens)
        ]
    )
    assert opens[-1] == NOW - NOW % MS_PER_MINUTE
    assert all(row[6] == row[0] + MS_PER_MINUTE - 1 for page in pages for row in page)


def test_klines_are_made_from_the_trades() -> None:
    api = make_api()
    (row,) = klines(api, interval="1m", startTime=NOW - 10 * MS_PER_MINUTE, limit=1)
    trades = list(api.model.trades("BTCUSDT", row[0], row[6]))
    assert row[8] == len(trades)
    assert Decimal(row[1]) == trades[0].price and Decimal(row[4]) == trades[-1].price
    assert Decimal(row[2]) == max(t.price for t in trades)
    assert Decimal(row[3]) == min(t.price for t in trades)
    assert Decimal(row[5]) == sum(t.qty for t in trades)
    assert Decimal(row[9]) == sum(t.qty for t in trades if not t.buyer_is_maker)
    assert len(row) == 12 and row[11] == "0"


def test_klines_latest_end_time_limit_and_listing() -> None:
    api = make_api()
    latest = klines(api, interval="1m")
    assert len(latest) == 500 and latest[-1][0] == NOW - NOW % MS_PER_MINUTE
    assert len(klines(api, interval="1m", limit=5000)) == 1000  # served as the maximum
    end = NOW - 100 * MS_PER_MINUTE
    before = klines(api, interval="5m", endTime=end, limit=3)
    assert [row[0] % (5 * MS_PER_MINUTE) for row in before] == [0, 0, 0]
    assert before[-1][0] <= end
    # python-binance's first call of get_historical_klines: the first kline ever.
    (first,) = klines(api, interval="1m", startTime=0, limit=1)
    assert first[0] == LISTED
    assert klines(api, interval="1m", startTime=NOW + MS_PER_MINUTE) == []


def test_five_minute_klines_sum_their_minutes() -> None:
    api = make_api()
    start = NOW - 60 * MS_PER_MINUTE
    (five,) = klines(api, interval="5m", startTime=start, limit=1)
    minutes = klines(api, interval="1m", startTime=five[0], limit=5)
    assert five[1] == minutes[0][1] and five[4] == minutes[-1][4]
    assert five[8] == sum(row[8] for row in minutes)
    assert Decimal(five[5]) == sum(Decimal(row[5]) for row in minutes)


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("symbol=BTCUSDT&interval=2m", -1120),
        ("symbol=NOPE&interval=1m", -1121),
        ("interval=1m", -1102),
        ("symbol=BTCUSDT&interval=1m&startTime=abc", -1100),
    ],
)
def test_klines_errors(query: str, code: int) -> None:
    response = make_api().handle(f"/api/v3/klines?{query}", "ip")
    assert (response.status, body(response)["code"]) == (400, code)


# -- allOrders and exchangeInfo ----------------------------------------------------------------


def orders(api: RestApi, **params: Any) -> list[dict[str, Any]]:
    response = api.handle(
        signed_target({"symbol": "BTCUSDT", **params, "timestamp": api.clock()}),
        "ip",
        SIM_API_KEY,
    )
    assert response.status == 200, response.body
    result: list[dict[str, Any]] = body(response)
    return result


def test_all_orders_most_recent_by_order_id_and_by_time() -> None:
    api = make_api(count=1_500)
    recent = orders(api, limit=1000)
    assert [o["orderId"] for o in recent] == list(range(501, 1_501))
    assert orders(api, limit=1000) == recent  # deterministic
    assert [o["orderId"] for o in orders(api, orderId=1_400, limit=1000)] == list(
        range(1_400, 1_501)
    )
    window = orders(api, startTime=ORIGIN + 10_000, endTime=ORIGIN + 19_999)
    assert [o["orderId"] for o in window] == list(range(11, 21))
    assert all(ORIGIN + 10_000 <= o["time"] <= ORIGIN + 19_999 for o in window)
    assert len(orders(api)) == 500  # Binance's default limit
    times = [o["time"] for o in recent]
    assert times == sorted(times) and times[-1] <= NOW
    statuses = {o["status"] for o in recent}
    assert {"FILLED", "CANCELED", "NEW"} <= statuses
    filled = [o for o in recent if o["status"] == "FILLED"]
    assert all(o["executedQty"] == o["origQty"] for o in filled)
    assert all(o["executedQty"] == "0.00000000" for o in recent if o["status"] == "NEW")


def test_an_open_account_gains_one_order_a_second() -> None:
    clock = Clock()
    api = make_api(clock)
    newest = orders(api, limit=1)[0]["orderId"]
    assert newest in (3_600, 3_601)
    clock.now += 10_000
    assert orders(api, limit=1)[0]["orderId"] in (newest + 9, newest + 10, newest + 11)


def test_all_orders_span_over_24_hours_is_1127() -> None:
    api = make_api()
    target = signed_target(
        {"symbol": "BTCUSDT", "startTime": 0, "endTime": 25 * 3_600_000, "timestamp": NOW}
    )
    response = api.handle(target, "ip", SIM_API_KEY)
    assert (response.status, body(response)["code"]) == (400, -1127)


def test_exchange_info_has_binances_shape() -> None:
    api = make_api()
    info = body(api.handle("/api/v3/exchangeInfo", "ip"))
    assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", "ETHUSDT"]
    assert info["rateLimits"][0]["rateLimitType"] == "REQUEST_WEIGHT"
    btc = info["symbols"][0]
    assert (btc["baseAsset"], btc["quoteAsset"], btc["status"]) == ("BTC", "USDT", "TRADING")
    filters = {f["filterType"]: f for f in btc["filters"]}
    assert filters["PRICE_FILTER"]["tickSize"] == "0.01000000"
    assert filters["LOT_SIZE"]["stepSize"] == "0.00001000"
    one = body(api.handle("/api/v3/exchangeInfo?symbol=ETHUSDT", "ip"))
    assert [s["symbol"] for s in one["symbols"]] == ["ETHUSDT"]
    some = body(api.handle('/api/v3/exchangeInfo?symbols=["ETHUSDT","BTCUSDT"]', "ip"))
    assert [s["symbol"] for s in some["symbols"]] == ["ETHUSDT", "BTCUSDT"]
    assert api.handle("/api/v3/exchangeInfo?symbol=NOPE", "ip").status == 400
    assert api.handle("/api/v3/nothing", "ip").status == 404
