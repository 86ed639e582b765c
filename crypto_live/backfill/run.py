"""One backfill run: plan pages, fetch them (paced, retried), publish every closed candle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import SecretStr

from core.aws import AwsClients
from core.metrics import Metrics
from core.settings import Settings
from core.threads import DaemonThreadPool
from crypto_live.backfill import BackfillError
from crypto_live.backfill.fetch import DEFAULT_MAX_WAIT_SECONDS, KlineFetcher
from crypto_live.backfill.gaps import as_ranges
from crypto_live.backfill.minutes import MinuteRange, closed_part
from crypto_live.backfill.pacing import DEFAULT_MAX_WEIGHT, WeightPacer
from crypto_live.backfill.pages import Page, plan_pages
from crypto_live.backfill.publish import KlinePublisher
from crypto_live.backfill.rows import kline_record
from crypto_live.orders.binance_api import ApiCredentials, binance_client
from producer.kinesis import KinesisStreamWriter
from schemas.kline import Kline

log = logging.getLogger(__name__)

REST_CALLS = "backfill-rest"  # the one thread python-binance's Client is called on


@dataclass(frozen=True, slots=True)
class BackfillJob:
    """The minutes of one symbol to fetch and publish."""

    symbol: str
    ranges: tuple[MinuteRange, ...]


@dataclass
class BackfillSummary:
    fetched: int = 0  # wanted candles Binance sent
    published: int = 0  # of those, confirmed by Kinesis
    pages: int = 0
    requests: int = 0
    retries: int = 0
    pauses: int = 0  # waits for the next minute's weight
    wanted: int = 0  # closed minutes asked for
    # Per symbol: the minutes published, and the wanted closed minutes Binance sent no kline
    # for (before the symbol's listing, or no data: an outage).
    served: dict[str, list[MinuteRange]] = field(default_factory=dict)
    not_served: dict[str, list[MinuteRange]] = field(default_factory=dict)

    def line(self) -> str:
        missing = sum(r.minutes for ranges in self.not_served.values() for r in ranges)
        parts = [
            _count(self.fetched, "candle", "candles") + " fetched",
            f"{self.published:,} published",
            _count(self.pages, "page", "pages"),
            _count(self.retries, "retry", "retries"),
        ]
        if self.pauses:
            parts.append(_count(self.pauses, "weight pause", "weight pauses"))
        text = ", ".join(parts)
        if missing:
            text += f"; Binance had no kline for {_count(missing, 'minute', 'minutes')}"
        return text


def _count(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


class Progress(Protocol):
    """Where a run reports: the minutes it will fetch, then candles as they are published."""

    def total(self, minutes: int) -> None: ...

    def published(self, count: int) -> None: ...


class PageSource(Protocol):
    """Binance's klines, a page at a time (KlineFetcher), with its counters."""

    pages: int
    pauses: int

    @property
    def requests(self) -> int: ...

    @property
    def retries(self) -> int: ...

    def server_time_ms(self) -> int: ...

    def fetch(self, symbol: str, page: Page) -> list[Any]: ...


class RecordSink(Protocol):
    """Where candles go (KlinePublisher: Kinesis)."""

    @property
    def published(self) -> int: ...

    async def start(self, stream: str) -> None: ...

    async def add(self, record: Mapping[str, Any]) -> None: ...

    async def close(self) -> int: ...


class _NoProgress:
    def total(self, minutes: int) -> None:
        return None

    def published(self, count: int) -> None:
        return None


def closed_only(ranges: Sequence[MinuteRange], now_ms: int) -> list[MinuteRange]:
    """``ranges`` cut to the minutes closed at ``now_ms`` (Binance's clock)."""
    return [part for r in ranges if (part := closed_part(r, now_ms)) is not None]


def kept_rows(
    symbol: str, page: Page, rows: Sequence[Sequence[Any]], now_ms: int, received_at_us: int
) -> list[Kline]:
    """The records of a page's rows that are wanted and closed, once per open time."""
    records: dict[int, Kline] = {}
    for row in rows:
        record = kline_record(symbol, row, received_at_us)
        open_time = record["open_time"]
        if page.wants(open_time) and record["close_time"] < now_ms:
            records.setdefault(open_time, record)
    return [records[t] for t in sorted(records)]


async def backfill(
    jobs: Sequence[BackfillJob],
    fetcher: PageSource,
    publisher: RecordSink,
    stream: str,
    progress: Progress | None = None,
    clock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
) -> BackfillSummary:
    """Fetch every closed wanted minute of ``jobs`` and publish it; the summary. Candles
    fetched before a failure are still published (and the failure raised)."""
    progress = progress or _NoProgress()
    pool = DaemonThreadPool(1, REST_CALLS)
    summary = BackfillSummary()
    try:
        now = await pool.run(fetcher.server_time_ms)
        plans = [(job.symbol, plan_pages(closed_only(job.ranges, now))) for job in jobs]
        summary.wanted = sum(page.wanted_minutes for _, pages in plans for page in pages)
        progress.total(summary.wanted)
        await publisher.start(stream)
        try:
            for symbol, pages in plans:
                await _backfill_symbol(
                    symbol, pages, fetcher, publisher, pool, summary, now, progress, clock_us
                )
        except BaseException:
            # What was fetched still goes in; the first failure is the one reported.
            with contextlib.suppress(BackfillError):
                await publisher.close()
            raise
        summary.published = await publisher.close()
        progress.published(summary.published)
    finally:
        summary.pages, summary.requests = fetcher.pages, fetcher.requests
        summary.retries, summary.pauses = fetcher.retries, fetcher.pauses
        pool.shutdown(wait=False, cancel_futures=True)
    return summary


async def _backfill_symbol(
    symbol: str,
    pages: Sequence[Page],
    fetcher: PageSource,
    publisher: RecordSink,
    pool: DaemonThreadPool,
    summary: BackfillSummary,
    now: int,
    progress: Progress,
    clock_us: Callable[[], int],
) -> None:
    served: list[int] = []
    for page in pages:
        rows = await pool.run(fetcher.fetch, symbol, page)
        records = kept_rows(symbol, page, rows, now, clock_us())
        summary.fetched += len(records)
        for record in records:
            await publisher.add(record)
            served.append(record["open_time"])
            progress.published(publisher.published)
    if served:
        summary.served[symbol] = as_ranges(served)
    unserved = _unserved(pages, served)
    if unserved:
        summary.not_served[symbol] = unserved
        log.warning(
            "Binance sent no kline of %s for %d minutes", symbol, sum(r.minutes for r in unserved)
        )


def _unserved(pages: Sequence[Page], served: Sequence[int]) -> list[MinuteRange]:
    have = set(served)
    return as_ranges(
        t for page in pages for r in page.wanted for t in r.open_times() if t not in have
    )


@contextlib.contextmanager
def public_client(settings: Settings) -> Iterator[Any]:
    """python-binance's Client for public market data (no API key), as `orders snapshot`
    makes it: TESTNET and BINANCE_API_URL apply."""
    with binance_client(settings, ApiCredentials(SecretStr(""), SecretStr(""))) as client:
        yield client


def run_backfill(
    settings: Settings,
    clients: AwsClients,
    jobs: Sequence[BackfillJob],
    *,
    max_weight: int = DEFAULT_MAX_WEIGHT,
    max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
    progress: Progress | None = None,
    client_factory: Callable[[Settings], contextlib.AbstractContextManager[Any]] = public_client,
    sleep: Callable[[float], None] = time.sleep,
    clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
) -> BackfillSummary:
    """Backfill ``jobs`` from Binance's REST klines into KINESIS_STREAM_NAME."""
    stream = settings.kinesis_stream_name
    with client_factory(settings) as client:
        fetcher = KlineFetcher(
            client,
            WeightPacer(max_weight),
            sleep=sleep,
            clock_ms=clock_ms,
            max_wait_seconds=max_wait_seconds,
        )
        publisher = KlinePublisher(
            KinesisStreamWriter(clients.kinesis, stream), settings, Metrics("backfill")
        )
        return asyncio.run(backfill(jobs, fetcher, publisher, stream, progress))
