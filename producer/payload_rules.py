"""The value rules every Binance payload validator shares: decimals, symbols, event times, and
how a reject reason shows a value. Pure; imported by validation and kline_validation."""

from __future__ import annotations

import re
from typing import Final, TypeVar

# 2017-01-01T00:00:00Z and 2101-01-01T00:00:00Z in epoch ms: event times in years 2017..2100.
MIN_EVENT_TIME_MS: Final = 1_483_228_800_000
MAX_EVENT_TIME_MS: Final = 4_133_980_800_000

# [0-9] rather than \d: \d also matches non-ASCII digits such as '٣'.
DECIMAL: Final = r"[0-9]{1,20}(?:\.[0-9]{1,18})?"
decimal_match: Final = re.compile(DECIMAL).fullmatch
symbol_match: Final = re.compile(r"[A-Z0-9]{1,20}").fullmatch

CACHE_LIMIT: Final = 4096
_REASON_VALUE_CHARS: Final = 40

_T = TypeVar("_T")


def remember(cache: dict[str, _T], key: str, value: _T) -> _T:
    """Store value in a bounded cache; clearing when full keeps memory flat on odd input."""
    if len(cache) >= CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


def kind(value: object) -> str:
    """Name a value's JSON type for a reject reason."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def short(value: object) -> str:
    """repr a value, cut so a hostile payload cannot bloat the reason."""
    text = repr(value)
    if len(text) > _REASON_VALUE_CHARS:
        return text[: _REASON_VALUE_CHARS - 3] + "..."
    return text
