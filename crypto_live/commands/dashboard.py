"""`crypto-live dashboard`: the live web page (latest tickers, price chart, pipeline panel)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any
from urllib.parse import urlsplit

from core.settings import Settings

NAME = "dashboard"
HELP = "serve the live dashboard (latest tickers, last-hour chart, shard lag) on --port"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8050
DEFAULT_METRICS_URL = "http://127.0.0.1:9000/metrics"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        dest="dashboard_host",
        help="address to listen on (DASHBOARD_HOST, default "
        f"{DEFAULT_HOST}; 0.0.0.0 in a container)",
    )
    parser.add_argument(
        "--port",
        dest="dashboard_port",
        type=int,
        help=f"port (DASHBOARD_PORT, default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--metrics-url",
        action="append",
        dest="dashboard_metrics_urls",
        metavar="URL",
        help="a service's Prometheus /metrics for records/s, repeatable (DASHBOARD_METRICS_URLS, "
        f"comma list; default {DEFAULT_METRICS_URL}, where `crypto-live up` serves them all)",
    )


def _option(args: argparse.Namespace, settings: Settings, name: str, default: Any) -> Any:
    """The CLI flag, else the setting of that name once Settings has it, else the default."""
    for value in (getattr(args, name, None), getattr(settings, name, None)):
        if value is not None:
            return value
    return default


def _is_loopback(url: str | None) -> bool:
    host = urlsplit(url).hostname if url else None
    return host in ("127.0.0.1", "localhost", "::1")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from core.aws import AwsClients
    from crypto_live.dashboard.server import DashboardServer
    from crypto_live.dashboard.source import DashboardSource
    from crypto_live.embedded import use_dummy_credentials

    if _is_loopback(settings.endpoint_url_for("dynamodb")):
        use_dummy_credentials()  # the embedded endpoint of `make up` takes any credentials
    host = str(_option(args, settings, "dashboard_host", DEFAULT_HOST))
    port = int(_option(args, settings, "dashboard_port", DEFAULT_PORT))
    urls = list(_option(args, settings, "dashboard_metrics_urls", [DEFAULT_METRICS_URL]))
    clients = AwsClients(settings)
    source = DashboardSource(settings, clients.dynamodb, urls)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with DashboardServer(source, host, port) as server:
            log.info("dashboard on %s (AWS endpoint %s)", server.url, settings.aws_endpoint_url)
            print(f"dashboard: {server.url}  (Ctrl+C to stop)", flush=True)
            stop.wait()
    finally:
        clients.close()
    return 0
