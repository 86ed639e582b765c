"""`crypto-live up`: embedded AWS (unless AWS_ENDPOINT_URL), provision, and every service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from core.aws import AwsClients
from core.health import Health, serve_service
from core.heap import freeze_startup_heap
from core.logs import LineFormatter, configure_logging
from core.metrics import Counters, Metrics
from core.settings import Settings
from crypto_live.embedded import EmbeddedAws, require_moto, use_dummy_credentials
from crypto_live.provision import provision

log = logging.getLogger(__name__)

SIM_STREAMS = ("!miniTicker@arr",)
# With the all-market miniTicker, each simulated symbol's 1-minute klines, for this many symbols
# at most: a request line of 8 KiB (websockets' limit) holds about 400 kline stream names.
SIM_KLINE_SYMBOLS = 200
# The simulated exchange ends connections like Binance, only sooner, so a local run rotates
# the producer's websocket every few minutes (no gap, no duplicate) instead of once a day.
SIM_CONNECTION_SECONDS = 300.0
SIM_ROTATE_SECONDS = 240.0
REFRESH_SECONDS = 1.0
LOG_EVERY_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class UpSummary:
    """What every service did, printed on exit."""

    producer: object
    consumers: list[object]
    undelivered: int


def run_up(settings: Settings, *, source: str, display: bool) -> int:
    """Run everything until Ctrl+C; prints a summary and returns the exit code."""
    from crypto_live.cli import run_until_signalled

    if settings.aws_endpoint_url is None:
        require_moto()  # before anything is printed or a log file made
    console = Console(stderr=True, soft_wrap=True)
    log_path = _configure_logging(settings, display, console)
    embedded: EmbeddedAws | None = None
    try:
        if settings.aws_endpoint_url is None:
            use_dummy_credentials()
            embedded = EmbeddedAws(port=settings.embedded_aws_port)
            settings = settings.with_overrides(aws_endpoint_url=embedded.start())
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
        summary: UpSummary = run_until_signalled(
            lambda stop: _run_services(settings, source, display, console, stop)
        )
        console.print(f"[bold]stopped[/]: producer: {summary.producer}")
        for consumer in summary.consumers:
            console.print(f"[bold]stopped[/]: consumer {consumer}")
        return 1 if summary.undelivered else 0
    finally:
        if embedded is not None:
            embedded.stop()
        if log_path is not None:
            console.print(f"logs: {log_path}", highlight=False)


def _configure_logging(settings: Settings, display: bool, console: Console) -> Path | None:
    """With the live table, the services' JSON log lines go to a file (returned) and only
    WARNING and above reach the terminal, as one line each above the table; without it, JSON
    lines on stderr as every service writes them."""
    if not display:
        configure_logging("up", settings.log_level)
        return None
    handle, name = tempfile.mkstemp(prefix="crypto-live-up-", suffix=".log")
    with open(handle, "wb"):  # mkstemp's descriptor; the log handler opens the file by name
        pass
    path = Path(name)
    configure_logging("up", settings.log_level, path=path, also=[ConsoleLineHandler(console)])
    logging.captureWarnings(True)  # Python warnings too, instead of raw lines on stderr
    console.print(f"logs: {path} (warnings and errors also shown here)", highlight=False)
    return path


class ConsoleLineHandler(logging.Handler):
    """WARNING and above as one terminal line each; rich prints them above a live display."""

    def __init__(self, console: Console, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self._console = console
        self.setFormatter(LineFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            style = "red" if record.levelno >= logging.ERROR else "yellow"
            self._console.print(
                Text(self.format(record), style=style),
                no_wrap=True,
                overflow="ellipsis",
                soft_wrap=False,
            )
        except Exception:  # noqa: BLE001 - as logging's own handlers: a log call never raises
            self.handleError(record)


def sim_streams(symbols: Sequence[str]) -> tuple[str, ...]:
    """The streams read from the simulated exchange: SIM_STREAMS and each symbol's kline_1m."""
    klines = (f"{symbol.lower()}@kline_1m" for symbol in symbols[:SIM_KLINE_SYMBOLS])
    return (*SIM_STREAMS, *klines)


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
        max_connection_seconds=min(
            settings.exchange_max_connection_seconds, SIM_CONNECTION_SECONDS
        ),
        close_after_frames=settings.exchange_close_after_frames,
        weight_limit=settings.exchange_weight_limit,
    )
    await exchange.start()
    try:
        streams = settings.binance_streams or sim_streams(exchange.simulator.symbols)
        rotate_hours = min(settings.binance_rotate_hours, SIM_ROTATE_SECONDS / 3600)
        yield settings.with_overrides(
            binance_stream_url=exchange.url,
            binance_api_url=exchange.rest_url,  # the orders tooling's REST side
            binance_streams=streams,
            binance_rotate_hours=rotate_hours,
        )
    finally:
        await exchange.stop()


async def _run_services(
    settings: Settings, source: str, display: bool, console: Console, stop: asyncio.Event
) -> UpSummary:
    from consumers.app import KINDS, run_consumer
    from producer.app import run_producer

    metrics = {"producer": Metrics("producer")}
    metrics.update({kind: Metrics(f"consumer-{kind}") for kind in KINDS})
    health = Health()
    server = contextlib.ExitStack()
    served = server.enter_context(serve_service(settings, "up", list(metrics.values()), health))
    if served is not None:
        console.print(f"metrics: http://127.0.0.1:{served.port}/metrics  health: /healthz")
    async with _market_source(settings, source) as effective:
        if effective.binance_api_url and source == "sim":
            console.print(
                f"orders: BINANCE_API_URL={effective.binance_api_url} crypto-live orders "
                f"snapshot --symbol BTCUSDT --endpoint-url {effective.aws_endpoint_url}",
                highlight=False,
            )
        producer = asyncio.create_task(
            run_producer(effective, stop, metrics["producer"], health, freeze_startup_heap)
        )
        consumers = [
            asyncio.create_task(
                run_consumer(effective, kind, stop, metrics[kind], health, freeze_startup_heap)
            )
            for kind in KINDS
        ]
        services = [producer, *consumers]
        progress = asyncio.create_task(_progress(metrics, display, console, services))
        try:
            await asyncio.wait(services, return_when=asyncio.FIRST_EXCEPTION)
            stop.set()  # one service failing stops the others cleanly
            results = await asyncio.gather(*services)
        finally:
            stop.set()
            progress.cancel()
            await asyncio.gather(progress, return_exceptions=True)
            server.close()
    produced = results[0]
    return UpSummary(produced, list(results[1:]), getattr(produced, "undelivered", 0))


def _table(metrics: dict[str, Metrics], rates: dict[str, float]) -> Table:
    table = Table(title="crypto-live (Ctrl+C to stop)")
    for column in ("service", "in", "out", "/s", "rejected", "retries", "lag ms"):
        table.add_column(column, justify="left" if column == "service" else "right")
    value = metrics["producer"].value
    table.add_row(
        "producer -> Kinesis",
        f"{value(Counters.MESSAGES_RECEIVED):,.0f}",
        f"{value(Counters.RECORDS_PUT):,.0f}",
        f"{rates.get('producer', 0.0):,.0f}",
        f"{value(Counters.RECORDS_REJECTED):,.0f}",
        f"{value(Counters.PUT_RETRIES):,.0f}",
        "",
    )
    written = {"dynamodb": Counters.DYNAMODB_ITEMS_WRITTEN, "s3": Counters.S3_RECORDS_WRITTEN}
    for kind, out in written.items():
        value = metrics[kind].value
        lags = metrics[kind].shard_lags()
        table.add_row(
            f"-> {kind}",
            f"{value(Counters.RECORDS_CONSUMED):,.0f}",
            f"{value(out):,.0f}",
            f"{rates.get(kind, 0.0):,.0f}",
            f"{value(Counters.DEAD_LETTERS):,.0f}",
            f"{value(Counters.GET_RECORDS_RETRIES):,.0f}",
            f"{max(lags.values()):,.0f}" if lags else "-",
        )
    return table


def _counts(metrics: dict[str, Metrics]) -> dict[str, float]:
    counts = {"producer": metrics["producer"].value(Counters.RECORDS_PUT)}
    counts.update(
        {k: m.value(Counters.RECORDS_CONSUMED) for k, m in metrics.items() if k != "producer"}
    )
    return counts


async def _progress(
    metrics: dict[str, Metrics],
    display: bool,
    console: Console,
    services: list[asyncio.Task[object]],
) -> None:
    last, last_time, last_log = _counts(metrics), time.monotonic(), 0.0
    rates: dict[str, float] = {}
    live = Live(_table(metrics, rates), console=console, refresh_per_second=4) if display else None
    with live or contextlib.nullcontext():
        while not any(service.done() for service in services):
            await asyncio.sleep(REFRESH_SECONDS)
            now, counts = time.monotonic(), _counts(metrics)
            rates = {k: (counts[k] - last[k]) / max(now - last_time, 1e-9) for k in counts}
            last, last_time = counts, now
            if live is not None:
                live.update(_table(metrics, rates))
            elif now - last_log >= LOG_EVERY_SECONDS:
                last_log = now
                log.info(
                    "progress: %s",
                    ", ".join(
                        f"{k} {v:,.0f} records ({rates[k]:,.0f}/s)" for k, v in counts.items()
                    ),
                )
