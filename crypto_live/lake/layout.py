"""Where everything lives in the lake, and the UTC hours jobs work in; pure, no I/O.

Hours are whole epoch hours (``event_time_ms // 3_600_000``), so neighbours are ``h - 1`` and
``h + 1`` and a day is 24 consecutive integers.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Final

from crypto_live.lake import LakeError

MS_PER_HOUR: Final = 3_600_000
HOURS_PER_DAY: Final = 24

PARQUET_PREFIX: Final = "parquet"
CANDLES_PREFIX: Final = "candles_1m"
REPORTS_PREFIX: Final = "reports"
ORDERS_PREFIX: Final = "orders"
MANIFEST_PREFIX: Final = "meta/manifests"

# Partition values end up in keys: only what Binance symbols and stream kinds look like.
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_]+$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def hour_of_ms(epoch_ms: int) -> int:
    return epoch_ms // MS_PER_HOUR


def hour_start(hour: int) -> datetime:
    return datetime.fromtimestamp(hour * 3600, UTC)


def hour_of(when: datetime) -> int:
    """The hour holding ``when``; a naive time is taken as UTC."""
    aware = when if when.tzinfo else when.replace(tzinfo=UTC)
    return int(aware.timestamp()) // 3600


def day_of_hour(hour: int) -> date:
    return hour_start(hour).date()


def first_hour_of_day(day: date) -> int:
    return hour_of(datetime(day.year, day.month, day.day, tzinfo=UTC))


def hours_of_day(day: date) -> range:
    first = first_hour_of_day(day)
    return range(first, first + HOURS_PER_DAY)


def parse_time(text: str) -> datetime:
    """``2026-11-23``, ``2026-11-23T03``, ``2026-11-23T03:00:00Z`` ...; naive means UTC."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as err:
        raise LakeError(
            f"invalid time (got {text!r}): expected ISO 8601, e.g. 2026-11-23T03"
        ) from err
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError as err:
        raise LakeError(f"invalid date (got {text!r}): expected YYYY-MM-DD") from err


def hour_range(
    start: str | None, end: str | None, day: str | None, now: datetime, default_hours: int
) -> range:
    """Hours ``[start, end)``; or one ``day``; by default the last ``default_hours`` to now."""
    if day is not None:
        if start is not None or end is not None:
            raise LakeError("give either --date or --from/--to, not both")
        return hours_of_day(parse_day(day))
    last = hour_of(now) + 1  # the current hour is included: it is recomputed as it fills
    stop = hour_of(parse_time(end)) if end is not None else last
    first = hour_of(parse_time(start)) if start is not None else stop - default_hours
    if first >= stop:
        raise LakeError(f"empty range: --from {start} is not before --to {end}")
    return range(first, stop)


def yesterday(now: datetime) -> date:
    return (now.astimezone(UTC) - timedelta(days=1)).date()


def raw_folder(raw_prefix: str, hour: int) -> str:
    """``{prefix}/year=YYYY/month=MM/day=DD/hour=HH/``, as the S3 consumer writes them."""
    when = hour_start(hour)
    base = raw_prefix.strip("/")
    partitions = f"year={when:%Y}/month={when:%m}/day={when:%d}/hour={when:%H}/"
    return f"{base}/{partitions}" if base else partitions


def _safe(name: str, value: str) -> str:
    if not _SAFE_VALUE.match(value):
        raise LakeError(f"refusing {name} {value!r} as a partition value")
    return value


def stream_kind(stream_type: str) -> str:
    """``btcusdt@miniTicker`` -> ``miniTicker`` (the stream partition of the Parquet table)."""
    _, _, kind = stream_type.partition("@")
    return _safe("stream", kind or stream_type)


def compacted_key(stream_type: str, symbol: str, hour: int) -> str:
    when = hour_start(hour)
    return (
        f"{PARQUET_PREFIX}/stream={stream_kind(stream_type)}/symbol={_safe('symbol', symbol)}"
        f"/date={when:%Y-%m-%d}/part-{when:%H}.parquet"
    )


def candles_key(symbol: str, hour: int) -> str:
    when = hour_start(hour)
    return (
        f"{CANDLES_PREFIX}/symbol={_safe('symbol', symbol)}"
        f"/date={when:%Y-%m-%d}/part-{when:%H}.parquet"
    )


def report_keys(day: date) -> tuple[str, str]:
    """(CSV key, Parquet key) of one day's report. The two formats never share a folder:
    Athena reads every object under a table's location as the table's format."""
    name = f"date={day.isoformat()}/daily-report-{day.isoformat()}"
    return f"{REPORTS_PREFIX}/csv/{name}.csv", f"{REPORTS_PREFIX}/parquet/{name}.parquet"


def orders_keys(symbol: str, day: date, name: str) -> tuple[str, str]:
    """(CSV key, Parquet key) of an orders snapshot file ``name`` of ``symbol`` on ``day``:
    ``orders/{csv,parquet}/symbol=S/date=D/name.{csv,parquet}`` (the Athena ``orders`` table
    reads the Parquet folder)."""
    if not _SAFE_NAME.match(name):
        raise LakeError(f"refusing file name {name!r} in the lake")
    folder = f"symbol={_safe('symbol', symbol)}/date={day.isoformat()}/{name}"
    return f"{ORDERS_PREFIX}/csv/{folder}.csv", f"{ORDERS_PREFIX}/parquet/{folder}.parquet"


def manifest_key(job: str, day: date) -> str:
    return f"{MANIFEST_PREFIX}/{_safe('job', job)}/date={day.isoformat()}.json"


def unit_name(hour: int) -> str:
    """An hour's name inside its day's manifest: ``00`` .. ``23``."""
    return f"{hour_start(hour):%H}"


def hour_label(hour: int) -> str:
    """``2026-11-23T03``: an hour as people read it."""
    return f"{hour_start(hour):%Y-%m-%dT%H}"


def symbol_of_key(key: str) -> str:
    """The ``symbol=`` partition value of a Parquet or candles key."""
    for segment in key.split("/"):
        if segment.startswith("symbol="):
            return segment.removeprefix("symbol=")
    raise LakeError(f"no symbol= partition in {key!r}")
