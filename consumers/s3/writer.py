"""S3 PutObject for batch objects, retried until written; and an in-memory fake for tests."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from consumers.s3.format import CONTENT_ENCODING, CONTENT_TYPE
from core.aws_errors import aws_error
from core.backoff import Backoff
from core.errors import CryptoLiveError
from core.metrics import Counters, Histograms, Metrics
from core.threads import SINK_WRITES, DaemonThreadPool, StopSignal, shared_pool

log = logging.getLogger(__name__)

SSE_ALGORITHMS: Final = frozenset({"AES256", "aws:kms"})
DEFAULT_BACKOFF: Final = Backoff(base=0.1, cap=20.0)
DEFAULT_GIVE_UP_SECONDS: Final = 600.0


class S3SinkError(CryptoLiveError):
    """Base of the errors the S3 sink raises."""


class S3PutRetriesExhaustedError(S3SinkError):
    """A PUT kept failing transiently past the retry bound; the batch is not written."""

    retriable = True


class S3PutRejectedError(S3SinkError):
    """S3 refused the PUT for a reason retrying cannot fix (access, bucket, parameters)."""


class BatchWriter(Protocol):
    """Where batch objects go; ``put`` returns only once the object is durable."""

    def put(self, key: str, body: bytes) -> None: ...


class AsyncBatchWriter(Protocol):
    """The same, awaited."""

    async def put_async(self, key: str, body: bytes) -> None: ...


class ThreadedBatchWriter:
    """A blocking BatchWriter (an in-memory fake) behind ``put_async``, on a daemon pool."""

    def __init__(self, writer: BatchWriter, pool: DaemonThreadPool) -> None:
        self._writer = writer
        self._pool = pool

    async def put_async(self, key: str, body: bytes) -> None:
        await self._pool.run(self._writer.put, key, body)


def async_writer(writer: BatchWriter, pool: DaemonThreadPool) -> AsyncBatchWriter:
    """The asyncio interface of ``writer``: its own when it has one, else ``put`` on ``pool``."""
    if isinstance(writer, S3BatchWriter):
        return writer
    return ThreadedBatchWriter(writer, pool)


class S3BatchWriter:
    """boto3 PutObject of gzipped JSONL with retries; one AWS call per attempt."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        metrics: Metrics,
        sse: str | None = None,
        kms_key_id: str | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        give_up_after: float = DEFAULT_GIVE_UP_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if sse is not None and sse not in SSE_ALGORITHMS:
            raise ValueError(f"sse must be None, 'AES256' or 'aws:kms': {sse!r}")
        if kms_key_id and sse != "aws:kms":
            raise ValueError("kms_key_id needs sse='aws:kms'")
        self._s3 = s3
        self._bucket = bucket
        self._metrics = metrics
        self._backoff = backoff
        self._give_up_after = give_up_after
        self._clock = clock
        self._closing = StopSignal()
        # Daemon threads: a PUT hanging on a partitioned network never holds up the exit.
        self._pool = shared_pool(SINK_WRITES)
        self._extra: dict[str, str] = {}
        if sse is not None:
            self._extra["ServerSideEncryption"] = sse
        if kms_key_id:
            self._extra["SSEKMSKeyId"] = kms_key_id

    @property
    def bucket(self) -> str:
        return self._bucket

    async def put_async(self, key: str, body: bytes) -> None:
        """Write one object, retrying transient errors with backoff for up to give_up_after s;
        each attempt on a daemon pool, each backoff in asyncio (``close`` ends it at once)."""
        deadline = self._clock() + self._give_up_after
        attempt = 0
        while True:
            started = self._clock()
            try:
                await self._pool.run(self._put_object, key, body)
            except (BotoCoreError, ClientError) as err:
                if not aws_error(err).retriable:
                    raise S3PutRejectedError(f"PUT s3://{self._bucket}/{key}: {err}") from err
                if self._clock() >= deadline or self._closing.is_set():
                    raise S3PutRetriesExhaustedError(
                        f"PUT s3://{self._bucket}/{key} failed {attempt + 1} times: {err}"
                    ) from err
                delay = min(self._backoff.delay(attempt), max(0.0, deadline - self._clock()))
                attempt += 1
                self._metrics.inc(Counters.S3_PUT_RETRIES)
                log.warning("PUT %s failed, retry %d in %.2fs: %s", key, attempt, delay, err)
                await self._closing.sleep(delay)
                continue
            self._metrics.observe(Histograms.S3_PUT_SECONDS, self._clock() - started)
            self._metrics.inc(Counters.S3_OBJECTS_WRITTEN)
            self._metrics.inc(Counters.S3_BYTES_WRITTEN, len(body))
            return

    def put(self, key: str, body: bytes) -> None:
        """``put_async`` for a caller without an event loop."""
        asyncio.run(self.put_async(key, body))

    def close(self) -> None:
        """Make puts still retrying give up at their next failure (service shutdown)."""
        self._closing.set()

    def _put_object(self, key: str, body: bytes) -> None:
        self._s3.put_object(
            Bucket=self._bucket,
            Key=key,
            Body=body,
            ContentType=CONTENT_TYPE,
            ContentEncoding=CONTENT_ENCODING,
            **self._extra,
        )


@dataclass(frozen=True, slots=True)
class StoredObject:
    """What the fake keeps per key."""

    body: bytes
    content_type: str
    content_encoding: str


class MemoryBatchWriter:
    """In-memory BatchWriter; the first ``fail_first`` puts raise like exhausted retries."""

    def __init__(self, fail_first: int = 0) -> None:
        self.objects: dict[str, StoredObject] = {}
        self.puts = 0
        self._failures_left = fail_first
        self._lock = threading.Lock()

    def put(self, key: str, body: bytes) -> None:
        with self._lock:
            if self._failures_left > 0:
                self._failures_left -= 1
                raise S3PutRetriesExhaustedError(f"injected failure for {key}")
            self.puts += 1
            self.objects[key] = StoredObject(bytes(body), CONTENT_TYPE, CONTENT_ENCODING)

    def get(self, key: str) -> bytes:
        """The body stored under ``key`` (KeyError when missing)."""
        with self._lock:
            return self.objects[key].body

    def bodies(self) -> dict[str, bytes]:
        """Every key and body, for comparing runs."""
        with self._lock:
            return {key: stored.body for key, stored in self.objects.items()}
