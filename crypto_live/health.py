"""`/metrics` (Prometheus) and `/healthz` for every service, on METRICS_PORT."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from crypto_live.metrics import Metrics

log = logging.getLogger(__name__)


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
    """A small threaded HTTP server; ``port`` 0 picks a free one, None disables it."""

    def __init__(self, metrics: Sequence[Metrics], health: Health, port: int, host: str) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_WithServiceLabel(metrics))
        self._server = ThreadingHTTPServer((host, port), _handler(registry, health))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics and health on port %d (/metrics, /healthz)", self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


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
) -> Iterator[MetricsServer | None]:
    """Context-manager body: serve while the service runs (port None: not at all)."""
    if port is None:
        yield None
        return
    server = MetricsServer(metrics, health, port, host).start()
    try:
        yield server
    finally:
        server.stop()
