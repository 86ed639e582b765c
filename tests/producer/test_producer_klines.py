"""Klines end to end: the simulated exchange's kline_1m streams -> the producer (python-binance
websocket) -> moto Kinesis over HTTP. Every frame the exchange sent is in the stream exactly once,
klines decoded by their fingerprint as crypto_live.v1.Kline and equal field by field."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from consumers.operations.stream_dump import read_stream
from core.aws import AwsClients
from core.metrics import Metrics
from core.settings import Settings
from crypto_live.exchange.server import _Client
from crypto_live.exchange.trades import MS_PER_MINUTE
from crypto_live.provision import provision
from producer.app import build_producer
from schemas.codec import KLINE_SCHEMA, MINITICKER_SCHEMA
from tests.producer.klines import expected_kline
from tests.support.exchange import ScriptedExchange

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT")
STREAMS = [*(f"{s.lower()}@kline_1m" for s in SYMBOLS), "btcusdt@miniTicker"]
T0 = 29_916_667 * MS_PER_MINUTE  # 2026-11-18T11:07:00Z
# Simulated time: a tick every 15 s through minutes 0-3, no tick in minutes 4-6 (the next one
# closes minutes 3-6 at once), then minutes 7-9. Minutes pass in milliseconds of test time.
TICKS = [
    *range(T0 + 5_000, T0 + 4 * MS_PER_MINUTE, 15_000),
    *range(T0 + 7 * MS_PER_MINUTE + 2_000, T0 + 9 * MS_PER_MINUTE + 30_000, 15_000),
]


class RecordingExchange(ScriptedExchange):
    """Remembers every text frame it sent, in order."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.sent: list[str] = []

    async def _send_item(self, client: _Client, item: object) -> bool:
        if isinstance(item, list):
            before = client.frames_sent
            carry_on = await super()._send_item(client, item)
            self.sent.extend(item[: client.frames_sent - before])
            return carry_on
        return await super()._send_item(client, item)


async def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def run_producer(settings: Settings, clients: AwsClients) -> RecordingExchange:
    async with RecordingExchange(symbols=3, seed=9, autotick=False) as exchange:
        run_settings = settings.with_overrides(
            binance_stream_url=exchange.url, binance_streams=STREAMS
        )
        service, _ = build_producer(run_settings, clients, Metrics("producer"))
        stop = asyncio.Event()
        running = asyncio.create_task(service.run(stop))
        await exchange.wait_for_clients(1, timeout=10)
        queued = 0
        for now in TICKS:
            queued += exchange.tick(now)
            # Sent before the next tick: a client this far behind would be dropped as slow.
            await wait_for(lambda: exchange.messages_sent >= queued, 10)  # noqa: B023
        await wait_for(lambda: service.summary().records_put >= queued, 20)
        stop.set()
        summary = await running
    assert summary.undelivered == summary.rejected == 0
    assert summary.records_put == queued == len(exchange.sent)
    return exchange


def test_every_kline_the_exchange_sent_is_in_kinesis_once_as_a_kline_record(
    aws_settings: Settings, aws: AwsClients
) -> None:
    settings = aws_settings.with_overrides(kinesis_shard_count=2)
    provision(settings, aws)

    started_us = time.time_ns() // 1000
    exchange = asyncio.run(run_producer(settings, aws))
    ended_us = time.time_ns() // 1000

    sent = [json.loads(text) for text in exchange.sent]
    kline_data = [m["data"] for m in sent if m["stream"].endswith("@kline_1m")]
    closed_sent = [data for data in kline_data if data["k"]["x"]]
    # The ticks closed every minute from the first to the last, the stall's four at once.
    for symbol in SYMBOLS:
        opens = [d["k"]["t"] for d in closed_sent if d["s"] == symbol]
        assert opens == [T0 + m * MS_PER_MINUTE for m in range(9)]
    stall_tick = T0 + 7 * MS_PER_MINUTE + 2_000
    assert sum(d["E"] == stall_tick for d in closed_sent) == 4 * len(SYMBOLS)

    got = [
        row
        for rows in read_stream(aws.kinesis, settings.kinesis_stream_name).values()
        for row in rows
    ]
    assert len(got) == len(sent)  # records in = records out, tickers included
    assert all(row.partition_key == row.record["symbol"] for row in got)
    klines = [row.record for row in got if row.schema == KLINE_SCHEMA]
    assert sum(row.schema == MINITICKER_SCHEMA for row in got) == len(sent) - len(kline_data)

    assert all(started_us <= r["received_at"] <= ended_us for r in klines)  # producer clock, µs

    def without_clock(record: dict[str, Any]) -> str:
        return json.dumps({**record, "received_at": 0}, sort_keys=True)

    # Every closed kline exactly once, field by field what the exchange sent.
    closed_got = Counter(without_clock(r) for r in klines if r["closed"])
    assert closed_got == Counter(without_clock(dict(expected_kline(d))) for d in closed_sent)
    assert max(closed_got.values()) == 1
    # The open ones too, and each symbol's klines in the order they were sent.
    assert Counter(without_clock(r) for r in klines) == Counter(
        without_clock(dict(expected_kline(d))) for d in kline_data
    )
    order: dict[str, list[tuple[int, int, bool]]] = defaultdict(list)
    for record in klines:
        order[record["symbol"]].append(
            (record["event_time"], record["open_time"], record["closed"])
        )
    for symbol in SYMBOLS:
        assert order[symbol] == [
            (d["E"], d["k"]["t"], d["k"]["x"]) for d in kline_data if d["s"] == symbol
        ]
    # And a closed kline is the exchange's own REST kline of that minute.
    model = exchange.rest.model
    for record in klines:
        if record["closed"]:
            candle = model.candle(record["symbol"], record["open_time"], MS_PER_MINUTE, TICKS[-1])
            assert candle is not None
            row = candle.as_binance()
            assert (record["open_price"], record["close_price"], record["trades"]) == (
                row[1],
                row[4],
                row[8],
            )
