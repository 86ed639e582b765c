"""Which path a consumed record takes in a sink; one stream carries several record types.

Both consumer groups route alike: miniTicker records go where they always went; a closed kline
(``closed`` true: the minute is over and the candle final) is a candle; an open kline (the
minute still forming) is skipped and counted; a record of a type the sink has no handler for
is dead-lettered with the reason, and the shard goes on. Pure, except ``dead_letter_unhandled``.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from consumers.engine.records import ConsumedRecord, UndecodableRecord
from core.errors import CryptoLiveError
from core.threads import DEAD_LETTERS, run_in
from schemas.codec import KLINE_SCHEMA, MINITICKER_SCHEMA

log = logging.getLogger(__name__)

# Writes dead letters durably (consumers.app.dead_letter_writer): errors/<app>/..., named by
# shard position, so a re-read overwrites them instead of doubling them.
RecordDeadLetters = Callable[[list[UndecodableRecord]], None]


class UnhandledRecordError(CryptoLiveError):
    """A record of a type the sink has no handler for, and no dead-letter store to keep it."""


class Route(enum.StrEnum):
    """Where one record goes."""

    TICKER = "ticker"  # a miniTicker record
    CANDLE = "candle"  # a closed kline
    OPEN_KLINE = "open_kline"  # skipped: a later update of the same minute supersedes it
    UNHANDLED = "unhandled"  # dead-lettered


def route_of(record: ConsumedRecord) -> Route:
    """The route of one record, by its schema name (and ``closed`` for a kline)."""
    if record.schema == MINITICKER_SCHEMA:
        return Route.TICKER
    if record.schema == KLINE_SCHEMA:
        return Route.CANDLE if record.record.get("closed") is True else Route.OPEN_KLINE
    return Route.UNHANDLED


@dataclass(frozen=True, slots=True)
class RoutedRecords:
    """One batch split by route, each part in shard order."""

    tickers: Sequence[ConsumedRecord]
    candles: Sequence[ConsumedRecord]
    open_klines: int
    unhandled: Sequence[ConsumedRecord]


def split(records: Sequence[ConsumedRecord]) -> RoutedRecords:
    """``records`` by route; a batch of miniTicker records only is passed on as it is."""
    if all(r.schema == MINITICKER_SCHEMA for r in records):
        return RoutedRecords(records, (), 0, ())
    parts: dict[Route, list[ConsumedRecord]] = {route: [] for route in Route}
    for record in records:
        parts[route_of(record)].append(record)
    return RoutedRecords(
        parts[Route.TICKER],
        parts[Route.CANDLE],
        len(parts[Route.OPEN_KLINE]),
        parts[Route.UNHANDLED],
    )


def unhandled_reason(schema: str, consumer: str) -> str:
    """The dead letter's reason: ``no handler for schema X in consumer-dynamodb``."""
    return f"no handler for schema {schema} in {consumer}"


def unhandled_letters(records: Sequence[ConsumedRecord], consumer: str) -> list[UndecodableRecord]:
    """The dead letters of records ``consumer`` has no handler for: their bytes and why."""
    return [
        UndecodableRecord(
            r.shard_id, r.position, r.arrival, r.data, unhandled_reason(r.schema, consumer)
        )
        for r in records
    ]


async def dead_letter_unhandled(
    records: Sequence[ConsumedRecord], consumer: str, write: RecordDeadLetters | None
) -> None:
    """Keep ``records`` as dead letters, durably, before the batch may be checkpointed."""
    if not records:
        return
    schemas = sorted({r.schema for r in records})
    if write is None:
        raise UnhandledRecordError(
            f"{unhandled_reason(schemas[0], consumer)}, and no dead-letter store to keep it"
        )
    log.warning(
        "%d records of %s have no handler in %s: dead-lettered",
        len(records),
        ", ".join(schemas),
        consumer,
        extra={"shard_id": records[0].shard_id},
    )
    await run_in(DEAD_LETTERS, write, unhandled_letters(records, consumer))
