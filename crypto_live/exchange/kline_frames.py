"""The ``<symbol>@kline_1m`` side of the market streams, pure: what one tick sends.

Klines come from the TradeModel the REST side serves, so a closed websocket kline is exactly
the REST kline of that minute (the same strings, through ``Candle.as_binance``). At each tick,
every minute that closed since the previous tick goes out closed (``x`` true, ``E`` that tick's
time), oldest first, then the current minute so far (``x`` false) if it has had trades.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from crypto_live.exchange.trades import MS_PER_MINUTE, Candle, TradeModel

KLINE_STREAM_TYPE: Final = "kline_1m"
INTERVAL: Final = "1m"
# Trade ids are minute-major: minute * stride + index within the minute, so unique per symbol
# and increasing with time (Binance's are consecutive; nothing relies on that).
TRADE_ID_STRIDE: Final = 1_000_000
# After a stall longer than this, only the latest minutes are sent closed (a REST page's worth;
# `candles gaps --repair` fetches the rest, as from Binance).
MAX_CLOSED_PER_TICK: Final = 1000


def closed_minutes(previous_ms: int | None, now_ms: int) -> range:
    """Epoch minutes that closed in (previous_ms, now_ms]: a minute closes when the next one
    begins. None on the first tick (nothing is known to have been sent before)."""
    if previous_ms is None:
        return range(0)
    first, end = previous_ms // MS_PER_MINUTE, now_ms // MS_PER_MINUTE
    return range(max(first, end - MAX_CLOSED_PER_TICK), end)


def trade_id(minute: int, index: int) -> int:
    """The id of the ``index``-th trade of epoch ``minute``."""
    return minute * TRADE_ID_STRIDE + index


def kline_payload(symbol: str, candle: Candle, event_ms: int, closed: bool) -> dict[str, Any]:
    """Binance's kline event for ``candle``; amounts are the REST row's strings."""
    t, o, h, low, c, v, close_time, q, n, taker_v, taker_q, ignore = candle.as_binance()
    minute = candle.open_time_ms // MS_PER_MINUTE
    return {
        "e": "kline",
        "E": event_ms,
        "s": symbol,
        "k": {
            "t": t,
            "T": close_time,
            "s": symbol,
            "i": INTERVAL,
            "f": trade_id(minute, 0),
            "L": trade_id(minute, candle.trades - 1),
            "o": o,
            "c": c,
            "h": h,
            "l": low,
            "v": v,
            "n": n,
            "x": closed,
            "q": q,
            "V": taker_v,
            "Q": taker_q,
            "B": ignore,
        },
    }


class KlineTick:
    """One tick's kline payloads per symbol, computed only for symbols someone subscribed to
    and once per tick however many clients did."""

    def __init__(
        self,
        model: TradeModel,
        symbols: Mapping[str, str],
        *,
        listed_ms: int,
        previous_ms: int | None,
        now_ms: int,
    ) -> None:
        """``symbols``: stream symbol (lower case) -> exchange symbol."""
        self._model = model
        self._symbols = symbols
        self._listed_ms = listed_ms
        self._closed = closed_minutes(previous_ms, now_ms)
        self._now_ms = now_ms
        self._data: dict[str, list[str]] = {}

    def payloads(self, symbol: str) -> list[dict[str, Any]]:
        """The kline events of ``symbol`` (exchange spelling) this tick, in sending order."""
        out = []
        for minute in self._closed:
            candle = self._candle(symbol, minute)
            if candle is not None:
                out.append(kline_payload(symbol, candle, self._now_ms, closed=True))
        candle = self._candle(symbol, self._now_ms // MS_PER_MINUTE)
        if candle is not None:
            out.append(kline_payload(symbol, candle, self._now_ms, closed=False))
        return out

    def data_for(self, stream_symbol: str) -> list[str]:
        """The JSON texts of the kline events of a stream's symbol (any case); none for an
        unknown symbol."""
        key = stream_symbol.lower()
        data = self._data.get(key)
        if data is None:
            symbol = self._symbols.get(key)
            payloads = self.payloads(symbol) if symbol is not None else []
            data = self._data[key] = [json.dumps(p, separators=(",", ":")) for p in payloads]
        return data

    def _candle(self, symbol: str, minute: int) -> Candle | None:
        open_ms = minute * MS_PER_MINUTE
        if open_ms < self._listed_ms:
            return None  # as the REST side: nothing before the listing
        return self._model.candle(symbol, open_ms, MS_PER_MINUTE, self._now_ms)


class KlineStreams:
    """The kline side of a running exchange: each tick's KlineTick, from the previous tick."""

    def __init__(self, model: TradeModel, symbols: Mapping[str, str], listed_ms: int) -> None:
        """``symbols``: stream symbol (lower case) -> exchange symbol."""
        self._model = model
        self._symbols = symbols
        self._listed_ms = listed_ms
        self._last_ms: int | None = None

    def tick(self, now_ms: int) -> KlineTick:
        """The kline events of the tick at ``now_ms``."""
        tick = KlineTick(
            self._model,
            self._symbols,
            listed_ms=self._listed_ms,
            previous_ms=self._last_ms,
            now_ms=now_ms,
        )
        # Never backwards: a clock that steps back sends no closed minute twice.
        self._last_ms = now_ms if self._last_ms is None else max(self._last_ms, now_ms)
        return tick
