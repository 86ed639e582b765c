"""GET /api/v3/klines pages through python-binance's Client: paced by request weight, 429/418
retried after their Retry-After (the orders snapshot's RetryingCalls), refusals as one line."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from crypto_live.backfill import BackfillError
from crypto_live.backfill.pacing import WeightPacer, used_weight
from crypto_live.backfill.pages import Page
from crypto_live.backfill.rows import INTERVAL
from crypto_live.orders import OrdersError
from crypto_live.orders.binance_api import RetryingCalls, rest_url

log = logging.getLogger(__name__)

DEFAULT_MAX_WAIT_SECONDS = 600.0


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class KlineFetcher:
    """Pages of 1-minute klines of one python-binance Client, never past ``pacer``'s budget.

    ``clock_ms`` is this machine's clock; Binance's minute (which its weight is counted in,
    and which says what is closed) is it plus the offset measured by ``server_time_ms``."""

    def __init__(
        self,
        client: Any,
        pacer: WeightPacer,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock_ms: Callable[[], int] = _wall_ms,
        max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
    ) -> None:
        self._client = client
        self._pacer = pacer
        self._sleep = sleep
        self._clock_ms = clock_ms
        self._offset_ms = 0
        url = rest_url(client)
        waiting = _bounded(sleep, max_wait_seconds)
        self._klines = RetryingCalls(client.get_klines, url, sleep=waiting)
        self._time = RetryingCalls(lambda: [client.get_server_time()], url, sleep=waiting)
        self.pages = 0
        self.pauses = 0

    @property
    def requests(self) -> int:
        return self._klines.calls + self._time.calls

    @property
    def retries(self) -> int:
        return self._klines.retries + self._time.retries

    def server_time_ms(self) -> int:
        """Binance's clock (GET /api/v3/time); later calls go by it, through the offset."""
        before = self._clock_ms()
        answer = _call(self._time)[0]
        after = self._clock_ms()
        try:
            server = int(answer["serverTime"])
        except (KeyError, TypeError, ValueError) as err:
            raise BackfillError(f"Binance sent an unreadable server time: {answer!r:.80}") from err
        self._offset_ms = server - (before + after) // 2
        self._observe()
        return server

    def now_ms(self) -> int:
        """Binance's clock now, as last measured."""
        return self._clock_ms() + self._offset_ms

    def fetch(self, symbol: str, page: Page) -> list[Any]:
        """One page of klines (after a pause, when the weight budget is spent)."""
        wait = self._pacer.wait_ms(self.now_ms())
        if wait > 0:
            self.pauses += 1
            log.info("request weight budget of this minute spent: pausing %.1f s", wait / 1000)
            self._sleep(wait / 1000)
        rows = _call(self._klines, symbol=symbol, interval=INTERVAL, **page.params)
        self._observe()
        self.pages += 1
        return rows

    def _observe(self) -> None:
        response = getattr(self._client, "response", None)
        self._pacer.observe(used_weight(getattr(response, "headers", None)), self.now_ms())


def _call(calls: RetryingCalls, **params: Any) -> list[Any]:
    """``calls(**params)``; Binance's refusals (the orders code's one-line OrdersError) as
    BackfillError."""
    try:
        return calls(**params)
    except OrdersError as err:
        raise BackfillError(str(err)) from err


def _bounded(sleep: Callable[[float], None], max_seconds: float) -> Callable[[float], None]:
    """``sleep``, refusing a Retry-After longer than ``max_seconds`` (a 418 ban can last days:
    stop and say so rather than hang, or hammer)."""

    def wait(seconds: float) -> None:
        if seconds > max_seconds:
            raise BackfillError(
                f"Binance asked to wait {seconds:.0f} s before the next request (Retry-After), "
                f"more than --max-wait {max_seconds:.0f} s: stopped; run it again after that"
            )
        sleep(seconds)

    return wait
