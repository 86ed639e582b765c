"""DynamoDB I/O for the sink: batched history puts and conditional latest puts, retried."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from functools import partial
from typing import Any, Final, Protocol, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from consumers.dynamodb.items import Item, LatestUpdate, chunk, history_key
from core.aws_errors import aws_error, error_code
from core.backoff import Backoff
from core.errors import CryptoLiveError
from core.metrics import Counters, Histograms, Metrics
from core.threads import DaemonThreadPool

log = logging.getLogger(__name__)

DEFAULT_GIVE_UP_AFTER: Final = 600.0  # seconds of retrying before the batch is handed back

_T = TypeVar("_T")


class DynamoDbSinkError(CryptoLiveError):
    """Base of the DynamoDB sink's errors."""


class DynamoDbWriteError(DynamoDbSinkError):
    """DynamoDB rejected a call in a way retrying cannot fix (validation, missing table)."""


class DynamoDbRetriesExhaustedError(DynamoDbSinkError):
    """Writes still failed or stayed unprocessed after the retry bound, or the writer closed.

    Nothing was dropped: the batch is simply not durable, so the engine must not checkpoint.
    """

    retriable = True


class DynamoDbSinkWriter(Protocol):
    """What the processor needs; both methods return only when everything is durable."""

    def write_history(self, items: Sequence[Item]) -> None: ...

    def update_latest(self, updates: Sequence[LatestUpdate]) -> None: ...


def _require_unique_keys(items: Sequence[Item]) -> None:
    # Duplicates in different requests running concurrently would make the survivor random.
    if len({history_key(item) for item in items}) != len(items):
        raise ValueError("history items must have unique keys; dedupe_history() them first")


class DynamoDbWriter:
    """boto3 implementation over one shared thread pool, so ``max_in_flight`` bounds every
    shard's requests together. ``batch_write`` and ``update`` each make one AWS call."""

    def __init__(
        self,
        dynamodb: Any,
        history_table: str,
        latest_table: str,
        metrics: Metrics,
        *,
        max_in_flight: int = 4,
        backoff: Backoff | None = None,
        give_up_after: float = DEFAULT_GIVE_UP_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1: {max_in_flight}")
        self._dynamodb = dynamodb
        self._history_table = history_table
        self._latest_table = latest_table
        self._metrics = metrics
        self._backoff = backoff or Backoff(base=0.05, cap=5.0)
        self._give_up_after = give_up_after
        self._clock = clock
        self._closed = threading.Event()
        # Daemon threads: a request hanging on a partitioned network never holds up the exit.
        self._pool = DaemonThreadPool(max_in_flight, "dynamodb-writer")

    # -- the sink interface --------------------------------------------------------------

    def write_history(self, items: Sequence[Item]) -> None:
        """Put every item (25 per BatchWriteItem), retrying unprocessed items until none."""
        _require_unique_keys(items)
        deadline = self._clock() + self._give_up_after
        self._run_all([partial(self._put_chunk, piece, deadline) for piece in chunk(items)])

    def update_latest(self, updates: Sequence[LatestUpdate]) -> None:
        """Apply each symbol's conditional update; an already newer row is left alone."""
        deadline = self._clock() + self._give_up_after
        self._run_all([partial(self._update_one, update, deadline) for update in updates])

    def close(self) -> None:
        """Stop retrying and drop queued requests (idempotent). A request in flight is not
        waited for: it may hang for its timeouts on a partitioned network, and its batch is
        not checkpointed either way."""
        self._closed.set()
        # Not cancel_futures=True: futures cancelled that way never wake a wait() on them.
        # Queued requests end at once instead, raising in _retrying now that it is closed.
        self._pool.shutdown(wait=False)

    # -- one AWS call each ---------------------------------------------------------------

    def batch_write(self, items: Sequence[Item]) -> list[Item]:
        """One BatchWriteItem of at most 25 puts; returns the items DynamoDB left unprocessed."""
        response = self._call(
            self._dynamodb.batch_write_item,
            RequestItems={self._history_table: [{"PutRequest": {"Item": i}} for i in items]},
        )
        unprocessed = response.get("UnprocessedItems", {}).get(self._history_table, [])
        left = [request["PutRequest"]["Item"] for request in unprocessed]
        self._metrics.inc(Counters.DYNAMODB_ITEMS_WRITTEN, len(items) - len(left))
        return left

    def update(self, update: LatestUpdate) -> bool:
        """One conditional PutItem; False when the stored row was already as new or newer."""
        try:
            self._call(self._dynamodb.put_item, **update.to_request(self._latest_table))
        except ClientError as err:
            if error_code(err) == "ConditionalCheckFailedException":
                self._metrics.inc(Counters.LATEST_STALE_SKIPPED)
                return False
            raise
        self._metrics.inc(Counters.LATEST_UPDATES)
        return True

    def _call(self, method: Callable[..., dict[str, Any]], **params: Any) -> dict[str, Any]:
        self._metrics.inc(Counters.DYNAMODB_REQUESTS)
        started = time.perf_counter()
        try:
            return method(**params)
        finally:
            self._metrics.observe(
                Histograms.DYNAMODB_REQUEST_SECONDS, time.perf_counter() - started
            )

    # -- retries -------------------------------------------------------------------------

    def _put_chunk(self, items: list[Item], deadline: float) -> None:
        pending = items
        attempt = 0
        while pending:
            pending = self._retrying(partial(self.batch_write, pending), "BatchWriteItem", deadline)
            if pending:
                # DynamoDB's advice for UnprocessedItems: back off exponentially, then resend.
                self._metrics.inc(Counters.DYNAMODB_UNPROCESSED_RETRIES, len(pending))
                log.debug("%d unprocessed items, retrying", len(pending))
                self._pause(attempt, deadline, f"{len(pending)} items still unprocessed")
                attempt += 1

    def _update_one(self, update: LatestUpdate, deadline: float) -> None:
        self._retrying(partial(self.update, update), f"PutItem {update.symbol}", deadline)

    def _retrying(self, call: Callable[[], _T], what: str, deadline: float) -> _T:
        attempt = 0
        while True:
            if self._closed.is_set():
                raise DynamoDbRetriesExhaustedError(f"writer closed before {what}")
            try:
                return call()
            except (ClientError, BotoCoreError) as err:
                if not aws_error(err).retriable:
                    raise DynamoDbWriteError(f"{what} failed: {err}") from err
                self._metrics.inc(Counters.DYNAMODB_CALL_RETRIES)
                log.warning("%s failed, retrying: %s", what, err)
                self._pause(attempt, deadline, f"{what}: {err}")
                attempt += 1

    def _pause(self, attempt: int, deadline: float, reason: str) -> None:
        if self._clock() >= deadline:
            raise DynamoDbRetriesExhaustedError(
                f"gave up after {self._give_up_after:.0f}s of retries: {reason}"
            )
        # Waiting on the closed event lets close() end a long backoff at once.
        if self._closed.wait(self._backoff.delay(attempt)):
            raise DynamoDbRetriesExhaustedError(f"writer closed while retrying: {reason}")

    def _run_all(self, tasks: list[Callable[[], None]]) -> None:
        """Run the tasks on the pool; return when all succeeded, or raise the first error."""
        futures: list[Future[None]] = [self._pool.submit(task) for task in tasks]
        _, not_done = wait(futures, return_when=FIRST_EXCEPTION)
        if not_done:
            # One failed: the batch is not durable anyway, so skip what has not started yet.
            for future in not_done:
                future.cancel()
            wait(not_done)
        for future in futures:
            if not future.cancelled():
                future.result()


class MemoryDynamoDbWriter:
    """In-memory fake of DynamoDbWriter with the same keys, dedupe contract and forward-only
    rule for the latest table; items are stored as the AttributeValue maps given."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics
        self._lock = threading.Lock()
        self.history: dict[tuple[str, str], Item] = {}
        self.latest: dict[str, Item] = {}

    def write_history(self, items: Sequence[Item]) -> None:
        """Store each item under its key, replacing what was there."""
        _require_unique_keys(items)
        with self._lock:
            for item in items:
                self.history[history_key(item)] = dict(item)
        self._count(Counters.DYNAMODB_ITEMS_WRITTEN, len(items))

    def update_latest(self, updates: Sequence[LatestUpdate]) -> None:
        """Apply each update only if the stored row is missing or older."""
        for update in updates:
            with self._lock:
                stored = self.latest.get(update.symbol)
                applied = stored is None or int(stored["event_time"]["N"]) < update.event_time
                if applied:
                    self.latest[update.symbol] = dict(update.attributes)
            self._count(Counters.LATEST_UPDATES if applied else Counters.LATEST_STALE_SKIPPED, 1)

    def close(self) -> None:
        """Nothing to release."""

    def _count(self, name: Counters, amount: int) -> None:
        if self._metrics is not None:
            self._metrics.inc(name, amount)
