"""Put undelivered Kinesis records (dead letters holding whole PutEntries) back into the stream.

Pure of S3: `crypto-live redrive` reads the dead letters and moves the objects; this module
only turns dead-letter lines into entries and puts them, retrying what a retry can fix.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError

from core.backoff import Backoff
from core.dead_letters import DeadLetter, parse_dead_letter_line
from producer.aggregation import PutEntry, plan_requests
from producer.kinesis import StreamWriter
from producer.retry import (
    PutResultMismatchError,
    is_permanent_request_error,
    permanent_failures,
    split_put_result,
)
from producer.undelivered import entry_of, is_undelivered

UNREADABLE = "unreadable dead-letter line"


@dataclass
class DeadLetterFile:
    """The lines of one dead-letter object or file, sorted into what redrive re-puts and the
    rest (bad input, kept where it is), with the rest's lines kept byte for byte."""

    entries: list[PutEntry] = field(default_factory=list)
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
                out.entry_lines.append(line.rstrip(b"\n") + b"\n")
                continue
        out.other_lines.append(line.rstrip(b"\n") + b"\n")
        out.reasons[letter.reason if letter is not None else UNREADABLE] += 1
    return out


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
