"""python-binance's signed allOrders, paged and retried, with Binance's refusals as one line.

The paging and retry logic works on any ``get_all_orders(**params)`` callable; only
``binance_client`` builds python-binance's Client (its REST URL overridable for the simulator).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from core.settings import Settings
from crypto_live.orders import OrdersError

log = logging.getLogger(__name__)

GetAllOrders = Callable[..., list[dict[str, Any]]]
MAX_PAGE = 1000  # Binance's most orders per allOrders request
MAX_MINUTES = 24 * 60  # Binance's widest startTime..endTime span
RETRY_STATUSES = frozenset({418, 429})
DEFAULT_RETRY_AFTER_SECONDS = 5.0
# Binance error codes whose own message reads poorly as a CLI line.
_REASONS: Mapping[int, str] = {
    -1022: "invalid signature",
    -1021: "timestamp outside the recvWindow (is this machine's clock right?)",
    -2014: "invalid API key",
    -2015: "invalid API key, IP, or permissions",
    -1121: "invalid symbol",
}


@dataclass(frozen=True)
class ApiCredentials:
    """The pair from the API secret; SecretStr, so it never shows in a repr or a log line."""

    api_key: SecretStr
    api_secret: SecretStr


@contextlib.contextmanager
def binance_client(settings: Settings, credentials: ApiCredentials) -> Iterator[Any]:
    """python-binance's sync Client: testnet with TESTNET, BINANCE_API_URL overriding either.

    The Client takes the thread's event loop (making one if there is none) and never closes
    it; it gets a loop of ours instead, closed with its HTTP session on the way out.
    """
    with warnings.catch_warnings():
        # python-binance 1.0.37 imports websockets' deprecated legacy client at import time.
        warnings.simplefilter("ignore", DeprecationWarning)
        from binance import Client

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    client = None
    try:
        client = Client(
            credentials.api_key.get_secret_value(),
            credentials.api_secret.get_secret_value(),
            testnet=settings.testnet,
            ping=False,
        )
        if settings.binance_api_url:
            client.API_URL = client.API_TESTNET_URL = settings.binance_api_url.rstrip("/")
        yield client
    finally:
        if client is not None:
            client.close_connection()
        asyncio.set_event_loop(None)
        loop.close()


def rest_url(client: Any) -> str:
    return str(client.API_TESTNET_URL if client.testnet else client.API_URL)


class RetryingCalls:
    """Calls ``get_all_orders``; 429/418 answers wait their Retry-After (up to ``attempts``
    tries); every other failure becomes one OrdersError line."""

    def __init__(
        self,
        get_all_orders: GetAllOrders,
        url: str,
        *,
        attempts: int = 5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._get = get_all_orders
        self._url = url
        self._attempts = attempts
        self._sleep = sleep
        self.calls = 0
        self.retries = 0

    def __call__(self, **params: Any) -> list[dict[str, Any]]:
        from binance.exceptions import BinanceAPIException, BinanceRequestException
        from requests import RequestException

        for attempt in range(1, self._attempts + 1):
            self.calls += 1
            try:
                return list(self._get(**params))
            except BinanceAPIException as err:
                if err.status_code not in RETRY_STATUSES or attempt == self._attempts:
                    raise OrdersError(_describe(err)) from err
                wait = _retry_after(err)
                self.retries += 1
                log.warning(
                    "Binance answered %d (%s); retrying in %.0f s", err.status_code, err.code, wait
                )
                self._sleep(wait)
            except BinanceRequestException as err:
                raise OrdersError(f"Binance sent an unreadable answer: {err.message}") from err
            except RequestException as err:
                raise OrdersError(
                    f"cannot reach Binance at {self._url}: {type(err).__name__}"
                ) from err
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _describe(err: Any) -> str:
    code = err.code
    reason = _REASONS.get(code) or str(err.message or "no message").rstrip(".")
    if err.status_code in RETRY_STATUSES:
        reason = f"too many requests (HTTP {err.status_code}), still refused after retrying"
    return f"Binance rejected the request: {reason} ({code})"


def _retry_after(err: Any) -> float:
    headers = getattr(err.response, "headers", None) or {}
    try:
        return max(0.0, float(headers.get("Retry-After", DEFAULT_RETRY_AFTER_SECONDS)))
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_SECONDS


def latest_orders(call: GetAllOrders, symbol: str, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` (1..1000) most recent orders: one request, as Binance serves them."""
    if not 1 <= limit <= MAX_PAGE:
        raise OrdersError(f"--limit must be 1..{MAX_PAGE}, got {limit}")
    return call(symbol=symbol, limit=limit)


def orders_between(
    call: GetAllOrders, symbol: str, start_ms: int, end_ms: int
) -> list[dict[str, Any]]:
    """Every order placed in [start_ms, end_ms] (at most 24 h): pages of 1000 forward by
    startTime from the last order seen; overlaps at equal times are removed by order id."""
    if end_ms - start_ms > MAX_MINUTES * 60_000:
        raise OrdersError("a period of more than 24 hours cannot be asked of Binance at once")
    by_id: dict[int, dict[str, Any]] = {}
    cursor = start_ms
    while cursor <= end_ms:
        page = call(symbol=symbol, startTime=cursor, endTime=end_ms, limit=MAX_PAGE)
        fresh = [order for order in page if int(order["orderId"]) not in by_id]
        by_id.update((int(order["orderId"]), order) for order in page)
        if len(page) < MAX_PAGE:
            break
        last_time = max(int(order["time"]) for order in page)
        # A full page all at one millisecond would repeat forever: step past it.
        cursor = last_time if fresh and last_time > cursor else last_time + 1
    return [by_id[order_id] for order_id in sorted(by_id)]
