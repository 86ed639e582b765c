"""Done when: after a 3-minute websocket drop, `candles gaps` finds the missing minutes, and
after `--repair` there are 0 gaps.

The producer and the DynamoDB consumer run as processes against a simulated exchange driven
tick by tick on a simulated clock (10 s of exchange time per tick, minutes pass in a fraction
of a second), two hours in the past so every minute is also closed by this machine's clock.
The producer reaches the exchange's websocket through a TCP relay; cutting it drops the
connection without a close frame and refuses reconnects while three minute boundaries pass.
Their closed klines go to nobody. `candles gaps` (symbols from BINANCE_STREAMS) lists exactly
those minutes; `--repair` fetches them over REST (python-binance) from the same exchange and
publishes them through Kinesis; the consumer writes them; the table then holds the exchange's
REST kline of every minute of the range, once each. The S3 consumer runs alongside: its kline
prefix ends with exactly the same closed candles, each once (Done when: kline events in, equal
closed candles in DynamoDB and S3, exactly once).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path

import pytest

from core.aws import AwsClients
from core.settings import Settings
from crypto_live.backfill.minutes import MS_PER_MINUTE, minute_text
from crypto_live.cli import main
from crypto_live.exchange.account import SimulatedAccount
from crypto_live.exchange.price_walk import generate_symbols
from crypto_live.exchange.rest import DEFAULT_LISTED_MS, RestApi
from crypto_live.exchange.trades import TradeModel
from tests.support.candles import ROW_FIELDS, rest_klines, row_values, stream_klines, table_candles
from tests.support.pipeline import (
    ServiceProcess,
    launch_consumer,
    producer_env,
    provisioned,
    wait_until,
)
from tests.support.system import ExchangeThread, running, s3_rows
from tests.support.tcp_relay import TcpRelay

pytestmark = [pytest.mark.integration, pytest.mark.slow]

M = MS_PER_MINUTE
SYMBOLS = tuple(generate_symbols(2))  # BTCUSDT, ETHUSDT
STREAMS = ",".join(f"{s.lower()}@kline_1m" for s in SYMBOLS)
STEP_MS = 10_000  # exchange time per tick
# Minutes of the run, from the first (A): three closed with the producer connected, three
# while it is cut off (A+3..A+5), three after it is back.
BEFORE, DROPPED, AFTER = range(0, 3), range(3, 6), range(6, 9)


class SimClock:
    """The exchange's clock: its ticks, its REST answers (what is closed, server time)."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


async def _tick(exchange: ExchangeThread, now_ms: int) -> int:
    return exchange.exchange.tick(now_ms)  # on the exchange's loop, where its queues live


def tick_through(
    exchange: ExchangeThread, clock: SimClock, end_ms: int, *services: ServiceProcess
) -> None:
    """Tick every STEP_MS of exchange time up to ``end_ms``, each tick sent before the next
    (a client that far behind would be dropped as slow)."""
    ex = exchange.exchange
    while clock.now_ms + STEP_MS <= end_ms:
        clock.now_ms += STEP_MS
        target = ex.messages_sent + exchange.call(_tick(exchange, clock.now_ms))
        wait_until(lambda: running(*services) and ex.messages_sent >= target, 10, 0.01)  # noqa: B023


def lake_klines(
    aws: AwsClients, settings: Settings
) -> list[tuple[tuple[str, int], tuple[Decimal, ...]]]:
    """The S3 kline prefix's rows as ((symbol, open_time), row values), repeats kept."""
    rows = s3_rows(aws, settings, settings.s3_klines_dir_path)
    assert all(row["closed"] for row in rows)
    return [
        ((row["symbol"], row["open_time"]), tuple(Decimal(str(row[f])) for f in ROW_FIELDS))
        for row in rows
    ]


def in_table(aws: AwsClients, table: str, minutes: Iterable[int]) -> bool:
    have = table_candles(aws, table)
    return all((symbol, t) in have for symbol in SYMBOLS for t in minutes)


@pytest.mark.timeout(120)
def test_a_3_minute_websocket_drop_is_found_and_repaired(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = provisioned(aws_settings, aws, 2)
    table = settings.dynamo_candles_table_name
    now = time.time_ns() // 1_000_000
    first = now - now % M - 120 * M  # minute A
    minute = [first + i * M for i in range(9)]
    clock = SimClock(first + 30_000)  # the first tick: half way through minute A
    model = TradeModel(seed=15)
    rest = RestApi(
        SYMBOLS, model, SimulatedAccount(model, origin_ms=DEFAULT_LISTED_MS), clock=clock
    )

    with (
        ExchangeThread(symbols=len(SYMBOLS), rate_hz=50, rest=rest) as exchange,
        TcpRelay(int(exchange.exchange.url.rsplit(":", 1)[1].strip("/"))) as relay,
        ServiceProcess(
            ["producer"],
            {
                **producer_env(settings, relay.url, settings.aws_endpoint_url or ""),
                "BINANCE_STREAMS": STREAMS,
            },
            tmp_path / "producer.log",
        ) as producer,
        launch_consumer(settings, "dynamodb", tmp_path / "consumer.log") as consumer,
        launch_consumer(settings, "s3", tmp_path / "consumer-s3.log") as archiver,
    ):
        services = (producer, consumer, archiver)
        exchange.wait_for_connections(1)
        exchange.call(_tick(exchange, clock.now_ms))  # the first tick closes nothing
        tick_through(exchange, clock, first + 3 * M + 50_000, *services)  # closes A..A+2
        wait_until(lambda: running(*services) and in_table(aws, table, minute[:3]), 30)

        relay.cut()  # the network goes: no close frame, reconnects refused
        wait_until(lambda: exchange.exchange.client_count == 0, 10, 0.02)
        tick_through(exchange, clock, first + 6 * M + 50_000, *services)  # closes A+3..A+5
        # Ticking a market with no client takes milliseconds: keep the link down until the
        # producer's reconnect has been refused (on a fast machine it came only after restore).
        wait_until(lambda: relay.refused >= 1, 10, 0.01)
        relay.restore()
        exchange.wait_for_connections(2)
        tick_through(exchange, clock, first + 9 * M + 50_000, *services)  # closes A+6..A+8
        wait_until(lambda: running(*services) and in_table(aws, table, minute[6:]), 30)
        assert relay.refused >= 1  # the producer did try while the link was down

        window = ["--from", minute_text(first), "--to", str(first + 9 * M),
                  "--streams", STREAMS, "--endpoint-url", settings.aws_endpoint_url or "",
                  "--stream-name", settings.kinesis_stream_name, "--no-progress"]  # fmt: skip
        bounds = f"{minute_text(first)}..{minute_text(minute[8])}"
        dropped = f"{minute_text(minute[3])}..{minute_text(minute[5])} (3 minutes)"

        # `candles gaps` finds exactly the minutes of the drop, for every subscribed symbol.
        assert main(["candles", "gaps", *window]) == 3
        assert capsys.readouterr().out.splitlines() == [
            *(
                line
                for symbol in SYMBOLS
                for line in (
                    f"{symbol}: 3 missing of 9 minutes in {bounds}, in 1 range:",
                    f"  {dropped}",
                )
            ),
            "6 missing closed minutes in 2 ranges (2 of 2 symbols)",
        ]

        # --repair backfills them through Kinesis; the consumer writes them.
        repair = ["--repair", "--api-url", exchange.exchange.rest_url, "--wait", "30"]
        code = main(["candles", "gaps", *window, *repair])
        out = capsys.readouterr().out.splitlines()
        assert code == 0, out
        assert "repair: 6 candles fetched, 6 published, 2 pages, 0 retries" in out
        assert out[-1] == "0 missing closed minutes (2 symbols)"

        # And a fresh check agrees: 0 gaps.
        assert main(["candles", "gaps", *window]) == 0
        assert capsys.readouterr().out.splitlines()[-1] == "0 missing closed minutes (2 symbols)"

        expected = {
            (symbol, row[0]): row_values(row)
            for symbol in SYMBOLS
            for row in rest_klines(exchange.exchange.rest_url, symbol, first, first + 9 * M)
        }
        # The S3 group writes the same closed klines under their own prefix (batch windows).
        wait_until(lambda: running(*services) and len(lake_klines(aws, settings)) >= 18, 40)
        producer_code = producer.terminate()
        consumer.terminate()
        archiver_code = archiver.terminate()

    assert producer_code == archiver_code == 0
    # The candles table is the exchange's REST klines of the whole range, once each; the S3
    # kline lake holds exactly the same candles, each once (no minute came twice here).
    assert len(expected) == 18 and table_candles(aws, table) == expected
    lake = lake_klines(aws, settings)
    assert sorted(key for key, _ in lake) == sorted(expected)  # each candle once
    assert {key: values for key, values in lake} == expected
    # Backfill sent only the dropped minutes; everything else came from the websocket.
    klines = stream_klines(aws, settings.kinesis_stream_name)
    backfilled = sorted(
        (k.partition_key, k.record["open_time"]) for k in klines if k.record["source"] == "backfill"
    )
    assert backfilled == sorted((s, minute[i]) for s in SYMBOLS for i in DROPPED)
    closed_websocket = sorted(
        (k.partition_key, k.record["open_time"])
        for k in klines
        if k.record["source"] == "websocket" and k.record["closed"]
    )
    assert closed_websocket == sorted((s, minute[i]) for s in SYMBOLS for i in (*BEFORE, *AFTER))
