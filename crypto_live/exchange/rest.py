"""The simulated exchange's REST API (Binance spot /api/v3), pure: a request target in, a
status, headers and JSON body out. The websocket server answers plain HTTP requests with it."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from crypto_live.exchange.account import MAX_ORDERS_LIMIT, SimulatedAccount
from crypto_live.exchange.limits import RestRejection, WeightLimiter, check_signed
from crypto_live.exchange.price_walk import format_amount, tick_size
from crypto_live.exchange.trades import INTERVALS_MS, LOT_STEP, TradeModel, base_price

__all__ = ["API_PREFIX", "SIM_API_KEY", "SIM_API_SECRET", "RestApi", "RestResponse"]

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"
# The simulated account's credentials; `provision` stores them as the placeholder API secret.
SIM_API_KEY = "crypto-live-sim-key"
SIM_API_SECRET = "crypto-live-sim-secret"  # noqa: S105 - a public placeholder, not a secret
# 2024-01-01T00:00:00Z: every simulated symbol has traded since then.
DEFAULT_LISTED_MS = 1_704_067_200_000
MAX_KLINES_LIMIT = 1000
MAX_ORDERS_SPAN_MS = 24 * 3_600_000
_WEIGHTS = {"ping": 1, "time": 1, "exchangeInfo": 20, "klines": 2, "allOrders": 20}


@dataclass(frozen=True, slots=True)
class RestResponse:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...]


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class RestApi:
    """GET ping, time, exchangeInfo, klines and the signed allOrders, with request weights."""

    def __init__(
        self,
        symbols: Sequence[str],
        model: TradeModel,
        account: SimulatedAccount,
        *,
        credentials: Mapping[str, str] | None = None,
        weight_limit: int = 6_000,
        listed_ms: int = DEFAULT_LISTED_MS,
        clock: Callable[[], int] = _wall_ms,
        weight_clock: Callable[[], int] | None = None,
    ) -> None:
        """``clock``: the server's time (timestamps, what exists yet); ``weight_clock``: the
        minutes weights are counted in (default the same; tests freeze it)."""
        self.symbols = tuple(symbols)
        self._known = set(self.symbols)
        self.model = model
        self.account = account
        self.credentials = dict(credentials or {SIM_API_KEY: SIM_API_SECRET})
        self.limiter = WeightLimiter(weight_limit)
        self.listed_ms = listed_ms
        self.clock = clock
        self.weight_clock = weight_clock or clock

    def handle(self, target: str, client: str, api_key: str | None = None) -> RestResponse:
        """Answer ``GET target`` (path and query) from ``client`` (its IP)."""
        now, minute_now = self.clock(), self.weight_clock()
        parts = urlsplit(target)
        endpoint = parts.path.removeprefix(API_PREFIX + "v3/")
        weight = _WEIGHTS.get(endpoint)
        if weight is None or endpoint == parts.path:
            return _json(404, {"code": -1, "msg": f"Unknown path {parts.path}"}, ())
        try:
            used = self.limiter.charge(client, weight, minute_now)
        except RestRejection as err:
            retry = str(self.limiter.retry_after_seconds(minute_now))
            used_now = str(self.limiter.used(client, minute_now))
            logger.info("429 for %s: weight limit %d reached", client, self.limiter.limit)
            return _json(
                err.status,
                _error(err),
                (("Retry-After", retry), ("X-MBX-USED-WEIGHT-1M", used_now)),
            )
        weights = (("X-MBX-USED-WEIGHT", str(used)), ("X-MBX-USED-WEIGHT-1M", str(used)))
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        try:
            if endpoint == "allOrders":
                check_signed(parts.query, params, api_key, self.credentials, now)
            body = getattr(self, f"_{endpoint.lower()}")(params, now)
        except RestRejection as err:
            return _json(err.status, _error(err), weights)
        return _json(200, body, weights)

    def _ping(self, params: Mapping[str, str], now: int) -> Any:
        return {}

    def _time(self, params: Mapping[str, str], now: int) -> Any:
        return {"serverTime": now}

    def _exchangeinfo(self, params: Mapping[str, str], now: int) -> Any:
        wanted: Sequence[str] = self.symbols
        if "symbol" in params:
            wanted = [self._symbol(params)]
        elif "symbols" in params:
            try:
                wanted = [str(name) for name in json.loads(params["symbols"])]
            except (ValueError, TypeError) as err:
                raise RestRejection(400, -1100, "Illegal characters found in 'symbols'.") from err
            if unknown := [name for name in wanted if name not in self._known]:
                raise RestRejection(400, -1121, f"Invalid symbol: {unknown[0]}.")
        return {
            "timezone": "UTC",
            "serverTime": now,
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": self.limiter.limit,
                }
            ],
            "exchangeFilters": [],
            "symbols": [_symbol_info(name) for name in wanted],
        }

    def _klines(self, params: Mapping[str, str], now: int) -> Any:
        symbol = self._symbol(params)
        interval = _required(params, "interval")
        if interval not in INTERVALS_MS:
            raise RestRejection(400, -1120, "Invalid interval.")
        candles = self.model.klines(
            symbol,
            INTERVALS_MS[interval],
            now_ms=now,
            listed_ms=self.listed_ms,
            start_ms=_int(params, "startTime"),
            end_ms=_int(params, "endTime"),
            limit=_limit(params, MAX_KLINES_LIMIT),
        )
        return [candle.as_binance() for candle in candles]

    def _allorders(self, params: Mapping[str, str], now: int) -> Any:
        symbol = self._symbol(params)
        start, end = _int(params, "startTime"), _int(params, "endTime")
        if start is not None and end is not None and end - start > MAX_ORDERS_SPAN_MS:
            raise RestRejection(400, -1127, "More than 24 hours between startTime and endTime.")
        return self.account.all_orders(
            symbol,
            now,
            order_id=_int(params, "orderId"),
            start_ms=start,
            end_ms=end,
            limit=_limit(params, MAX_ORDERS_LIMIT),
        )

    def _symbol(self, params: Mapping[str, str]) -> str:
        symbol = _required(params, "symbol").upper()
        if symbol not in self._known:
            raise RestRejection(400, -1121, "Invalid symbol.")
        return symbol


def _symbol_info(symbol: str) -> dict[str, Any]:
    price = base_price(symbol)
    tick = tick_size(price)
    return {
        "symbol": symbol,
        "status": "TRADING",
        "baseAsset": symbol.removesuffix("USDT"),
        "baseAssetPrecision": 8,
        "quoteAsset": "USDT",
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": format_amount(tick),
                "maxPrice": format_amount(price * 1000),
                "tickSize": format_amount(tick),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": format_amount(LOT_STEP),
                "maxQty": format_amount(Decimal(9_000_000)),
                "stepSize": format_amount(LOT_STEP),
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": format_amount(Decimal(5)),
                "applyMinToMarket": True,
                "maxNotional": format_amount(Decimal(9_000_000)),
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise RestRejection(
            400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
        )
    return value


def _int(params: Mapping[str, str], name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if not value.isdigit() or len(value) > 20:
        raise RestRejection(
            400,
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        )
    return int(value)


def _limit(params: Mapping[str, str], maximum: int) -> int:
    # Like Binance: default 500, anything above the maximum is served as the maximum.
    limit = _int(params, "limit")
    return 500 if limit is None else max(1, min(limit, maximum))


def _error(err: RestRejection) -> dict[str, Any]:
    return {"code": err.code, "msg": err.message}


def _json(status: int, body: Any, headers: tuple[tuple[str, str], ...]) -> RestResponse:
    payload = json.dumps(body, separators=(",", ":")).encode()
    return RestResponse(
        status, payload, (("Content-Type", "application/json;charset=UTF-8"), *headers)
    )
