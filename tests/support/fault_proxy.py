"""An HTTP proxy on loopback in front of the moto server, for fault injection.

Requests are forwarded unchanged; ``decide(method, path, headers)`` sees each request
and may replace its upstream response (throttling, 500s) or run an action first (SIGKILL a
client between a write and its acknowledgement).

``partition()`` cuts the network the way a partition does, not the way a 503 does: requests
are accepted by TCP and read, and never answered. ``heal()`` ends it: the requests held so
far are dropped without an answer (their outcome stays unknown to the client, as after a real
partition) and new ones are forwarded again. With ``partition(forward=...)`` a held request
may first be forwarded and applied upstream, and only its answer is lost: the partition came
between the write and its acknowledgement, the realistic "outcome unknown".
"""

from __future__ import annotations

import contextlib
import http.client
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


@dataclass(frozen=True)
class Fault:
    """Answer with this instead of the upstream response (the request may still be applied)."""

    status: int
    body: bytes
    content_type: str = "application/x-amz-json-1.1"
    forward: bool = False  # also apply the request upstream first


Decision = Callable[[str, str, dict[str, str]], Fault | Callable[[], None] | None]
Match = Callable[[str, str, dict[str, str]], bool]


def _always(method: str, path: str, headers: dict[str, str]) -> bool:
    return True


def _never(method: str, path: str, headers: dict[str, str]) -> bool:
    return False


class FaultProxy:
    """``with FaultProxy(upstream, decide) as proxy: proxy.url``."""

    def __init__(self, upstream: str, decide: Decision | None = None) -> None:
        target = urlsplit(upstream)
        self._host = target.hostname or "127.0.0.1"
        self._port = target.port or 80
        self.decide: Decision = decide or (lambda method, path, headers: None)
        self.requests = 0
        self.held = 0  # requests a partition swallowed
        self.applied = 0  # of those, the ones forwarded and applied upstream (answer lost)
        self._partition: Match | None = None
        self._forward: Match = _never
        self._lock = threading.Lock()
        self._healed = threading.Event()
        self._healed.set()
        self._closed = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        self._server.shutdown()
        self._server.server_close()

    def partition(self, match: Match | None = None, forward: bool | Match = False) -> None:
        """From now on hold every request (or those ``match`` picks) without an answer.

        ``forward`` (True, or a predicate asked once per held request, in arrival order) sends
        a held request upstream first, so it is applied and only its answer is lost."""
        self._forward = forward if callable(forward) else (_always if forward else _never)
        self._partition = match or _always
        self._healed.clear()

    def heal(self) -> None:
        """Drop the held requests unanswered and forward everything again."""
        self._partition = None
        self._forward = _never
        self._healed.set()

    def _hold(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bool:
        """Swallow this request if a partition covers it (after applying it upstream when the
        partition forwards it); True when it was swallowed."""
        match = self._partition
        if match is None or not match(method, path, headers):
            return False
        with self._lock:
            self.held += 1
            forward = self._forward(method, path, headers)
        if forward:
            self._upstream(method, path, headers, body)  # applied; the answer is dropped
            with self._lock:
                self.applied += 1
        while not self._healed.wait(0.05) and not self._closed.is_set():
            pass
        return True

    def _upstream(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send the request to the upstream; (status, headers, body) of its answer."""
        upstream = http.client.HTTPConnection(self._host, self._port, timeout=60)
        try:
            upstream.request(method, path, body=body, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
            reply = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_HEADERS]
            return response.status, reply, payload
        finally:
            upstream.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return None

            def handle(self) -> None:
                # A client killed on purpose resets its connection.
                with contextlib.suppress(OSError):
                    super().handle()

            def _relay(self) -> None:
                proxy.requests += 1
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                if proxy._hold(self.command, self.path, headers, body):
                    self.close_connection = True  # no answer, ever: the client must give up
                    return
                decision = proxy.decide(self.command, self.path, headers)
                if isinstance(decision, Fault) and not decision.forward:
                    self._answer(
                        decision.status, [("Content-Type", decision.content_type)], decision.body
                    )
                    return
                status, reply, payload = proxy._upstream(self.command, self.path, headers, body)
                if callable(decision):
                    decision()  # e.g. kill the client after the write was applied
                if isinstance(decision, Fault):
                    self._answer(
                        decision.status, [("Content-Type", decision.content_type)], decision.body
                    )
                    return
                self._answer(status, reply, payload)

            def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                try:
                    self.send_response(status)
                    for key, value in headers:
                        if key.lower() != "content-length":
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client is gone (killed on purpose)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        return Handler
