"""How many Kinesis records the next GetRecords asks for, so that a page holds a bounded number
of user records however many of them each KPL aggregate carries.

GetRecords' Limit counts Kinesis records, and one aggregate holds hundreds of user records: a
consumer far behind its shard would get up to 10,000 aggregates, millions of records, in one
page (AWS caps a page at 10 MiB, moto does not), and hold them all, decoded, until the sink has
written them. So the Limit asked for is the bound on user records divided by the most user
records per Kinesis record a page has averaged so far (not the last page's average: pages of
small aggregates at the tip, flushed by the producer's timer, must not open the next read to a
backlog of full ones). Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ReadLimit:
    """The Limit for a shard's next GetRecords: at most ``max_kinesis_records`` (the API's own
    Limit), and at most ``max_user_records`` user records by what the pages so far held; never
    below 1. Before any page it is ``max_kinesis_records`` (nothing is known yet)."""

    max_kinesis_records: int
    max_user_records: int
    _per_record: float = field(default=1.0, init=False)  # the highest page average

    def __post_init__(self) -> None:
        if self.max_kinesis_records < 1 or self.max_user_records < 1:
            raise ValueError(
                "limits must be >= 1: "
                f"{self.max_kinesis_records} Kinesis, {self.max_user_records} user records"
            )

    @property
    def next(self) -> int:
        """Kinesis records to ask for."""
        by_users = int(self.max_user_records / self._per_record)
        return max(1, min(self.max_kinesis_records, by_users))

    def observe(self, kinesis_records: int, user_records: int) -> None:
        """A page held ``kinesis_records`` records carrying ``user_records`` user records (an
        empty page, or one whose records were all skipped, tells nothing)."""
        if kinesis_records > 0 and user_records > 0:
            self._per_record = max(self._per_record, user_records / kinesis_records)
