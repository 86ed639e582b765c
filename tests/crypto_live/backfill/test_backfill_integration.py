"""`backfill klines` end to end: python-binance's real Client over HTTP against the simulated
exchange's REST side, publishing into a moto Kinesis stream; the stream then holds exactly the
REST candles of the range, once each. Also the 429 path and weight pauses, on a clock the test
moves (the exchange's minutes and the backfill's waits are the same fake time)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from core.aws import AwsClients
from core.settings import Settings
from crypto_live.backfill.minutes import MS_PER_MINUTE, MinuteRange, last_closed_open
from crypto_live.backfill.run import BackfillJob, run_backfill
from crypto_live.cli import main
from crypto_live.exchange.account import SimulatedAccount
from crypto_live.exchange.rest import RestApi
from crypto_live.exchange.trades import TradeModel
from tests.crypto_live.backfill.fakes import FakeClock
from tests.crypto_live.exchange.loopback import exchange_on_loopback
from tests.support.candles import rest_klines, stream_klines
from tests.support.pipeline import provisioned

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
M = MS_PER_MINUTE


def _rest(clock: Any = None, weight_limit: int = 6_000) -> RestApi:
    model = TradeModel(seed=3)
    now = time.time_ns() // 1_000_000
    options = {"clock": clock} if clock is not None else {}
    return RestApi(
        ["BTCUSDT", "ETHUSDT"],
        model,
        SimulatedAccount(model, origin_ms=now - 3_600_000),
        weight_limit=weight_limit,
        listed_ms=now - now % M - 10 * 24 * 3_600_000,
        **options,
    )


def as_rows(records: list[dict[str, Any]]) -> list[list[Any]]:
    """Kline records back as Binance's arrays (the order of the fields in a REST row)."""
    return [
        [
            r["open_time"], r["open_price"], r["high_price"], r["low_price"], r["close_price"],
            r["base_volume"], r["close_time"], r["quote_volume"], r["trades"],
            r["taker_buy_base_volume"], r["taker_buy_quote_volume"], "0",
        ]
        for r in records
    ]  # fmt: skip


def backfill_cli(settings: Settings, url: str, symbol: str, start: int, end: int) -> int:
    return main(
        [
            "backfill", "klines", "--symbol", symbol, "--from", str(start), "--to", str(end),
            "--endpoint-url", settings.aws_endpoint_url or "",
            "--stream-name", settings.kinesis_stream_name, "--api-url", url, "--no-progress",
        ]
    )  # fmt: skip


def test_backfill_command_puts_exactly_the_rest_candles_into_the_stream(
    aws_settings: Settings, aws: AwsClients, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = provisioned(aws_settings, aws, 2)
    rest = _rest()
    last = last_closed_open(time.time_ns() // 1_000_000) - 60 * M
    start, end = last - 2_099 * M, last + M  # 2,100 minutes: three pages
    with exchange_on_loopback(rest) as url:
        code = backfill_cli(settings, url, "btcusdt", start, end)
        expected = rest_klines(url, "BTCUSDT", start, end)
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].endswith(": 2,100 candles fetched, 2,100 published, 3 pages, 0 retries"), out
    assert len(expected) == 2_100 and expected[0][0] == start

    klines = stream_klines(aws, settings.kinesis_stream_name)
    assert Counter((k.partition_key, k.record["open_time"]) for k in klines) == Counter(
        ("BTCUSDT", row[0]) for row in expected
    )  # once each, keyed by symbol
    by_time = sorted((k.record for k in klines), key=lambda r: r["open_time"])
    assert as_rows(by_time) == expected
    assert all(
        r["closed"] and r["source"] == "backfill" and r["stream_type"] == "btcusdt@kline_1m"
        for r in by_time
    )


def test_minutes_not_closed_yet_are_left_to_the_websocket(
    aws_settings: Settings, aws: AwsClients, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = provisioned(aws_settings, aws, 1)
    last = last_closed_open(time.time_ns() // 1_000_000)
    with exchange_on_loopback(_rest()) as url:
        code = backfill_cli(settings, url, "ETHUSDT", last - 2 * M, last + 11 * M)
    assert code == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    # 13 minutes asked for: the 3 closed ones (4 if a minute closed meanwhile) are fetched
    fetched = len(stream_klines(aws, settings.kinesis_stream_name))
    assert fetched in (3, 4)
    assert line.endswith(
        f": {fetched} candles fetched, {fetched} published, 1 page, 0 retries; "
        f"{13 - fetched} minutes not closed yet (left to the websocket)"
    ), line


def _backfill(settings: Settings, url: str, clock: FakeClock, max_weight: int) -> Any:
    last = last_closed_open(clock()) - 30 * M
    span_first = last - 2_499 * M
    job = BackfillJob("ETHUSDT", (MinuteRange(span_first, last),))
    summary = run_backfill(
        settings.with_overrides(binance_api_url=url),
        AwsClients(settings),
        [job],
        max_weight=max_weight,
        sleep=clock.sleep,
        clock_ms=clock,
    )
    return summary, span_first, last


@pytest.mark.parametrize(
    ("max_weight", "retries", "pauses"),
    [(6_000, 1, 0), (4, 0, 1)],
    ids=["past-the-limit-429", "paced-below-it"],
)
def test_a_429_is_retried_after_retry_after_and_pacing_avoids_it(
    aws_settings: Settings, aws: AwsClients, max_weight: int, retries: int, pauses: int
) -> None:
    # The exchange allows weight 5 a minute: time (1) and two pages (2 each). Its clock and
    # the backfill's are one fake clock, 30.5 s into a minute; the backfill's sleeps move it.
    settings = provisioned(aws_settings, aws, 1)
    clock = FakeClock(time.time_ns() // 1_000_000 // M * M + 30_500)
    rest = _rest(clock=clock, weight_limit=5)
    with exchange_on_loopback(rest) as url:
        summary, first, last = _backfill(settings, url, clock, max_weight)
        rest.limiter.limit = 6_000  # python-binance's own paging, for the expected candles
        expected = rest_klines(url, "ETHUSDT", first, last + M)
    assert (summary.retries, summary.pauses, summary.pages) == (retries, pauses, 3)
    # Retry-After (the exchange's: 30 s to its next minute), or the pacer's wait to 1 s past it
    assert clock.sleeps == ([30.0] if retries else [30.5])
    klines = stream_klines(aws, settings.kinesis_stream_name)
    assert as_rows(sorted((k.record for k in klines), key=lambda r: r["open_time"])) == expected
    assert len(klines) == len(expected) == 2_500
