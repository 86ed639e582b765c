"""The simulated exchange with the hooks tests drive it by: scripted frames, waiting for
clients, and connections dropped without a close frame."""

from __future__ import annotations

import asyncio
import logging

from crypto_live.exchange.server import SimulatedExchange, _Client

logger = logging.getLogger(__name__)

_DROP_WAIT_SECONDS = 5.0


class _Written:
    """Queued after a script: resolved once the sender reached it (everything before is sent)."""

    def __init__(self) -> None:
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class ScriptedExchange(SimulatedExchange):
    """A SimulatedExchange that also sends exact frames, waits for clients and drops them."""

    async def wait_for_clients(self, n: int, timeout: float) -> None:
        """Wait until at least ``n`` clients are connected; TimeoutError after ``timeout`` s."""
        async with asyncio.timeout(timeout), self._clients_changed:
            await self._clients_changed.wait_for(lambda: len(self._clients) >= n)

    async def send_raw(self, text: str) -> None:
        """Send this exact text frame to every connected client."""
        await self.send_script([text])

    async def send_script(self, messages: list[str]) -> None:
        """Send each text in order (after what is queued already) to every client; returns once
        all were written, or the client went away."""
        pending: list[asyncio.Future[None]] = []
        for client in list(self._clients):
            written = _Written()
            if self._offer(client, list(messages)) and self._offer(client, written):
                pending.append(asyncio.ensure_future(_until_written(client, written)))
        if pending:
            await asyncio.gather(*pending)

    async def drop_connections(self) -> None:
        """Abort every connection without a close frame, so clients must reconnect."""
        dropped = list(self._clients)
        for client in dropped:
            client.connection.transport.abort()
        logger.info("aborted %d client connections", len(dropped))
        async with asyncio.timeout(_DROP_WAIT_SECONDS), self._clients_changed:
            await self._clients_changed.wait_for(lambda: self._clients.isdisjoint(dropped))

    async def _send_item(self, client: _Client, item: object) -> bool:
        if isinstance(item, _Written):
            if not item.future.done():
                item.future.set_result(None)
            return True
        return await super()._send_item(client, item)


async def _until_written(client: _Client, written: _Written) -> None:
    # The sender task ends when the connection does; nothing more will be written then.
    assert client.sender is not None
    await asyncio.wait({written.future, client.sender}, return_when=asyncio.FIRST_COMPLETED)
