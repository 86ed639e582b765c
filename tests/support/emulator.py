"""The test suite's AWS endpoint: the patched moto server (moto_server.py) as a process, its
reset API, and free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from crypto_live.embedded import DUMMY_CREDENTIALS, MotoServer, free_port, reset_moto

__all__ = ["DUMMY_CREDENTIALS", "free_port", "moto_server", "reset_moto"]

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def moto_server(log: IO[bytes] | None = None) -> Iterator[str]:
    """``python -m tests.support.moto_server`` on a free port until the block ends; its URL."""
    with MotoServer("tests.support.moto_server", log=log, cwd=REPO) as server:
        yield server.endpoint
