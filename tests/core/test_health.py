"""Metrics port choice: per-service defaults, METRICS_PORT wins, a taken port falls back."""

from __future__ import annotations

import logging
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.health import DEFAULT_PORTS, Health, MetricsServer, metrics_port, serve
from core.metrics import Metrics
from core.settings import load_settings
from crypto_live.commands.healthcheck import port_to_check


def test_each_service_has_its_own_default_port() -> None:
    services = ("producer", "consumer-dynamodb", "consumer-s3")
    assert [metrics_port(None, service) for service in services] == [9000, 9001, 9002]
    assert metrics_port(None, "up") == 9000  # one process, one server for every service
    assert metrics_port(None, "exchange") is None  # serves no metrics


@pytest.mark.parametrize(("configured", "port"), [(9100, 9100), (0, 0), (-1, None)])
def test_metrics_port_when_set_wins(configured: int, port: int | None) -> None:
    for service in DEFAULT_PORTS:
        assert metrics_port(configured, service) == port


def test_metrics_port_setting_is_unset_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METRICS_PORT", raising=False)
    assert load_settings().metrics_port is None
    monkeypatch.setenv("METRICS_PORT", "9001")
    assert load_settings().metrics_port == 9001
    monkeypatch.setenv("METRICS_PORT", "-2")
    with pytest.raises(ConfigError, match="METRICS_PORT"):
        load_settings()


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another (foreign) process listens on."""
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        yield int(foreign.getsockname()[1])


def test_a_taken_port_falls_back_to_a_free_one_with_a_warning(
    taken_port: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port_file = tmp_path / "metrics.port"
    with (
        caplog.at_level(logging.INFO, logger="core.health"),
        serve([Metrics("t")], Health(), taken_port, "127.0.0.1", str(port_file)) as server,
    ):
        assert server is not None and server.port not in (taken_port, 0)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as r:
            assert r.status == 200
        assert port_file.read_text().strip() == str(server.port)
    assert not port_file.exists()  # removed when the server stops
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert warning.getMessage() == (
        f"metrics port {taken_port} is in use (another service on this host?); "
        f"serving on port {server.port} instead"
    )
    assert f"metrics and health on port {server.port} (/metrics, /healthz)" in caplog.messages


def test_other_bind_errors_are_one_config_error() -> None:
    with pytest.raises(ConfigError, match=r"cannot serve metrics on 192\.0\.2\.1:0"):
        MetricsServer([Metrics("t")], Health(), 0, "192.0.2.1")  # not an address of this host


def test_healthcheck_reads_the_port_file_else_the_configured_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("METRICS_PORT", raising=False)
    port_file = tmp_path / "metrics.port"
    monkeypatch.setenv("METRICS_PORT_FILE", str(port_file))
    assert port_to_check(load_settings(), "consumer-s3") == 9002  # not serving yet
    port_file.write_text("41234\n")
    assert port_to_check(load_settings(), "consumer-s3") == 41234
    monkeypatch.delenv("METRICS_PORT_FILE")
    monkeypatch.setenv("METRICS_PORT", "9005")
    assert port_to_check(load_settings(), "consumer-s3") == 9005
