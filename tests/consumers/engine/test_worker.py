"""The scheduler (Worker) on virtual time: in-memory Kinesis, lease store and sink, no network.

Invariants checked throughout: a shard's sink writes never overlap across workers, every
record reaches the sink, and (where no lease changes hands mid-batch) exactly once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import pytest

from consumers.engine.executors import EngineExecutors, InlineRunner
from consumers.engine.leases import SHARD_END, Lease, MemoryLeaseStore
from consumers.engine.memory_kinesis import MemoryKinesis, unavailable
from consumers.engine.shard_reader import LeaseHandle, ReaderConfig
from consumers.engine.worker import Worker, WorkerConfig
from core.backoff import Backoff
from core.errors import AwsError
from tests.consumers.engine import virtual_time
from tests.consumers.engine.fakes import CODEC, MemorySink, no_dead_letters, put

FAILOVER = 3.0
CONFIG = WorkerConfig(
    failover_seconds=FAILOVER,
    discovery_seconds=2.0,
    shutdown_seconds=5.0,
    reader=ReaderConfig(
        idle_seconds=0.2,
        limit=50,
        parent_poll_seconds=0.5,
        retry_backoff=Backoff(base=0.5, cap=2.0),
        wall_clock_ms=lambda: 0,
    ),
)


class CutOffStore:
    """One worker's view of the shared lease table; ``down`` cuts it off (retriable errors)."""

    def __init__(self, store: MemoryLeaseStore) -> None:
        self._store = store
        self.down = False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise unavailable(f"lease table {name}")
            return method(*args, **kwargs)

        return call


_P = ParamSpec("_P")
_T = TypeVar("_T")


class AnsweredLate:
    """Lease calls applied at once but answered ``seconds`` later (a slow network)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def __call__(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        result = fn(*args, **kwargs)
        await asyncio.sleep(self.seconds)
        return result


def make_worker(
    name: str,
    kinesis: MemoryKinesis,
    store: Any,
    sink: MemorySink,
    executors: EngineExecutors | None = None,
) -> Worker:
    return Worker(
        kinesis=kinesis,
        stream=kinesis.stream,
        leases=store,
        processors=lambda shard_id: sink.processor(name, shard_id),
        codec=CODEC,
        dead_letters=no_dead_letters,
        config=CONFIG,
        worker_id=name,
        executors=executors or EngineExecutors.inline(),
    )


class Cluster:
    """Workers of one group on one stream, with a sampler of lease owners."""

    def __init__(self, shards: int = 4) -> None:
        self.kinesis = MemoryKinesis(shards)
        self.store = MemoryLeaseStore()
        self.sink = MemorySink()
        self.stops: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.workers: dict[str, Worker] = {}
        self.samples: list[dict[str, str | None]] = []

    def owners(self) -> dict[str, str | None]:
        return {lease.shard_id: lease.owner for lease in self.store.list_leases()}

    def start(self, name: str, store: Any = None) -> Worker:
        worker = make_worker(name, self.kinesis, store or self.store, self.sink)
        self.workers[name] = worker
        self.stops[name] = asyncio.Event()
        self.tasks[name] = asyncio.create_task(worker.run(self.stops[name]))
        return worker

    async def stop(self, name: str) -> None:
        self.stops[name].set()
        await self.tasks[name]

    async def sample_for(self, seconds: float, every: float = 0.1) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            self.samples.append(self.owners())
            await asyncio.sleep(every)

    async def feed(self, indexes: range, per_second: int = 100) -> None:
        """Put records steadily (so reads and lease changes interleave)."""
        for start in range(indexes.start, indexes.stop, per_second // 10):
            put(self.kinesis, range(start, min(start + per_second // 10, indexes.stop)))
            await asyncio.sleep(0.1)


def run(scenario: Callable[[Cluster], Coroutine[Any, Any, None]], shards: int = 4) -> Cluster:
    cluster = Cluster(shards)
    virtual_time.run(scenario(cluster))
    return cluster


def spread(owners: dict[str, str | None]) -> list[int]:
    return sorted(Counter(o for o in owners.values() if o).values())


def test_one_worker_takes_every_lease_reads_everything_and_releases_at_shutdown() -> None:
    async def scenario(c: Cluster) -> None:
        put(c.kinesis, range(400))
        c.start("a")
        await c.sample_for(10)
        assert spread(c.owners()) == [4]
        await c.stop("a")

    c = run(scenario)
    assert c.sink.writes == dict.fromkeys(range(400), 1)
    leases = c.store.list_leases()
    assert {lease.owner for lease in leases} == {None}  # released at shutdown
    for lease in leases:  # checkpointed at each shard's last record
        assert lease.checkpoint == c.kinesis.records(lease.shard_id)[-1]["SequenceNumber"]


def test_two_workers_balance_without_reading_a_shard_at_once() -> None:
    async def scenario(c: Cluster) -> None:
        feeding = asyncio.create_task(c.feed(range(3_000)))
        c.start("a")
        await c.sample_for(5)
        c.start("b")
        await c.sample_for(25)
        await feeding
        await c.sample_for(5)
        assert spread(c.owners()) == [2, 2]
        await c.stop("a")
        await c.stop("b")

    c = run(scenario)
    assert c.sink.overlaps == 0
    assert c.sink.missing(range(3_000)) == []
    # A steal re-reads from the victim's checkpoint: at most its last batch twice.
    assert max(c.sink.writes.values()) <= 2


def test_worker_cut_off_from_the_lease_table_gives_up_before_another_takes_over() -> None:
    async def scenario(c: Cluster) -> None:
        feeding = asyncio.create_task(c.feed(range(4_000)))
        a_store = CutOffStore(c.store)
        a = c.start("a", a_store)
        await c.sample_for(3)
        c.start("b")
        await c.sample_for(20)
        assert spread(c.owners()) == [2, 2]
        a_store.down = True  # a keeps its sink and Kinesis, loses the lease table
        await c.sample_for(2 * FAILOVER / 3 + 0.5)
        assert a.owned_shards == []  # given up locally: a reads nothing it may not own
        await c.sample_for(2 * FAILOVER)
        assert spread(c.owners()) == [4]  # b took the expired leases
        a_store.down = False
        await feeding
        await c.sample_for(25)
        assert spread(c.owners()) == [2, 2]  # and a gets its share back
        await c.stop("a")
        await c.stop("b")

    c = run(scenario)
    assert c.sink.overlaps == 0
    assert c.sink.missing(range(4_000)) == []


def test_sink_out_of_retries_backs_off_the_shard_and_the_worker_lives_on() -> None:
    async def scenario(c: Cluster) -> None:
        c.sink.fail_writes = 6
        put(c.kinesis, range(1_000))
        c.start("a")
        await c.sample_for(30)
        assert not c.tasks["a"].done()  # still running
        await c.stop("a")

    c = run(scenario)
    assert c.sink.failures == 6
    assert c.sink.writes == dict.fromkeys(range(1_000), 1)  # a failed write stored nothing


def test_sink_stalled_for_three_failovers_keeps_its_leases_and_loses_nothing() -> None:
    """The issue's sink-stall test: the stalled worker keeps renewing (renewals never wait
    behind sink writes), so no lease moves, no shard is read by two workers at once, and once
    the sink answers again every record is in it exactly once."""

    async def scenario(c: Cluster) -> None:
        feeding = asyncio.create_task(c.feed(range(3_000)))
        c.start("a")
        await c.sample_for(3)
        c.start("b")
        await c.sample_for(20)
        assert spread(c.owners()) == [2, 2]
        before = c.owners()
        marks.append(Counter(c.sink.writes))
        c.sink.stall, c.sink.stalled = asyncio.Event(), "a"
        c.samples.clear()
        await c.sample_for(3 * FAILOVER)
        assert all(sample == before for sample in c.samples)  # never changed hands
        c.sink.stall.set()
        await feeding
        await c.sample_for(10)
        assert c.owners() == before
        await c.stop("a")
        await c.stop("b")

    marks: list[Counter[int]] = []
    c = run(scenario)
    assert c.sink.overlaps == 0
    assert c.sink.missing(range(3_000)) == []
    # From the stall on, every record was written exactly once (before it, the balancing
    # steals may re-write a victim's last uncheckpointed batch: at-least-once, idempotent sinks).
    since = c.sink.writes - marks[0]
    assert set(since) | set(marks[0]) == set(range(3_000))
    assert set(since.values()) == {1}
    assert max(c.sink.writes.values()) <= 2


@pytest.mark.parametrize("reshard", ["split", "merge"])
def test_children_are_read_only_after_their_parents_ended(reshard: str) -> None:
    async def scenario(c: Cluster) -> None:
        put(c.kinesis, range(500))
        c.start("a")
        await c.sample_for(1)
        if reshard == "split":
            c.kinesis.split_shard("shardId-000000000000", 2**126)
        else:
            c.kinesis.merge_shards("shardId-000000000000", "shardId-000000000001")
        put(c.kinesis, range(500, 1_000))
        await c.sample_for(15)
        await c.stop("a")

    c = run(scenario, shards=2)
    assert c.sink.writes == dict.fromkeys(range(1_000), 1)
    leases = {lease.shard_id: lease for lease in c.store.list_leases()}
    parents = {p for lease in leases.values() for p in lease.parents}
    assert parents and all(leases[p].checkpoint == SHARD_END for p in parents)
    order = [(shard, method) for _, shard, method in c.sink.calls]
    for child in (s for s, lease in leases.items() if lease.parents):
        first_read = order.index((child, "process"))
        for parent in leases[child].parents:
            assert order.index((parent, "shard_ended")) < first_read


def test_a_permanent_lease_table_error_surfaces_in_run_after_a_clean_shutdown() -> None:
    async def scenario(c: Cluster) -> None:
        put(c.kinesis, range(100))
        c.start("a")
        await c.sample_for(3)
        c.store.outage(AwsError("AccessDenied", retriable=False, code="AccessDeniedException"))
        with pytest.raises(AwsError, match="AccessDenied"):
            await c.tasks["a"]

    c = run(scenario)
    assert c.sink.writes == dict.fromkeys(range(100), 1)


def test_a_lease_table_outage_is_ridden_out() -> None:
    async def scenario(c: Cluster) -> None:
        feeding = asyncio.create_task(c.feed(range(1_000)))
        c.start("a")
        await c.sample_for(3)
        c.store.outage(unavailable("lease table"))
        await asyncio.sleep(2 * FAILOVER)
        c.store.outage(None)
        await feeding
        await c.sample_for(15)
        assert spread(c.owners()) == [4]
        await c.stop("a")

    c = run(scenario)
    assert c.sink.missing(range(1_000)) == []


def test_leases_are_created_once_for_every_shard_at_the_initial_position() -> None:
    async def scenario(c: Cluster) -> None:
        c.start("a")
        c.start("b")
        await c.sample_for(5)
        await c.stop("a")
        await c.stop("b")

    c = run(scenario)
    assert [(lease.shard_id, lease.checkpoint) for lease in c.store.list_leases()] == [
        (f"shardId-{i:012d}", "TRIM_HORIZON") for i in range(4)
    ]
    assert isinstance(c.store.list_leases()[0], Lease)


@pytest.mark.parametrize("stop_at", [5.0, 5.25, 5.5, 5.75, 6.0, 6.3, 6.6, 6.9])
def test_shutdown_releases_every_lease_even_with_a_renewal_in_flight(stop_at: float) -> None:
    """A renewal applied in the table but not yet answered at SIGTERM is waited for, not
    cancelled: cancelling it left a stale counter, so the release failed and the lease stayed
    owned (test_consumer_group caught it once)."""

    async def scenario(c: Cluster) -> None:
        slow = EngineExecutors(AnsweredLate(0.4), InlineRunner(), InlineRunner())
        worker = make_worker("a", c.kinesis, c.store, c.sink, slow)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        put(c.kinesis, range(100))
        await asyncio.sleep(stop_at)
        stop.set()
        await task

    c = run(scenario)
    assert {lease.owner for lease in c.store.list_leases()} == {None}
    assert c.sink.writes == dict.fromkeys(range(100), 1)


def test_release_after_a_renewal_applied_behind_the_handles_back_still_frees_the_lease() -> None:
    """A renewal cancelled once its reader ended (SHARD_END) may still bump the counter in the
    table; the release then re-reads the lease and frees it if it is still ours."""
    kinesis, store = MemoryKinesis(1), MemoryLeaseStore()
    worker = make_worker("w1", kinesis, store, MemorySink())
    store.create("shardId-000000000000", (), SHARD_END)
    (lease,) = store.list_leases()
    handle = LeaseHandle(store.take(lease, "w1"), store)
    store.renew(handle.lease, None)  # applied in the table; the handle never saw the answer
    worker._release(handle)
    assert [(x.owner, x.finished) for x in store.list_leases()] == [(None, True)]
    # Taken by another worker meanwhile: the release leaves it alone.
    (lease,) = store.list_leases()
    stale = LeaseHandle(store.take(lease, "w1"), store)
    (lease,) = store.list_leases()
    store.take(lease, "w2")
    worker._release(stale)
    assert [x.owner for x in store.list_leases()] == ["w2"]


@pytest.mark.parametrize("stop_after", [1.7, 1.9, 2.05, 2.2, 2.35, 2.5, 2.65, 2.8, 2.95, 3.1])
def test_a_take_in_flight_at_sigterm_is_finished_and_released(stop_after: float) -> None:
    """A worker picking up the leases another released at its own shutdown gets SIGTERM
    while a take is applied in the table but not yet answered: the cycle finishes that take
    (no new one starts) and the shutdown releases it; cancelling it left the lease owned
    until it expired (test_consumer_group caught it in CI)."""

    async def scenario(c: Cluster) -> None:
        put(c.kinesis, range(100))
        c.start("a")
        await c.sample_for(5)
        assert spread(c.owners()) == [4]
        slow = EngineExecutors(AnsweredLate(0.4), InlineRunner(), InlineRunner())
        late = make_worker("b", c.kinesis, c.store, c.sink, slow)
        stop = asyncio.Event()
        task = asyncio.create_task(late.run(stop))
        await asyncio.sleep(2.0)  # b's cycles run; a still holds every lease
        await c.stop("a")  # releases all four: b's next cycle takes them, each answered late
        await asyncio.sleep(stop_after)
        stop.set()
        await task

    c = run(scenario)
    assert {lease.owner for lease in c.store.list_leases()} == {None}
    assert c.sink.writes == dict.fromkeys(range(100), 1)
