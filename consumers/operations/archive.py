"""Read the S3 raw archive (gzipped JSONL) back, for data older than the stream's retention."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from core.errors import ConfigError
from schemas.record import FIELD_ORDER

log = logging.getLogger(__name__)


@dataclass
class ArchiveObject:
    """The records of one archive object, and the lines that were not records."""

    key: str
    records: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: int = 0


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without leading slash)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigError(f"invalid --from-archive (got {url!r}): expected s3://bucket/prefix")
    return parts.netloc, parts.path.lstrip("/")


def archive_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    """Every ``.jsonl.gz`` object under the prefix, in key order (time, then shard)."""
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".jsonl.gz"))
    return sorted(keys)


def parse_object(key: str, body: bytes) -> ArchiveObject:
    """Decode one object; lines that are not complete records are counted, not guessed at."""
    out = ArchiveObject(key)
    for line in gzip.decompress(body).splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            out.bad_lines += 1
            continue
        if not isinstance(record, dict) or any(name not in record for name in FIELD_ORDER):
            out.bad_lines += 1
            continue
        out.records.append({name: record[name] for name in FIELD_ORDER})
    return out


def read_archive(s3: Any, bucket: str, keys: list[str]) -> Iterator[ArchiveObject]:
    """Objects one at a time, so memory holds one object whatever the range."""
    for key in keys:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        parsed = parse_object(key, body)
        if parsed.bad_lines:
            log.warning("%s: %d lines are not records, skipped", key, parsed.bad_lines)
        yield parsed
