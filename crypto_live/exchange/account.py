"""The simulated account's orders, as GET /api/v3/allOrders returns them; pure, deterministic.

Order ``n`` of a symbol (ids from 1) is placed in the n-th slot of ``interval_ms`` after
``origin_ms`` and is fixed by (seed, symbol, n); it exists once the clock passed its time (and,
with ``count``, only the first ``count`` ever exist, a closed history that re-runs see unchanged).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from crypto_live.exchange.price_walk import format_amount, tick_size
from crypto_live.exchange.trades import LOT_STEP, MS_PER_MINUTE, TradeModel, base_price

__all__ = ["MAX_ORDERS_LIMIT", "SimulatedAccount"]

MAX_ORDERS_LIMIT = 1000
_LIMIT_STATUSES = (
    ("FILLED", 50),
    ("CANCELED", 20),
    ("PARTIALLY_FILLED", 10),
    ("NEW", 10),
    ("EXPIRED", 10),
)
_ZERO = format_amount(Decimal(0))


@dataclass(frozen=True)
class SimulatedAccount:
    """Orders of one account on every symbol; ``count`` None means one more every interval."""

    model: TradeModel
    origin_ms: int
    interval_ms: int = 1_000
    count: int | None = None

    def __post_init__(self) -> None:
        if self.interval_ms < 1:
            raise ValueError(f"interval_ms must be >= 1, got {self.interval_ms}")

    def order_time(self, symbol: str, order_id: int) -> int:
        """When order ``order_id`` was placed (inside its slot, never before the previous one)."""
        slot = self.origin_ms + (order_id - 1) * self.interval_ms
        return slot + self._rng(symbol, order_id, "t").randrange(self.interval_ms)

    def last_id(self, symbol: str, now_ms: int) -> int:
        """The newest order id placed by ``now_ms`` (0 when there is none yet)."""
        if now_ms < self.origin_ms:
            return 0
        last = (now_ms - self.origin_ms) // self.interval_ms + 1
        if self.order_time(symbol, last) > now_ms:
            last -= 1
        return last if self.count is None else min(last, self.count)

    def _first_at_or_after(self, symbol: str, time_ms: int) -> int:
        candidate = max(1, (time_ms - self.origin_ms) // self.interval_ms + 1)
        return candidate + 1 if self.order_time(symbol, candidate) < time_ms else candidate

    def all_orders(
        self,
        symbol: str,
        now_ms: int,
        *,
        order_id: int | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        """Binance's selection: ids >= orderId and times within [start, end]; from the lowest
        when orderId or startTime is given, else the ``limit`` most recent; ascending ids."""
        low = max(1, order_id or 1)
        if start_ms is not None:
            low = max(low, self._first_at_or_after(symbol, start_ms))
        high = self.last_id(symbol, now_ms)
        if end_ms is not None:
            high = min(high, self._first_at_or_after(symbol, end_ms + 1) - 1)
        if high < low:
            return []
        if order_id is not None or start_ms is not None:
            ids = range(low, min(high, low + limit - 1) + 1)
        else:
            ids = range(max(low, high - limit + 1), high + 1)
        return [self.order(symbol, number) for number in ids]

    def order(self, symbol: str, order_id: int) -> dict[str, Any]:
        """Order ``order_id`` of ``symbol`` in Binance's allOrders shape."""
        rng = self._rng(symbol, order_id, "o")
        placed = self.order_time(symbol, order_id)
        level = self.model.level(symbol, placed // MS_PER_MINUTE)
        tick = tick_size(base_price(symbol))
        is_limit = rng.random() < 0.7
        side = "BUY" if rng.random() < 0.5 else "SELL"
        orig = (Decimal(rng.randint(1, 5_000)) * 50 / level).quantize(LOT_STEP).max(LOT_STEP)
        if is_limit:
            away = Decimal(rng.randint(0, 50)).scaleb(-4) * (-1 if side == "BUY" else 1)
            price = (level * (1 + away)).quantize(tick)
            status = rng.choices(
                [name for name, _ in _LIMIT_STATUSES], [w for _, w in _LIMIT_STATUSES]
            )[0]
        else:
            price, status = Decimal(0), "FILLED"
        if status == "FILLED":
            executed = orig
        elif status in ("PARTIALLY_FILLED", "CANCELED", "EXPIRED") and rng.random() < 0.5:
            executed = (orig * Decimal(rng.randint(1, 99)) / 100).quantize(LOT_STEP)
        else:
            executed = Decimal(0)
        fill_price = price if is_limit else level
        updated = placed if status == "NEW" else placed + rng.randint(1, 30_000)
        return {
            "symbol": symbol,
            "orderId": order_id,
            "orderListId": -1,
            "clientOrderId": f"sim{symbol.lower()}{order_id:010d}",
            "price": format_amount(price),
            "origQty": format_amount(orig),
            "executedQty": format_amount(executed),
            "cummulativeQuoteQty": format_amount(executed * fill_price),
            "status": status,
            "timeInForce": "GTC",
            "type": "LIMIT" if is_limit else "MARKET",
            "side": side,
            "stopPrice": _ZERO,
            "icebergQty": _ZERO,
            "time": placed,
            "updateTime": updated,
            "isWorking": True,
            "workingTime": placed,
            "origQuoteOrderQty": _ZERO,
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    def _rng(self, symbol: str, order_id: int, purpose: str) -> random.Random:
        return random.Random(f"{self.model.seed}:{symbol}:{order_id}:{purpose}")  # noqa: S311
