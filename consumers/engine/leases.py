"""Shard leases (the KCL protocol): one item per shard in ``<app>-leases``.

Every change is a conditional write on the lease counter, so two workers can never both
own a shard: whoever wrote last bumped the counter, and the other's next write fails.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from consumers.engine.records import Position
from core.aws_errors import aws_error, error_code
from core.errors import CryptoLiveError

SHARD_END: Final = "SHARD_END"


class LeaseLostError(CryptoLiveError):
    """A conditional lease write failed: another worker owns or changed the lease."""


@dataclass(frozen=True, slots=True)
class Lease:
    """One shard's lease as last read or written by this worker."""

    shard_id: str
    owner: str | None
    counter: int
    checkpoint: str  # TRIM_HORIZON, LATEST, AT_TIMESTAMP:<iso>, a sequence number, SHARD_END
    checkpoint_sub: int = 0
    parents: tuple[str, ...] = ()
    heartbeat_ms: int = 0
    millis_behind: int | None = None

    @property
    def finished(self) -> bool:
        return self.checkpoint == SHARD_END

    @property
    def position(self) -> Position | None:
        """The checkpointed record position, when the checkpoint is a sequence number."""
        if self.checkpoint.isdigit():
            return Position(int(self.checkpoint), self.checkpoint_sub)
        return None


class LeaseStore(Protocol):
    """The lease table. Writes raise LeaseLostError when their condition fails; any other
    failure is a ``core.errors.AwsError`` whose ``retriable`` says whether to try again."""

    def ensure_table(self) -> None: ...

    def list_leases(self) -> list[Lease]: ...

    def create(self, shard_id: str, parents: tuple[str, ...], checkpoint: str) -> bool: ...

    def take(self, lease: Lease, owner: str) -> Lease: ...

    def renew(self, lease: Lease, millis_behind: int | None) -> Lease: ...

    def checkpoint(self, lease: Lease, checkpoint: str, sub: int = 0) -> Lease: ...

    def release(self, lease: Lease) -> None: ...


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class MemoryLeaseStore:
    """In-memory LeaseStore with the same conditions, for unit tests."""

    def __init__(self) -> None:
        self._items: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._faults: deque[Exception] = deque()
        self._outage: Exception | None = None

    def fail_next(self, error: Exception, times: int = 1) -> None:
        """The next ``times`` calls raise ``error`` (e.g. a retriable AwsError)."""
        with self._lock:
            self._faults.extend([error] * times)

    def outage(self, error: Exception | None) -> None:
        """Every call raises ``error`` until ``outage(None)``."""
        with self._lock:
            self._outage = error

    def _check(self) -> None:
        if self._outage is not None:
            raise self._outage
        if self._faults:
            raise self._faults.popleft()

    def ensure_table(self) -> None:
        with self._lock:
            self._check()

    def list_leases(self) -> list[Lease]:
        with self._lock:
            self._check()
            return sorted(self._items.values(), key=lambda lease: lease.shard_id)

    def create(self, shard_id: str, parents: tuple[str, ...], checkpoint: str) -> bool:
        with self._lock:
            self._check()
            if shard_id in self._items:
                return False
            self._items[shard_id] = Lease(shard_id, None, 0, checkpoint, 0, parents)
            return True

    def _swap(self, lease: Lease, new: Lease, *, check_owner: bool) -> Lease:
        with self._lock:
            self._check()
            current = self._items.get(lease.shard_id)
            if (
                current is None
                or current.counter != lease.counter
                or (check_owner and current.owner != lease.owner)
            ):
                raise LeaseLostError(f"lease {lease.shard_id} changed")
            self._items[lease.shard_id] = new
            return new

    def take(self, lease: Lease, owner: str) -> Lease:
        new = replace(lease, owner=owner, counter=lease.counter + 1, heartbeat_ms=_now_ms())
        return self._swap(lease, new, check_owner=False)

    def renew(self, lease: Lease, millis_behind: int | None) -> Lease:
        new = replace(
            lease, counter=lease.counter + 1, heartbeat_ms=_now_ms(), millis_behind=millis_behind
        )
        return self._swap(lease, new, check_owner=True)

    def checkpoint(self, lease: Lease, checkpoint: str, sub: int = 0) -> Lease:
        new = replace(lease, checkpoint=checkpoint, checkpoint_sub=sub)
        return self._swap(lease, new, check_owner=True)

    def release(self, lease: Lease) -> None:
        self._swap(lease, replace(lease, owner=None, counter=lease.counter + 1), check_owner=True)


class DynamoLeaseStore:
    """LeaseStore on a DynamoDB table (on-demand), created if missing."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    @property
    def table(self) -> str:
        return self._table

    def ensure_table(self) -> None:
        with _as_aws_error(f"CreateTable {self._table}"):
            try:
                created = self._db.create_table(
                    TableName=self._table,
                    BillingMode="PAY_PER_REQUEST",
                    KeySchema=[{"AttributeName": "shard_id", "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": "shard_id", "AttributeType": "S"}],
                )
                status = created["TableDescription"].get("TableStatus")
            except ClientError as err:
                if error_code(err) != "ResourceInUseException":
                    raise
                status = self._status()
            if status == "ACTIVE":
                return  # the usual case on a restart (and at once on emulators): no waiter
            self._db.get_waiter("table_exists").wait(
                TableName=self._table, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
            )

    def _status(self) -> str | None:
        """The table's status, or None when DescribeTable fails (the waiter decides then)."""
        try:
            status: str = self._db.describe_table(TableName=self._table)["Table"]["TableStatus"]
        except ClientError:
            return None
        return status

    def list_leases(self) -> list[Lease]:
        leases: list[Lease] = []
        params: dict[str, Any] = {"TableName": self._table, "ConsistentRead": True}
        while True:
            with _as_aws_error(f"Scan {self._table}"):
                page = self._db.scan(**params)
            leases.extend(_from_item(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return sorted(leases, key=lambda lease: lease.shard_id)
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def create(self, shard_id: str, parents: tuple[str, ...], checkpoint: str) -> bool:
        item: dict[str, Any] = {
            "shard_id": {"S": shard_id},
            "lease_counter": {"N": "0"},
            "checkpoint": {"S": checkpoint},
            "checkpoint_sub": {"N": "0"},
        }
        if parents:
            item["parent_shard_ids"] = {"SS": list(parents)}
        try:
            self._db.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(shard_id)",
            )
        except ClientError as err:
            if error_code(err) == "ConditionalCheckFailedException":
                return False
            raise aws_error(err, f"PutItem lease {shard_id}") from err
        except BotoCoreError as err:
            raise aws_error(err, f"PutItem lease {shard_id}") from err
        return True

    def take(self, lease: Lease, owner: str) -> Lease:
        now = _now_ms()
        self._update(
            lease,
            "SET lease_owner = :owner, lease_counter = :next, heartbeat_ms = :now",
            {":owner": {"S": owner}, ":now": {"N": str(now)}},
            check_owner=False,
        )
        return replace(lease, owner=owner, counter=lease.counter + 1, heartbeat_ms=now)

    def renew(self, lease: Lease, millis_behind: int | None) -> Lease:
        now = _now_ms()
        values: dict[str, Any] = {":now": {"N": str(now)}}
        expression = "SET lease_counter = :next, heartbeat_ms = :now"
        if millis_behind is not None:
            expression += ", millis_behind = :behind"
            values[":behind"] = {"N": str(millis_behind)}
        self._update(lease, expression, values, check_owner=True)
        return replace(
            lease, counter=lease.counter + 1, heartbeat_ms=now, millis_behind=millis_behind
        )

    def checkpoint(self, lease: Lease, checkpoint: str, sub: int = 0) -> Lease:
        self._update(
            lease,
            "SET checkpoint = :checkpoint, checkpoint_sub = :sub",
            {":checkpoint": {"S": checkpoint}, ":sub": {"N": str(sub)}},
            check_owner=True,
            bump=False,
        )
        return replace(lease, checkpoint=checkpoint, checkpoint_sub=sub)

    def release(self, lease: Lease) -> None:
        self._update(lease, "REMOVE lease_owner SET lease_counter = :next", {}, check_owner=True)

    def _update(
        self,
        lease: Lease,
        expression: str,
        values: dict[str, Any],
        *,
        check_owner: bool,
        bump: bool = True,
    ) -> None:
        condition = "lease_counter = :counter"
        values = {**values, ":counter": {"N": str(lease.counter)}}
        if bump:
            values[":next"] = {"N": str(lease.counter + 1)}
        if check_owner:
            condition += " AND lease_owner = :me"
            values[":me"] = {"S": lease.owner or ""}
        try:
            self._db.update_item(
                TableName=self._table,
                Key={"shard_id": {"S": lease.shard_id}},
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
            )
        except ClientError as err:
            if error_code(err) == "ConditionalCheckFailedException":
                raise LeaseLostError(f"lease {lease.shard_id} changed") from err
            raise aws_error(err, f"UpdateItem lease {lease.shard_id}") from err
        except BotoCoreError as err:
            raise aws_error(err, f"UpdateItem lease {lease.shard_id}") from err


@contextlib.contextmanager
def _as_aws_error(what: str) -> Iterator[None]:
    """botocore errors raised inside become the project's AwsError."""
    try:
        yield
    except (BotoCoreError, ClientError) as err:
        raise aws_error(err, what) from err


def _from_item(item: dict[str, Any]) -> Lease:
    behind = item.get("millis_behind")
    return Lease(
        shard_id=item["shard_id"]["S"],
        owner=item["lease_owner"]["S"] if "lease_owner" in item else None,
        counter=int(item["lease_counter"]["N"]),
        checkpoint=item["checkpoint"]["S"],
        checkpoint_sub=int(item.get("checkpoint_sub", {"N": "0"})["N"]),
        parents=tuple(sorted(item.get("parent_shard_ids", {"SS": []})["SS"])),
        heartbeat_ms=int(item.get("heartbeat_ms", {"N": "0"})["N"]),
        millis_behind=int(behind["N"]) if behind else None,
    )


def reset_checkpoint(
    store: LeaseStore, shard_id: str, checkpoint: str, sub: int = 0, attempts: int = 10
) -> Lease:
    """Move one shard's checkpoint through the lease protocol, safe while workers run.

    The lease is taken (the owner's next renew or checkpoint fails, so it stops reading),
    its checkpoint set, and it is released so a worker picks it up from there at once.
    """
    for _ in range(attempts):
        current = next((lease for lease in store.list_leases() if lease.shard_id == shard_id), None)
        if current is None:
            store.create(shard_id, (), "TRIM_HORIZON")
            continue
        try:
            taken = store.take(current, "operator")
            moved = store.checkpoint(taken, checkpoint, sub)
            store.release(moved)
        except LeaseLostError:
            continue  # a worker renewed in between: read the lease again
        return replace(moved, owner=None, counter=moved.counter + 1)
    raise LeaseLostError(f"lease {shard_id} kept changing; checkpoint not reset")
