"""Websocket I/O of the producer: one connection to Binance's combined stream, read in order.

We own this layer (the ``websockets`` package directly) rather than python-binance's
ReconnectingWebsocket, because a websocket close must never drop a frame the transport
already read: ``websockets`` hands on every buffered frame before it reports the close, and
reading only as fast as the pipeline takes frames pushes back through TCP instead of
dropping (python-binance ends its read loop on a full queue and reconnects after a delay).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

log = logging.getLogger(__name__)

CONNECT_ERRORS: Final = (OSError, TimeoutError, WebSocketException)
OPEN_TIMEOUT_SECONDS: Final = 10.0
CLOSE_TIMEOUT_SECONDS: Final = 2.0
# Binance pings every 20 s and drops a client that does not answer; our own pings find a dead
# peer (a partition) within PING_INTERVAL + PING_TIMEOUT.
PING_INTERVAL_SECONDS: Final = 20.0
PING_TIMEOUT_SECONDS: Final = 20.0
MAX_FRAME_BYTES: Final = 2**20  # as python-binance: a bigger frame fails the connection (1009)


def combined_stream_url(base: str, streams: list[str]) -> str:
    """``{base}stream?streams=a/b``, Binance's combined-stream endpoint."""
    return f"{base if base.endswith('/') else base + '/'}stream?streams={'/'.join(streams)}"


@dataclass(eq=False)
class Link:
    """One open connection; its frames, then ``None`` at its end, go to a shared queue."""

    number: int
    connection: ClientConnection
    opened_at: float
    frames: int = 0
    first_frame_at: float | None = None
    closing: bool = False  # we asked it to close (rotation or shutdown)
    pump: asyncio.Task[None] | None = None
    _closer: asyncio.Task[None] | None = field(default=None, repr=False)

    def start(self, out: asyncio.Queue[tuple[Link, str | bytes | None]]) -> None:
        self.pump = asyncio.create_task(self._pump(out), name=f"websocket-{self.number}")

    async def _pump(self, out: asyncio.Queue[tuple[Link, str | bytes | None]]) -> None:
        # A full queue stops this loop and websockets stops reading the socket: TCP pushes back.
        try:
            async for frame in self.connection:
                await out.put((self, frame))
        except ConnectionClosed:
            pass  # every frame received before the close was handed on above
        finally:
            await out.put((self, None))

    def close(self) -> None:
        """Start the closing handshake; frames the server sends meanwhile still arrive."""
        if not self.closing:
            self.closing = True
            self._closer = asyncio.create_task(self.connection.close())

    async def abort(self) -> None:
        """Stop at once (shutdown after the drain deadline)."""
        self.connection.transport.abort()
        for task in (self.pump, self._closer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, *CONNECT_ERRORS):
                    await task

    def describe_end(self) -> str:
        """How the connection ended, with its close code, for the log."""
        protocol = self.connection.protocol
        received, sent = protocol.close_rcvd, protocol.close_sent
        if received is not None:
            who = "closed by the server" if protocol.close_rcvd_then_sent else "closed by us"
            return f"{who} ({_describe_close(received.code, received.reason)})"
        if sent is not None:
            who = "closed by us" if self.closing else "failed"
            return f"{who} ({_describe_close(sent.code, sent.reason)})"
        return "lost without a close frame"


def _describe_close(code: int, reason: str) -> str:
    return f"code {code}: {reason}" if reason else f"code {code}"


async def open_link(url: str, number: int, opened_at: float) -> Link:
    """Connect; raises one of CONNECT_ERRORS when the server cannot be reached."""
    connection = await connect(
        url,
        open_timeout=OPEN_TIMEOUT_SECONDS,
        close_timeout=CLOSE_TIMEOUT_SECONDS,
        ping_interval=PING_INTERVAL_SECONDS,
        ping_timeout=PING_TIMEOUT_SECONDS,
        max_size=MAX_FRAME_BYTES,
    )
    return Link(number, connection, opened_at)
