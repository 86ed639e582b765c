"""Binance's market-stream protocol, pure: request paths to subscriptions, ticks to frames."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from crypto_live.exchange.kline_frames import KLINE_STREAM_TYPE, KlineTick
from crypto_live.exchange.price_walk import MiniTickerPayload

ALL_MARKET_STREAM = "!miniTicker@arr"
SYMBOL_STREAM_TYPE = "miniTicker"
# Per-symbol stream types served: <symbol lower>@miniTicker and <symbol lower>@kline_1m.
SYMBOL_STREAM_TYPES = frozenset({SYMBOL_STREAM_TYPE, KLINE_STREAM_TYPE})
# python-binance's miniticker_socket() asks for "!miniTicker@arr@1000ms"; Binance accepts both.
_ALL_MARKET_PATTERN = re.compile(r"!miniTicker@arr(@\d+ms)?")


@dataclass(frozen=True)
class Subscription:
    """The streams one connection asked for; ``combined`` wraps data as Binance's /stream does."""

    streams: tuple[str, ...]
    combined: bool


def parse_request_path(path: str) -> Subscription | None:
    """Map ``/stream?streams=a/b`` or ``/ws/a/b`` to a subscription; None for anything else."""
    parts = urlsplit(path)
    if parts.path.rstrip("/") == "/stream":
        raw = "/".join(parse_qs(parts.query).get("streams", []))
        combined = True
    elif parts.path.startswith("/ws/"):
        raw = unquote(parts.path.removeprefix("/ws/"))
        combined = False
    else:
        return None
    streams = tuple(dict.fromkeys(name for name in raw.split("/") if name))
    return Subscription(streams, combined) if streams else None


def is_all_market_stream(stream: str) -> bool:
    """True for ``!miniTicker@arr``, optionally with python-binance's ``@1000ms`` suffix."""
    return _ALL_MARKET_PATTERN.fullmatch(stream) is not None


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class TickFrames:
    """One tick's payloads serialised once, then rendered as text frames per subscription."""

    def __init__(
        self, payloads: Sequence[MiniTickerPayload], klines: KlineTick | None = None
    ) -> None:
        """``klines``: this tick's kline events (computed per symbol when first asked for)."""
        self._by_symbol = {payload["s"].lower(): _dumps(payload) for payload in payloads}
        self._klines = klines
        self._array: str | None = None
        self._rendered: dict[Subscription, list[str]] = {}

    def data_for(self, stream: str) -> list[str]:
        """The JSON ``data`` texts ``stream`` carries this tick, in order: none or one, or for
        a kline stream each minute closed since the last tick and then the current one."""
        if is_all_market_stream(stream):
            if self._array is None:
                # Built lazily: only needed when some client subscribed to the all-market stream.
                self._array = "[" + ",".join(self._by_symbol.values()) + "]"
            return [self._array] if self._by_symbol else []
        symbol, _, stream_type = stream.partition("@")
        if stream_type == SYMBOL_STREAM_TYPE:
            data = self._by_symbol.get(symbol.lower())
            return [] if data is None else [data]
        if stream_type == KLINE_STREAM_TYPE and self._klines is not None:
            return self._klines.data_for(symbol)
        return []

    def frames_for(self, subscription: Subscription) -> list[str]:
        """Text frames for one subscription, memoised since many clients share subscriptions."""
        frames = self._rendered.get(subscription)
        if frames is None:
            frames = []
            for stream in subscription.streams:
                for data in self.data_for(stream):
                    if subscription.combined:
                        frames.append(f'{{"stream":{_dumps(stream)},"data":{data}}}')
                    else:
                        frames.append(data)
            self._rendered[subscription] = frames
        return frames
