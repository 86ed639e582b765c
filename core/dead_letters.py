"""Dead letters: bad input kept under s3://{bucket}/errors/{source}/ with its reason.

A dead letter with ``put_entry`` is not bad input but a Kinesis record the producer could not
deliver: ``raw`` is the whole record (a KPL aggregate) and ``put_entry`` what re-putting it
needs (partition key, explicit hash key), so ``crypto-live redrive`` can put it back.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected input: its raw bytes, why it was rejected, when it arrived (epoch µs)."""

    raw: bytes
    reason: str
    received_at: int
    put_entry: Mapping[str, Any] | None = None  # set on undelivered Kinesis records only


def dead_letter_line(letter: DeadLetter, source: str) -> bytes:
    """One JSON line; raw bytes as UTF-8 text when they are, else base64."""
    try:
        raw: str = letter.raw.decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError:
        raw = base64.b64encode(letter.raw).decode("ascii")
        encoding = "base64"
    body: dict[str, Any] = {
        "source": source,
        "reason": letter.reason,
        "received_at": letter.received_at,
        "raw_encoding": encoding,
        "raw": raw,
    }
    if letter.put_entry is not None:
        body["put_entry"] = dict(letter.put_entry)
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def parse_dead_letter_line(line: bytes | str) -> DeadLetter:
    """The DeadLetter of one ``dead_letter_line``; ValueError when it is not one."""
    try:
        body = json.loads(line)
        raw_text = body["raw"]
        raw = (
            base64.b64decode(raw_text, validate=True)
            if body.get("raw_encoding") == "base64"
            else str(raw_text).encode("utf-8")
        )
        put_entry = body.get("put_entry")
        return DeadLetter(
            raw,
            str(body["reason"]),
            int(body["received_at"]),
            dict(put_entry) if isinstance(put_entry, dict) else None,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"not a dead letter line: {err}") from err


def write_local_dead_letters(directory: Path, source: str, letters: list[DeadLetter]) -> Path:
    """Write dead letters as one JSON-lines file in ``directory`` (made if missing), synced to
    disk: the last resort when S3 cannot take them. Returns the file's path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{source}-{letters[0].received_at}-{uuid.uuid4().hex[:12]}.jsonl"
    with path.open("xb") as out:
        for letter in letters:
            out.write(dead_letter_line(letter, source))
        out.flush()
        os.fsync(out.fileno())
    return path


def dead_letter_key(source: str, first_received_at_us: int, unique: str) -> str:
    """``errors/{source}/year=YYYY/month=MM/day=DD/hour=HH/{unique}.jsonl``."""
    when = datetime.fromtimestamp(first_received_at_us / 1_000_000, UTC)
    return (
        f"errors/{source}/year={when:%Y}/month={when:%m}/day={when:%d}/hour={when:%H}/"
        f"{unique}.jsonl"
    )


class DeadLetterStore(Protocol):
    """Where dead letters go; ``put`` returns only when they are durable.

    ``name`` makes the key deterministic (consumers name objects by shard position, so a
    replay overwrites instead of duplicating); without it a random one is used.
    """

    def put(self, source: str, letters: list[DeadLetter], name: str | None = None) -> str: ...


class S3DeadLetterStore:
    """Writes one JSONL object per batch of dead letters."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    def put(self, source: str, letters: list[DeadLetter], name: str | None = None) -> str:
        unique = name or f"{letters[0].received_at}-{uuid.uuid4().hex[:12]}"
        key = dead_letter_key(source, letters[0].received_at, unique)
        body = b"".join(dead_letter_line(letter, source) for letter in letters)
        self._s3.put_object(
            Bucket=self._bucket, Key=key, Body=body, ContentType="application/x-ndjson"
        )
        return key


class MemoryDeadLetterStore:
    """In-memory store for unit tests."""

    def __init__(self) -> None:
        self.objects: dict[str, list[DeadLetter]] = {}
        self._lock = threading.Lock()

    def put(self, source: str, letters: list[DeadLetter], name: str | None = None) -> str:
        with self._lock:
            unique = name or str(len(self.objects))
            key = dead_letter_key(source, letters[0].received_at, unique)
            self.objects[key] = list(letters)
            return key
