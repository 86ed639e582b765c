"""Put undelivered Kinesis records (dead letters holding whole PutEntries) back into the stream.

Pure of S3: `crypto-live redrive` reads the dead letters and moves the objects; this module
only turns dead-letter lines into entries, decides what to put and puts it, retrying what a
retry can fix. Entries whose outcome is unknown (a PutRecords that never answered may have
been applied) are checked against what the stream already holds: only their user records not
found there are put again, re-aggregated, so a redrive adds no duplicate.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from botocore.exceptions import BotoCoreError, ClientError

from core.backoff import Backoff
from core.dead_letters import DeadLetter, parse_dead_letter_line
from producer.aggregation import PutEntry, ShardAggregator, plan_requests
from producer.kinesis import StreamWriter
from producer.retry import (
    PutResultMismatchError,
    is_permanent_request_error,
    permanent_failures,
    split_put_result,
)
from producer.shard_map import ShardMap
from producer.undelivered import UNANSWERED, entry_of, is_undelivered
from schemas.codec import DecodeError, SingleObjectCodec

UNREADABLE = "unreadable dead-letter line"
# How far before the earliest receipt of an unknown-outcome record the stream check starts:
# covers clock skew between the producer's host and Kinesis' arrival timestamps.
CHECK_MARGIN_US: Final = 5 * 60 * 1_000_000

RecordKey = tuple[str, bytes]  # (partition key, SHA-256 of the user record's data)
UserRecords = Callable[[PutEntry], list[tuple[str, bytes]]]  # (partition key, data) inside


@dataclass
class DeadLetterFile:
    """The lines of one dead-letter object or file, sorted into what redrive re-puts and the
    rest (bad input, kept where it is), with the rest's lines kept byte for byte."""

    entries: list[PutEntry] = field(default_factory=list)
    unknown: list[bool] = field(default_factory=list)  # per entry: its outcome is unknown
    received_at: list[int] = field(default_factory=list)  # per entry: its dead letter's (µs)
    entry_lines: list[bytes] = field(default_factory=list)
    other_lines: list[bytes] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def user_records(self) -> int:
        return sum(entry.user_records for entry in self.entries)


def sort_lines(lines: Iterable[bytes]) -> DeadLetterFile:
    """Sort dead-letter lines into undelivered entries and the rest (counted by reason)."""
    out = DeadLetterFile()
    for line in lines:
        if not line.strip():
            continue
        try:
            letter: DeadLetter | None = parse_dead_letter_line(line)
        except ValueError:
            letter = None
        if letter is not None and is_undelivered(letter):
            try:
                out.entries.append(entry_of(letter))
            except ValueError:
                pass
            else:
                out.unknown.append(outcome_unknown(letter))
                out.received_at.append(letter.received_at)
                out.entry_lines.append(line.rstrip(b"\n") + b"\n")
                continue
        out.other_lines.append(line.rstrip(b"\n") + b"\n")
        out.reasons[letter.reason if letter is not None else UNREADABLE] += 1
    return out


def outcome_unknown(letter: DeadLetter) -> bool:
    """Whether this undelivered entry may have reached the stream (its request never answered)."""
    meta = letter.put_entry or {}
    return meta.get("outcome_unknown") is True or letter.reason == UNANSWERED


def record_key(partition_key: str, data: bytes) -> RecordKey:
    """What identifies one user record in the stream: its key and the digest of its bytes."""
    return partition_key, hashlib.sha256(data).digest()


def check_from_us(
    files: Iterable[DeadLetterFile],
    split: UserRecords,
    codec: SingleObjectCodec,
    margin_us: int = CHECK_MARGIN_US,
) -> int | None:
    """Where the stream check starts (epoch µs): the earliest receipt among the records of
    entries whose outcome is unknown (and their dead letters), less a margin; None when no
    entry's outcome is unknown. A put is only ever made after its records were received."""
    earliest: int | None = None
    for file in files:
        for entry, unknown, received_at in zip(
            file.entries, file.unknown, file.received_at, strict=True
        ):
            if not unknown:
                continue
            times = [received_at]
            try:
                for _, data in split(entry):
                    # Any type the stream carries (miniTicker, kline) has a received_at.
                    times.append(int(codec.decode_typed(data)[1]["received_at"]))
            except (ValueError, KeyError, TypeError, DecodeError):
                pass  # what cannot be read is put again unchecked (see plan_redrive)
            first = min(times)
            earliest = first if earliest is None else min(earliest, first)
    return None if earliest is None else earliest - margin_us


@dataclass
class RedrivePlan:
    """What to put for one dead-letter file: entries as they are, and user records to
    aggregate anew (those of unknown-outcome entries some of whose records were found)."""

    whole: list[PutEntry] = field(default_factory=list)
    records: list[tuple[str, bytes]] = field(default_factory=list)
    found: int = 0  # user records of unknown-outcome entries already in the stream
    unchecked: int = 0  # unknown-outcome entries that could not be read, put whole

    @property
    def user_records(self) -> int:
        return sum(entry.user_records for entry in self.whole) + len(self.records)

    def entries(self, shard_map: Callable[[], ShardMap]) -> list[PutEntry]:
        """The Kinesis records to put: the whole entries, then the re-aggregated records
        (through the producer's aggregator; ``shard_map`` is called only when needed)."""
        if not self.records:
            return list(self.whole)
        aggregator = ShardAggregator(shard_map())
        out = list(self.whole)
        for partition_key, data in self.records:
            out.extend(aggregator.add(partition_key, data))
        return out + aggregator.flush()


def plan_redrive(file: DeadLetterFile, present: set[RecordKey], split: UserRecords) -> RedrivePlan:
    """Entries not sent or refused are put whole, unchecked. Of an entry whose outcome is
    unknown, only the user records not in ``present`` are put (the entry whole when none is
    there). What is planned joins ``present``, so a record is planned once however many dead
    letters hold it."""
    plan = RedrivePlan()
    for entry, unknown in zip(file.entries, file.unknown, strict=True):
        if not unknown:
            plan.whole.append(entry)
            continue
        try:
            records = split(entry)
        except ValueError:
            plan.whole.append(entry)  # unreadable: a duplicate is better than a loss
            plan.unchecked += 1
            continue
        missing = []
        for partition_key, data in records:
            key = record_key(partition_key, data)
            if key not in present:
                present.add(key)
                missing.append((partition_key, data))
        plan.found += len(records) - len(missing)
        if len(missing) == len(records):
            plan.whole.append(entry)  # none landed: put exactly what the producer would have
        else:
            plan.records.extend(missing)
    return plan


def put_entries(
    writer: StreamWriter,
    entries: list[PutEntry],
    *,
    attempts: int = 8,
    backoff: Backoff | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[tuple[PutEntry, str]]:
    """Put every entry as it is (data, partition key, explicit hash key); returns those that
    could not be put, each with the error. Throttling, 5xx and timeouts are retried."""
    backoff = backoff or Backoff(base=0.1, cap=5.0)
    refused: list[tuple[PutEntry, str]] = []
    pending = entries
    last_error: dict[int, str] = {}
    for attempt in range(attempts):
        retry: list[PutEntry] = []
        for request in plan_requests(pending):
            try:
                response = writer.put_records(request)
                failed, _ = split_put_result(request, response)
            except ClientError as err:
                error = err.response.get("Error", {})
                code = str(error.get("Code", ""))
                text = f"{code}: {error.get('Message', '')}"
                status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if is_permanent_request_error(code, status):
                    refused.extend((entry, text) for entry in request)
                else:
                    retry.extend(request)
                    last_error.update((id(entry), text) for entry in request)
                continue
            except (BotoCoreError, PutResultMismatchError) as err:
                retry.extend(request)
                last_error.update((id(entry), str(err)) for entry in request)
                continue
            permanent = permanent_failures(request, response)
            refused.extend(permanent)
            gone = {id(entry) for entry, _ in permanent}
            retry.extend(entry for entry in failed if id(entry) not in gone)
            last_error.update((id(entry), "throttled or failed") for entry in failed)
        if not retry:
            return refused
        pending = retry
        if attempt + 1 < attempts:
            sleep(backoff.delay(attempt))
    return refused + [(entry, last_error.get(id(entry), "failed")) for entry in pending]
