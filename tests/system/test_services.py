"""Whole services as processes: the producer on SIGTERM, and `crypto-live up` on Ctrl+C."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from consumers.operations.stream_dump import read_stream
from core.aws import AwsClients
from core.settings import Settings
from crypto_live.provision import provision
from tests.support.emulator import free_port
from tests.support.pipeline import ServiceProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]


def test_producer_process_flushes_everything_on_sigterm(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    provision(aws_settings, aws)
    port = free_port("127.0.0.1")
    metrics_port = free_port("127.0.0.1")
    exchange = ServiceProcess(
        ["exchange", "--port", str(port), "--symbols", "50", "--rate", "20"], {}, tmp_path / "x.log"
    )
    producer = ServiceProcess(
        ["producer"],
        {
            "AWS_ENDPOINT_URL": aws_settings.aws_endpoint_url or "",
            "BINANCE_STREAM_URL": f"ws://127.0.0.1:{port}/",
            "BINANCE_STREAMS": "!miniTicker@arr",
            "RECORD_MAX_BUFFERED_TIME_MS": "2000",  # plenty buffered when the signal lands
            "METRICS_PORT": str(metrics_port),
        },
        tmp_path / "p.log",
    )
    try:
        wait_until(lambda: any("connected" in m for m in exchange.messages()), 20)
        time.sleep(3)
        health = json.loads(_get(f"http://127.0.0.1:{metrics_port}/healthz"))
        scrape = _get(f"http://127.0.0.1:{metrics_port}/metrics").decode()
        started = time.monotonic()
        code = producer.terminate(timeout=25)
        stopped_in = time.monotonic() - started
    finally:
        exchange.terminate()
    assert code == 0
    assert stopped_in < 20
    assert health["status"] == "ok" and set(health["seconds_since_beat"]) == {
        "source",
        "publisher",
        "websocket",
    }
    received = re.search(r'crypto_live_messages_received_total\{service="producer"\} (\S+)', scrape)
    assert received and float(received.group(1)) > 0
    assert "crypto_live_put_seconds_bucket" in scrape
    summary = next(m for m in producer.messages() if m.startswith("producer stopped: "))
    valid = int(re.search(r"(\d+) valid records", summary).group(1))  # type: ignore[union-attr]
    put = int(re.search(r"(\d+) records put", summary).group(1))  # type: ignore[union-attr]
    assert "0 undelivered" in summary and valid == put > 0
    in_stream = sum(
        len(rows) for rows in read_stream(aws.kinesis, aws_settings.kinesis_stream_name).values()
    )
    assert in_stream == put  # everything accepted reached Kinesis before exit


def test_up_with_simulated_exchange_runs_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port("127.0.0.1")
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "crypto_live.cli", "up", "--source", "sim", "--no-display"],
        env={
            "PATH": "/usr/bin:/bin",
            "EMBEDDED_AWS_PORT": str(port),
            "METRICS_PORT": "0",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        },
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        settings = Settings(aws_endpoint_url=endpoint)
        wait_until(
            lambda: "records put" in (tmp_path / "up.log").read_text() or _records(settings) > 0,
            40,
            0.5,
        )
        wait_until(lambda: _records(settings) >= 20, 30, 0.5)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=25)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    output = (tmp_path / "up.log").read_text()
    assert code == 0, output[-2000:]
    assert f"AWS endpoint: http://127.0.0.1:{port}" in output
    summary = re.search(r"stopped: producer: .*?(\d+) records put to Kinesis", output, re.S)
    assert summary and int(summary.group(1)) >= 20
    assert "0 undelivered" in output


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bytes(response.read())


def _records(settings: Settings) -> int:
    import os

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    try:
        clients = AwsClients(settings)
        try:
            # Any type: `up --source sim` reads klines as well as tickers.
            shards = read_stream(clients.kinesis, settings.kinesis_stream_name)
            return sum(len(rows) for rows in shards.values())
        finally:
            clients.close()
    except Exception:
        return 0
