"""`/metrics` (Prometheus) and `/healthz` for every service, on METRICS_PORT.

Each service has its own default port, so the producer and both consumers started side by side
on one host (each in a terminal, or compose with host networking) do not collide; a port that
is taken anyway (two copies of one consumer) falls back to a free one, logged as a warning.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from core.errors import ConfigError
from core.metrics import Metrics

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

# METRICS_PORT when unset, per service (the CLI's service names); `up` serves all on one port.
DEFAULT_PORTS: Final = {
    "producer": 9000,
    "consumer-dynamodb": 9001,
    "consumer-s3": 9002,
    "up": 9000,
}


def metrics_port(configured: int | None, service: str) -> int | None:
    """The port ``service`` serves on: METRICS_PORT when set (0: a free one, -1: none), else
    the service's default; None means no endpoint."""
    if configured is None:
        return DEFAULT_PORTS.get(service)
    return None if configured < 0 else configured


class Health:
    """Components report liveness with ``beat``; healthy while every one beat recently."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._components: dict[str, tuple[float, float]] = {}  # name -> (last beat, max age)

    def register(self, component: str, max_age_seconds: float) -> None:
        with self._lock:
            self._components[component] = (time.monotonic(), max_age_seconds)

    def beat(self, component: str) -> None:
        with self._lock:
            _, max_age = self._components.get(component, (0.0, 60.0))
            self._components[component] = (time.monotonic(), max_age)

    def report(self) -> tuple[bool, dict[str, float]]:
        """(healthy, seconds since each component's last beat)."""
        now = time.monotonic()
        with self._lock:
            ages = {name: now - beat for name, (beat, _) in self._components.items()}
            healthy = all(ages[name] <= age for name, (_, age) in self._components.items())
        return healthy, ages


class _WithServiceLabel(Collector):
    """Every service's registry in one exposition, told apart by a ``service`` label."""

    def __init__(self, metrics: Sequence[Metrics]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for service in self._metrics:
            for family in service.registry.collect():
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    merged.add_sample(
                        sample.name, {**sample.labels, "service": service.service}, sample.value
                    )
        return families.values()


class MetricsServer:
    """A small threaded HTTP server; ``port`` 0 picks a free one, and so does a taken port.

    ``port_file``, when given, holds the port actually served while the server runs, for a
    health check that must find this process's server whatever port it fell back to.
    """

    def __init__(
        self,
        metrics: Sequence[Metrics],
        health: Health,
        port: int,
        host: str,
        port_file: str | None = None,
    ) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_WithServiceLabel(metrics))
        self._server = _bind(host, port, _handler(registry, health))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._port_file = Path(port_file) if port_file else None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics and health on port %d (/metrics, /healthz)", self.port)
        if self._port_file is not None:
            _write_port_file(self._port_file, self.port)
        return self

    def stop(self) -> None:
        if self._port_file is not None:
            with contextlib.suppress(OSError):
                self._port_file.unlink()
        self._server.shutdown()
        self._server.server_close()


def _bind(host: str, port: int, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """Listen on ``port``, or on a free one when another process has it (logged)."""
    try:
        return ThreadingHTTPServer((host, port), handler)
    except OSError as err:
        if err.errno != errno.EADDRINUSE or port == 0:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port} (METRICS_PORT, METRICS_HOST): "
                f"{err.strerror or err}"
            ) from err
    server = ThreadingHTTPServer((host, 0), handler)
    log.warning(
        "metrics port %d is in use (another service on this host?); serving on port %d instead",
        port,
        server.server_address[1],
    )
    return server


def _write_port_file(path: Path, port: int) -> None:
    # Written whole, then renamed, so a health check never reads half a number.
    try:
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(f"{port}\n")
        partial.replace(path)
    except OSError as err:
        log.warning("could not write the metrics port to %s: %s", path, err)


def _handler(registry: CollectorRegistry, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return None  # scrapes every few seconds would drown the service log

        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
            elif self.path.split("?")[0] == "/healthz":
                healthy, ages = health.report()
                body = {"status": "ok" if healthy else "unhealthy", "seconds_since_beat": ages}
                self._send(200 if healthy else 503, "application/json", json.dumps(body).encode())
            else:
                self._send(404, "text/plain", b"not found\n")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@contextlib.contextmanager
def serve(
    metrics: Sequence[Metrics],
    health: Health,
    port: int | None,
    host: str = "0.0.0.0",  # noqa: S104
    port_file: str | None = None,
) -> Iterator[MetricsServer | None]:
    """Context-manager body: serve while the service runs (port None: not at all)."""
    if port is None:
        yield None
        return
    server = MetricsServer(metrics, health, port, host, port_file).start()
    try:
        yield server
    finally:
        server.stop()


def serve_service(
    settings: Settings, service: str, metrics: Sequence[Metrics], health: Health
) -> contextlib.AbstractContextManager[MetricsServer | None]:
    """``serve`` on the port METRICS_PORT or ``service``'s default names (DEFAULT_PORTS)."""
    port = metrics_port(settings.metrics_port, service)
    return serve(metrics, health, port, settings.metrics_host, settings.metrics_port_file)
