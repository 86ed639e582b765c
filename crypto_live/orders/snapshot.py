"""One orders snapshot: fetch (latest N, or a period), map, write the lake and the table."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.aws import AwsClients
from core.settings import Settings
from crypto_live.lake.store import S3LakeStore
from crypto_live.orders import OrdersError
from crypto_live.orders.binance_api import (
    GetAllOrders,
    RetryingCalls,
    binance_client,
    latest_orders,
    orders_between,
    rest_url,
)
from crypto_live.orders.stores import read_credentials, write_lake, write_orders_table
from crypto_live.orders.table import order_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """``limit`` most recent orders, or those of the last ``minutes``; exactly one is set."""

    symbol: str
    limit: int | None = None
    minutes: int | None = None


@dataclass(frozen=True, slots=True)
class SnapshotSummary:
    symbol: str
    orders: int
    first_id: int | None
    last_id: int | None
    csv_key: str | None
    parquet_key: str | None
    objects_written: int
    items_written: int
    requests: int
    retries: int


def fetch(call: GetAllOrders, request: SnapshotRequest, now_ms: int) -> list[dict[str, object]]:
    if request.minutes is not None:
        start = now_ms - request.minutes * 60_000
        return orders_between(call, request.symbol, start, now_ms)
    return latest_orders(call, request.symbol, request.limit or 1000)


def take_snapshot(
    settings: Settings,
    clients: AwsClients,
    request: SnapshotRequest,
    *,
    client_factory: Callable[..., contextlib.AbstractContextManager[Any]] = binance_client,
    sleep: Callable[[float], None] = time.sleep,
    now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
) -> SnapshotSummary:
    """Read the API secret, fetch through python-binance, write the lake and the orders table."""
    credentials = read_credentials(clients.secretsmanager, settings.binance_api_secret)
    with client_factory(settings, credentials) as client:
        call = RetryingCalls(client.get_all_orders, rest_url(client), sleep=sleep)
        rows = order_rows(fetch(call, request, now_ms()))
    if any(row.symbol != request.symbol for row in rows):
        raise OrdersError(f"Binance sent orders of another symbol than {request.symbol}")
    outcome = None
    items = 0
    if rows:
        store = S3LakeStore(clients.s3, settings.s3_bucket, settings.s3_sse, settings.s3_kms_key_id)
        outcome = write_lake(store, rows)
        items = write_orders_table(
            clients.dynamodb,
            settings.dynamo_orders_table_name,
            rows,
            settings.dynamodb_max_in_flight,
        )
    log.info("orders snapshot of %s: %d orders, %d items changed", request.symbol, len(rows), items)
    return SnapshotSummary(
        symbol=request.symbol,
        orders=len(rows),
        first_id=rows[0].order_id if rows else None,
        last_id=rows[-1].order_id if rows else None,
        csv_key=outcome.csv_key if outcome else None,
        parquet_key=outcome.parquet_key if outcome else None,
        objects_written=outcome.written if outcome else 0,
        items_written=items,
        requests=call.calls,
        retries=call.retries,
    )
