"""Which leases a worker should take: expired ones first, then steal to even out (pure)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from consumers.engine.leases import Lease


@dataclass
class ExpiryTracker:
    """Notices leases whose counter stopped moving: no clocks are compared across workers.

    A lease is expired when its owner has not renewed it (bumped its counter) for the
    failover time as measured on this worker's own monotonic clock.
    """

    failover_seconds: float
    _seen: dict[str, tuple[int, float]] = field(default_factory=dict)

    def observe(self, leases: Iterable[Lease], now: float) -> set[str]:
        """Record the counters read at ``now``; returns the ids of expired leases."""
        expired: set[str] = set()
        current: dict[str, tuple[int, float]] = {}
        for lease in leases:
            counter, since = self._seen.get(lease.shard_id, (lease.counter, now))
            if counter != lease.counter:
                since = now
            current[lease.shard_id] = (lease.counter, since)
            if lease.owner is not None and now - since >= self.failover_seconds:
                expired.add(lease.shard_id)
        self._seen = current
        return expired


def parents_finished(lease: Lease, by_id: dict[str, Lease]) -> bool:
    """A child shard may be read once every parent still in the table reached SHARD_END."""
    return all(by_id[parent].finished for parent in lease.parents if parent in by_id)


def assignable(leases: Sequence[Lease]) -> list[Lease]:
    """Leases worth owning: not finished, and their parents are finished."""
    by_id = {lease.shard_id: lease for lease in leases}
    return [lease for lease in leases if not lease.finished and parents_finished(lease, by_id)]


def choose_leases(leases: Sequence[Lease], me: str, expired: set[str]) -> list[Lease]:
    """The leases ``me`` should try to take now (KCL's rule, at most one steal per cycle)."""
    active = assignable(leases)
    if not active:
        return []

    def live_owner(lease: Lease) -> str | None:
        if lease.owner == me:
            return me
        return None if lease.owner is None or lease.shard_id in expired else lease.owner

    counts = Counter(owner for lease in active if (owner := live_owner(lease)) is not None)
    workers = set(counts) | {me}
    target = math.ceil(len(active) / len(workers))
    mine = counts[me]
    if mine >= target:
        return []
    free = [lease for lease in active if live_owner(lease) is None]
    if free:
        return free[: target - mine]
    others = [(count, owner) for owner, count in counts.items() if owner != me]
    if not others:
        return []
    most, victim = max(others)
    if most > target or (most == target and mine < target - 1):
        return [next(lease for lease in active if lease.owner == victim)]
    return []
