"""Lease calls never queue behind sink writes: the engine's pools are separate per purpose."""

from __future__ import annotations

import asyncio
import threading

from consumers.engine.executors import EngineExecutors, PoolRunner
from consumers.engine.leases import Lease, MemoryLeaseStore
from consumers.engine.shard_reader import LeaseHandle
from core.threads import LEASE_CALLS, POOL_SIZES, SINK_WRITES, run_in


def test_renewals_run_while_every_sink_thread_is_stuck() -> None:
    store = MemoryLeaseStore()
    store.create("shard-1", (), "TRIM_HORIZON")
    handle = LeaseHandle(store.take(Lease("shard-1", None, 0, "TRIM_HORIZON"), "me"), store)
    assert isinstance(handle.run, PoolRunner) and handle.run.purpose == LEASE_CALLS
    release = threading.Event()

    async def scenario() -> int:
        # Twice as many stuck sink writes as the sink pool has threads: all of it is taken.
        stuck = [
            asyncio.ensure_future(run_in(SINK_WRITES, release.wait, 60))
            for _ in range(2 * POOL_SIZES[SINK_WRITES])
        ]
        try:
            for _ in range(5):
                await asyncio.wait_for(handle.renew(), timeout=10)
            return handle.lease.counter
        finally:
            release.set()
            await asyncio.gather(*stuck)

    assert asyncio.run(scenario()) == 6  # taken once, renewed five times
    assert not handle.lost


def test_the_default_executors_use_the_engine_pools() -> None:
    executors = EngineExecutors()
    purposes = [r.purpose for r in (executors.leases, executors.reads, executors.dead_letters)]  # type: ignore[attr-defined]
    assert SINK_WRITES not in purposes
    assert len(set(purposes)) == 3
