"""The embedded AWS endpoint: moto's standalone server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from core.errors import ConfigError, CryptoLiveError

log = logging.getLogger(__name__)

# Credentials the embedded endpoint accepts; never real ones.
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}


class EmbeddedAws:
    """Starts moto's ThreadedMotoServer and waits until it answers HTTP."""

    def __init__(self, host: str = "127.0.0.1", port: int = 4566) -> None:
        self._host = host
        self._port = port or _free_port(host)
        self._server: object | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self._host}:{self._port}"

    def start(self, timeout: float = 20.0) -> str:
        """Start the server; returns its endpoint URL."""
        from moto.server import ThreadedMotoServer

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


@dataclass(frozen=True, slots=True)
class MotoProcess:
    """A moto server running in its own process: where it answers, and its pid."""

    endpoint: str
    pid: int


@contextlib.contextmanager
def moto_process(
    module: str = "moto.server", *, log: IO[bytes] | None = None, cwd: Path | None = None
) -> Iterator[MotoProcess]:
    """Run ``python -m <module> -H 127.0.0.1 -p <free port>`` (moto's server, or a module
    wrapping it) until the block ends; output goes to ``log`` (default: discarded)."""
    port = _free_port("127.0.0.1")
    proc = subprocess.Popen(  # noqa: S603 - our interpreter and a module name we pass
        [sys.executable, "-m", module, "-H", "127.0.0.1", "-p", str(port)],
        stdout=log if log is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        cwd=cwd,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(endpoint, timeout=30)
        yield MotoProcess(endpoint, proc.pid)
    finally:
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


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
