"""`crypto-live redrive`: put undelivered producer dead letters back into Kinesis.

Objects under errors/producer/ holding undelivered Kinesis records (whole KPL aggregates)
are re-put, then moved to errors/producer-redriven/: a second run puts nothing. Entries whose
outcome is unknown (their PutRecords never answered: Kinesis may hold them already) are first
looked up in the stream, read from shortly before their records were received to its tip;
only their user records not found there are put again. Dead letters of malformed input are
counted by reason and left where they are.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.settings import Settings

if TYPE_CHECKING:
    from producer.aggregation import PutEntry
    from producer.redrive import DeadLetterFile, RecordKey, RedrivePlan
    from producer.shard_map import ShardMap

NAME = "redrive"
HELP = "put undelivered producer dead letters (errors/producer/) back into Kinesis"
SOURCE_PREFIX = "errors/producer/"
REDRIVEN_PREFIX = "errors/producer-redriven/"
PROGRESS_EVERY = 100_000  # user records between progress lines of the stream check
_GET_RECORDS_ATTEMPTS = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run", action="store_true", help="count what would be re-put, put nothing"
    )
    parser.add_argument(
        "--file",
        dest="files",
        action="append",
        type=Path,
        metavar="PATH",
        help="a local dead-letter file the producer wrote when S3 was unreachable (repeatable)",
    )


@dataclass
class _Source:
    where: str  # s3://bucket/key or a local path, for messages
    lines: DeadLetterFile
    key: str | None = None  # the S3 key
    path: Path | None = None  # the local file


def run(settings: Settings, args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from core.aws import AwsClients
    from core.errors import CryptoLiveError
    from producer.kinesis import KinesisStreamWriter

    clients = AwsClients(settings)
    writer = KinesisStreamWriter(clients.kinesis, settings.kinesis_stream_name)
    tally = _Tally(dry_run=args.dry_run)
    try:
        sources = _read_files(args.files) if args.files else _read_bucket(settings, clients)
        present = _check_stream(clients.kinesis, settings.kinesis_stream_name, sources)
        shard_map = _ShardMapOnce(writer.list_shards)
        for source in sources:
            if source.path is not None:
                _redrive_file(settings, clients, writer, source, present, shard_map, tally)
            else:
                _redrive_object(settings, clients, writer, source, present, shard_map, tally)
    except (BotoCoreError, ClientError) as err:
        raise CryptoLiveError(f"redrive stopped, an AWS call failed: {err}") from err
    finally:
        clients.close()
    tally.report()
    return 1 if tally.failed_objects else 0


class _Tally:
    def __init__(self, dry_run: bool) -> None:
        self.dry_run = dry_run
        self.objects = self.entries = self.user_records = self.failed_objects = 0
        self.found = self.unchecked = 0
        self.reasons: Counter[str] = Counter()

    def report(self) -> None:
        verb = "would put" if self.dry_run else "put"
        failed = f"; {self.failed_objects} objects failed, left in place"
        print(
            f"redrive: {verb} {self.entries} Kinesis records ({self.user_records} user records) "
            f"from {self.objects} dead-letter objects back into the stream; {self.found} user "
            "records whose outcome was unknown were found in the stream already, not re-put"
            + (failed if self.failed_objects else "")
        )
        if self.unchecked:
            print(f"  {self.unchecked} unknown-outcome entries unreadable, re-put unchecked")
        if self.reasons:
            total = sum(self.reasons.values())
            print(f"malformed-input dead letters, not re-put ({total}), by reason:")
            for reason, count in self.reasons.most_common():
                print(f"  {count:>8}  {reason}")


class _ShardMapOnce:
    """The stream's shard map, listed at the first need only."""

    def __init__(self, list_shards: Callable[[], ShardMap]) -> None:
        self._list = list_shards
        self._map: ShardMap | None = None

    def __call__(self) -> ShardMap:
        if self._map is None:
            self._map = self._list()
        return self._map


# -- reading the dead letters -----------------------------------------------------------------


def _read_bucket(settings: Settings, clients: Any) -> list[_Source]:
    from producer.redrive import sort_lines

    s3, bucket = clients.s3, settings.s3_bucket
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=SOURCE_PREFIX)
    keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
    sources = []
    for key in keys:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        sources.append(_Source(f"s3://{bucket}/{key}", sort_lines(body.splitlines()), key=key))
    return sources


def _read_files(paths: list[Path]) -> list[_Source]:
    from core.errors import CryptoLiveError
    from producer.redrive import sort_lines

    sources = []
    for path in paths:
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise CryptoLiveError(f"cannot read dead-letter file {path}: {err.strerror}") from err
        sources.append(_Source(str(path), sort_lines(raw.splitlines()), path=path))
    return sources


# -- the stream check -----------------------------------------------------------------------


def _user_records(entry: PutEntry) -> list[tuple[str, bytes]]:
    """(partition key, data) of the user records inside one dead-lettered entry."""
    from consumers.engine.deaggregation import DeaggregationError, deaggregate

    record = {
        "Data": entry.data,
        "PartitionKey": entry.partition_key,
        "SequenceNumber": "0",
        "ApproximateArrivalTimestamp": None,
    }
    try:
        return [(user.partition_key, user.data) for user in deaggregate(record)]
    except DeaggregationError as err:
        raise ValueError(str(err)) from err


def _check_stream(kinesis: Any, stream: str, sources: list[_Source]) -> set[RecordKey]:
    """Keys of the user records in the stream since shortly before the earliest unknown-
    outcome record was received; empty (and no read) when no entry's outcome is unknown."""
    from producer.redrive import check_from_us
    from schemas.codec import default_codec

    since = check_from_us((s.lines for s in sources), _user_records, default_codec())
    if since is None:
        return set()
    unknown = sum(sum(s.lines.unknown) for s in sources)
    when = datetime.fromtimestamp(since / 1_000_000, UTC)
    print(
        f"checking the stream from {when:%Y-%m-%dT%H:%M:%SZ} to its tip for {unknown} "
        "entries whose outcome is unknown"
    )
    return read_keys_since(kinesis, stream, when)


def read_keys_since(
    kinesis: Any, stream: str, when: datetime, progress_every: int = PROGRESS_EVERY
) -> set[RecordKey]:
    """The record keys of every user record of every shard from ``when`` to the tip as it was
    when the read began (what arrives later cannot be an earlier put)."""
    from core.aws import list_shards

    started = datetime.now(UTC)
    present: set[RecordKey] = set()
    for shard in list_shards(kinesis, stream):
        shard_id = shard["ShardId"]
        iterator: str | None = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard_id, ShardIteratorType="AT_TIMESTAMP", Timestamp=when
        )["ShardIterator"]
        read = 0
        while iterator:
            response = _get_records(kinesis, stream, shard_id, iterator)
            before = read
            read += _add_keys(response["Records"], present)
            if read // progress_every > before // progress_every:
                print(f"  {shard_id}: {read} user records checked so far")
            records = response["Records"]
            newest = records[-1]["ApproximateArrivalTimestamp"] if records else None
            if response.get("MillisBehindLatest", 0) == 0 or (
                newest is not None and newest >= started
            ):
                break
            iterator = response.get("NextShardIterator")
        print(f"  {shard_id}: {read} user records in the stream since {when:%H:%M:%S}")
    return present


def _add_keys(records: list[dict[str, Any]], present: set[RecordKey]) -> int:
    from consumers.engine.deaggregation import DeaggregationError, deaggregate
    from producer.redrive import record_key

    count = 0
    for raw in records:
        try:
            users = deaggregate(raw)
        except DeaggregationError:
            continue  # corrupt in the stream: no dead letter's record can match it
        present.update(record_key(user.partition_key, user.data) for user in users)
        count += len(users)
    return count


def _get_records(kinesis: Any, stream: str, shard_id: str, iterator: str) -> dict[str, Any]:
    """One GetRecords, retried on throttling and transient errors; an expired iterator is not
    retried here (the read is minutes long at most)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from core.backoff import Backoff

    backoff = Backoff(base=0.2, cap=5.0)
    for attempt in range(_GET_RECORDS_ATTEMPTS):
        try:
            response: dict[str, Any] = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            return response
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            retriable = code == "ProvisionedThroughputExceededException" or status >= 500
            if not retriable or attempt + 1 == _GET_RECORDS_ATTEMPTS:
                raise
        except BotoCoreError:
            if attempt + 1 == _GET_RECORDS_ATTEMPTS:
                raise
        print(f"  {shard_id}: GetRecords failed, retrying")
        time.sleep(backoff.delay(attempt))
    raise AssertionError("unreachable")  # pragma: no cover


# -- putting and moving ---------------------------------------------------------------------


def _put(
    writer: Any,
    source: _Source,
    present: set[RecordKey],
    shard_map: Callable[[], ShardMap],
    tally: _Tally,
) -> bool:
    """Put what ``source`` still needs in the stream; True when all of it was put (or, in a
    dry run, would be)."""
    from producer.redrive import plan_redrive, put_entries

    lines = source.lines
    tally.reasons.update(lines.reasons)
    tally.objects += 1
    plan: RedrivePlan = plan_redrive(lines, present, _user_records)
    entries = plan.entries(shard_map)
    if not tally.dry_run and entries:
        refused = put_entries(writer, entries)
        if refused:
            tally.failed_objects += 1
            print(f"  {source.where}: {len(refused)} records not put ({refused[0][1]}), left")
            return False
    tally.entries += len(entries)
    tally.user_records += plan.user_records
    tally.found += plan.found
    tally.unchecked += plan.unchecked
    verb = "would put" if tally.dry_run else "put"
    found = f", {plan.found} found in the stream already" if plan.found else ""
    print(f"  {source.where}: {verb} {plan.user_records} records{found}")
    return True


def _redrive_object(
    settings: Settings,
    clients: Any,
    writer: Any,
    source: _Source,
    present: set[RecordKey],
    shard_map: Callable[[], ShardMap],
    tally: _Tally,
) -> None:
    s3, bucket, key, lines = clients.s3, settings.s3_bucket, source.key or "", source.lines
    if not lines.entries:
        tally.reasons.update(lines.reasons)
        return
    if not _put(writer, source, present, shard_map, tally) or tally.dry_run:
        return
    # Moved only after every entry was put: a failure or crash before re-puts it next time.
    moved = REDRIVEN_PREFIX + key.removeprefix(SOURCE_PREFIX)
    s3.put_object(Bucket=bucket, Key=moved, Body=b"".join(lines.entry_lines))
    if lines.other_lines:
        s3.put_object(Bucket=bucket, Key=key, Body=b"".join(lines.other_lines))
    else:
        s3.delete_object(Bucket=bucket, Key=key)


def _redrive_file(
    settings: Settings,
    clients: Any,
    writer: Any,
    source: _Source,
    present: set[RecordKey],
    shard_map: Callable[[], ShardMap],
    tally: _Tally,
) -> None:
    from core.dead_letters import S3DeadLetterStore, parse_dead_letter_line
    from producer.service import DEAD_LETTER_SOURCE

    path, lines = source.path or Path(), source.lines
    if lines.entries:
        if not _put(writer, source, present, shard_map, tally) or tally.dry_run:
            return
    else:
        tally.reasons.update(lines.reasons)
        if tally.dry_run:
            return
    # Bad input from the file goes to S3 like any other dead letter, then the file is retired.
    others = []
    for line in lines.other_lines:
        try:
            others.append(parse_dead_letter_line(line))
        except ValueError:
            continue
    if others:
        key = S3DeadLetterStore(clients.s3, settings.s3_bucket).put(DEAD_LETTER_SOURCE, others)
        print(f"  {path}: {len(others)} malformed-input dead letters written to {key}")
    path.rename(path.with_name(path.name + ".redriven"))
