"""How many Kinesis records the next GetRecords asks for, so that a page holds a bounded number
of user records however many of them each KPL aggregate carries.

GetRecords' Limit counts Kinesis records, and one aggregate holds hundreds of user records: a
consumer far behind its shard would get up to 10,000 aggregates, millions of records, in one
page (AWS caps a page at 10 MiB, moto does not), and hold them all, decoded, until the sink has
written them. So the Limit asked for is the bound on user records divided by the most user
records per Kinesis record a page has averaged so far (not the last page's average: pages of
small aggregates at the tip, flushed by the producer's timer, must not open the next read to a
backlog of full ones). Until a page has shown what a record carries, the Limit is 10: ten
Kinesis records are at most 10 MiB whatever they hold (AWS's own page cap), ~2,200 records in
our producer's aggregates, where a first page of 10,000 (a reader just started, or a lease
taken back, over a backlog) would hold two million.

The bound also follows the sink's pace: a page holds about PAGE_SECONDS of what the last page
took from GetRecords' answer to the sink's (decoding and writing), PACED_FLOOR user records at
least. A sink that writes slowly (DynamoDB on an emulator: ~2,500 records a second) is not
handed pages it spends many seconds over while holding them decoded: a catch-up of the DynamoDB
consumer then holds what it holds at the tip, and its memory stays flat; a fast sink still
gets full pages. Pure: no I/O, no clock (the seconds are given).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

# Kinesis records a shard's first GetRecords asks for at most, before any page was seen: a
# record is at most 1 MiB, so this is AWS's 10 MiB page cap, reached only by full-size ones.
FIRST_LIMIT: Final = 10
# A page holds about this many seconds of the sink's last measured pace...
PAGE_SECONDS: Final = 2.0
# ...and never fewer user records than this by pace: a page's time includes what the sink
# waits on per batch (the DynamoDB sink's LATEST_WAIT), so pages much smaller than this would
# pay that wait more often than they save memory; a page at the tip, small and waited on, says
# little about how fast the sink writes a backlog.
PACED_FLOOR: Final = 2_000


@dataclass(slots=True)
class ReadLimit:
    """The Limit for a shard's next GetRecords: at most ``max_kinesis_records`` (the API's own
    Limit), and at most ``max_user_records`` user records (or, when fewer, PAGE_SECONDS of the
    sink's last pace) by what the pages so far held; never below 1. Until a page has yielded
    user records it is at most FIRST_LIMIT."""

    max_kinesis_records: int
    max_user_records: int
    _per_record: float | None = field(default=None, init=False)  # the highest page average
    _paced: int | None = field(default=None, init=False)  # user records by the sink's pace

    def __post_init__(self) -> None:
        if self.max_kinesis_records < 1 or self.max_user_records < 1:
            raise ValueError(
                "limits must be >= 1: "
                f"{self.max_kinesis_records} Kinesis, {self.max_user_records} user records"
            )

    @property
    def next(self) -> int:
        """Kinesis records to ask for."""
        users = self.max_user_records
        if self._paced is not None:
            users = min(users, self._paced)
        if self._per_record is None:
            return min(self.max_kinesis_records, users, FIRST_LIMIT)
        by_users = int(users / self._per_record)
        return max(1, min(self.max_kinesis_records, by_users))

    def observe(self, kinesis_records: int, user_records: int) -> None:
        """``kinesis_records`` records of a page yielded ``user_records`` user records (a page
        that yielded none, empty or at or before the checkpoint, tells nothing)."""
        if kinesis_records > 0 and user_records > 0:
            average = user_records / kinesis_records
            self._per_record = max(self._per_record or 1.0, average)

    def handed(self, user_records: int, seconds: float) -> None:
        """A page's ``user_records`` took ``seconds`` from GetRecords' answer until the sink
        had them: later pages hold about PAGE_SECONDS of that pace (PACED_FLOOR at least)."""
        if user_records > 0 and seconds > 0:
            self._paced = max(PACED_FLOOR, int(user_records / seconds * PAGE_SECONDS))


@dataclass(slots=True)
class ReadPace:
    """When a shard's next GetRecords may go: ``idle_seconds`` after the last at the tip (KCL's
    idleTimeBetweenReadsInMillis), at once while it is behind, as long as no more than
    ``per_second`` reads fall in any second (AWS allows 5 per shard, shared by every consumer
    group). Pure: times are given."""

    idle_seconds: float
    per_second: int = 5
    _starts: deque[float] = field(default_factory=deque, init=False)

    def started(self, at: float) -> None:
        """A read started at ``at`` (monotonic seconds)."""
        self._starts.append(at)
        while len(self._starts) > self.per_second:
            self._starts.popleft()

    def pause(self, now: float, behind: bool) -> float:
        """Seconds to wait before the next read: ``behind`` when the last page had records
        and the shard's tip is further on."""
        last = self._starts[-1] if self._starts else now
        if not behind:
            return max(0.0, last + self.idle_seconds - now)
        if len(self._starts) < self.per_second:
            return 0.0
        return max(0.0, self._starts[0] + 1.0 - now)
