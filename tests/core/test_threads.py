"""The daemon thread pools: a hung call never holds up shutdown or the exit."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import wait

import pytest

from core.threads import (
    LEASE_CALLS,
    POOL_SIZES,
    SINK_WRITES,
    DaemonThreadPool,
    run_in,
    shared_pool,
)

pytestmark = pytest.mark.timeout(30)


def test_shutdown_does_not_wait_for_a_hung_call_and_queued_calls_still_run() -> None:
    pool = DaemonThreadPool(1, "t")
    release = threading.Event()
    hung = pool.submit(release.wait, 30)
    queued = pool.submit(lambda: "ran")
    pool.shutdown(wait=True)  # returns at once although a call is running
    assert not hung.done()
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("t-"))
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: None)
    release.set()
    assert hung.result(timeout=5) is True
    assert queued.result(timeout=5) == "ran"  # its waiter woke


def test_shutdown_cancelling_queued_calls_wakes_their_waiters() -> None:
    pool = DaemonThreadPool(1, "test")
    release = threading.Event()
    running = pool.submit(release.wait)
    queued = pool.submit(lambda: 1)
    pool.shutdown(wait=True, cancel_futures=True)  # returns although a call is still running
    assert queued.cancelled() and not running.done()
    done, _ = wait([queued], timeout=5)  # a concurrent.futures waiter sees the cancel
    assert done == {queued}
    release.set()
    assert running.result(timeout=5) is True
    with pytest.raises(RuntimeError):
        pool.submit(lambda: 1)


def test_threads_grow_with_pending_calls_up_to_the_bound() -> None:
    pool = DaemonThreadPool(3, "grow")
    release = threading.Event()
    futures = [pool.submit(release.wait, 30) for _ in range(5)]
    assert len(pool._threads) == 3
    release.set()
    assert all(f.result(timeout=5) for f in futures)
    pool.shutdown()


def test_sequential_calls_reuse_one_thread() -> None:
    pool = DaemonThreadPool(4, "reuse")
    for i in range(5):
        assert pool.submit(lambda n: n * 2, i).result(timeout=5) == i * 2
    assert len(pool._threads) == 1
    pool.shutdown()


def test_run_in_returns_raises_and_can_be_abandoned() -> None:
    async def main() -> None:
        assert await run_in(SINK_WRITES, lambda a, b: a + b, 1, b=2) == 3
        with pytest.raises(ValueError, match="bad"):
            await run_in(SINK_WRITES, _raise)
        never = threading.Event()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(run_in(SINK_WRITES, never.wait, 5), timeout=0.1)
        never.set()

    asyncio.run(main())


def test_pools_per_purpose_are_separate_so_hung_sink_writes_never_block_lease_calls() -> None:
    release = threading.Event()
    sinks = shared_pool(SINK_WRITES)
    assert shared_pool(SINK_WRITES) is sinks and shared_pool(LEASE_CALLS) is not sinks
    hung = [sinks.submit(release.wait, 30) for _ in range(POOL_SIZES[SINK_WRITES] + 2)]

    async def main() -> str:
        return await run_in(LEASE_CALLS, lambda: "renewed")

    try:
        assert asyncio.run(main()) == "renewed"
    finally:
        release.set()
    assert all(f.result(timeout=5) for f in hung)


def test_a_bad_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="max_workers"):
        DaemonThreadPool(0, "none")


def _raise() -> None:
    raise ValueError("bad")
