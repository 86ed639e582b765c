"""`candles gaps` through the CLI over moto: the listing and its exit code, then `--repair`
with a DynamoDB consumer process running: python-binance's Client against the simulated
exchange's REST, Kinesis, the consumer, and a table equal to the REST candles afterwards."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from consumers.dynamodb.candles import candle_item
from core.aws import AwsClients
from core.settings import Settings
from crypto_live.backfill.minutes import MS_PER_MINUTE, minute_text
from crypto_live.backfill.rows import kline_record
from crypto_live.cli import main
from crypto_live.exchange.account import SimulatedAccount
from crypto_live.exchange.rest import RestApi
from crypto_live.exchange.trades import TradeModel
from tests.crypto_live.exchange.loopback import exchange_on_loopback
from tests.support.candles import row_values, stream_klines, table_candles
from tests.support.pipeline import launch_consumer, provisioned

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]
M = MS_PER_MINUTE
SYMBOLS = ("BTCUSDT", "ETHUSDT")
MISSING = (3, 4, 5, 17, 29)  # BTCUSDT minutes not in the table


def _rest() -> RestApi:
    model = TradeModel(seed=8)
    now = time.time_ns() // 1_000_000
    return RestApi(
        SYMBOLS,
        model,
        SimulatedAccount(model, origin_ms=now - 3_600_000),
        listed_ms=now - now % M - 86_400_000,
    )


def rest_row(rest: RestApi, symbol: str, open_time: int) -> list[Any]:
    candle = rest.model.candle(symbol, open_time, M, open_time + M)
    assert candle is not None
    return candle.as_binance()


def cli(settings: Settings, *args: str) -> int:
    common = ["--endpoint-url", settings.aws_endpoint_url or "",
              "--stream-name", settings.kinesis_stream_name, "--no-progress"]  # fmt: skip
    return main(["candles", "gaps", *args, *common])


def test_gaps_are_listed_then_repaired_through_kinesis_and_the_consumer(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = provisioned(aws_settings, aws, 2)
    table = settings.dynamo_candles_table_name
    rest = _rest()
    now = time.time_ns() // 1_000_000
    first = now - now % M - 40 * M
    span = [first + i * M for i in range(30)]
    for symbol in SYMBOLS:
        for index, open_time in enumerate(span):
            if symbol == "BTCUSDT" and index in MISSING:
                continue
            record = kline_record(symbol, rest_row(rest, symbol, open_time), 0)
            aws.dynamodb.put_item(TableName=table, Item=candle_item(record))
    window = ["--symbol", "BTCUSDT", "--symbol", "ethusdt", "--from", minute_text(first),
              "--to", str(first + 30 * M)]  # fmt: skip
    bounds = f"{minute_text(first)}..{minute_text(first + 29 * M)}"

    assert cli(settings, *window) == 3
    assert capsys.readouterr().out.splitlines() == [
        f"BTCUSDT: 5 missing of 30 minutes in {bounds}, in 3 ranges:",
        f"  {minute_text(first + 3 * M)}..{minute_text(first + 5 * M)} (3 minutes)",
        f"  {minute_text(first + 17 * M)} (1 minute)",
        f"  {minute_text(first + 29 * M)} (1 minute)",
        f"ETHUSDT: no missing minute of 30 in {bounds}",
        "5 missing closed minutes in 3 ranges (1 of 2 symbols)",
    ]

    with (
        exchange_on_loopback(rest) as url,
        launch_consumer(settings, "dynamodb", tmp_path / "consumer.log") as consumer,
    ):
        code = cli(settings, *window, "--repair", "--api-url", url, "--wait", "60")
        out = capsys.readouterr().out.splitlines()
        consumer.terminate()
    assert code == 0, out
    assert "repair: 5 candles fetched, 5 published, 1 page, 0 retries" in out
    assert out[-4:] == [
        "after repair:",
        f"BTCUSDT: no missing minute of 30 in {bounds}",
        f"ETHUSDT: no missing minute of 30 in {bounds}",
        "0 missing closed minutes (2 symbols)",
    ]
    # Only the missing minutes went through Kinesis, once each; the table now equals the REST
    # klines of the whole range.
    published = [
        (k.partition_key, k.record["open_time"])
        for k in stream_klines(aws, settings.kinesis_stream_name)
    ]
    assert sorted(published) == [("BTCUSDT", span[i]) for i in MISSING]
    assert table_candles(aws, table) == {
        (symbol, t): row_values(rest_row(rest, symbol, t)) for symbol in SYMBOLS for t in span
    }
