"""`crypto-live redrive`: put undelivered producer dead letters back into Kinesis.

Objects under errors/producer/ holding undelivered Kinesis records (whole KPL aggregates)
are re-put, then moved to errors/producer-redriven/: a second run puts nothing. Dead letters
of malformed input are counted by reason and left where they are.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.settings import Settings

if TYPE_CHECKING:
    from producer.redrive import DeadLetterFile

NAME = "redrive"
HELP = "put undelivered producer dead letters (errors/producer/) back into Kinesis"
SOURCE_PREFIX = "errors/producer/"
REDRIVEN_PREFIX = "errors/producer-redriven/"


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


def run(settings: Settings, args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from core.aws import AwsClients
    from core.errors import CryptoLiveError
    from producer.kinesis import KinesisStreamWriter

    clients = AwsClients(settings)
    writer = KinesisStreamWriter(clients.kinesis, settings.kinesis_stream_name)
    tally = _Tally(dry_run=args.dry_run)
    try:
        if args.files:
            for path in args.files:
                _redrive_file(settings, clients, writer, path, tally)
        else:
            _redrive_bucket(settings, clients, writer, tally)
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
        self.reasons: Counter[str] = Counter()

    def report(self) -> None:
        verb = "would put" if self.dry_run else "put"
        failed = f"; {self.failed_objects} objects failed, left in place"
        print(
            f"redrive: {verb} {self.entries} Kinesis records ({self.user_records} user records) "
            f"from {self.objects} dead-letter objects back into the stream"
            + (failed if self.failed_objects else "")
        )
        if self.reasons:
            total = sum(self.reasons.values())
            print(f"malformed-input dead letters, not re-put ({total}), by reason:")
            for reason, count in self.reasons.most_common():
                print(f"  {count:>8}  {reason}")


def _put(writer: Any, where: str, sorted_lines: DeadLetterFile, tally: _Tally) -> bool:
    """Re-put the undelivered entries among ``sorted_lines``; True when all were put."""
    from producer.redrive import put_entries

    tally.reasons.update(sorted_lines.reasons)
    if not sorted_lines.entries:
        return False
    tally.objects += 1
    if not tally.dry_run:
        refused = put_entries(writer, sorted_lines.entries)
        if refused:
            tally.failed_objects += 1
            print(f"  {where}: {len(refused)} records not put ({refused[0][1]}), left in place")
            return False
    tally.entries += len(sorted_lines.entries)
    tally.user_records += sorted_lines.user_records
    verb = "would put" if tally.dry_run else "put"
    print(f"  {where}: {verb} {sorted_lines.user_records} records")
    return not tally.dry_run


def _redrive_bucket(settings: Settings, clients: Any, writer: Any, tally: _Tally) -> None:
    from producer.redrive import sort_lines

    s3, bucket = clients.s3, settings.s3_bucket
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=SOURCE_PREFIX)
    keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
    for key in keys:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        lines = sort_lines(body.splitlines())
        if not _put(writer, f"s3://{bucket}/{key}", lines, tally):
            continue
        # Moved only after every entry was put: a failure or crash before re-puts it next time.
        moved = REDRIVEN_PREFIX + key.removeprefix(SOURCE_PREFIX)
        s3.put_object(Bucket=bucket, Key=moved, Body=b"".join(lines.entry_lines))
        if lines.other_lines:
            s3.put_object(Bucket=bucket, Key=key, Body=b"".join(lines.other_lines))
        else:
            s3.delete_object(Bucket=bucket, Key=key)


def _redrive_file(settings: Settings, clients: Any, writer: Any, path: Path, tally: _Tally) -> None:
    from core.dead_letters import S3DeadLetterStore, parse_dead_letter_line
    from core.errors import CryptoLiveError
    from producer.redrive import sort_lines
    from producer.service import DEAD_LETTER_SOURCE

    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CryptoLiveError(f"cannot read dead-letter file {path}: {err.strerror}") from err
    lines = sort_lines(raw.splitlines())
    if tally.dry_run:
        _put(writer, str(path), lines, tally)
        return
    if not _put(writer, str(path), lines, tally) and lines.entries:
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
