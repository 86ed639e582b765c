"""`crypto-live lake compact|candles|report`: the batch jobs of the analytics tier.

Idempotent and resumable (a manifest under ``meta/`` records finished hours), so they can run
on a schedule: hourly `compact` then `candles`, daily `report`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from core.settings import Settings
from crypto_live.progress_bar import StderrProgressBar

if TYPE_CHECKING:
    from rich.progress import TaskID

NAME = "lake"
HELP = "data lake jobs: compact raw JSONL to Parquet, 1-minute candles, daily report"
DEFAULT_HOURS = 24
DEFAULT_SLACK_HOURS = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=("compact", "candles", "report"),
        help="compact: raw -> parquet/; candles: raw klines + parquet/ -> candles_1m/; "
        "report: -> reports/",
    )
    parser.add_argument(
        "--from",
        dest="start",
        metavar="TIME",
        help=f"first event hour, ISO 8601 UTC, e.g. 2026-11-23T03 (default: {DEFAULT_HOURS} h "
        "before --to)",
    )
    parser.add_argument(
        "--to", dest="end", metavar="TIME", help="end hour, exclusive (default: after the current)"
    )
    parser.add_argument(
        "--date",
        metavar="YYYY-MM-DD",
        help="one UTC day (compact/candles: instead of --from/--to; report: default yesterday)",
    )
    parser.add_argument(
        "--slack-hours",
        dest="lake_slack_hours",
        metavar="N",
        type=int,
        help="compact, candles: how many raw hour folders either side may hold an hour's "
        f"events or klines (LAKE_SLACK_HOURS, default {DEFAULT_SLACK_HOURS})",
    )
    parser.add_argument(
        "--force", action="store_true", help="report: write it again even when present"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


class _RichProgress(StderrProgressBar):
    """JobProgress on a rich progress bar (stderr)."""

    def __init__(self, enabled: bool) -> None:
        super().__init__(enabled, unit_column=True)
        self._task: TaskID | None = None

    def start(self, description: str, total: int) -> None:
        self._task = self._progress.add_task(description, total=total, unit="")

    def advance(self, unit: str) -> None:
        if self._task is not None:
            self._progress.update(self._task, advance=1, unit=unit)


def _is_loopback(url: str | None) -> bool:
    from urllib.parse import urlsplit

    return (urlsplit(url).hostname if url else None) in ("127.0.0.1", "localhost", "::1")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from botocore.exceptions import BotoCoreError, ClientError

    from core.aws import AwsClients
    from crypto_live.embedded import use_dummy_credentials
    from crypto_live.lake import LakeError
    from crypto_live.lake.jobs import JobResult
    from crypto_live.lake.layout import hour_range, parse_day, yesterday
    from crypto_live.lake.store import S3LakeStore

    # CLI flag, else the LAKE_SLACK_HOURS setting once Settings has it, else the default.
    slack = args.lake_slack_hours
    if slack is None:
        slack = getattr(settings, "lake_slack_hours", DEFAULT_SLACK_HOURS)
    if slack < 0:
        raise LakeError(f"--slack-hours must be >= 0 (got {slack})")
    if _is_loopback(settings.endpoint_url_for("s3")):
        use_dummy_credentials()  # the embedded endpoint of `make up` takes any credentials
    now = datetime.now(UTC)
    clients = AwsClients(settings)
    store = S3LakeStore(clients.s3, settings.s3_bucket, settings.s3_sse, settings.s3_kms_key_id)
    result: JobResult
    try:
        with _RichProgress(enabled=not args.no_progress) as progress:
            if args.action == "report":
                from crypto_live.lake.jobs.report import run_report

                day = parse_day(args.date) if args.date else yesterday(now)
                result = run_report(store, day, force=args.force, progress=progress)
            elif args.action == "compact":
                from crypto_live.lake.jobs.compact import run_compact

                hours = hour_range(args.start, args.end, args.date, now, DEFAULT_HOURS)
                raw = settings.s3_jsonl_dir_path
                result = run_compact(store, raw, hours, slack, progress)
            else:
                from crypto_live.lake.jobs.candles import run_candles
                from crypto_live.lake.klines import DEFAULT_KLINES_PREFIX

                hours = hour_range(args.start, args.end, args.date, now, DEFAULT_HOURS)
                # The S3 consumer's kline prefix (S3_KLINES_DIR_PATH) once Settings has it.
                klines = getattr(settings, "s3_klines_dir_path", DEFAULT_KLINES_PREFIX)
                result = run_candles(store, hours, progress, klines_prefix=klines, slack=slack)
    except (BotoCoreError, ClientError) as err:
        raise LakeError(f"lake {args.action} on s3://{settings.s3_bucket}: {err}") from err
    finally:
        clients.close()
    print(result.summary())
    return 0
