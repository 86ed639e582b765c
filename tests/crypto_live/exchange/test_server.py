"""The simulated exchange, driven through python-binance's own websocket code path."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from crypto_live.exchange import ExchangeError, MarketSimulator, SimulatedExchange, serve_forever
from crypto_live.exchange.server import Subscription, parse_request_path
from tests.support.exchange import ScriptedExchange

with warnings.catch_warnings():
    # python-binance 1.0.37 imports websockets' deprecated legacy client at import time.
    warnings.simplefilter("ignore", DeprecationWarning)
    from binance import AsyncClient, BinanceSocketManager
    from binance.exceptions import ReadLoopClosed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

NOW_MS = 1_700_000_000_000
RECV_TIMEOUT = 5.0


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


@contextlib.asynccontextmanager
async def binance_socket(
    exchange: SimulatedExchange, streams: list[str] | None = None, raw: str | None = None
) -> AsyncIterator[Any]:
    """A python-binance socket pointed at the exchange: multiplex ``streams``, or raw ``raw``."""
    client = AsyncClient()
    try:
        manager = BinanceSocketManager(client)
        manager.STREAM_URL = exchange.url
        if streams is not None:
            sock = manager.multiplex_socket(streams)
        elif raw == "!miniTicker@arr":
            sock = manager.miniticker_socket()
        else:
            sock = manager.symbol_miniticker_socket(raw)
        # Its read loop only notices close() between frames or after TIMEOUT (10 s) of silence.
        sock.TIMEOUT = 0.2
        async with sock:
            yield sock
    finally:
        await client.close_connection()


async def recv_data(sock: Any) -> Any:
    """Next market message, skipping the error dicts python-binance queues around reconnects."""
    async with asyncio.timeout(RECV_TIMEOUT):
        while True:
            message = await sock.recv()
            if not (isinstance(message, dict) and message.get("e") == "error"):
                return message


def test_parse_request_path() -> None:
    assert parse_request_path("/stream?streams=btcusdt@miniTicker/!miniTicker@arr") == (
        Subscription(("btcusdt@miniTicker", "!miniTicker@arr"), combined=True)
    )
    assert parse_request_path("/ws/btcusdt@miniTicker") == Subscription(
        ("btcusdt@miniTicker",), combined=False
    )
    assert parse_request_path("/ws/%21miniTicker@arr") == Subscription(
        ("!miniTicker@arr",), combined=False
    )
    assert parse_request_path("/stream?streams=a@miniTicker/a@miniTicker") == Subscription(
        ("a@miniTicker",), combined=True
    )
    assert parse_request_path("/stream") is None
    assert parse_request_path("/ws/") is None
    assert parse_request_path("/other") is None


def test_multiplex_socket_gets_combined_frames_matching_the_seeded_walk() -> None:
    async def scenario() -> None:
        expected = MarketSimulator(5, seed=42).tick(NOW_MS)
        async with ScriptedExchange(symbols=5, seed=42, autotick=False) as exchange:
            streams = ["btcusdt@miniTicker", "!miniTicker@arr"]
            async with binance_socket(exchange, streams) as sock:
                await exchange.wait_for_clients(1, timeout=5)
                assert exchange.tick(NOW_MS) == 2
                single = await recv_data(sock)
                array = await recv_data(sock)
        assert single == {"stream": "btcusdt@miniTicker", "data": expected[0]}
        assert array == {"stream": "!miniTicker@arr", "data": expected}
        assert exchange.messages_sent == 2
        assert exchange.connections_total == 1

    run(scenario)


def test_autotick_streams_every_symbol_at_the_rate() -> None:
    async def scenario() -> None:
        async with SimulatedExchange(symbols=2_000, rate_hz=20, seed=1) as exchange:
            streams = ["ethusdt@miniTicker", "sym1999usdt@miniTicker", "!miniTicker@arr"]
            async with binance_socket(exchange, streams) as sock:
                messages = [await recv_data(sock) for _ in range(30)]
        by_stream: dict[str, list[Any]] = {}
        for message in messages:
            by_stream.setdefault(message["stream"], []).append(message["data"])
        assert set(by_stream) == set(streams)
        assert {len(data) for data in by_stream["!miniTicker@arr"]} == {2_000}
        event_times = [data["E"] for data in by_stream["ethusdt@miniTicker"]]
        assert event_times == sorted(event_times)
        assert len(set(event_times)) == len(event_times)
        assert all(data["s"] == "SYM1999USDT" for data in by_stream["sym1999usdt@miniTicker"])

    run(scenario)


def test_raw_streams_send_bare_payloads() -> None:
    async def scenario() -> None:
        async with (
            ScriptedExchange(symbols=3, seed=2, autotick=False) as exchange,
            binance_socket(exchange, raw="BTCUSDT") as single,
            binance_socket(exchange, raw="!miniTicker@arr") as array,
        ):
            await exchange.wait_for_clients(2, timeout=5)
            exchange.tick(NOW_MS)
            payload = await recv_data(single)
            payloads = await recv_data(array)
        assert payload["e"] == "24hrMiniTicker"
        assert payload["s"] == "BTCUSDT"
        assert [item["s"] for item in payloads] == ["BTCUSDT", "ETHUSDT", "BNBUSDT"]

    run(scenario)


def test_unknown_symbol_gets_nothing_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with ScriptedExchange(symbols=3, seed=3, autotick=False) as exchange:
            streams = ["nosuchusdt@miniTicker", "btcusdt@miniTicker"]
            async with binance_socket(exchange, streams) as sock:
                await exchange.wait_for_clients(1, timeout=5)
                exchange.tick(NOW_MS)
                exchange.tick(NOW_MS + 1_000)
                first, second = await recv_data(sock), await recv_data(sock)
        assert first["stream"] == second["stream"] == "btcusdt@miniTicker"

    with caplog.at_level(logging.WARNING, logger="crypto_live.exchange"):
        run(scenario)
    assert "nosuchusdt@miniTicker" in caplog.text


def test_send_script_keeps_order() -> None:
    async def scenario() -> None:
        script = [
            json.dumps({"stream": "btcusdt@miniTicker", "data": {"e": "test", "n": n}})
            for n in range(50)
        ]
        async with (
            ScriptedExchange(symbols=1, autotick=False) as exchange,
            binance_socket(exchange, ["btcusdt@miniTicker"]) as sock,
        ):
            await exchange.wait_for_clients(1, timeout=5)
            await exchange.send_script(script)
            received = [await recv_data(sock) for _ in script]
        assert [message["data"]["n"] for message in received] == list(range(50))
        assert exchange.messages_sent == 50

    run(scenario)


def test_send_raw_reaches_every_client_verbatim() -> None:
    async def scenario() -> None:
        text = '{"stream":"btcusdt@miniTicker","data":{"e":"24hrMiniTicker","c":"1e400"}}'
        async with (
            ScriptedExchange(symbols=1, autotick=False) as exchange,
            binance_socket(exchange, ["btcusdt@miniTicker"]) as sock,
            connect(f"{exchange.url}ws/btcusdt@miniTicker") as plain,
        ):
            await exchange.wait_for_clients(2, timeout=5)
            await exchange.send_raw(text)
            assert await asyncio.wait_for(plain.recv(), RECV_TIMEOUT) == text
            assert (await recv_data(sock))["data"]["c"] == "1e400"

    run(scenario)


def test_malformed_frame_ends_python_binance_read_loop() -> None:
    """Documents python-binance: a non-JSON frame kills the socket; it does not reconnect."""

    async def scenario() -> None:
        async with (
            ScriptedExchange(symbols=1, autotick=False) as exchange,
            binance_socket(exchange, ["btcusdt@miniTicker"]) as sock,
        ):
            await exchange.wait_for_clients(1, timeout=5)
            await exchange.send_raw("{not json")
            # recv() checks the read loop before its queue, so even the error dict is lost.
            with pytest.raises(ReadLoopClosed):
                async with asyncio.timeout(RECV_TIMEOUT):
                    while True:
                        await sock.recv()

    run(scenario)


def test_python_binance_reconnects_after_drop_connections() -> None:
    async def scenario() -> None:
        async with (
            ScriptedExchange(symbols=2, rate_hz=10, seed=4) as exchange,
            binance_socket(exchange, ["btcusdt@miniTicker"]) as sock,
        ):
            before = await recv_data(sock)
            await exchange.drop_connections()
            assert exchange.client_count == 0
            await exchange.wait_for_clients(1, timeout=8)
            # Drain what was queued before the drop, then expect fresh ticks.
            after = await recv_data(sock)
            while after["data"]["E"] <= before["data"]["E"]:
                after = await recv_data(sock)
        assert after["stream"] == "btcusdt@miniTicker"
        assert exchange.connections_total == 2

    run(scenario)


def test_slow_client_is_dropped_without_stalling_others(caplog: pytest.LogCaptureFixture) -> None:
    async def read_until_end(connection: ClientConnection, received: list[str]) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in connection:
                if message == "end":
                    break
                received.append(str(message))

    async def scenario() -> None:
        exchange = ScriptedExchange(symbols=2_000, seed=5, autotick=False, slow_client_seconds=0)
        async with exchange:
            url = f"{exchange.url}ws/!miniTicker@arr"
            # The slow client stops reading after one message, so the server's buffers fill up.
            async with (
                connect(url, max_queue=1, max_size=None) as slow,
                connect(url, max_size=None) as fast,
            ):
                received: list[str] = []
                reader = asyncio.create_task(read_until_end(fast, received))
                await exchange.wait_for_clients(2, timeout=5)
                ticks = 0
                async with asyncio.timeout(15):
                    while exchange.slow_clients_dropped == 0:
                        exchange.tick()
                        ticks += 1
                        await asyncio.sleep(0.01)
                    await exchange.send_raw("end")
                    await reader
                    # Reading again lets the slow client notice the server hung up.
                    await read_until_end(slow, [])
        assert exchange.slow_clients_dropped == 1
        assert len(received) == ticks

    with caplog.at_level(logging.WARNING, logger="crypto_live.exchange"):
        run(scenario)
    assert "dropping slow client" in caplog.text


def test_unknown_path_is_rejected() -> None:
    async def scenario() -> None:
        async with SimulatedExchange(symbols=1, autotick=False) as exchange:
            with pytest.raises(InvalidStatus) as raised:
                async with connect(f"{exchange.url}api/v3/ping"):
                    pass
        assert raised.value.response.status_code == 404

    run(scenario)


def test_tick_loop_failure_surfaces_on_stop(caplog: pytest.LogCaptureFixture) -> None:
    def broken_tick(now_ms: int) -> list[Any]:
        raise RuntimeError("walk broke")

    async def scenario() -> None:
        exchange = SimulatedExchange(symbols=1, rate_hz=50)
        exchange.simulator.tick = broken_tick  # type: ignore[method-assign]
        await exchange.start()
        await exchange.serve_until(asyncio.Event())  # returns because the loop died
        with pytest.raises(ExchangeError) as raised:
            await exchange.stop()
        assert isinstance(raised.value.__cause__, RuntimeError)
        await exchange.stop()  # idempotent, and the failure is reported once

    with caplog.at_level(logging.ERROR, logger="crypto_live.exchange"):
        run(scenario)
    assert "walk broke" in caplog.text


def test_serve_forever_runs_until_stop() -> None:
    async def scenario() -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        stop = asyncio.Event()
        server = asyncio.create_task(serve_forever("127.0.0.1", port, 3, 20.0, stop))
        async with asyncio.timeout(RECV_TIMEOUT):
            while True:
                try:
                    connection = await connect(f"ws://127.0.0.1:{port}/ws/ethusdt@miniTicker")
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            async with connection:
                payload = json.loads(await connection.recv())
            stop.set()
            await server
        assert payload["s"] == "ETHUSDT"

    run(scenario)
