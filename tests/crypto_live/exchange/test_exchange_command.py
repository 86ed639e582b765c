"""`crypto-live exchange` as a user starts it: settings reach the simulated exchange."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from crypto_live.embedded import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_exchange_command_applies_its_request_weight_limit() -> None:
    port = free_port()
    env = {**os.environ, "EXCHANGE_PORT": str(port), "EXCHANGE_WEIGHT_LIMIT": "2"}
    process = subprocess.Popen(
        [sys.executable, "-m", "crypto_live.cli", "exchange"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/v3/ping"
        deadline = time.monotonic() + 30
        first = None
        while first is None:
            try:
                first = _get(url)
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        # ping weighs 1: two fit a minute's limit of 2; of five, even across a minute boundary
        # at most four are answered.
        statuses = [first, *(_get(url) for _ in range(4))]
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert set(statuses) == {200, 429}, stderr
    assert statuses.count(200) <= 4
    assert process.returncode == 0, stderr
