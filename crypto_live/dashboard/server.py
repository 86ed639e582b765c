"""The dashboard's HTTP server: the page, its script and style, and a small JSON API.

``GET /api/latest`` latest ticker per symbol, ``GET /api/history?symbol=BTCUSDT&minutes=60
[&after=<epoch ms>]`` last prices of one symbol, ``GET /api/candles?symbol=BTCUSDT&hours=3``
its 1-minute candles, ``GET /api/pipeline`` shard lag and records/s per consumer group,
``GET /healthz``. The page polls them every second and draws with plotly.js, served from the
pinned ``plotly`` wheel (``/vendor/plotly.min.js``): no external resources.
"""

from __future__ import annotations

import functools
import gzip
import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from crypto_live.dashboard.source import DashboardSource
from crypto_live.dashboard.views import SYMBOL_PATTERN

log = logging.getLogger(__name__)

STATIC_FILES: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
PLOTLY_PATH: Final = "/vendor/plotly.min.js"
_SECURITY_HEADERS: Final = {
    # plotly.js sets inline styles on the elements it draws; scripts stay 'self' only.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _static(name: str) -> bytes:
    return (resources.files("crypto_live.dashboard") / "static" / name).read_bytes()


@functools.cache
def plotly_js() -> tuple[bytes, bytes]:
    """plotly.min.js of the installed plotly wheel, plain and gzipped (read once)."""
    body = (resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()
    return body, gzip.compress(body, compresslevel=6, mtime=0)


class BadRequestError(ValueError):
    """A query parameter is missing or malformed."""


def _int_param(query: dict[str, list[str]], name: str, default: int | None) -> int | None:
    values = query.get(name)
    if not values:
        return default
    try:
        return int(values[0])
    except ValueError as err:
        raise BadRequestError(f"{name} must be an integer") from err


def route_api(source: DashboardSource, path: str, query: dict[str, list[str]]) -> dict[str, Any]:
    """The JSON body of an API path; KeyError for an unknown path."""
    if path == "/api/latest":
        return source.latest()
    if path == "/api/pipeline":
        return source.pipeline()
    if path == "/api/history":
        symbol = (query.get("symbol") or [""])[0].upper()
        if not SYMBOL_PATTERN.match(symbol):
            raise BadRequestError("symbol must be like BTCUSDT")
        minutes = _int_param(query, "minutes", 60) or 60
        return source.history(symbol, minutes, _int_param(query, "after", None))
    if path == "/api/candles":
        symbol = (query.get("symbol") or [""])[0].upper()
        if not SYMBOL_PATTERN.match(symbol):
            raise BadRequestError("symbol must be like BTCUSDT")
        return source.candles(symbol, _int_param(query, "hours", 3) or 3)
    raise KeyError(path)


def _handler(source: DashboardSource) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "crypto-live-dashboard"

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path in STATIC_FILES:
                name, content_type = STATIC_FILES[url.path]
                self._send(HTTPStatus.OK, _static(name), content_type)
            elif url.path == PLOTLY_PATH:
                plain, packed = plotly_js()
                gzipped = "gzip" in self.headers.get("Accept-Encoding", "")
                self._send(
                    HTTPStatus.OK,
                    packed if gzipped else plain,
                    "text/javascript; charset=utf-8",
                    {"Content-Encoding": "gzip"} if gzipped else {},
                    cache="public, max-age=86400",  # changes only with the pinned wheel
                )
            elif url.path == "/healthz":
                self._json(HTTPStatus.OK, {"status": "ok"})
            else:
                self._api(url.path, parse_qs(url.query))

        def _api(self, path: str, query: dict[str, list[str]]) -> None:
            try:
                self._json(HTTPStatus.OK, route_api(source, path, query))
            except KeyError:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path: {path}"})
            except BadRequestError as err:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(err)})
            except (BotoCoreError, ClientError) as err:
                log.warning("dashboard read failed: %s", err)
                self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"AWS: {err}"})

        def _json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
            data = json.dumps(body, separators=(",", ":")).encode()
            self._send(status, data, "application/json")

        def _send(
            self,
            status: HTTPStatus,
            body: bytes,
            content_type: str,
            extra: dict[str, str] | None = None,
            cache: str = "no-store",
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", cache)
            for name, value in {**_SECURITY_HEADERS, **(extra or {})}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


class DashboardServer:
    """A threaded HTTP server in a background thread; ``port`` 0 picks a free one."""

    def __init__(self, source: DashboardSource, host: str, port: int) -> None:
        self._server = ThreadingHTTPServer((host, port), _handler(source))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="dashboard", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - display only
        return f"http://{shown}:{self.port}/"

    def start(self) -> DashboardServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
