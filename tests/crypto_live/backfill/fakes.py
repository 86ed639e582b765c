"""python-binance's Client over the simulated exchange's pure RestApi, on a fake clock: the
backfill's paging, pacing and retries tested without HTTP and without wall-clock time."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from crypto_live.backfill.minutes import MS_PER_MINUTE
from crypto_live.exchange.account import SimulatedAccount
from crypto_live.exchange.rest import RestApi
from crypto_live.exchange.trades import TradeModel

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from binance.exceptions import BinanceAPIException

# 2026-11-18T11:07:00Z, 30.5 s into the minute, as this machine's clock at the start.
LOCAL_START_MS = 1_795_000_020_000 + 30_500


@dataclass
class FakeClock:
    """This machine's clock; ``sleep`` moves it on (and records the waits)."""

    now_ms: int = LOCAL_START_MS
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> int:
        return self.now_ms

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_ms += round(seconds * 1000)

    def us(self) -> int:
        return self.now_ms * 1000


@dataclass
class FakeResponse:
    status_code: int
    text: str
    headers: dict[str, str]


class FakeBinance:
    """The parts of python-binance's Client the backfill calls, answered by a RestApi whose
    clock runs ``skew_ms`` ahead of ``clock`` (Binance's clock is not ours)."""

    API_URL = "https://api.binance.test/api"
    API_TESTNET_URL = API_URL
    testnet = False

    def __init__(
        self,
        clock: FakeClock,
        *,
        skew_ms: int = 0,
        weight_limit: int = 6_000,
        symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"),
        listed_ms: int | None = None,
        ban: tuple[int, str] | None = None,
    ) -> None:
        model = TradeModel(seed=11)
        server = lambda: clock() + skew_ms  # noqa: E731
        self.rest = RestApi(
            symbols,
            model,
            SimulatedAccount(model, origin_ms=LOCAL_START_MS),
            weight_limit=weight_limit,
            clock=server,
            listed_ms=listed_ms if listed_ms is not None else LOCAL_START_MS - 30 * 86_400_000,
        )
        self.response: FakeResponse | None = None
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._ban = ban  # (status, Retry-After) answered once, first

    def get_server_time(self) -> dict[str, Any]:
        return dict(self._get("time", {}))

    def get_klines(self, **params: Any) -> list[Any]:
        return list(self._get("klines", params))

    def _get(self, endpoint: str, params: dict[str, Any]) -> Any:
        self.calls.append((endpoint, dict(params)))
        if self._ban is not None:
            status, retry_after = self._ban
            self._ban = None
            self.response = FakeResponse(
                status,
                '{"code":-1003,"msg":"Way too many requests; IP banned."}',
                {"Retry-After": retry_after},
            )
            raise BinanceAPIException(self.response, status, self.response.text)
        query = urlencode(params)
        answer = self.rest.handle(f"/api/v3/{endpoint}?{query}", "10.0.0.1")
        text = answer.body.decode()
        self.response = FakeResponse(answer.status, text, dict(answer.headers))
        if answer.status != 200:
            raise BinanceAPIException(self.response, answer.status, text)
        return json.loads(text)

    def candle(self, symbol: str, open_time: int) -> list[Any]:
        """The exchange's kline opening at ``open_time`` (closed), Binance's array."""
        candle = self.rest.model.candle(symbol, open_time, MS_PER_MINUTE, open_time + 10**9)
        assert candle is not None
        return candle.as_binance()


class RecordingSink:
    """A RecordSink keeping what it was given; every record counts as published."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.started = self.closed = False

    @property
    def published(self) -> int:
        return len(self.records)

    async def start(self, stream: str) -> None:
        self.started = True

    async def add(self, record: Any) -> None:
        assert self.started and not self.closed
        self.records.append(dict(record))

    async def close(self) -> int:
        self.closed = True
        return len(self.records)
