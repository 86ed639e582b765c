"""Kinesis records the producer could not deliver, and their dead letters (whole aggregates).

Each keeps the PutEntry whole (data, partition key, explicit hash key), so `crypto-live redrive`
re-puts exactly what the producer would have put. The reason says why; every reason starts with
``UNDELIVERED_PREFIX``, which sets these apart from dead letters of malformed input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from core.dead_letters import DeadLetter
from producer.aggregation import PutEntry

UNDELIVERED_PREFIX: Final = "undelivered to Kinesis: "
NOT_SENT: Final = UNDELIVERED_PREFIX + "not put before the shutdown deadline"
UNANSWERED: Final = (
    UNDELIVERED_PREFIX + "PutRecords unanswered at the shutdown deadline "
    "(outcome unknown: it may be in the stream too)"
)
RETRIED_UNANSWERED: Final = (
    UNDELIVERED_PREFIX + "a PutRecords attempt went unanswered, then not put again before the "
    "shutdown deadline (outcome unknown: it may be in the stream too)"
)


def rejected_reason(error: str) -> str:
    """The reason of an entry Kinesis refused with an error a retry cannot fix."""
    return f"{UNDELIVERED_PREFIX}rejected, not retriable: {error}"


@dataclass(frozen=True, slots=True)
class Undelivered:
    """One Kinesis record (a KPL aggregate or a raw record) that did not reach the stream."""

    entry: PutEntry
    reason: str
    outcome_unknown: bool = False

    def dead_letter(self, received_at: int) -> DeadLetter:
        """As a dead letter: the entry's data as raw bytes, its keys in ``put_entry``."""
        entry = self.entry
        return DeadLetter(
            entry.data,
            self.reason,
            received_at,
            {
                "partition_key": entry.partition_key,
                "explicit_hash_key": entry.explicit_hash_key,
                "shard_id": entry.shard_id,
                "user_records": entry.user_records,
                "outcome_unknown": self.outcome_unknown,
            },
        )


def is_undelivered(letter: DeadLetter) -> bool:
    """Whether this dead letter is an undelivered Kinesis record (not malformed input)."""
    return letter.put_entry is not None


def entry_of(letter: DeadLetter) -> PutEntry:
    """The PutEntry an undelivered dead letter holds; ValueError when it holds none."""
    meta = letter.put_entry
    if meta is None:
        raise ValueError("not an undelivered Kinesis record")
    try:
        key = meta["partition_key"]
        hash_key = meta.get("explicit_hash_key")
        if not isinstance(key, str) or not (hash_key is None or isinstance(hash_key, str)):
            raise TypeError("partition_key and explicit_hash_key must be strings")
        return PutEntry(
            str(meta.get("shard_id", "")), key, letter.raw, hash_key, int(meta["user_records"])
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"bad put_entry in dead letter: {err}") from err
