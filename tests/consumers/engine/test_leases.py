"""Lease store contract: the in-memory fake and the DynamoDB table behave the same."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from consumers.engine.leases import (
    SHARD_END,
    DynamoLeaseStore,
    LeaseLostError,
    LeaseStore,
    MemoryLeaseStore,
)
from core.aws import AwsClients


@pytest.fixture(params=["memory", pytest.param("dynamodb", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest) -> Iterator[LeaseStore]:
    if request.param == "memory":
        yield MemoryLeaseStore()
        return
    aws: AwsClients = request.getfixturevalue("aws")
    dynamo = DynamoLeaseStore(aws.dynamodb, "test-app-leases")
    dynamo.ensure_table()
    dynamo.ensure_table()  # idempotent
    yield dynamo


def test_create_is_idempotent_and_lists_parents(store: LeaseStore) -> None:
    assert store.create("shard-1", (), "TRIM_HORIZON") is True
    assert store.create("shard-1", (), "LATEST") is False
    assert store.create("shard-2", ("shard-0", "shard-1"), "TRIM_HORIZON") is True
    leases = store.list_leases()
    assert [lease.parents for lease in leases] == [(), ("shard-0", "shard-1")]
    assert [(lease.shard_id, lease.owner, lease.counter, lease.checkpoint) for lease in leases] == [
        ("shard-1", None, 0, "TRIM_HORIZON"),
        ("shard-2", None, 0, "TRIM_HORIZON"),
    ]


def test_only_one_of_two_racing_takers_wins(store: LeaseStore) -> None:
    store.create("s", (), "TRIM_HORIZON")
    seen = store.list_leases()[0]
    mine = store.take(seen, "a")
    with pytest.raises(LeaseLostError):
        store.take(seen, "b")  # b read the same counter: its conditional write fails
    (current,) = store.list_leases()
    assert current.owner == "a" and current.counter == mine.counter == 1


def test_renew_checkpoint_release_and_steal(store: LeaseStore) -> None:
    store.create("s", (), "TRIM_HORIZON")
    a = store.take(store.list_leases()[0], "a")
    a = store.renew(a, millis_behind=1500)
    a = store.checkpoint(a, "49590338271490256608559692538361571095921575989136588898", 3)
    (read,) = store.list_leases()
    assert (read.counter, read.millis_behind, read.checkpoint_sub) == (2, 1500, 3)
    assert read.position is not None and read.position.sub_sequence == 3
    assert read.heartbeat_ms > 0
    b = store.take(read, "b")  # steal: conditional on the counter only
    with pytest.raises(LeaseLostError):
        store.renew(a, None)
    with pytest.raises(LeaseLostError):
        store.checkpoint(a, "1", 0)
    b = store.checkpoint(b, SHARD_END)
    store.release(b)
    (final,) = store.list_leases()
    assert final.owner is None and final.finished and final.checkpoint == SHARD_END
    with pytest.raises(LeaseLostError):
        store.release(b)  # stale counter
