"""Shared fixtures: a real moto server over HTTP on 127.0.0.1, reset between tests."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from crypto_live.aws import AwsClients
from crypto_live.embedded import DUMMY_CREDENTIALS, _free_port, wait_until_ready
from crypto_live.settings import Settings, load_settings

# boto3 must never find real credentials or config in tests.
for _name, _value in DUMMY_CREDENTIALS.items():
    os.environ[_name] = _value
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
# Services started by tests serve /metrics on a free loopback port, never a fixed one.
os.environ["METRICS_PORT"] = "0"
os.environ["METRICS_HOST"] = "127.0.0.1"


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's standalone server in its own process, as a real AWS endpoint (see
    tests/moto_server.py for the one Kinesis resharding fix it carries)."""
    port = _free_port("127.0.0.1")
    log_path = Path(tmp_path_factory.mktemp("moto")) / "moto.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.moto_server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(endpoint, timeout=30)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def reset_moto(endpoint: str) -> None:
    """Forget every resource, so each test starts from an empty account."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


@pytest.fixture
def aws_settings(moto_endpoint: str) -> Settings:
    """Settings pointed at a freshly reset moto server."""
    reset_moto(moto_endpoint)
    return load_settings(aws_endpoint_url=moto_endpoint)


@pytest.fixture
def aws(aws_settings: Settings) -> Iterator[AwsClients]:
    clients = AwsClients(aws_settings)
    yield clients
    clients.close()
