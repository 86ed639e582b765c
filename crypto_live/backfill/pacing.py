"""Request-weight pacing, pure: when to pause so Binance's per-minute weight is never passed.

Binance counts request weight per IP and UTC minute and reports it in X-MBX-USED-WEIGHT-1M.
The pacer remembers the last report and, before the next request, says how long to wait: until
the server's next minute (plus a margin for clock error) once that request would take the
weight past the budget, else not at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from crypto_live.backfill.minutes import MS_PER_MINUTE

KLINES_WEIGHT: Final = 2  # GET /api/v3/klines, any limit up to 1000
BINANCE_WEIGHT_LIMIT: Final = 6_000  # REQUEST_WEIGHT per minute, spot API
DEFAULT_MAX_WEIGHT: Final = 4_800  # 80 %: room for other clients of the same IP
USED_WEIGHT_HEADER: Final = "X-MBX-USED-WEIGHT-1M"


@dataclass
class WeightPacer:
    """Keeps the weight used per server minute under ``max_weight``."""

    max_weight: int = DEFAULT_MAX_WEIGHT
    request_weight: int = KLINES_WEIGHT
    margin_ms: int = 1_000
    _used: int = 0
    _minute: int | None = None

    def __post_init__(self) -> None:
        if self.max_weight < self.request_weight:
            raise ValueError(
                f"max weight {self.max_weight} is below one request's {self.request_weight}"
            )

    def observe(self, used: int | None, server_now_ms: int) -> None:
        """Binance's X-MBX-USED-WEIGHT-1M of the answer just received (None: not sent)."""
        if used is None:
            return
        self._minute = server_now_ms // MS_PER_MINUTE
        self._used = used

    def wait_ms(self, server_now_ms: int) -> int:
        """Milliseconds to wait before the next request; 0 to go now."""
        if self._minute is None or server_now_ms // MS_PER_MINUTE != self._minute:
            return 0  # a new minute: Binance's count started again
        if self._used + self.request_weight <= self.max_weight:
            return 0
        return (self._minute + 1) * MS_PER_MINUTE + self.margin_ms - server_now_ms


def used_weight(headers: Mapping[str, Any] | None) -> int | None:
    """X-MBX-USED-WEIGHT-1M of an answer's headers, or None when absent or unreadable."""
    if not headers:
        return None
    value = headers.get(USED_WEIGHT_HEADER)
    if value is None:  # requests' headers are case-insensitive, a plain dict is not
        lowered = {str(k).lower(): v for k, v in headers.items()}
        value = lowered.get(USED_WEIGHT_HEADER.lower())
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
