"""The simulated exchange serving <symbol>@kline_1m over websockets, driven by tick(now_ms):
combined and raw streams, only to their subscribers, equal to its own REST klines."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from crypto_live.exchange.account import SimulatedAccount
from crypto_live.exchange.price_walk import generate_symbols
from crypto_live.exchange.rest import RestApi
from crypto_live.exchange.trades import MS_PER_MINUTE, TradeModel
from tests.support.exchange import ScriptedExchange

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

MINUTE = 29_916_667  # 2026-11-18T11:07:00Z
T0 = MINUTE * MS_PER_MINUTE
END = '{"end":true}'


def exchange_at(clock: list[int]) -> ScriptedExchange:
    """Three symbols; the REST side answers at ``clock[0]``."""
    model = TradeModel(seed=4)
    symbols = generate_symbols(3)
    rest = RestApi(
        symbols,
        model,
        SimulatedAccount(model, origin_ms=T0 - 3_600_000),
        listed_ms=T0 - 3_600_000,
        clock=lambda: clock[0],
    )
    return ScriptedExchange(symbols=3, seed=4, autotick=False, rest=rest)


async def until_end(connection: ClientConnection) -> list[Any]:
    frames = []
    async with asyncio.timeout(5):
        while (text := await connection.recv()) != END:
            frames.append(json.loads(text))
    return frames


def test_kline_streams_reach_their_subscribers_only_and_equal_the_rest_klines() -> None:
    clock = [T0]
    exchange = exchange_at(clock)

    async def scenario() -> dict[str, list[Any]]:
        async with (
            exchange,
            connect(f"{exchange.url}stream?streams=btcusdt@kline_1m/ethusdt@miniTicker") as mixed,
            connect(f"{exchange.url}ws/ethusdt@kline_1m") as raw,
            connect(f"{exchange.url}stream?streams=btcusdt@miniTicker") as tickers,
        ):
            await exchange.wait_for_clients(3, timeout=5)
            exchange.tick(T0 + 50_000)
            exchange.tick(T0 + 3 * MS_PER_MINUTE + 40_000)  # three minutes closed since
            await exchange.send_raw(END)
            return {
                "mixed": await until_end(mixed),
                "raw": await until_end(raw),
                "tickers": await until_end(tickers),
            }

    received = asyncio.run(scenario())
    now = T0 + 3 * MS_PER_MINUTE + 40_000
    clock[0] = now

    mixed = received["mixed"]
    klines = [m["data"] for m in mixed if m["stream"] == "btcusdt@kline_1m"]
    assert {m["stream"] for m in mixed} == {"btcusdt@kline_1m", "ethusdt@miniTicker"}
    assert [(k["E"], k["k"]["t"], k["k"]["x"]) for k in klines] == [
        (T0 + 50_000, T0, False),
        (now, T0, True),
        (now, T0 + MS_PER_MINUTE, True),
        (now, T0 + 2 * MS_PER_MINUTE, True),
        (now, T0 + 3 * MS_PER_MINUTE, False),
    ]
    for kline in klines:
        k = kline["k"]
        query = f"symbol=BTCUSDT&interval=1m&startTime={k['t']}&limit=1"
        (row,) = json.loads(exchange.rest.handle(f"/api/v3/klines?{query}", "127.0.0.1").body)
        as_row = [k[key] for key in ("t", "o", "h", "l", "c", "v", "T", "q", "n", "V", "Q", "B")]
        if k["x"]:
            assert as_row == row  # the closed kline is the REST kline, string for string
        else:
            assert k["n"] <= row[8]  # the open one had part of the minute's trades

    raw = received["raw"]
    assert raw and all(p["e"] == "kline" and p["s"] == "ETHUSDT" for p in raw)  # bare payloads
    assert [p["k"]["x"] for p in raw] == [False, True, True, True, False]
    assert [m["stream"] for m in received["tickers"]] == ["btcusdt@miniTicker"] * 2
