"""Dead letters: bad input kept under s3://{bucket}/errors/{source}/ with its reason."""

from __future__ import annotations

import base64
import json
import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected input: its raw bytes, why it was rejected, when it arrived (epoch µs)."""

    raw: bytes
    reason: str
    received_at: int


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
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


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
