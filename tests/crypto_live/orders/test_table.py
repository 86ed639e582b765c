"""Orders as rows, bytes, keys and items; the paging and retry logic over fakes. Pure."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

import pytest

from crypto_live.lake.arrow import pa, pq
from crypto_live.orders import OrdersError
from crypto_live.orders.binance_api import (
    ApiCredentials,
    RetryingCalls,
    latest_orders,
    orders_between,
)
from crypto_live.orders.table import (
    COLUMNS,
    dynamodb_item,
    order_rows,
    snapshot_keys,
    to_csv_bytes,
    to_parquet_bytes,
)

T0 = 1_795_392_000_000  # 2026-11-23T00:00Z


def order(order_id: int, time_ms: int | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "symbol": "BTCUSDT",
        "orderId": order_id,
        "price": "65000.12000000",
        "origQty": "0.00150000",
        "executedQty": "0.00000000",
        "status": "NEW",
        "type": "LIMIT",
        "side": "BUY",
        "time": T0 + order_id * 1000 if time_ms is None else time_ms,
        "clientOrderId": "x",
        **extra,
    }


def test_rows_bytes_and_keys() -> None:
    rows = order_rows([order(3), order(1), order(2), order(1)])  # a page overlap
    assert [row.order_id for row in rows] == [1, 2, 3]
    table = pq.read_table(pa.BufferReader(to_parquet_bytes(rows)))
    assert table.schema.names == list(COLUMNS)
    assert table.column("Price").to_pylist() == [Decimal("65000.12")] * 3
    assert to_parquet_bytes(rows) == to_parquet_bytes(order_rows([order(1), order(2), order(3)]))
    lines = list(csv.reader(io.StringIO(to_csv_bytes(rows).decode())))
    assert lines[0] == list(COLUMNS)
    assert lines[1] == [
        "BTCUSDT",
        "1",
        "65000.12000000",
        "0.00150000",
        "0.00000000",
        "NEW",
        "LIMIT",
        "BUY",
    ]
    assert snapshot_keys(rows) == (
        "orders/csv/symbol=BTCUSDT/date=2026-11-23/snapshot-1-3.csv",
        "orders/parquet/symbol=BTCUSDT/date=2026-11-23/snapshot-1-3.parquet",
    )
    item = dynamodb_item(rows[0])
    assert item["orderId"] == {"N": "1"} and item["symbol"] == {"S": "BTCUSDT"}
    assert item["price"] == {"N": "65000.12"} and item["executedQty"] == {"N": "0"}


def test_an_unreadable_order_is_one_clear_error() -> None:
    with pytest.raises(OrdersError, match="without a valid price"):
        order_rows([order(1, price="abc")])
    with pytest.raises(OrdersError, match="cannot read"):
        order_rows([{"orderId": 1}])


def test_credentials_never_show_in_a_repr() -> None:
    from pydantic import SecretStr

    credentials = ApiCredentials(SecretStr("the-key"), SecretStr("the-secret"))
    assert "the-secret" not in repr(credentials) and "the-key" not in repr(credentials)


class FakeBinance:
    """allOrders over a list, with Binance's selection rules, recording each call."""

    def __init__(self, orders: list[dict[str, Any]]) -> None:
        self.orders = orders
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **params: Any) -> list[dict[str, Any]]:
        self.calls.append(params)
        chosen = [
            o
            for o in self.orders
            if params.get("startTime", 0) <= o["time"] <= params.get("endTime", 10**15)
            and o["orderId"] >= params.get("orderId", 0)
        ]
        limit = params.get("limit", 500)
        return chosen[:limit] if "startTime" in params or "orderId" in params else chosen[-limit:]


def test_orders_between_pages_forward_and_keeps_every_order_once() -> None:
    # 2,500 orders, five per millisecond, so pages end inside a millisecond.
    orders = [order(i, T0 + i // 5) for i in range(1, 2_501)]
    fake = FakeBinance(orders)
    got = orders_between(fake, "BTCUSDT", T0, T0 + 10_000)
    assert [o["orderId"] for o in got] == list(range(1, 2_501))
    assert [call["startTime"] for call in fake.calls] == [T0, T0 + 200, T0 + 399]


def test_orders_between_steps_past_a_full_page_in_one_millisecond() -> None:
    orders = [order(i, T0) for i in range(1, 1_001)] + [order(1_001, T0 + 1)]
    fake = FakeBinance(orders)
    got = orders_between(fake, "BTCUSDT", T0, T0 + 10)
    assert [o["orderId"] for o in got] == list(range(1, 1_002))
    assert len(fake.calls) == 2


def test_latest_orders_is_one_request_within_binances_limit() -> None:
    fake = FakeBinance([order(i) for i in range(1, 2_001)])
    assert [o["orderId"] for o in latest_orders(fake, "BTCUSDT", 1_000)] == list(
        range(1_001, 2_001)
    )
    with pytest.raises(OrdersError, match=r"1\.\.1000"):
        latest_orders(fake, "BTCUSDT", 1_001)
    with pytest.raises(OrdersError, match="24 hours"):
        orders_between(fake, "BTCUSDT", 0, 25 * 3_600_000)


def _api_exception(status: int, code: int, msg: str, headers: dict[str, str]) -> Exception:
    from binance.exceptions import BinanceAPIException

    class Response:
        def __init__(self) -> None:
            self.headers = headers
            self.text = ""

    return BinanceAPIException(Response(), status, f'{{"code": {code}, "msg": "{msg}"}}')


def test_retrying_calls_wait_retry_after_then_give_up_in_one_line() -> None:
    answers: list[Any] = [
        _api_exception(429, -1003, "Too much request weight used", {"Retry-After": "7"}),
        _api_exception(418, -1003, "banned", {"Retry-After": "12"}),
        [order(1)],
    ]
    sleeps: list[float] = []

    def get(**params: Any) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    call = RetryingCalls(get, "http://x/api", sleep=sleeps.append)
    assert call(symbol="BTCUSDT") == [order(1)]
    assert sleeps == [7.0, 12.0] and (call.calls, call.retries) == (3, 2)

    always = RetryingCalls(
        lambda **_: (_ for _ in ()).throw(_api_exception(429, -1003, "x", {})),
        "http://x/api",
        attempts=2,
        sleep=sleeps.append,
    )
    with pytest.raises(OrdersError, match=r"too many requests \(HTTP 429\).*\(-1003\)$"):
        always(symbol="BTCUSDT")
    assert sleeps[-1] == 5.0  # no Retry-After header: a default pause
