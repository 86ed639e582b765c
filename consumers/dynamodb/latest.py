"""Latest-table updates off the history path, coalesced per symbol while they wait.

History items are written with each batch; the batch's latest-ticker updates go to a
``LatestBook`` that one ``LatestPump`` thread drains through the writer. While an update waits,
a newer one for the same symbol takes its place (keeping its place in the queue, so a busy
symbol is not starved), so the number of latest-table writes adapts to what DynamoDB sustains:
one per symbol per batch when it keeps up, fewer under a backlog, a replay or more symbols than
the table takes per second - without holding up the history table or the shard's reads.

Checkpoint rule (what ``first_blocked`` answers): a shard's batch may be checkpointed once none
of its updates is waiting or being written. An update replaced by a newer one is covered by its
replacement, which blocks the replacement's batch until written; after a crash every batch
after the checkpoint is read again, so each symbol's row still ends at its newest event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from consumers.dynamodb.items import LatestUpdate
from consumers.dynamodb.writer import DynamoDbRetriesExhaustedError, DynamoDbSinkWriter
from core.metrics import Counters, Gauges, Histograms, Metrics

log = logging.getLogger(__name__)

DEFAULT_TAKE: Final = 4  # updates per round, as many as the writer runs at once by default
JOIN_SECONDS: Final = 2.0  # at shutdown, how long to wait for the write in flight


@dataclass(slots=True)
class _Entry:
    update: LatestUpdate
    shard_id: str
    batch: int


class LatestBook:
    """Waiting updates (one per symbol, oldest first) and, per shard, the batches they block.

    Thread-safe; no I/O. Batches are numbered by the caller, increasing within a shard.
    """

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._cond = threading.Condition()
        self._waiting: dict[str, _Entry] = {}  # insertion order = the order they are written in
        self._blocking: dict[str, dict[int, int]] = {}  # shard -> batch -> waiting or in flight
        self._error: BaseException | None = None
        self._closed = False
        self._metrics = metrics

    # -- the processors' side ------------------------------------------------------------

    def offer(self, shard_id: str, batch: int, updates: Iterable[LatestUpdate]) -> None:
        """Queue a batch's updates; an older or equal update than one waiting is covered by it."""
        coalesced = 0
        with self._cond:
            self._raise_if_failed()
            for update in updates:
                entry = self._waiting.get(update.symbol)
                if entry is None:
                    self._waiting[update.symbol] = _Entry(update, shard_id, batch)
                    self._block(shard_id, batch)
                    continue
                coalesced += 1
                if entry.update.event_time >= update.event_time:
                    continue  # the waiting one is newer: it will be written instead
                self._unblock(entry.shard_id, entry.batch)
                entry.update, entry.shard_id, entry.batch = update, shard_id, batch
                self._block(shard_id, batch)
            self._cond.notify_all()
        self._count(Counters.LATEST_COALESCED, coalesced)

    def first_blocked(self, shard_id: str) -> int | None:
        """The shard's oldest batch with updates not yet written (None: every batch is clear);
        raises the pump's error, since then nothing after it will become durable."""
        with self._cond:
            self._raise_if_failed()
            return self._first_blocked(shard_id)

    def wait_clear(self, shard_id: str, batch: int, timeout: float | None) -> bool:
        """Wait until no batch up to ``batch`` of the shard is blocked; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def clear() -> bool:
            self._raise_if_failed()
            first = self._first_blocked(shard_id)
            return first is None or first > batch

        with self._cond:
            while not clear():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def wait_empty(self) -> None:
        """Wait until nothing is waiting or being written, for any shard."""
        with self._cond:
            while self._blocking:
                self._raise_if_failed()
                self._cond.wait()
            self._raise_if_failed()

    def drop(self, shard_id: str) -> int:
        """Forget the shard's waiting updates (its lease was lost: the next owner re-reads them
        from the checkpoint, which they block); returns how many."""
        with self._cond:
            dropped = [s for s, e in self._waiting.items() if e.shard_id == shard_id]
            for symbol in dropped:
                entry = self._waiting.pop(symbol)
                self._unblock(entry.shard_id, entry.batch)
            self._cond.notify_all()
            return len(dropped)

    # -- the pump's side -----------------------------------------------------------------

    def take(self, limit: int) -> list[_Entry] | None:
        """Up to ``limit`` oldest waiting updates, waiting for one; None once closed."""
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            taken = [self._waiting.pop(symbol) for symbol in list(self._waiting)[:limit]]
            self._gauge()
            return taken

    def done(self, entries: Sequence[_Entry]) -> None:
        """The entries' writes are durable (applied or found stale)."""
        with self._cond:
            for entry in entries:
                self._unblock(entry.shard_id, entry.batch)
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        """Writing failed for good: every waiter and later caller gets the error."""
        with self._cond:
            self._error = error
            self._cond.notify_all()

    def close(self) -> None:
        """Stop handing out work; waiters get an error unless already clear."""
        with self._cond:
            self._closed = True
            if self._error is None:
                self._error = DynamoDbRetriesExhaustedError("latest-table writer closed")
            self._cond.notify_all()

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    # -- internals (lock held) -----------------------------------------------------------

    def _block(self, shard_id: str, batch: int) -> None:
        batches = self._blocking.setdefault(shard_id, {})
        batches[batch] = batches.get(batch, 0) + 1
        self._gauge()

    def _unblock(self, shard_id: str, batch: int) -> None:
        batches = self._blocking[shard_id]
        batches[batch] -= 1
        if not batches[batch]:
            del batches[batch]
            if not batches:
                del self._blocking[shard_id]
        self._gauge()

    def _first_blocked(self, shard_id: str) -> int | None:
        return min(self._blocking.get(shard_id, {}), default=None)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.set(Gauges.LATEST_WAITING, len(self._waiting))

    def _count(self, name: Counters, amount: int) -> None:
        if self._metrics is not None and amount:
            self._metrics.inc(name, amount)


class LatestPump:
    """One thread that writes the book's oldest waiting updates, ``take`` at a time."""

    def __init__(
        self,
        writer: DynamoDbSinkWriter,
        metrics: Metrics | None = None,
        *,
        take: int = DEFAULT_TAKE,
    ) -> None:
        self.book = LatestBook(metrics)
        self._writer = writer
        self._metrics = metrics
        self._take = take
        self._thread = threading.Thread(target=self._run, name="latest-pump", daemon=True)
        self._thread.start()

    def join(self, timeout: float = JOIN_SECONDS) -> None:
        """Wait for the thread, after ``book.close()`` (and closing the writer, which ends its
        retries at once). Waiting updates stay unwritten and un-checkpointed, so the shards'
        next owners write them. A write hanging on a partitioned network is not waited for
        past ``timeout``: the thread is a daemon, and that write's batch is not checkpointed."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("a latest-table write is still in flight; leaving it")

    def _run(self) -> None:
        while (entries := self.book.take(self._take)) is not None:
            try:
                self._writer.update_latest([entry.update for entry in entries])
            except BaseException as err:  # noqa: BLE001 - handed to the processors, who raise it
                log.error("latest-table writes failed: %s", err)
                self.book.fail(err)
                return
            self.book.done(entries)
            if self._metrics is not None:
                self._metrics.observe_ages(
                    Histograms.LATEST_AGE_SECONDS,
                    (int(entry.update.attributes["received_at"]["N"]) for entry in entries),
                )
