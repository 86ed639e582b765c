"""The embedded AWS endpoint: moto's standalone server on 127.0.0.1.

moto comes with the ``embedded`` extra (``pip install 'crypto-live[embedded]'``), never with
the service image, so it is imported only when a server starts. Two ways to run it:

- :class:`EmbeddedAws`, moto's threaded server inside this process, is what ``crypto-live up``
  starts when no ``AWS_ENDPOINT_URL`` is set.
- :class:`MotoServer` runs ``python -m moto.server`` (or a module wrapping it) as a process of
  its own, so its CPU is measured apart and never competes for this interpreter's GIL. The
  benchmarks use it, and they import no test code (``bench/`` never imports ``tests/``), which
  is why it lives here rather than in tests/support; the test suite starts its patched server
  (tests/support/moto_server.py) through it as well. It imports nothing of moto itself.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

from core.errors import ConfigError, CryptoLiveError

log = logging.getLogger(__name__)

# Credentials the embedded endpoint accepts; never real ones.
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}
INSTALL_HINT = (
    "the embedded AWS endpoint needs moto: pip install 'crypto-live[embedded]' "
    "(or set AWS_ENDPOINT_URL to LocalStack or AWS)"
)


class EmbeddedAwsUnavailableError(CryptoLiveError):
    """moto (the ``embedded`` extra) is not installed."""


class EmbeddedAws:
    """Starts moto's ThreadedMotoServer and waits until it answers HTTP."""

    def __init__(self, host: str = "127.0.0.1", port: int = 4566) -> None:
        self._host = host
        self._port = port or free_port(host)
        self._server: object | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self._host}:{self._port}"

    def start(self, timeout: float = 20.0) -> str:
        """Start the server; returns its endpoint URL."""
        require_moto()
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as err:  # a broken install: some dependency of moto's server
            raise EmbeddedAwsUnavailableError(f"{INSTALL_HINT}: {err}") from err

        if _port_in_use(self._host, self._port):
            raise ConfigError(
                f"invalid setting EMBEDDED_AWS_PORT (got {self._port}): port already in use; "
                "set AWS_ENDPOINT_URL to use a running endpoint (e.g. LocalStack) instead"
            )
        server = ThreadedMotoServer(ip_address=self._host, port=self._port, verbose=False)
        server.start()
        self._server = server
        wait_until_ready(self.endpoint_url, timeout)
        log.info("embedded AWS endpoint at %s", self.endpoint_url)
        return self.endpoint_url

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()  # type: ignore[attr-defined]


def require_moto() -> None:
    """Raise EmbeddedAwsUnavailableError, saying how to install it, unless moto's server (moto
    and its ``server`` extra's flask) can be imported; imports nothing itself."""
    if any(importlib.util.find_spec(name) is None for name in ("moto", "flask")):
        raise EmbeddedAwsUnavailableError(INSTALL_HINT)


class MotoServer:
    """``python -m <module> -H 127.0.0.1 -p <free port>`` (moto's server, or a module wrapping
    it) as a process, for the ``with`` block; its output goes to ``log`` (default: discarded)."""

    def __init__(
        self,
        module: str = "crypto_live.moto_process",
        *,
        log: IO[bytes] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self._module = module
        self._log = log
        self._cwd = cwd
        self._port = free_port("127.0.0.1")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise CryptoLiveError("moto server not started")
        return self._proc.pid

    def __enter__(self) -> MotoServer:
        self._proc = subprocess.Popen(  # noqa: S603 - our interpreter and a module name we pass
            [sys.executable, "-m", self._module, "-H", "127.0.0.1", "-p", str(self._port)],
            stdout=self._log if self._log is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            cwd=self._cwd,
        )
        try:
            wait_until_ready(self.endpoint, timeout=30)
        except BaseException:
            self._terminate()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._terminate()

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def reset_moto(endpoint: str) -> None:
    """Forget every resource of a moto server (its reset API): an empty account again."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - the emulator's URL
        pass


def use_dummy_credentials() -> None:
    """Give boto3 credentials for the emulator unless the user set some."""
    for name, value in DUMMY_CREDENTIALS.items():
        os.environ.setdefault(name, value)


def wait_until_ready(endpoint_url: str, timeout: float) -> None:
    """Poll the endpoint until it answers any HTTP status."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint_url}/moto-api/", timeout=2):  # noqa: S310
                return
        except urllib.error.HTTPError:
            return
        except OSError as err:
            if time.monotonic() > deadline:
                raise CryptoLiveError(
                    f"AWS endpoint {endpoint_url} not ready in {timeout}s: {err}"
                ) from err
            time.sleep(0.05)


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the emulator's, a bench's servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
