"""Shared benchmark plumbing: a moto server in its own process, machine description."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from crypto_live.embedded import DUMMY_CREDENTIALS, _free_port, wait_until_ready


def machine() -> str:
    """One line: CPU model, cores, memory, Python."""
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError):
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB"
    return f"{model}, {os.cpu_count()} cores{memory}, Python {platform.python_version()}"


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """The embedded AWS (moto standalone server) in a separate process, as `make up` uses it."""
    for name, value in DUMMY_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    port = _free_port("127.0.0.1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(endpoint, timeout=30)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def publish(settings: Any, clients: Any, records: list[dict[str, Any]]) -> None:
    """Put records into the stream the way the producer does (Avro, KPL aggregation)."""
    from producer.kinesis import KinesisStreamWriter
    from producer.publisher import publish_records

    writer = KinesisStreamWriter(clients.kinesis, settings.kinesis_stream_name)
    asyncio.run(publish_records(writer, records))


def reset_account(endpoint: str) -> None:
    """Empty the embedded AWS (moto's reset API), so rows do not see each other's data."""
    import urllib.request

    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
