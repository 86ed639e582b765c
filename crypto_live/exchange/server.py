"""A local websocket server speaking Binance's market-stream protocol: miniTicker from
MarketSimulator, kline_1m from the REST side's TradeModel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from core.errors import CryptoLiveError
from crypto_live.exchange.account import SimulatedAccount
from crypto_live.exchange.kline_frames import KlineStreams
from crypto_live.exchange.price_walk import MarketSimulator
from crypto_live.exchange.protocol import (
    ALL_MARKET_STREAM,
    SYMBOL_STREAM_TYPES,
    Subscription,
    TickFrames,
    is_all_market_stream,
    parse_request_path,
)
from crypto_live.exchange.rest import API_PREFIX, DEFAULT_LISTED_MS, RestApi
from crypto_live.exchange.trades import TradeModel

__all__ = [
    "ALL_MARKET_STREAM",
    "ExchangeError",
    "SimulatedExchange",
    "Subscription",
    "TickFrames",
    "is_all_market_stream",
    "parse_request_path",
    "serve_forever",
]

logger = logging.getLogger(__name__)

SLOW_CLIENT_CLOSE_CODE = 1008  # policy violation, as a server drops a consumer that lags
NORMAL_CLOSE_CODE = 1000  # Binance ends a connection at its 24 h limit with a normal close
_CLOSE_WAIT_SECONDS = 5.0


class ExchangeError(CryptoLiveError):
    """The simulated exchange was used before start, or its tick loop failed."""


@dataclass(frozen=True)
class _Close:
    """Queued after data: close the connection once everything before it was sent."""

    code: int
    reason: str


class _Client:
    def __init__(self, connection: ServerConnection, subscription: Subscription, backlog: int):
        self.connection = connection
        self.subscription = subscription
        # Frames (list[str]) and _Close, sent in order by _send_item; bounded, see _offer.
        self.queue: asyncio.Queue[object] = asyncio.Queue(backlog)
        self.sender: asyncio.Task[None] | None = None
        self.expiry: asyncio.TimerHandle | None = None
        self.dropped = False
        self.frames_sent = 0
        self.name = "%s:%s" % connection.remote_address[:2]  # noqa: UP031 - tuple unpacking


class SimulatedExchange:
    """Binance-compatible combined/raw miniTicker and kline_1m streams on a local port, for
    offline runs."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        symbols: int = 20,
        rate_hz: float = 1.0,
        seed: int | None = None,
        autotick: bool = True,
        *,
        slow_client_seconds: float = 5.0,
        max_connection_seconds: float | None = None,
        close_after_frames: int | None = None,
        rest: RestApi | None = None,
        weight_limit: int = 6_000,
    ) -> None:
        """Plain HTTP GETs under /api/ are answered by ``rest`` (default: this market's symbols,
        an account with one order a second per symbol since listing, ``weight_limit`` a minute).
        ``max_connection_seconds``: end each connection with a close frame after this long,
        as Binance does after 24 h. ``close_after_frames``: close each one after that many
        data frames (a server that closes mid-stream, for tests and ``up --source sim``)."""
        if rate_hz <= 0:
            raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
        self._host = host
        self._port = port
        self._rate_hz = rate_hz
        self._autotick = autotick
        self._max_connection_seconds = max_connection_seconds
        self._close_after_frames = close_after_frames or None
        # A client more than this many ticks behind is dropped instead of buffering without bound.
        self._backlog = max(4, math.ceil(rate_hz * slow_client_seconds))
        self.simulator = MarketSimulator(symbols, seed=seed)
        self._known_symbols = {symbol.lower(): symbol for symbol in self.simulator.symbols}
        if rest is None:
            model = TradeModel(seed or 0)
            rest = RestApi(
                self.simulator.symbols,
                model,
                SimulatedAccount(model, origin_ms=DEFAULT_LISTED_MS),
                weight_limit=weight_limit,
            )
        self.rest = rest
        self._klines = KlineStreams(rest.model, self._known_symbols, rest.listed_ms)
        self._server: Server | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._closers: set[asyncio.Task[None]] = set()
        self._clients: set[_Client] = set()
        self._clients_changed = asyncio.Condition()
        self.messages_sent = 0
        self.connections_total = 0
        self.slow_clients_dropped = 0
        self.connections_closed = 0  # ended by us with a close frame (lifetime, frame limit)

    @property
    def url(self) -> str:
        """Base URL with a trailing slash, e.g. ``ws://127.0.0.1:PORT/``."""
        if self._server is None:
            raise ExchangeError("exchange not started")
        port = self._server.sockets[0].getsockname()[1]
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"ws://{host}:{port}/"

    @property
    def rest_url(self) -> str:
        """python-binance's API_URL for this exchange, e.g. ``http://127.0.0.1:PORT/api``."""
        return "http" + self.url.removeprefix("ws").rstrip("/") + API_PREFIX.rstrip("/")

    @property
    def client_count(self) -> int:
        """Connections currently open."""
        return len(self._clients)

    async def start(self) -> None:
        """Listen, and start ticking if ``autotick``."""
        if self._server is not None:
            return
        self._server = await serve(
            self._handle,
            self._host,
            self._port,
            process_request=self._check_request,
            # Compression costs CPU per frame and per client; the load test needs the headroom.
            compression=None,
            close_timeout=1.0,
        )
        if self._autotick:
            self._tick_task = asyncio.create_task(self._tick_loop(), name="exchange-tick-loop")
            self._tick_task.add_done_callback(_log_task_failure)
        logger.debug("simulated exchange listening on %s", self.url)

    async def stop(self) -> None:
        """Stop ticking and close every client; idempotent. Re-raises a tick-loop failure."""
        server, self._server = self._server, None
        if server is None:
            return
        failure: BaseException | None = None
        if self._tick_task is not None:
            task, self._tick_task = self._tick_task, None
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            elif not task.cancelled():
                failure = task.exception()
        server.close()
        await server.wait_closed()
        for closer in list(self._closers):
            closer.cancel()
        if failure is not None:
            raise ExchangeError("simulated exchange tick loop failed") from failure

    async def __aenter__(self) -> SimulatedExchange:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def serve_until(self, stop: asyncio.Event) -> None:
        """Return when ``stop`` is set or the tick loop died (``stop()`` then raises its error)."""
        stop_waiter = asyncio.create_task(stop.wait())
        waiters: set[asyncio.Task[Any]] = {stop_waiter}
        if self._tick_task is not None:
            waiters.add(self._tick_task)
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_waiter.cancel()

    def tick(self, now_ms: int | None = None) -> int:
        """Advance the market one step and queue it to every client; returns frames queued.
        Kline streams get the minutes closed since the previous tick, then the current one."""
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        frames = TickFrames(self.simulator.tick(now), self._klines.tick(now))
        queued = 0
        for client in list(self._clients):
            batch = frames.frames_for(client.subscription)
            if batch and self._offer(client, batch):
                queued += len(batch)
        return queued

    async def close_connections(
        self, code: int = NORMAL_CLOSE_CODE, reason: str = "server closing"
    ) -> None:
        """Close every connection with a close frame once the data queued before it is sent,
        as Binance does for maintenance; returns once they are closed."""
        closing = list(self._clients)
        for client in closing:
            self._offer(client, _Close(code, reason))
        async with asyncio.timeout(_CLOSE_WAIT_SECONDS), self._clients_changed:
            await self._clients_changed.wait_for(lambda: self._clients.isdisjoint(closing))

    def _offer(self, client: _Client, item: object) -> bool:
        if client.dropped:
            return False
        try:
            client.queue.put_nowait(item)
        except asyncio.QueueFull:
            self._drop_slow_client(client)
            return False
        return True

    def _drop_slow_client(self, client: _Client) -> None:
        self.slow_clients_dropped += 1
        logger.warning(
            "dropping slow client %s: %d batches waiting", client.name, client.queue.qsize()
        )
        self._close(client, SLOW_CLIENT_CLOSE_CODE, "client too slow")

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if request.path.startswith(API_PREFIX) and not upgrade:
            return self._rest_response(connection, request)
        if parse_request_path(request.path) is None:
            logger.info("rejecting websocket request for %s", request.path)
            return connection.respond(HTTPStatus.NOT_FOUND, "Unknown stream path\n")
        return None

    def _rest_response(self, connection: ServerConnection, request: Request) -> Response:
        """A REST answer in place of the websocket handshake (the connection then closes)."""
        answer = self.rest.handle(
            request.path, str(connection.remote_address[0]), request.headers.get("X-MBX-APIKEY")
        )
        headers = Headers(answer.headers)
        headers["Content-Length"] = str(len(answer.body))
        # websockets closes the connection after a non-upgrade answer: say so, or a client
        # pool (requests') would reuse it and see the peer gone mid-request.
        headers["Connection"] = "close"
        return Response(answer.status, HTTPStatus(answer.status).phrase, headers, answer.body)

    def _subscription_of(self, connection: ServerConnection) -> Subscription:
        assert connection.request is not None  # the handler only runs after the handshake
        requested = parse_request_path(connection.request.path)
        assert requested is not None  # _check_request rejected every other path
        known = tuple(stream for stream in requested.streams if self._is_known(stream))
        unknown = [stream for stream in requested.streams if stream not in known]
        if unknown:
            # Binance accepts the connection and simply never sends anything for these.
            logger.warning("no data will be sent for unknown streams %s", unknown)
        return Subscription(known, requested.combined)

    def _is_known(self, stream: str) -> bool:
        symbol, _, stream_type = stream.partition("@")
        return is_all_market_stream(stream) or (
            stream_type in SYMBOL_STREAM_TYPES and symbol.lower() in self._known_symbols
        )

    async def _handle(self, connection: ServerConnection) -> None:
        client = _Client(connection, self._subscription_of(connection), self._backlog)
        client.sender = asyncio.create_task(self._send_loop(client))
        if self._max_connection_seconds is not None:
            client.expiry = asyncio.get_running_loop().call_later(
                self._max_connection_seconds, self._expire, client
            )
        await self._register(client)
        try:
            # Market streams expect no client frames; reading is how a departed peer is noticed.
            async for _ in connection:
                logger.debug("ignoring frame from %s", client.name)
        except ConnectionClosed:
            pass
        finally:
            if client.expiry is not None:
                client.expiry.cancel()
            client.sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await client.sender
            await self._unregister(client)

    def _expire(self, client: _Client) -> None:
        # At the limit the connection ends now, whatever is still queued for it (as Binance).
        logger.info("closing %s: connection lifetime reached", client.name)
        self.connections_closed += 1
        self._close(client, NORMAL_CLOSE_CODE, "connection lifetime reached")

    def _close(self, client: _Client, code: int, reason: str, *, from_sender: bool = False) -> None:
        """Send a close frame; nothing more is queued or sent to this client."""
        if client.dropped:
            return
        client.dropped = True
        if client.sender is not None and not from_sender:
            client.sender.cancel()
        closer = asyncio.create_task(client.connection.close(code, reason))
        self._closers.add(closer)
        closer.add_done_callback(self._closers.discard)

    async def _send_loop(self, client: _Client) -> None:
        try:
            while await self._send_item(client, await client.queue.get()):
                pass
        except ConnectionClosed:
            logger.debug("client %s went away while sending", client.name)

    async def _send_item(self, client: _Client, item: object) -> bool:
        """Act on one queued item (frames, or a close); False once the connection is done."""
        if isinstance(item, _Close):
            self.connections_closed += 1
            self._close(client, item.code, item.reason, from_sender=True)
            return False
        assert isinstance(item, list)
        limit = self._close_after_frames
        for text in item:
            # Awaits drain above the write limit; the bounded queue then catches a laggard.
            await client.connection.send(text)
            self.messages_sent += 1
            client.frames_sent += 1
            if limit is not None and client.frames_sent >= limit:
                logger.info("closing %s after %d frames", client.name, limit)
                self.connections_closed += 1
                self._close(client, NORMAL_CLOSE_CODE, "frame limit reached", from_sender=True)
                return False
        return True

    async def _register(self, client: _Client) -> None:
        async with self._clients_changed:
            self._clients.add(client)
            self.connections_total += 1
            self._clients_changed.notify_all()
        logger.info("client %s connected: %s", client.name, list(client.subscription.streams))

    async def _unregister(self, client: _Client) -> None:
        async with self._clients_changed:
            self._clients.discard(client)
            self._clients_changed.notify_all()
        logger.info("client %s disconnected", client.name)

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = 1.0 / self._rate_hz
        next_at = loop.time()
        while True:
            self.tick()
            next_at += interval
            lag = loop.time() - next_at
            if lag > 0:
                skipped = math.ceil(lag / interval)
                logger.warning("tick loop %.3f s behind; skipping %d ticks", lag, skipped)
                next_at += skipped * interval
            await asyncio.sleep(next_at - loop.time())


def _log_task_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        logger.error("%s failed", task.get_name(), exc_info=error)


async def serve_forever(
    host: str,
    port: int,
    symbols: int,
    rate_hz: float,
    stop: asyncio.Event,
    *,
    max_connection_seconds: float | None = None,
    close_after_frames: int | None = None,
    weight_limit: int = 6_000,
) -> None:
    """Run a simulated exchange until ``stop`` is set; raises if its tick loop fails."""
    async with SimulatedExchange(
        host,
        port,
        symbols=symbols,
        rate_hz=rate_hz,
        max_connection_seconds=max_connection_seconds,
        close_after_frames=close_after_frames,
        weight_limit=weight_limit,
    ) as exchange:
        logger.info(
            "simulated Binance exchange on %s, REST on %s (%d symbols at %.3g Hz; connections "
            "end after %s s, %s frames)",
            exchange.url,
            exchange.rest_url,
            symbols,
            rate_hz,
            f"{max_connection_seconds:g}" if max_connection_seconds else "unlimited",
            close_after_frames or "unlimited",
        )
        await exchange.serve_until(stop)
