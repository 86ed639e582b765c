"""Market data from Binance's combined stream through python-binance, with reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from binance import AsyncClient, BinanceSocketManager
from binance.exceptions import ReadLoopClosed
from binance.ws.constants import WSListenerState
from websockets.exceptions import WebSocketException

from crypto_live.errors import SourceUnavailableError
from crypto_live.metrics import Counters, Metrics
from crypto_live.settings import DEFAULT_BINANCE_STREAM_URL
from producer.retry import Backoff
from producer.validation import UnparsedMessage

log = logging.getLogger(__name__)

# python-binance reconnects by itself a few times, then its read loop ends; we start over.
CONNECT_ERRORS = (OSError, TimeoutError, WebSocketException, ReadLoopClosed)
# How long python-binance's read loop may sit in recv() before it notices we are stopping.
READ_TIMEOUT_SECONDS = 1
# How often a read loop held back by a full queue looks again (and checks for shutdown).
_FULL_QUEUE_POLL_SECONDS = 0.005


@dataclass(frozen=True, slots=True)
class WireMessage:
    """A websocket frame exactly as received, and its parsed JSON."""

    raw: str | bytes
    parsed: Any


def tolerant_json_loads(message: str | bytes) -> WireMessage | UnparsedMessage:
    """Keep the frame's exact text; never raise, since that would end python-binance's loop."""
    try:
        return WireMessage(message, json.loads(message))
    except ValueError as err:
        return UnparsedMessage(raw=message, error=str(err))


class BackpressureQueue(asyncio.Queue[Any]):
    """python-binance's message queue, with a put() that waits while the queue is full.

    python-binance itself ends its read loop once its queue holds max_queue_size messages,
    which drops the connection and every message still queued (a burst was lost this way).
    Waiting instead stops the read loop, websockets' flow control pushes back through TCP,
    and the sender slows down: memory stays bounded and nothing received is lost.
    """

    def __init__(self, maxsize: int, closing: Callable[[], bool]) -> None:
        super().__init__(maxsize)
        self._closing = closing

    async def put(self, item: Any) -> None:
        while self.full():
            if self._closing():
                return  # the socket is closing: nobody will read this message any more
            await asyncio.sleep(_FULL_QUEUE_POLL_SECONDS)
        self.put_nowait(item)


class BinanceSource:
    """Yields combined-stream messages (dicts) or UnparsedMessage, reconnecting on failures."""

    def __init__(
        self,
        streams: Sequence[str],
        metrics: Metrics,
        *,
        url: str = DEFAULT_BINANCE_STREAM_URL,
        testnet: bool = False,
        max_queue_size: int = 10_000,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not streams:
            raise SourceUnavailableError("no Binance streams configured")
        self._streams = list(streams)
        self._metrics = metrics
        self._url = url if url.endswith("/") else url + "/"
        self._testnet = testnet
        self._max_queue_size = max_queue_size
        self._backoff = backoff or Backoff(base=0.5, cap=30.0)
        self._clock = clock
        self._last_message = clock()  # when the last market message arrived
        self.connected = asyncio.Event()

    @property
    def description(self) -> str:
        return f"{self._url} streams={','.join(self._streams)}"

    async def messages(self, stop: asyncio.Event) -> AsyncIterator[Any]:
        """Messages until ``stop`` is set; the first connection failing raises SourceUnavailable."""
        attempt = 0
        ever_connected = False
        self._last_message = self._clock()
        while not stop.is_set():
            client = AsyncClient(testnet=self._testnet)
            try:
                socket = self._socket(client)
                try:
                    async with socket:
                        self.connected.set()
                        if ever_connected:
                            log.warning(
                                "reconnected after a gap of %.1f s",
                                self._clock() - self._last_message,
                            )
                        ever_connected = True
                        attempt = 0
                        async for message in self._read(socket, stop):
                            self._last_message = self._clock()
                            yield message
                except CONNECT_ERRORS as err:
                    if not ever_connected:
                        raise SourceUnavailableError(
                            f"cannot reach the market data websocket at {self._url}: {err}"
                        ) from err
                    log.warning("websocket failed (%s: %s), reconnecting", type(err).__name__, err)
            finally:
                self.connected.clear()
                await client.close_connection()
            if stop.is_set():
                break
            self._metrics.inc(Counters.RECONNECTS)
            delay = self._backoff.delay(attempt)
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    def _socket(self, client: AsyncClient) -> Any:
        manager = BinanceSocketManager(client, max_queue_size=self._max_queue_size)
        if not (self._testnet and self._url == DEFAULT_BINANCE_STREAM_URL):
            manager.STREAM_URL = self._url
        socket = manager.multiplex_socket(self._streams)
        socket.json_loads = tolerant_json_loads
        socket.TIMEOUT = READ_TIMEOUT_SECONDS
        socket._queue = BackpressureQueue(
            self._max_queue_size, lambda: socket.ws_state == WSListenerState.EXITING
        )
        socket.max_queue_size = self._max_queue_size + 1  # its overflow check never trips
        return socket

    async def _read(self, socket: Any, stop: asyncio.Event) -> AsyncIterator[Any]:
        stop_wait = asyncio.create_task(stop.wait())
        reconnecting = False
        try:
            while not stop.is_set():
                receive = asyncio.create_task(socket.recv())
                done, _ = await asyncio.wait(
                    {receive, stop_wait}, return_when=asyncio.FIRST_COMPLETED
                )
                if receive not in done:
                    receive.cancel()
                    await asyncio.gather(receive, return_exceptions=True)
                    return
                message = receive.result()
                if _is_connection_event(message):
                    # python-binance reports disconnects in-band (several events for one drop)
                    # and reconnects by itself: one reconnect, logged with its gap once data
                    # flows again.
                    log.warning("websocket event: %s %s", message.get("type"), message.get("m"))
                    if not reconnecting:
                        reconnecting = True
                        self._metrics.inc(Counters.RECONNECTS)
                    continue
                if reconnecting:
                    reconnecting = False
                    log.warning(
                        "reconnected after a gap of %.1f s", self._clock() - self._last_message
                    )
                yield message
        finally:
            stop_wait.cancel()
            await asyncio.gather(stop_wait, return_exceptions=True)


def _is_connection_event(message: Any) -> bool:
    return isinstance(message, dict) and message.get("e") == "error" and "type" in message
