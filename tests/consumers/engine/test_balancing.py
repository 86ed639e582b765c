"""Lease balancing and expiry (pure)."""

from __future__ import annotations

from collections import Counter

from consumers.engine.balancing import ExpiryTracker, assignable, choose_leases
from consumers.engine.leases import SHARD_END, Lease


def lease(shard: str, owner: str | None = None, counter: int = 1, **kw: object) -> Lease:
    return Lease(
        shard,
        owner,
        counter,
        str(kw.get("checkpoint", "TRIM_HORIZON")),
        0,
        tuple(kw.get("parents", ())),
    )  # type: ignore[arg-type]


def simulate(workers: list[str], shards: int, rounds: int = 10) -> Counter[str]:
    """Workers take turns choosing; returns how many leases each ends with."""
    leases = {f"s{i}": lease(f"s{i}") for i in range(shards)}
    for _ in range(rounds):
        for worker in workers:
            for chosen in choose_leases(list(leases.values()), worker, expired=set()):
                leases[chosen.shard_id] = lease(chosen.shard_id, worker, chosen.counter + 1)
    return Counter(lease.owner for lease in leases.values() if lease.owner)


def test_three_workers_four_shards_spread_one_or_two_each() -> None:
    counts = simulate(["a", "b", "c"], 4)
    assert sum(counts.values()) == 4
    assert sorted(counts.values()) == [1, 1, 2]


def test_balance_for_several_sizes() -> None:
    for workers, shards in [(1, 4), (2, 4), (2, 5), (4, 4), (3, 10), (5, 2)]:
        counts = simulate([f"w{i}" for i in range(workers)], shards, rounds=20)
        assert sum(counts.values()) == shards
        assert max(counts.values()) == -(-shards // workers)  # ceil
        if workers <= shards:
            assert len(counts) == workers
            assert min(counts.values()) >= shards // workers


def test_at_most_one_steal_per_cycle() -> None:
    leases = [lease(f"s{i}", "a") for i in range(6)]
    assert len(choose_leases(leases, "b", expired=set())) == 1


def test_expired_leases_are_taken_before_stealing() -> None:
    leases = [lease("s0", "a"), lease("s1", "dead"), lease("s2", "dead"), lease("s3", "b")]
    chosen = choose_leases(leases, "b", expired={"s1", "s2"})
    assert [c.shard_id for c in chosen] == ["s1"]  # b has 1, target ceil(4/2)=2


def test_children_wait_for_parents_and_finished_shards_are_ignored() -> None:
    leases = [
        lease("parent", "a"),
        lease("child1", parents=("parent",)),
        lease("child2", parents=("parent",)),
        lease("old", checkpoint=SHARD_END),
    ]
    assert [lease.shard_id for lease in assignable(leases)] == ["parent"]
    leases[0] = lease("parent", None, checkpoint=SHARD_END)
    assert [lease.shard_id for lease in assignable(leases)] == ["child1", "child2"]


def test_expiry_tracker_uses_counter_progress_not_clocks() -> None:
    tracker = ExpiryTracker(failover_seconds=10)
    assert tracker.observe([lease("s0", "a", 1)], now=0) == set()
    assert tracker.observe([lease("s0", "a", 1)], now=9.9) == set()
    assert tracker.observe([lease("s0", "a", 1)], now=10.0) == {"s0"}
    assert tracker.observe([lease("s0", "a", 2)], now=11) == set()  # renewed
    assert tracker.observe([lease("s0", None, 3)], now=30) == set()  # unowned: free, not expired
