"""kinesis-mock (npm ``kinesis-local``), the suite's second Kinesis: AWS-like at shard end (after
SplitShard or MergeShards the parent's GetRecords returns ChildShards and a null iterator), where
moto is not. Installed with npm into .cache/kinesis-local (``make test`` does it:
``python -m tests.support.kinesis_mock install``), run with node on a free loopback port."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import boto3
from botocore.config import Config

from tests.support.emulator import DUMMY_CREDENTIALS, free_port

PACKAGE = "kinesis-local"
VERSION = "0.6.2"
REPO = Path(__file__).resolve().parents[2]
PREFIX = REPO / ".cache" / "kinesis-local"
PACKAGE_DIR = PREFIX / "node_modules" / PACKAGE
READY_SECONDS = 60.0


def missing_tool() -> str | None:
    """Why kinesis-mock cannot run here (node or npm missing), or None."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"{tool} not on PATH (kinesis-mock {PACKAGE}@{VERSION} runs on node, from npm)"
    return None


def installed_version() -> str | None:
    try:
        manifest = json.loads((PACKAGE_DIR / "package.json").read_text())
    except (OSError, ValueError):
        return None
    version = manifest.get("version")
    return str(version) if version else None


def install() -> Path:
    """``npm install kinesis-local@VERSION`` into PREFIX unless it is there; its main.js."""
    if installed_version() != VERSION:
        PREFIX.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                *("npm", "install", "--prefix", str(PREFIX), "--save-exact"),
                *("--no-audit", "--no-fund", "--loglevel=error", f"{PACKAGE}@{VERSION}"),
            ],
            check=True,
            timeout=600,
        )
        if installed_version() != VERSION:
            raise RuntimeError(f"npm did not install {PACKAGE}@{VERSION} into {PREFIX}")
    return PACKAGE_DIR / "main.js"


def kinesis_client(endpoint: str, timeout: float = 5.0) -> Any:
    return boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name="ap-southeast-1",
        aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1}),
    )


@contextmanager
def kinesis_mock(log: IO[bytes] | None = None) -> Iterator[str]:
    """kinesis-mock on a free loopback port until the block ends; its plain-HTTP URL."""
    main = install()
    port = free_port("127.0.0.1")
    env = {
        **os.environ,
        "KINESIS_MOCK_PLAIN_PORT": str(port),
        "KINESIS_MOCK_TLS_PORT": str(free_port("127.0.0.1")),
        "SHARD_LIMIT": "10000",  # every test makes a stream of its own
        "LOG_LEVEL": "WARN",
    }
    proc = subprocess.Popen(
        ["node", str(main)],
        cwd=main.parent,  # it reads server.json (its TLS certificate) from there
        env=env,
        stdout=log if log is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(endpoint, proc)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_until_ready(endpoint: str, proc: subprocess.Popen[bytes]) -> None:
    client = kinesis_client(endpoint, timeout=2.0)
    deadline = time.monotonic() + READY_SECONDS
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"kinesis-mock exited with {proc.returncode} before it answered")
        try:
            client.list_streams()
            return
        except Exception as err:  # not up yet: any failure means try again
            if time.monotonic() > deadline:
                raise RuntimeError(f"kinesis-mock not ready in {READY_SECONDS}s: {err}") from err
            time.sleep(0.2)


def delete_streams(endpoint: str) -> None:
    """Delete every stream (asynchronously, as on AWS): an earlier test's leave nothing behind."""
    client = kinesis_client(endpoint)
    for name in client.list_streams()["StreamNames"]:
        client.delete_stream(StreamName=name, EnforceConsumerDeletion=True)


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] != "install":
        sys.exit("usage: python -m tests.support.kinesis_mock install")
    problem = missing_tool()
    if problem is not None:
        print(f"kinesis-mock not installed: {problem}; its test backend will skip")
        sys.exit(0)
    print(f"{PACKAGE}@{VERSION} in {install().parent}")
