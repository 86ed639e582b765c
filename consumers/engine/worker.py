"""A consumer-group worker: discovers shards, holds leases, runs one reader per owned shard."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from consumers.engine.balancing import ExpiryTracker, choose_leases, parents_finished
from consumers.engine.executors import EngineExecutors
from consumers.engine.kinesis import shards_of
from consumers.engine.leases import Lease, LeaseLostError, LeaseStore
from consumers.engine.processor import ProcessorFactory
from consumers.engine.records import UndecodableRecord
from consumers.engine.shard_reader import LeaseHandle, Outcome, ReaderConfig, ShardReader
from core.aws_errors import is_aws_error
from core.errors import AwsError
from core.metrics import Metrics
from schemas.codec import SingleObjectCodec

log = logging.getLogger(__name__)


def default_worker_id() -> str:
    """host:pid:random, unique per process (ECS tasks share no state)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Timing of the lease protocol (KCL defaults scaled to this service)."""

    failover_seconds: float = 10.0
    discovery_seconds: float = 10.0
    initial_position: str = "TRIM_HORIZON"
    shutdown_seconds: float = 20.0
    reader: ReaderConfig = field(default_factory=ReaderConfig)

    @property
    def renew_seconds(self) -> float:
        return self.failover_seconds / 3

    @property
    def give_up_seconds(self) -> float:
        """Silence after which an owner gives a lease up. Another worker takes a lease over
        once it saw the counter unchanged for failover_seconds, counted from a read that came
        after the owner's last renewal; giving up at 0.8 of that (checked every quarter renew
        interval, so by 0.89) keeps a margin, and rides out one or two slow renewals."""
        return 0.8 * self.failover_seconds

    @property
    def renewal_check_seconds(self) -> float:
        return self.renew_seconds / 4


@dataclass
class _Owned:
    handle: LeaseHandle
    task: asyncio.Task[Outcome]


class Worker:
    """Runs until stopped. A renewal task renews the owned leases every ``renew_seconds``
    on its own (a slow ListShards or lease scan never delays it); the coordinator cycle
    discovers shards, reaps finished readers, takes and balances leases."""

    def __init__(
        self,
        *,
        kinesis: Any,
        stream: str,
        leases: LeaseStore,
        processors: ProcessorFactory,
        codec: SingleObjectCodec,
        dead_letters: Callable[[list[UndecodableRecord]], None],
        config: WorkerConfig | None = None,
        worker_id: str | None = None,
        metrics: Metrics | None = None,
        on_cycle: Callable[[], None] = lambda: None,
        executors: EngineExecutors | None = None,
    ) -> None:
        self.worker_id = worker_id or default_worker_id()
        self._kinesis = shards_of(kinesis, stream)
        self._executors = executors or EngineExecutors()
        self._stream = stream
        self._store = leases
        self._processors = processors
        self._codec = codec
        self._dead_letters = dead_letters
        self._config = config or WorkerConfig()
        self._metrics = metrics or Metrics("worker")
        self._on_cycle = on_cycle
        self._expiry = ExpiryTracker(self._config.failover_seconds)
        self._owned: dict[str, _Owned] = {}
        self._leases: dict[str, Lease] = {}
        self._closed: dict[str, int] = {}  # closed shard -> EndingSequenceNumber
        self._reader_stop = asyncio.Event()
        self._stop = asyncio.Event()  # run()'s: no lease is taken once it is set
        self._next_discovery = 0.0

    @property
    def owned_shards(self) -> list[str]:
        """Shards this worker holds a lease on and reads (lost ones excluded at once)."""
        return sorted(shard for shard, owned in self._owned.items() if not owned.handle.lost)

    @property
    def lag_ms(self) -> dict[str, int | None]:
        return {shard: owned.handle.millis_behind for shard, owned in self._owned.items()}

    async def run(self, stop: asyncio.Event) -> None:
        """Coordinate until ``stop``; then stop readers, checkpoint, release leases. A
        reader's or the renewal task's permanent failure is raised here, after the shutdown."""
        await self._executors.leases(self._store.ensure_table)
        log.info("worker %s starting on %s", self.worker_id, self._stream)
        stopping = asyncio.Event()  # set to stop the renewal task
        renewal = asyncio.create_task(self._renew_forever(stopping), name="lease-renewal")
        try:
            self._stop = stop
            while not stop.is_set():
                if renewal.done():
                    renewal.result()  # the renewal task's failure surfaces in its owner
                await _unless_stopped(self._cycle(), stop, self._config.renew_seconds)
                await _first_of(stop, renewal, self._config.renew_seconds)
        finally:
            await self._shutdown(stopping, renewal)

    async def _renew_forever(self, stop: asyncio.Event) -> None:
        """Each renew_seconds, start a renewal of every owned lease whose last one ended; never
        waits for one (a renewal hanging on a partitioned lease table holds no other). A lease
        not renewed for ``give_up_seconds`` is given up locally, before any other worker can
        see it expired, so a worker cut off from the lease table stops reading in time."""
        loop = asyncio.get_running_loop()
        running: dict[str, asyncio.Task[None]] = {}
        started: dict[str, float] = {}  # when each lease's current or last renewal began
        every = self._config.renew_seconds
        try:
            while not stop.is_set():
                now = loop.time()
                for shard_id in set(running) - set(self._owned):
                    running.pop(shard_id).cancel()
                for shard_id in set(started) - set(self._owned):
                    del started[shard_id]
                for shard_id, owned in list(self._owned.items()):
                    handle = owned.handle
                    task = running.get(shard_id)
                    due = now - started.get(shard_id, -every) >= every
                    if task is not None and task.done():
                        del running[shard_id]
                        _renewal_result(handle, task)
                    elif task is not None and due:
                        log.warning("renewal of %s still waiting for the lease table", shard_id)
                        started[shard_id] = now  # warn once per renew interval
                    if shard_id not in running and not handle.lost and due:
                        running[shard_id] = asyncio.create_task(handle.renew())
                        started[shard_id] = now
                    silent = now - handle.renewed_at
                    if not handle.lost and silent >= self._config.give_up_seconds:
                        handle.lost = True
                        log.warning(
                            "lease %s not renewed for %.1fs: giving it up", shard_id, silent
                        )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self._config.renewal_check_seconds)
            if running:
                await asyncio.wait(running.values())  # the caller bounds this wait
        finally:
            for task in running.values():
                task.cancel()

    async def _cycle(self) -> None:
        now = asyncio.get_running_loop().time
        try:
            if now() >= self._next_discovery:
                await self._discover()
                self._next_discovery = now() + self._config.discovery_seconds
            await self._reap()
            leases = await self._executors.leases(self._store.list_leases)
        except AwsError as err:
            if not err.retriable:
                raise
            log.warning("lease cycle failed, retrying next cycle: %s", err)
            return
        self._leases = {lease.shard_id: lease for lease in leases}
        for shard_id, owned in list(self._owned.items()):
            current = self._leases.get(shard_id)
            if current is None or current.owner != self.worker_id:
                owned.handle.lost = True  # stolen or expired behind our back
        expired = self._expiry.observe(leases, now())
        for lease in leases:
            # Ours in the table, yet nobody reads it: a take or renewal was applied but
            # answered with an error, or its reader died on an AWS error. No worker would
            # ever take it (it looks alive and ours), so take it again now.
            if (
                lease.owner == self.worker_id
                and lease.shard_id not in self._owned
                and not lease.finished
            ):
                await self._take(lease)
        # The takes go out together (each its own conditional update): a worker starting on
        # many shards reads all of them one round trip after the lease scan, not one per shard.
        await asyncio.gather(
            *(
                self._take(lease, stolen=lease.owner is not None and lease.shard_id not in expired)
                for lease in choose_leases(leases, self.worker_id, expired)
            )
        )
        self._on_cycle()  # a full lease cycle worked: the worker is alive

    async def _discover(self) -> None:
        shards = await self._executors.reads(self._kinesis.list_shards)
        known = {shard.shard_id for shard in shards}
        creates = []
        for shard in shards:
            if shard.ending_sequence is not None:
                self._closed[shard.shard_id] = shard.ending_sequence
            parents = tuple(sorted(parent for parent in shard.parents if parent in known))
            start = "TRIM_HORIZON" if parents else self._config.initial_position
            if shard.shard_id not in self._leases:
                creates.append(
                    self._executors.leases(self._store.create, shard.shard_id, parents, start)
                )
        await asyncio.gather(*creates)  # conditional puts, independent of each other

    async def _take(self, lease: Lease, *, stolen: bool = False) -> None:
        if self._stop.is_set():
            return  # stopping: take nothing more (a lease taken now would outlive the worker)
        try:
            taken = await self._executors.leases(self._store.take, lease, self.worker_id)
        except LeaseLostError:
            return  # someone else was faster
        except AwsError as err:
            if not err.retriable:
                raise
            log.warning("could not take lease %s, retrying next cycle: %s", lease.shard_id, err)
            return
        if lease.owner and lease.owner != self.worker_id:
            log.info("took lease %s from %s", lease.shard_id, lease.owner)
        else:
            log.info("took lease %s", lease.shard_id, extra={"shard_id": lease.shard_id})
        self._leases[taken.shard_id] = taken
        handle = LeaseHandle(
            taken,
            self._store,
            run=self._executors.leases,
            renewed_at=asyncio.get_running_loop().time(),
        )
        reader = ShardReader(
            handle,
            self._kinesis,
            self._stream,
            self._processors(taken.shard_id),
            self._codec,
            self._dead_letters,
            config=self._config.reader,
            parents_done=lambda: parents_finished(handle.lease, self._leases),
            closed_ending=lambda: self._closed.get(taken.shard_id),
            metrics=self._metrics,
            executors=self._executors,
        )
        # A live owner learns it lost the lease at its next renewal; reading only after that
        # keeps a stolen shard from being read by two workers at once.
        delay = 1.5 * self._config.renew_seconds if stolen else 0.0
        task = asyncio.create_task(self._read_after(delay, reader), name=f"shard-{taken.shard_id}")
        self._owned[taken.shard_id] = _Owned(handle, task)

    async def _read_after(self, delay: float, reader: ShardReader) -> Outcome:
        if delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reader_stop.wait(), timeout=delay)
        return await reader.run(self._reader_stop)

    async def _reap(self) -> None:
        """Collect finished readers; a reader's crash surfaces here, in its owner."""
        for shard_id, owned in list(self._owned.items()):
            if not owned.task.done():
                continue
            del self._owned[shard_id]
            try:
                outcome = owned.task.result()  # re-raises a reader's exception
            except Exception as err:
                # Readers retry retriable failures themselves; one that still escaped (or a
                # botocore error) leaves the lease ours: it is read again from its checkpoint
                # at the next cycle. Anything else is permanent and ends the worker.
                if not (is_aws_error(err) or (isinstance(err, AwsError) and err.retriable)):
                    raise
                log.warning("reader of %s failed, restarting it: %s", shard_id, err)
                continue
            if outcome is Outcome.SHARD_END:
                self._leases[shard_id] = owned.handle.lease
                await self._executors.leases(self._release, owned.handle)

    def _release(self, handle: LeaseHandle) -> None:
        lease = handle.lease
        try:
            try:
                self._store.release(lease)
            except LeaseLostError:
                # A renewal abandoned in flight (cancelled once its reader ended) may still
                # have bumped the counter: still ours, release that version; else it is gone.
                current = next(
                    (x for x in self._store.list_leases() if x.shard_id == lease.shard_id), None
                )
                if current is not None and current.owner == lease.owner == self.worker_id:
                    self._store.release(current)
        except LeaseLostError:
            pass
        except AwsError as err:
            log.warning("could not release lease %s: %s", lease.shard_id, err)

    async def _shutdown(self, stopping: asyncio.Event, renewal: asyncio.Task[None]) -> None:
        # Readers stop first (their last checkpoints need the leases still renewed).
        self._reader_stop.set()
        owned = list(self._owned.values())
        if owned:
            _, pending = await asyncio.wait(
                [o.task for o in owned], timeout=self._config.shutdown_seconds
            )
            for task in pending:
                task.cancel()
        # Then renewals, letting those in flight finish (bounded) rather than cancelling them:
        # one applied in the table but cancelled here would leave a stale counter, and the
        # release below would fail its condition and leave the lease owned until it expires.
        stopping.set()
        await asyncio.wait({renewal}, timeout=self._config.renew_seconds)
        renewal.cancel()
        await asyncio.gather(renewal, return_exceptions=True)  # run() raised its error already
        for item in owned:
            if item.task.done() and not item.task.cancelled() and item.task.exception():
                log.error("reader failed: %s", item.task.exception())
        releases = [
            self._executors.leases(self._release, o.handle) for o in owned if not o.handle.lost
        ]
        if releases:
            # Releasing only saves the next owner the failover wait: never wait long for it
            # (a partitioned lease table would hold the exit for every call's timeouts).
            _, unreleased = await asyncio.wait(
                [asyncio.ensure_future(release) for release in releases],
                timeout=max(1.0, self._config.renew_seconds),
            )
            if unreleased:
                log.warning("%d leases not released; they expire instead", len(unreleased))
        self._owned.clear()
        log.info("worker %s stopped", self.worker_id)


async def _unless_stopped(
    work: Coroutine[Any, Any, None], stop: asyncio.Event, grace: float
) -> None:
    """Run ``work`` until it ends, or until ``grace`` seconds after ``stop`` is set: a lease
    cycle hanging on an unreachable lease table must not hold up a SIGTERM, but one whose
    take is in flight finishes it (the call completes in the table whether or not it is
    awaited), so the lease it took is registered, and released by the shutdown, instead of
    staying this worker's until it expires."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            await asyncio.wait({task}, timeout=grace)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _first_of(stop: asyncio.Event, task: asyncio.Task[None], seconds: float) -> None:
    """Wait up to ``seconds`` for ``stop`` or for ``task`` to end."""
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({stopped, task}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()


def _renewal_result(handle: LeaseHandle, task: asyncio.Task[None]) -> None:
    """A finished renewal: retriable lease-table errors are logged, others raised."""
    if task.cancelled():
        return
    err = task.exception()
    if err is None:
        return
    if isinstance(err, AwsError) and err.retriable:
        log.warning("could not renew %s: %s", handle.lease.shard_id, err)
        return
    raise err
