"""Shared fixtures: a real moto server over HTTP on 127.0.0.1, reset between tests, and the
engine's two Kinesis backends (``kinesis_backend``: moto, or kinesis-mock and moto for the rest)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.aws import AwsClients
from core.settings import Settings, load_settings
from tests.support import kinesis_mock
from tests.support.emulator import DUMMY_CREDENTIALS, moto_server, reset_moto

# boto3 must never find real credentials or config in tests.
for _name, _value in DUMMY_CREDENTIALS.items():
    os.environ[_name] = _value
os.environ.pop("AWS_PROFILE", None)
for _name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL")]:
    os.environ.pop(_name)  # AWS_ENDPOINT_URL and the per-service AWS_ENDPOINT_URL_<SERVICE>
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
# Services started by tests serve /metrics on a free loopback port, never a fixed one.
os.environ["METRICS_PORT"] = "0"
os.environ["METRICS_HOST"] = "127.0.0.1"


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's standalone server in its own process, as a real AWS endpoint (see
    tests/support/moto_server.py for the one Kinesis resharding fix it carries)."""
    log_path = Path(tmp_path_factory.mktemp("moto")) / "moto.log"
    with log_path.open("wb") as log_file, moto_server(log_file) as endpoint:
        yield endpoint


@pytest.fixture
def aws_settings(moto_endpoint: str) -> Settings:
    """Settings pointed at a freshly reset moto server."""
    reset_moto(moto_endpoint)
    return load_settings(aws_endpoint_url=moto_endpoint)


@pytest.fixture(scope="session")
def kinesis_mock_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """kinesis-mock (tests/support/kinesis_mock.py) in its own process; skips without node/npm."""
    problem = kinesis_mock.missing_tool()
    if problem is not None:
        pytest.skip(f"no kinesis-mock backend: {problem}")
    log_path = Path(tmp_path_factory.mktemp("kinesis-mock")) / "kinesis-mock.log"
    with log_path.open("wb") as log_file, kinesis_mock.kinesis_mock(log_file) as endpoint:
        yield endpoint


_streams = itertools.count(1)


@pytest.fixture(params=["moto", "kinesis-mock"])
def kinesis_backend(request: pytest.FixtureRequest, aws_settings: Settings) -> Settings:
    """``aws_settings`` on each Kinesis: moto's, or kinesis-mock's through
    AWS_ENDPOINT_URL_KINESIS (a stream of the test's own) with moto for everything else. A test
    that takes this fixture gets its ``aws`` clients on the same endpoints."""
    if request.param == "moto":
        return aws_settings
    endpoint: str = request.getfixturevalue("kinesis_mock_endpoint")
    kinesis_mock.delete_streams(endpoint)
    return aws_settings.with_overrides(
        aws_endpoint_url_kinesis=endpoint,
        kinesis_stream_name=f"{aws_settings.kinesis_stream_name}-{next(_streams)}",
    )


@pytest.fixture
def aws(request: pytest.FixtureRequest, aws_settings: Settings) -> Iterator[AwsClients]:
    """Clients on ``aws_settings``, or on ``kinesis_backend`` when the test takes that."""
    settings = aws_settings
    if "kinesis_backend" in request.fixturenames:
        settings = request.getfixturevalue("kinesis_backend")
    clients = AwsClients(settings)
    yield clients
    clients.close()
