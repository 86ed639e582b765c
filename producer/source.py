"""Market data from Binance's combined stream: reconnects at once, rotates before 24 h, loses
no frame at a close, and keeps each event once across a rotation's overlap."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final, NamedTuple

import orjson

from core.backoff import Backoff
from core.errors import SourceUnavailableError
from core.health import Health
from core.metrics import Counters, Histograms, Metrics
from core.settings import DEFAULT_BINANCE_STREAM_URL
from producer.rotation import OverlapFilter, ReconnectPolicy, RotationPlan, event_key
from producer.validation import UnparsedMessage
from producer.websocket import CONNECT_ERRORS, Link, combined_stream_url, open_link

log = logging.getLogger(__name__)

HEALTH_COMPONENT: Final = "websocket"
# After stop, how long frames already sent to us may take to arrive before the links go.
DRAIN_SECONDS: Final = 3.0
_IDLE_WAKE_SECONDS: Final = 0.5


class WireMessage(NamedTuple):
    """A websocket frame exactly as received, and its parsed JSON (a named tuple: one is made
    per frame, and it takes a third less time to make than a frozen dataclass)."""

    raw: str | bytes
    parsed: Any


def tolerant_json_loads(message: str | bytes) -> WireMessage | UnparsedMessage:
    """Keep the frame's exact text; a frame that is not JSON becomes an UnparsedMessage.

    orjson, about four times the stdlib's speed, parses every frame; what it refuses (a number
    beyond a double such as 1e999, NaN, lone surrogates, invalid UTF-8, or not JSON at all) is
    parsed again by the stdlib, so bad input keeps the stdlib's reading and reasons (1e999 is
    JSON; its field is then rejected as a number where a decimal string belongs)."""
    try:
        return WireMessage(message, orjson.loads(message))
    except ValueError:  # orjson.JSONDecodeError is a ValueError
        pass
    try:
        return WireMessage(message, json.loads(message))
    except (ValueError, RecursionError) as err:
        return UnparsedMessage(raw=message, error=str(err))


_Frames = asyncio.Queue[tuple[Link, str | bytes | None]]


class BinanceSource:
    """Yields WireMessage or UnparsedMessage per frame until stopped, across reconnects."""

    def __init__(
        self,
        streams: Sequence[str],
        metrics: Metrics,
        *,
        url: str = DEFAULT_BINANCE_STREAM_URL,
        testnet: bool = False,
        max_queue_size: int = 10_000,
        rotate_after_seconds: float = 23 * 3600,
        down_unhealthy_seconds: float = 30.0,
        health: Health | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not streams:
            raise SourceUnavailableError("no Binance streams configured")
        self._streams = list(streams)
        self._metrics = metrics
        if testnet and url == DEFAULT_BINANCE_STREAM_URL:
            # python-binance's testnet URL; imported here: the package (aiohttp) costs every
            # producer start most of a second of CPU, and only the testnet needs it.
            from binance.ws.streams import BinanceSocketManager

            url = BinanceSocketManager.STREAM_TESTNET_URL
        self._base = url if url.endswith("/") else url + "/"
        self._url = combined_stream_url(self._base, self._streams)
        self._max_queue_size = max_queue_size
        self._plan = RotationPlan(rotate_after_seconds)
        self._policy = ReconnectPolicy(backoff or Backoff(base=0.5, cap=30.0))
        self._health = health
        if health is not None:
            health.register(HEALTH_COMPONENT, down_unhealthy_seconds)
        self._clock = clock
        self._numbers = 0
        self.connected = asyncio.Event()  # a link is open (benchmarks wait for it)

    @property
    def description(self) -> str:
        return f"{self._base} streams={','.join(self._streams)}"

    async def messages(self, stop: asyncio.Event) -> AsyncIterator[Any]:
        """Messages until ``stop`` is set, then those already on the wire; the first
        connection failing raises SourceUnavailableError."""
        run = _Run(self, stop)
        try:
            async for message in run.frames():
                yield message
        finally:
            await run.close()

    # Used by _Run -----------------------------------------------------------------------

    async def _open(self) -> Link:
        self._numbers += 1
        link = await open_link(self._url, self._numbers, self._clock())
        link.opened_at = self._clock()
        return link

    def _beat(self) -> None:
        if self._health is not None:
            self._health.beat(HEALTH_COMPONENT)


class _Run:
    """One call of ``messages``: the open links, the frame queue and the reconnect state."""

    def __init__(self, source: BinanceSource, stop: asyncio.Event) -> None:
        self.s = source
        self.stop = stop
        self.queue: _Frames = asyncio.Queue(source._max_queue_size)
        self.links: set[Link] = set()
        self.current: Link | None = None
        self.retiring: Link | None = None
        self.opening: asyncio.Task[Link] | None = None
        self.next_attempt = 0.0
        self.lost_at: float | None = None
        self.last_frame_at: float | None = None
        self.ever_connected = False
        self.overlap = OverlapFilter(linger_seconds=source._plan.settle_seconds)
        self.getter: asyncio.Task[tuple[Link, str | bytes | None]] | None = None
        self.stop_wait = asyncio.create_task(stop.wait())
        self.watchdog = asyncio.create_task(self._watch())

    async def frames(self) -> AsyncIterator[Any]:
        while not self.stop.is_set():
            self._steer()
            item = await self._next(self._wait_seconds())
            if item is not None and (message := self._take(*item)) is not None:
                yield message
        # Stopping: say goodbye and hand on what the server sent before it saw that.
        for link in self.links:
            link.close()
        deadline = self.s._clock() + DRAIN_SECONDS
        while self.links and (left := deadline - self.s._clock()) > 0:
            item = await self._next(left, stopping=True)
            if item is not None and (message := self._take(*item)) is not None:
                yield message

    def _steer(self) -> None:
        """Open, rotate and retire connections as the clock says."""
        now = self.s._clock()
        if self.opening is not None and self.opening.done():
            self._opened(self.opening)
            self.opening = None
        if self.opening is None:
            if self.current is None and now >= self.next_attempt:
                self.opening = asyncio.create_task(self.s._open())
            elif (
                self.current is not None
                and self.retiring is None
                and now >= self.next_attempt
                and self.s._plan.due(self.current.opened_at, now)
            ):
                log.info("rotating the websocket: opening the next connection before this one ends")
                self.opening = asyncio.create_task(self.s._open())
        retiring, current = self.retiring, self.current
        if (
            retiring is not None
            and current is not None
            and not retiring.closing
            and self.s._plan.retire_old(current.opened_at, current.first_frame_at, now)
        ):
            retiring.close()

    def _opened(self, task: asyncio.Task[Link]) -> None:
        now = self.s._clock()
        try:
            link = task.result()
        except CONNECT_ERRORS as err:
            if not self.ever_connected:
                raise SourceUnavailableError(
                    f"cannot reach the market data websocket at {self.s._base}: {err}"
                ) from err
            delay = self.s._policy.attempt_failed()
            self.next_attempt = now + delay
            log.warning(
                "websocket connect failed (%s: %s), next attempt in %d ms",
                type(err).__name__,
                err,
                delay * 1000,
            )
            return
        link.start(self.queue)
        self.links.add(link)
        self.s.connected.set()
        self.s._beat()
        if self.current is None:
            if self.ever_connected and self.lost_at is not None:
                gap = now - self.lost_at
                self.s._metrics.observe(Histograms.RECONNECT_GAP_SECONDS, gap)
                log.warning(
                    "reconnected after a gap of %d ms (connection %d)",
                    gap * 1000,
                    link.number,
                    extra={"gap_ms": round(gap * 1000)},
                )
            self.current = link
        else:  # a rotation: both read until the new one settles
            self.retiring, self.current = self.current, link
            self.overlap.start()
            self.s._metrics.inc(Counters.ROTATIONS)
            log.info(
                "connection %d open; connection %d closes once it has settled",
                link.number,
                self.retiring.number,
            )
        self.ever_connected = True

    def _take(self, link: Link, frame: str | bytes | None) -> Any:
        """The message to hand on for one queue item, or None."""
        now = self.s._clock()
        if frame is None:
            self._ended(link, now)
            return None
        link.frames += 1
        if link.first_frame_at is None:
            link.first_frame_at = now
        message = tolerant_json_loads(frame)
        if self.overlap.active:
            key = event_key(message.parsed) if isinstance(message, WireMessage) else None
            if not self.overlap.admit(key, now):
                self.s._metrics.inc(Counters.OVERLAP_DUPLICATES)
                return None
        self.last_frame_at = now
        return message

    def _ended(self, link: Link, now: float) -> None:
        self.links.discard(link)
        if not self.links:
            self.s.connected.clear()
        if link is self.retiring:
            self.retiring = None
            self.overlap.old_connection_ended(now)
            log.info(
                "connection %d %s after %d frames; rotation done",
                link.number,
                link.describe_end(),
                link.frames,
            )
            return
        if link is not self.current or self.stop.is_set():
            return
        self.current = None
        self.lost_at = now
        delay = self.s._policy.connection_ended(now - link.opened_at, link.frames)
        self.next_attempt = now + delay
        self.s._metrics.inc(Counters.RECONNECTS)
        when = "now" if delay == 0 else f"in {delay * 1000:.0f} ms"
        log.warning(
            "websocket event: connection %d %s after %d frames; reconnecting %s",
            link.number,
            link.describe_end(),
            link.frames,
            when,
        )

    def _wait_seconds(self) -> float:
        if self.current is None and self.opening is None:
            return max(0.0, min(_IDLE_WAKE_SECONDS, self.next_attempt - self.s._clock()))
        return _IDLE_WAKE_SECONDS

    async def _next(
        self, wait_seconds: float, *, stopping: bool = False
    ) -> tuple[Link, str | bytes | None] | None:
        """The next queue item, or None when the wait ended for another reason."""
        if self.getter is not None and self.getter.done():
            getter, self.getter = self.getter, None
            return getter.result()  # taken off the queue before anything behind it
        with contextlib.suppress(asyncio.QueueEmpty):
            return self.queue.get_nowait()  # the busy path: no task, no timer
        if self.getter is None:
            self.getter = asyncio.create_task(self.queue.get())
        waits: set[asyncio.Future[Any]] = {self.getter}
        if not stopping:
            waits.add(self.stop_wait)
            if self.opening is not None:
                waits.add(self.opening)
        done, _ = await asyncio.wait(
            waits, timeout=wait_seconds, return_when=asyncio.FIRST_COMPLETED
        )
        if self.getter in done:
            getter, self.getter = self.getter, None
            return getter.result()
        return None

    async def _watch(self) -> None:
        # Health: beat while a connection is open, whatever the pipeline behind us is doing.
        while True:
            if self.links:
                self.s._beat()
            await asyncio.sleep(1.0)

    async def close(self) -> None:
        tasks = [t for t in (self.getter, self.opening, self.stop_wait, self.watchdog) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for link in list(self.links):
            await link.abort()
        self.links.clear()
        self.s.connected.clear()
