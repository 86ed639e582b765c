"""Gap checks over the candles table, and waiting for repaired candles to be written."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final, Protocol

from core.aws import AwsClients
from core.errors import ConfigError
from core.settings import Settings
from crypto_live.backfill.gaps import SymbolGaps, hull, minute_count, missing_ranges, still_missing
from crypto_live.backfill.minutes import MinuteRange

_KLINE_STREAM: Final = re.compile(r"([a-z0-9]{1,20})@kline_1m")
POLL_SECONDS: Final = 1.0


class CandleKeys(Protocol):
    """Which open times a table holds (CandlesTable: DynamoDB)."""

    def open_times(self, symbol: str, span: MinuteRange) -> set[int]: ...


def kline_symbols(streams: Iterable[str]) -> tuple[str, ...]:
    """The symbols of the ``<symbol>@kline_1m`` streams, upper-cased, in order, once each."""
    found = (match.group(1).upper() for s in streams if (match := _KLINE_STREAM.fullmatch(s)))
    return tuple(dict.fromkeys(found))


def subscribed_symbols(settings: Settings, clients: AwsClients) -> tuple[str, ...]:
    """The symbols whose 1-minute klines the producer subscribes to (BINANCE_STREAMS, else the
    BINANCE_WEBSOCKET_SECRET secret)."""
    from producer.app import resolve_streams

    symbols = kline_symbols(resolve_streams(settings, clients))
    if not symbols:
        origin = "BINANCE_STREAMS" if settings.binance_streams else "BINANCE_WEBSOCKET_SECRET"
        raise ConfigError(
            f"no <symbol>@kline_1m stream is subscribed ({origin}): name symbols with --symbol"
        )
    return symbols


def find_gaps(table: CandleKeys, symbols: Sequence[str], span: MinuteRange) -> list[SymbolGaps]:
    """Each symbol's missing closed minutes of ``span``."""
    return [
        SymbolGaps(symbol, span, tuple(missing_ranges(span, table.open_times(symbol, span))))
        for symbol in symbols
    ]


def wait_until_written(
    table: CandleKeys,
    targets: Mapping[str, Sequence[MinuteRange]],
    timeout_seconds: float,
    *,
    on_progress: Callable[[int, int], None] = lambda written, total: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, list[MinuteRange]]:
    """Poll the table until every minute of ``targets`` is there, or ``timeout_seconds``
    passed; the minutes still missing per symbol (empty when all were written)."""
    waiting = {symbol: list(ranges) for symbol, ranges in targets.items() if ranges}
    total = sum(minute_count(ranges) for ranges in waiting.values())
    deadline = clock() + timeout_seconds
    while True:
        for symbol, ranges in list(waiting.items()):
            left = still_missing(ranges, table.open_times(symbol, hull(ranges)))
            if left:
                waiting[symbol] = left
            else:
                del waiting[symbol]
        on_progress(total - sum(minute_count(r) for r in waiting.values()), total)
        if not waiting or clock() >= deadline:
            return waiting
        sleep(min(POLL_SECONDS, max(0.0, deadline - clock())))
