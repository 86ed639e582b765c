"""`crypto-live orders snapshot` end to end: the CLI, python-binance's real Client over HTTP to
the simulated exchange on loopback, and a real moto server (Secrets Manager, S3, DynamoDB)."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from decimal import Decimal
from typing import Any

import pytest

from core.aws import AwsClients
from core.settings import Settings
from crypto_live.cli import main
from crypto_live.exchange.account import SimulatedAccount
from crypto_live.exchange.limits import WeightLimiter
from crypto_live.exchange.rest import RestApi
from crypto_live.exchange.trades import TradeModel
from crypto_live.lake.arrow import pa, pq
from crypto_live.orders.snapshot import SnapshotRequest, take_snapshot
from crypto_live.orders.table import COLUMNS
from crypto_live.provision import provision
from tests.crypto_live.exchange.loopback import exchange_on_loopback

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SYMBOL = "BTCUSDT"
TABLE = "crypto-live-orders"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def rest_api(
    count: int | None = 1_000,
    *,
    clock: Any = _now_ms,
    weight_limit: int = 6_000,
    weight_clock: Any = None,
) -> RestApi:
    model = TradeModel(seed=11)
    origin = _now_ms() - 30 * 60_000  # 1,000 orders a second apart, all in the past
    return RestApi(
        ["BTCUSDT", "ETHUSDT", "BNBUSDT"],
        model,
        SimulatedAccount(model, origin_ms=origin, interval_ms=1_000, count=count),
        clock=clock,
        weight_limit=weight_limit,
        weight_clock=weight_clock,
    )


def snapshot(settings: Settings, url: str, *extra: str) -> int:
    return main(
        [
            "orders",
            "snapshot",
            "--symbol",
            SYMBOL,
            "--endpoint-url",
            settings.aws_endpoint_url or "",
            "--api-url",
            url,
            *extra,
        ]
    )


def lake_state(aws: AwsClients, bucket: str) -> dict[str, tuple[str, Any]]:
    listed = aws.s3.list_objects_v2(Bucket=bucket, Prefix="orders/").get("Contents", [])
    return {item["Key"]: (item["ETag"], item["LastModified"]) for item in listed}


def table_items(aws: AwsClients) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in aws.dynamodb.get_paginator("scan").paginate(TableName=TABLE):
        items.extend(page["Items"])
    return items


@pytest.fixture
def provisioned(aws_settings: Settings, aws: AwsClients) -> Settings:
    provision(aws_settings, aws)
    return aws_settings


@pytest.mark.slow
def test_snapshot_of_1000_orders_then_a_rerun_changes_nothing(
    provisioned: Settings, aws: AwsClients, capsys: pytest.CaptureFixture[str]
) -> None:
    rest = rest_api()
    expected = rest.account.all_orders(SYMBOL, _now_ms(), limit=1000)
    with exchange_on_loopback(rest) as url:
        assert snapshot(provisioned, url, "--limit", "1000") == 0
        first_out = capsys.readouterr().out
        objects = lake_state(aws, provisioned.s3_bucket)
        assert snapshot(provisioned, url, "--limit", "1000") == 0
        second_out = capsys.readouterr().out
    assert "1,000 orders of BTCUSDT (ids 1..1000" in first_out
    assert "1,000 items written, 0 unchanged" in first_out
    assert "0 items written, 1,000 unchanged" in second_out
    assert "(0 objects written)" in second_out

    day = time.strftime("%Y-%m-%d", time.gmtime(expected[0]["time"] / 1000))
    parquet_key = f"orders/parquet/symbol=BTCUSDT/date={day}/snapshot-1-1000.parquet"
    csv_key = f"orders/csv/symbol=BTCUSDT/date={day}/snapshot-1-1000.csv"
    assert sorted(objects) == [csv_key, parquet_key]
    assert lake_state(aws, provisioned.s3_bucket) == objects  # same ETags, never rewritten

    body = aws.s3.get_object(Bucket=provisioned.s3_bucket, Key=parquet_key)["Body"].read()
    table = pq.read_table(pa.BufferReader(body))
    assert table.schema.names == list(COLUMNS)
    assert table.num_rows == 1_000
    assert str(table.schema.field("OrderID").type) == "int64"
    assert str(table.schema.field("Price").type) == "decimal128(38, 8)"
    rows = table.to_pylist()
    assert [row["OrderID"] for row in rows] == [order["orderId"] for order in expected]
    assert rows[0] == {
        "Symbol": SYMBOL,
        "OrderID": 1,
        "Price": Decimal(expected[0]["price"]),
        "OrigQty": Decimal(expected[0]["origQty"]),
        "ExecutedQty": Decimal(expected[0]["executedQty"]),
        "status": expected[0]["status"],
        "type": expected[0]["type"],
        "side": expected[0]["side"],
    }

    text = aws.s3.get_object(Bucket=provisioned.s3_bucket, Key=csv_key)["Body"].read().decode()
    records = list(csv.reader(io.StringIO(text)))
    assert records[0] == list(COLUMNS)
    assert len(records) == 1_001
    assert records[1] == [
        SYMBOL,
        "1",
        expected[0]["price"],
        expected[0]["origQty"],
        expected[0]["executedQty"],
        expected[0]["status"],
        expected[0]["type"],
        expected[0]["side"],
    ]

    items = table_items(aws)
    assert len(items) == 1_000
    assert {int(item["orderId"]["N"]) for item in items} == set(range(1, 1_001))
    by_id = {int(item["orderId"]["N"]): item for item in items}
    order = expected[499]
    assert Decimal(by_id[500]["executedQty"]["N"]) == Decimal(order["executedQty"])
    assert by_id[500]["status"]["S"] == order["status"]


@pytest.mark.slow
def test_minutes_pages_through_the_period(
    provisioned: Settings, aws: AwsClients, capsys: pytest.CaptureFixture[str]
) -> None:
    rest = rest_api(count=None)  # an open account: one order a second for the last 30 minutes
    with exchange_on_loopback(rest) as url:
        assert snapshot(provisioned, url, "--minutes", "25") == 0
    out = capsys.readouterr().out
    items = table_items(aws)
    ids = sorted(int(item["orderId"]["N"]) for item in items)
    # 25 minutes at one a second: 1,500 orders, asked in pages of 1,000.
    assert 1_498 <= len(ids) <= 1_501
    assert ids == list(range(ids[0], ids[-1] + 1))
    assert "2 requests" in out


def test_a_429_is_retried_after_retry_after(provisioned: Settings, aws: AwsClients) -> None:
    # allOrders weighs 20: with 20 of a 30-a-minute limit already spent, the first request is
    # answered 429 with Retry-After up to the end of the minute; the fake sleep starts the next
    # minute's budget (the limiter afresh) instead of waiting.
    frozen = _now_ms() // 60_000 * 60_000 + 1_000  # weights counted 1 s into a minute
    rest = rest_api(weight_limit=30, weight_clock=lambda: frozen)
    rest.limiter.charge("127.0.0.1", 20, frozen)
    sleeps: list[float] = []

    def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        rest.limiter = WeightLimiter(30)

    with exchange_on_loopback(rest) as url:
        settings = provisioned.with_overrides(binance_api_url=url)
        summary = take_snapshot(settings, aws, SnapshotRequest(SYMBOL, limit=10), sleep=fake_sleep)
    assert sleeps == [59.0]
    assert (summary.orders, summary.requests, summary.retries) == (10, 2, 1)
    assert len(table_items(aws)) == 10


@pytest.mark.parametrize(
    ("secret", "clock_skew_ms", "message"),
    [
        (
            {"api_key": "crypto-live-sim-key", "api_secret": "not-the-secret"},
            0,
            "crypto-live: Binance rejected the request: invalid signature (-1022)\n",
        ),
        (
            None,
            -120_000,  # the exchange's clock two minutes behind: our timestamp is "ahead"
            "crypto-live: Binance rejected the request: timestamp outside the recvWindow "
            "(is this machine's clock right?) (-1021)\n",
        ),
        (
            None,
            +120_000,  # two minutes ahead: our timestamp is older than recvWindow
            "crypto-live: Binance rejected the request: timestamp outside the recvWindow "
            "(is this machine's clock right?) (-1021)\n",
        ),
        (
            {"api_key": "someone-else", "api_secret": "x"},
            0,
            "crypto-live: Binance rejected the request: invalid API key, IP, or permissions "
            "(-2015)\n",
        ),
    ],
    ids=["bad-signature", "timestamp-ahead", "timestamp-old", "unknown-key"],
)
def test_a_rejected_request_is_one_line_naming_it(
    provisioned: Settings,
    aws: AwsClients,
    capsys: pytest.CaptureFixture[str],
    secret: dict[str, str] | None,
    clock_skew_ms: int,
    message: str,
) -> None:
    import json

    if secret is not None:
        aws.secretsmanager.put_secret_value(
            SecretId=provisioned.binance_api_secret, SecretString=json.dumps(secret)
        )
    rest = rest_api(clock=lambda: _now_ms() + clock_skew_ms)
    with exchange_on_loopback(rest) as url:
        code = snapshot(provisioned, url, "--limit", "5")
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err == message
    assert "Traceback" not in captured.err + captured.out
    assert table_items(aws) == []
    assert "not-the-secret" not in captured.err + captured.out


def test_a_missing_secret_and_an_unreachable_exchange_are_one_line(
    aws_settings: Settings, aws: AwsClients, capsys: pytest.CaptureFixture[str]
) -> None:
    assert snapshot(aws_settings, "http://127.0.0.1:9/api", "--limit", "5") == 1
    assert capsys.readouterr().err.startswith(
        "crypto-live: secret crypto-live.binance_api not found"
    )
    provision(aws_settings, aws)
    capsys.readouterr()  # provision's log line
    assert snapshot(aws_settings, "http://127.0.0.1:9/api", "--limit", "5") == 1
    assert capsys.readouterr().err == (
        "crypto-live: cannot reach Binance at http://127.0.0.1:9/api: ConnectionError\n"
    )


def test_up_sim_points_the_orders_tooling_at_its_exchange(
    provisioned: Settings, aws: AwsClients
) -> None:
    from crypto_live.up import _market_source

    async def scenario() -> Any:
        async with _market_source(provisioned.with_overrides(exchange_symbols=2), "sim") as sim:
            assert sim.binance_api_url is not None
            assert sim.binance_api_url.startswith("http://127.0.0.1:")
            assert sim.binance_api_url.endswith("/api")
            # The provisioned placeholder secret is the simulated account's own pair.
            return await asyncio.to_thread(
                take_snapshot, sim, aws, SnapshotRequest(SYMBOL, limit=20)
            )

    summary = asyncio.run(scenario())
    assert summary.orders == 20
    assert summary.last_id is not None and summary.first_id == summary.last_id - 19
    assert len(table_items(aws)) == 20
