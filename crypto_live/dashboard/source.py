"""The dashboard's reads: DynamoDB latest and history tables, lease tables, /metrics scrapes.

Answers for the latest table and the pipeline panel are cached for a short time, so any number
of open pages costs the same few calls per second.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, Final

from botocore.exceptions import ClientError

from core.aws_errors import error_code
from core.settings import Settings
from crypto_live.dashboard.candles import CandleBook
from crypto_live.dashboard.views import (
    KLINE_DECIMALS,
    RateMeter,
    candle_rows,
    group_view,
    history_points,
    kline_candles,
    stream_type,
    ticker_rows,
    totals_by_service,
)
from crypto_live.lake.minute_candles import MinuteCandle
from schemas.record import iso_timestamp

log = logging.getLogger(__name__)

CACHE_SECONDS: Final = 0.5
SCRAPE_TIMEOUT: Final = 1.0
MAX_HISTORY_MINUTES: Final = 24 * 60
MAX_CANDLE_HOURS: Final = 24  # the history table's retention (RETENTION_TTL_DAYS, 1 by default)
# Placeholders of the candles-table attributes a minute needs besides open_time (some, like
# ``trades``, would clash with DynamoDB's reserved words).
_KLINE_NAMES: Final = {f"#{name}": name for name in ("close_time", "trades", *KLINE_DECIMALS)}


class _Cached:
    """One value recomputed at most every ``ttl`` seconds (thread-safe)."""

    def __init__(self, ttl: float, compute: Callable[[], dict[str, Any]]) -> None:
        self._ttl = ttl
        self._compute = compute
        self._lock = threading.Lock()
        self._value: dict[str, Any] | None = None
        self._at = 0.0

    def get(self) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            if self._value is None or now - self._at >= self._ttl:
                self._value = self._compute()
                self._at = now
            return self._value


def _query_all(dynamodb: Any, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = dynamodb.query(**params)
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _scan_all(dynamodb: Any, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = dynamodb.scan(**params)
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


class DashboardSource:
    """Reads for the JSON API; ``dynamodb`` is a boto3 client (thread-safe)."""

    def __init__(
        self,
        settings: Settings,
        dynamodb: Any,
        metrics_urls: Sequence[str] = (),
        cache_seconds: float = CACHE_SECONDS,
    ) -> None:
        self._settings = settings
        self._db = dynamodb
        self._metrics_urls = tuple(metrics_urls)
        self._meter = RateMeter()
        self._latest = _Cached(cache_seconds, self._read_latest)
        self._pipeline = _Cached(cache_seconds, self._read_pipeline)
        self._books: dict[str, CandleBook] = {}
        self._books_lock = threading.Lock()
        self._warned_no_candles_table = False

    def latest(self) -> dict[str, Any]:
        return self._latest.get()

    def pipeline(self) -> dict[str, Any]:
        return self._pipeline.get()

    def history(self, symbol: str, minutes: int, after_ms: int | None = None) -> dict[str, Any]:
        """Last prices of ``symbol`` over ``minutes``, only those after ``after_ms`` if given."""
        now_ms = time.time_ns() // 1_000_000
        since = now_ms - min(max(minutes, 1), MAX_HISTORY_MINUTES) * 60_000
        if after_ms is not None:
            since = max(since, after_ms + 1)
        items = _query_all(
            self._db,
            TableName=self._settings.dynamo_table_name,
            KeyConditionExpression="stream_type = :s AND iso_timestamp >= :since",
            ExpressionAttributeValues={
                ":s": {"S": stream_type(symbol)},
                ":since": {"S": iso_timestamp(since)},
            },
            ProjectionExpression="event_time, close_price",
        )
        return {"now_ms": now_ms, "symbol": symbol, "points": history_points(items)}

    def candles(self, symbol: str, hours: int) -> dict[str, Any]:
        """1-minute candles of ``symbol`` over the last ``hours`` (1 to 24), oldest first: from
        the candles table where a kline closed, else approximated from the history."""
        hours = min(max(hours, 1), MAX_CANDLE_HOURS)
        now_ms = time.time_ns() // 1_000_000
        with self._books_lock:
            book = self._books.setdefault(symbol, CandleBook(symbol))

        def read_since(since_ms: int) -> list[dict[str, Any]]:
            return _query_all(
                self._db,
                TableName=self._settings.dynamo_table_name,
                KeyConditionExpression="stream_type = :s AND iso_timestamp >= :since",
                ExpressionAttributeValues={
                    ":s": {"S": stream_type(symbol)},
                    ":since": {"S": iso_timestamp(since_ms)},
                },
                ProjectionExpression="event_time, close_price, base_volume, quote_volume",
            )

        def read_klines(from_ms: int) -> list[MinuteCandle]:
            return kline_candles(symbol, self._read_klines(symbol, from_ms))

        since = now_ms - hours * 3_600_000
        candles = book.refresh(read_since, read_klines, since, now_ms)
        return {"now_ms": now_ms, "symbol": symbol, "hours": hours, "candles": candle_rows(candles)}

    def _read_klines(self, symbol: str, from_ms: int) -> list[dict[str, Any]]:
        """The candles-table items of ``symbol`` from ``from_ms`` on; none (and a warning) when
        the table does not exist (a stack provisioned before it), so the chart approximates."""
        table = self._settings.dynamo_candles_table_name
        try:
            return _query_all(
                self._db,
                TableName=table,
                KeyConditionExpression="#s = :s AND #t >= :from",
                ExpressionAttributeNames={"#s": "symbol", "#t": "open_time", **_KLINE_NAMES},
                ExpressionAttributeValues={":s": {"S": symbol}, ":from": {"N": str(from_ms)}},
                ProjectionExpression=", ".join(["#t", *_KLINE_NAMES]),
            )
        except ClientError as err:
            if error_code(err) != "ResourceNotFoundException":
                raise
            if not self._warned_no_candles_table:  # once, not at every refresh
                self._warned_no_candles_table = True
                log.warning("no candles table %s: candles approximated from the history", table)
            return []

    def _read_latest(self) -> dict[str, Any]:
        items = _scan_all(self._db, TableName=self._settings.dynamo_latest_table_name)
        return {"now_ms": time.time_ns() // 1_000_000, "tickers": ticker_rows(items)}

    def _read_pipeline(self) -> dict[str, Any]:
        from consumers.app import KINDS, app_name, lease_table_name
        from consumers.operations.lag import group_leases

        totals, errors = self._scrape()
        rates = self._meter.update(time.monotonic(), totals) if totals else {}
        now_ms = time.time_ns() // 1_000_000
        groups = [
            group_view(
                kind,
                app_name(self._settings, kind),
                group_leases(self._db, lease_table_name(self._settings, kind)).values(),
                rates.get(f"consumer-{kind}"),
                now_ms,
            )
            for kind in KINDS
        ]
        return {
            "now_ms": now_ms,
            "groups": groups,
            "producer_records_per_second": rates.get("producer"),
            "metrics": {"urls": list(self._metrics_urls), "errors": errors},
        }

    def _scrape(self) -> tuple[dict[str, float], list[str]]:
        totals: dict[str, float] = {}
        errors: list[str] = []
        for url in self._metrics_urls:
            try:
                with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as response:  # noqa: S310 - operator-given URL
                    text = response.read().decode()
            except (OSError, ValueError) as err:
                errors.append(f"{url}: {err}")
                continue
            for service, total in totals_by_service(text).items():
                totals[service] = totals.get(service, 0.0) + total
        return totals, errors
