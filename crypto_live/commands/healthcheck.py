"""`crypto-live healthcheck`: exit 0 when this host's service answers /healthz with 200.

For container health checks: the port is the one the service wrote to METRICS_PORT_FILE (so a
service that fell back to a free port is still found), else METRICS_PORT, else the default port
of ``--service``.
"""

from __future__ import annotations

import argparse
import urllib.error
import urllib.request
from pathlib import Path

from core.settings import Settings

NAME = "healthcheck"
HELP = "exit 0 when the local service's /healthz answers 200 (container health checks)"
TIMEOUT_SECONDS = 4.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from core.health import DEFAULT_PORTS

    parser.add_argument(
        "--service",
        choices=sorted(DEFAULT_PORTS),
        default="producer",
        help="whose default port to try when neither METRICS_PORT_FILE nor METRICS_PORT is set",
    )


def port_to_check(settings: Settings, service: str) -> int | None:
    """The served port from METRICS_PORT_FILE, else METRICS_PORT, else ``service``'s default."""
    from core.health import metrics_port

    if settings.metrics_port_file:
        try:
            return int(Path(settings.metrics_port_file).read_text().strip())
        except (OSError, ValueError):
            pass  # not serving yet (or the file is unreadable): the configured port
    return metrics_port(settings.metrics_port, service)


def run(settings: Settings, args: argparse.Namespace) -> int:
    port = port_to_check(settings, args.service)
    if port is None or port == 0:
        print("healthcheck: no metrics port to check (METRICS_PORT=-1 or 0 without a port file)")
        return 1
    wildcard = settings.metrics_host in ("0.0.0.0", "::")  # noqa: S104 - only compared
    host = "127.0.0.1" if wildcard else settings.metrics_host
    url = f"http://{host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            status = int(response.status)
    except urllib.error.HTTPError as err:
        status = err.code
    except (OSError, ValueError) as err:
        print(f"healthcheck: {url} unreachable: {err}")
        return 1
    print(f"healthcheck: {url} {status}")
    return 0 if status == 200 else 1
