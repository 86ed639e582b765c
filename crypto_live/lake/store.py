"""The lake's object I/O: one small interface, S3 behind it, and an in-memory fake for tests.

Each method of ``S3LakeStore`` is one S3 call (a listing follows its pages); every job's logic
sits above ``LakeStore`` and never sees boto3.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import ClientError

PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"
CSV_CONTENT_TYPE = "text/csv"
JSON_CONTENT_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """A listed object: its key, ETag (without quotes) and size."""

    key: str
    etag: str
    size: int


class LakeStore(Protocol):
    """Objects of one bucket."""

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object under ``prefix``, in key order."""
        ...

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such object."""
        ...

    def etag(self, key: str) -> str | None:
        """The object's ETag, or None when there is no such object."""
        ...

    def put(self, key: str, body: bytes, content_type: str) -> str:
        """Write the object; returns its ETag."""
        ...

    def delete(self, key: str) -> None: ...


def md5_etag(body: bytes) -> str:
    """The ETag S3 gives a single-part object stored without KMS: the body's MD5."""
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def put_if_changed(store: LakeStore, key: str, body: bytes, content_type: str) -> tuple[str, bool]:
    """Write unless the stored object already has these bytes; (ETag, whether written).

    Keeps re-runs from touching objects at all (same bytes, same Last-Modified).
    """
    digest = md5_etag(body)
    if store.etag(key) == digest:
        return digest, False
    return store.put(key, body, content_type), True


def _unquote(etag: str) -> str:
    return etag.strip('"')


class S3LakeStore:
    """LakeStore on an S3 bucket (AWS, LocalStack or the embedded emulator)."""

    def __init__(
        self, s3: Any, bucket: str, sse: str | None = None, kms_key_id: str | None = None
    ) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._sse: dict[str, str] = {}
        if sse:
            self._sse["ServerSideEncryption"] = sse
        if kms_key_id:
            self._sse["SSEKMSKeyId"] = kms_key_id

    @property
    def bucket(self) -> str:
        return self._bucket

    def list(self, prefix: str) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self._bucket, Prefix=prefix
        )
        for page in pages:
            found.extend(
                ObjectInfo(item["Key"], _unquote(item["ETag"]), int(item["Size"]))
                for item in page.get("Contents", [])
            )
        return sorted(found, key=lambda info: info.key)

    def get(self, key: str) -> bytes | None:
        try:
            response = self._s3.get_object(Bucket=self._bucket, Key=key)
        except ClientError as err:
            if _missing(err):
                return None
            raise
        body: bytes = response["Body"].read()
        return body

    def etag(self, key: str) -> str | None:
        try:
            response = self._s3.head_object(Bucket=self._bucket, Key=key)
        except ClientError as err:
            if _missing(err):
                return None
            raise
        return _unquote(str(response["ETag"]))

    def put(self, key: str, body: bytes, content_type: str) -> str:
        response = self._s3.put_object(
            Bucket=self._bucket, Key=key, Body=body, ContentType=content_type, **self._sse
        )
        return _unquote(str(response["ETag"]))

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self._bucket, Key=key)


def _missing(err: ClientError) -> bool:
    code = str(err.response.get("Error", {}).get("Code", ""))
    return code in ("NoSuchKey", "404", "NotFound")


class MemoryLakeStore:
    """LakeStore in a dict, with S3's ETags, for unit tests; counts writes."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts = 0
        self.deletes = 0

    def list(self, prefix: str) -> list[ObjectInfo]:
        return [
            ObjectInfo(key, md5_etag(body), len(body))
            for key, body in sorted(self.objects.items())
            if key.startswith(prefix)
        ]

    def get(self, key: str) -> bytes | None:
        return self.objects.get(key)

    def etag(self, key: str) -> str | None:
        body = self.objects.get(key)
        return None if body is None else md5_etag(body)

    def put(self, key: str, body: bytes, content_type: str) -> str:
        self.objects[key] = body
        self.puts += 1
        return md5_etag(body)

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)
        self.deletes += 1
