"""`crypto-live up`: embedded AWS (unless AWS_ENDPOINT_URL), provision, and every service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from rich.console import Console
from rich.live import Live
from rich.table import Table

from crypto_live.aws import AwsClients
from crypto_live.embedded import EmbeddedAws, use_dummy_credentials
from crypto_live.logs import configure_logging
from crypto_live.metrics import Counters, Gauges, Metrics
from crypto_live.provision import provision
from crypto_live.settings import Settings

log = logging.getLogger(__name__)

SIM_STREAMS = ("!miniTicker@arr",)
REFRESH_SECONDS = 1.0


def run_up(settings: Settings, *, source: str, display: bool) -> int:
    """Run everything until Ctrl+C; prints a summary and returns the exit code."""
    from crypto_live.cli import run_until_signalled

    console = Console(stderr=True)
    configure_logging("up", settings.log_level)
    embedded: EmbeddedAws | None = None
    if settings.aws_endpoint_url is None:
        use_dummy_credentials()
        embedded = EmbeddedAws(port=settings.embedded_aws_port)
        settings = settings.with_overrides(aws_endpoint_url=embedded.start())
    try:
        endpoint = settings.aws_endpoint_url or "AWS"
        console.print(f"[bold]AWS endpoint[/]: {endpoint}")
        if embedded is not None:
            console.print(
                f"  look with: aws --endpoint-url {endpoint} --region {settings.aws_region} "
                f"kinesis describe-stream-summary --stream-name {settings.kinesis_stream_name}"
            )
        clients = AwsClients(settings)
        try:
            report = provision(settings, clients)
        finally:
            clients.close()
        console.print(f"provisioned: {len(report.created)} created, {len(report.existing)} existed")
        summary = run_until_signalled(
            lambda stop: _run_services(settings, source, display, console, stop)
        )
        console.print(f"[bold]stopped[/]: producer: {summary}")
        return 1 if summary.undelivered else 0
    finally:
        if embedded is not None:
            embedded.stop()


@contextlib.asynccontextmanager
async def _market_source(settings: Settings, source: str) -> AsyncIterator[Settings]:
    """For ``sim``, the simulated exchange runs in-process; settings point the producer at it."""
    if source != "sim":
        yield settings
        return
    from crypto_live.exchange.server import SimulatedExchange

    exchange = SimulatedExchange(
        host=settings.exchange_host,
        port=0,
        symbols=settings.exchange_symbols,
        rate_hz=settings.exchange_rate_hz,
    )
    await exchange.start()
    try:
        streams = settings.binance_streams or SIM_STREAMS
        yield settings.with_overrides(binance_stream_url=exchange.url, binance_streams=streams)
    finally:
        await exchange.stop()


async def _run_services(
    settings: Settings, source: str, display: bool, console: Console, stop: asyncio.Event
) -> object:
    from producer.app import run_producer

    metrics = Metrics("producer")
    async with _market_source(settings, source) as effective:
        producer = asyncio.create_task(run_producer(effective, stop, metrics))
        progress = asyncio.create_task(_progress(metrics, display, console, producer))
        try:
            return await producer
        finally:
            progress.cancel()
            await asyncio.gather(progress, return_exceptions=True)


def _table(metrics: Metrics, rates: dict[str, float]) -> Table:
    table = Table(title="crypto-live (Ctrl+C to stop)")
    for column in ("service", "in", "out", "rate/s", "rejected", "buffered", "retries"):
        table.add_column(column, justify="right" if column != "service" else "left")
    value = metrics.value
    table.add_row(
        "producer",
        f"{value(Counters.MESSAGES_RECEIVED):,.0f} msgs",
        f"{value(Counters.RECORDS_PUT):,.0f} recs -> Kinesis",
        f"{rates.get('put', 0.0):,.0f}",
        f"{value(Counters.RECORDS_REJECTED):,.0f}",
        f"{value(Gauges.BUFFERED_RECORDS):,.0f}",
        f"{value(Counters.PUT_RETRIES):,.0f}",
    )
    return table


async def _progress(
    metrics: Metrics, display: bool, console: Console, producer: asyncio.Task[object]
) -> None:
    last_put, last_time = 0.0, time.monotonic()
    rates: dict[str, float] = {}
    live = Live(_table(metrics, rates), console=console, refresh_per_second=4) if display else None
    with live or contextlib.nullcontext():
        while not producer.done():
            await asyncio.sleep(REFRESH_SECONDS)
            now, put = time.monotonic(), metrics.value(Counters.RECORDS_PUT)
            rates["put"] = (put - last_put) / max(now - last_time, 1e-9)
            last_put, last_time = put, now
            if live is not None:
                live.update(_table(metrics, rates))
            else:
                log.info("progress: %s", metrics.snapshot())
