"""The simulated exchange on loopback in a thread of its own, for sync clients (python-binance's
Client, the CLI) in the test's thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from crypto_live.exchange import SimulatedExchange
from crypto_live.exchange.rest import RestApi


@contextlib.contextmanager
def exchange_on_loopback(rest: RestApi) -> Iterator[str]:
    """Serve ``rest`` (and the websocket side) until the block ends; yields the REST URL."""
    loop = asyncio.new_event_loop()
    exchange = SimulatedExchange(symbols=3, autotick=False, rest=rest)
    started = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        async with exchange:
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10), "exchange did not start"
    try:
        yield exchange.rest_url
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
