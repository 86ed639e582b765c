"""The README's services side by side on one host with default settings: no port collides.

The producer and both consumers each serve /metrics and /healthz on their own default port;
a port that is taken anyway (a second copy of a consumer, a foreign process) falls back to a
free one with a warning, and `crypto-live healthcheck` still finds the service's own server.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from core.aws import AwsClients
from core.health import DEFAULT_PORTS
from core.settings import Settings
from tests.support.emulator import free_port
from tests.support.pipeline import (
    ServiceProcess,
    consumer_env,
    producer_env,
    provisioned,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]

# tests/conftest.py sets METRICS_PORT=0 for every service a test starts; these run without it.
DEFAULTS = ("METRICS_PORT",)


def _status(url: str) -> int:
    """The HTTP status of a GET (a 503 /healthz early on counts as reachable)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _serving_port(service: ServiceProcess) -> int:
    """The port from its "metrics and health on port N" line (waits for the line)."""
    wait_until(lambda: _alive(service) and _logged_port(service) is not None, 60, 0.2)
    port = _logged_port(service)
    assert port is not None
    return port


def _logged_port(service: ServiceProcess) -> int | None:
    with contextlib.suppress(StopIteration):
        return int(service.base_url().rsplit(":", 1)[1])
    return None


def _alive(service: ServiceProcess) -> bool:
    code = service.proc.poll()
    assert code is None, f"{service.log_path.name} exited {code}: {service.messages()[-5:]}"
    return True


def _fallback_warnings(service: ServiceProcess) -> list[str]:
    return [m for m in service.messages() if m.startswith("metrics port ")]


def _reachable(service: ServiceProcess, port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    assert _status(f"{base}/metrics") == 200, service.log_path.name
    assert _status(f"{base}/healthz") in (200, 503), service.log_path.name


def test_producer_and_both_consumers_run_side_by_side_with_default_ports(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    settings = provisioned(aws_settings, aws, 2)
    exchange_port = free_port("127.0.0.1")
    free_before = {name: _is_free(port) for name, port in DEFAULT_PORTS.items()}
    exchange = ServiceProcess(
        ["exchange", "--port", str(exchange_port), "--symbols", "5", "--rate", "2"],
        {},
        tmp_path / "exchange.log",
        unset=DEFAULTS,
    )
    url = f"ws://127.0.0.1:{exchange_port}/"
    endpoint = settings.aws_endpoint_url or ""
    services = {
        "producer": ServiceProcess(
            ["producer"], producer_env(settings, url, endpoint), tmp_path / "p.log", DEFAULTS
        ),
        "consumer-dynamodb": ServiceProcess(
            ["consume", "dynamodb"], consumer_env(settings), tmp_path / "d.log", DEFAULTS
        ),
        "consumer-s3": ServiceProcess(
            ["consume", "s3"], consumer_env(settings), tmp_path / "s.log", DEFAULTS
        ),
    }
    everyone = [exchange, *services.values()]
    try:
        ports = {name: _serving_port(service) for name, service in services.items()}
        # A second copy of the S3 consumer on the same host (compose --scale, host network).
        second = ServiceProcess(
            ["consume", "s3"], consumer_env(settings), tmp_path / "s2.log", DEFAULTS
        )
        everyone.append(second)
        second_port = _serving_port(second)
        for name, service in services.items():
            _reachable(service, ports[name])
        _reachable(second, second_port)
        for service in everyone:
            _alive(service)
        codes = {service.log_path.name: service.terminate(timeout=40) for service in everyone}
    finally:
        for service in everyone:
            service.stop()

    assert set(codes.values()) == {0}, codes
    assert len({*ports.values(), second_port}) == 4  # four servers, four ports
    for name, service in services.items():
        if free_before[name]:
            assert ports[name] == DEFAULT_PORTS[name], name
            assert not _fallback_warnings(service), name
        else:  # something else on this machine has it: the fallback must have said so
            assert _fallback_warnings(service), name
    assert _fallback_warnings(second) == [
        f"metrics port {DEFAULT_PORTS['consumer-s3']} is in use (another service on this "
        f"host?); serving on port {second_port} instead"
    ]
    assert not any("Traceback" in m for s in everyone for m in s.messages())


def test_taken_port_falls_back_and_the_healthcheck_finds_the_service(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    settings = provisioned(aws_settings, aws, 1)
    port_file = tmp_path / "metrics.port"
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        taken = int(foreign.getsockname()[1])
        env = consumer_env(settings, METRICS_PORT=str(taken), METRICS_PORT_FILE=str(port_file))
        with ServiceProcess(["consume", "dynamodb"], env, tmp_path / "d.log") as consumer:
            port = _serving_port(consumer)
            _reachable(consumer, port)
            wait_until(port_file.exists, 10, 0.1)
            check_env = {"METRICS_PORT": str(taken), "METRICS_PORT_FILE": str(port_file)}
            # healthy once the worker's first lease cycle beat
            wait_until(lambda: _healthcheck(check_env).returncode == 0, 30, 0.5)
            checked = _healthcheck(check_env)
            code = consumer.terminate(timeout=40)
    assert port != taken
    assert _fallback_warnings(consumer) == [
        f"metrics port {taken} is in use (another service on this host?); "
        f"serving on port {port} instead"
    ]
    assert checked.stdout.strip() == f"healthcheck: http://127.0.0.1:{port}/healthz 200"
    assert code == 0
    assert not port_file.exists()  # removed on a clean stop


def _healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crypto_live.cli", "healthcheck", "--service", "consumer-dynamodb"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
