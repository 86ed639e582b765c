"""Binance's REST guards, pure: request weight per minute and signed-request checks."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_RECV_WINDOW_MS",
    "MAX_RECV_WINDOW_MS",
    "RestRejection",
    "WeightLimiter",
    "check_signed",
    "sign",
]

DEFAULT_RECV_WINDOW_MS = 5_000
MAX_RECV_WINDOW_MS = 60_000
# Binance refuses a timestamp this far ahead of its clock, whatever the recvWindow.
MAX_AHEAD_MS = 1_000
MS_PER_MINUTE = 60_000


class RestRejection(Exception):
    """A request Binance would refuse: HTTP status, Binance error code and message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.status = status
        self.code = code
        self.message = message


@dataclass
class WeightLimiter:
    """Weight used per client in the current UTC minute, as Binance counts it per IP."""

    limit: int = 6_000
    _minute: int = -1
    _used: dict[str, int] = field(default_factory=dict)

    def used(self, client: str, now_ms: int) -> int:
        self._roll(now_ms)
        return self._used.get(client, 0)

    def charge(self, client: str, weight: int, now_ms: int) -> int:
        """Add ``weight``; returns the weight used this minute. A request that would pass the
        limit raises a 429 RestRejection whose message says when to retry (not charged)."""
        used = self.used(client, now_ms) + weight
        if used > self.limit:
            raise RestRejection(
                429,
                -1003,
                f"Too much request weight used; current limit is {self.limit} request weight "
                "per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling "
                "the API.",
            )
        self._used[client] = used
        return used

    def retry_after_seconds(self, now_ms: int) -> int:
        """Whole seconds until the minute's weight resets (at least 1)."""
        return max(1, -(-(MS_PER_MINUTE - now_ms % MS_PER_MINUTE) // 1000))

    def _roll(self, now_ms: int) -> None:
        minute = now_ms // MS_PER_MINUTE
        if minute != self._minute:
            self._minute = minute
            self._used.clear()


def sign(secret: str, payload: str) -> str:
    """Binance's HMAC-SHA256 signature of a query string, as lower-case hex."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def check_signed(
    raw_query: str,
    params: Mapping[str, str],
    api_key: str | None,
    secrets: Mapping[str, str],
    now_ms: int,
) -> None:
    """Binance's checks of a SIGNED request, in its order: API key, signature over everything
    before ``&signature=``, then the timestamp against recvWindow. Raises RestRejection."""
    if not api_key:
        raise RestRejection(401, -2014, "API-key format invalid.")
    secret = secrets.get(api_key)
    if secret is None:
        raise RestRejection(401, -2015, "Invalid API-key, IP, or permissions for action.")
    if "signature" not in params or "timestamp" not in params:
        missing = "signature" if "signature" not in params else "timestamp"
        raise RestRejection(
            400,
            -1102,
            f"Mandatory parameter '{missing}' was not sent, was empty/null, or malformed.",
        )
    payload = _without_signature(raw_query)
    if not hmac.compare_digest(sign(secret, payload), params["signature"].lower()):
        raise RestRejection(400, -1022, "Signature for this request is not valid.")
    _check_timestamp(params, now_ms)


def _without_signature(raw_query: str) -> str:
    kept = [part for part in raw_query.split("&") if not part.startswith("signature=")]
    return "&".join(kept)


def _check_timestamp(params: Mapping[str, str], now_ms: int) -> None:
    try:
        timestamp = int(params["timestamp"])
        window = int(params.get("recvWindow", DEFAULT_RECV_WINDOW_MS))
    except ValueError as err:
        raise RestRejection(400, -1100, "Illegal characters found in a parameter.") from err
    if not 0 < window <= MAX_RECV_WINDOW_MS:
        raise RestRejection(400, -1131, "recvWindow must be less than 60000")
    if timestamp > now_ms + MAX_AHEAD_MS:
        raise RestRejection(
            400, -1021, "Timestamp for this request was 1000ms ahead of the server's time."
        )
    if now_ms - timestamp > window:
        raise RestRejection(400, -1021, "Timestamp for this request is outside of the recvWindow.")
