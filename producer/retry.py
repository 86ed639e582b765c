"""Pure helpers for retrying PutRecords: backoff delays and per-record result splitting."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from core.aws_errors import RETRIABLE_RECORD_CODES, classify_code, classify_record_code
from core.errors import CryptoLiveError
from producer.aggregation import PutEntry

# Kept for callers of the producer's names; the classification itself is core.aws_errors'.
RETRIABLE_ERROR_CODES: Final = RETRIABLE_RECORD_CODES


class PutResultMismatchError(CryptoLiveError):
    """A PutRecords response does not have one result per entry sent."""


def is_retriable_error_code(code: str) -> bool:
    """Whether a per-record PutRecords error may succeed on retry (KMS access errors do not)."""
    return classify_record_code(code).retriable


def is_permanent_request_error(code: str, http_status: int | None) -> bool:
    """Whether a failed PutRecords call must not be retried (retrying cannot make it succeed)."""
    return not classify_code(code, http_status).retriable


def split_put_result(
    entries: Sequence[PutEntry], response: Mapping[str, Any]
) -> tuple[list[PutEntry], list[tuple[PutEntry, str, str]]]:
    """Split one PutRecords request into (entries to retry, [(entry, shard_id, sequence)])."""
    results = response.get("Records")
    if not isinstance(results, Sequence) or len(results) != len(entries):
        got = len(results) if isinstance(results, Sequence) else type(results).__name__
        raise PutResultMismatchError(f"sent {len(entries)} records, response has {got} results")
    failed: list[PutEntry] = []
    succeeded: list[tuple[PutEntry, str, str]] = []
    for entry, result in zip(entries, results, strict=True):
        sequence_number = result.get("SequenceNumber")
        if sequence_number and not result.get("ErrorCode"):
            shard_id = result.get("ShardId") or entry.shard_id  # always sent by Kinesis
            succeeded.append((entry, shard_id, sequence_number))
        else:
            # No sequence number means Kinesis did not store it; retrying keeps at-least-once.
            failed.append(entry)
    return failed, succeeded


def permanent_failures(
    entries: Sequence[PutEntry], response: Mapping[str, Any]
) -> list[tuple[PutEntry, str]]:
    """The entries of a PutRecords response that failed with a non-retriable error code,
    each with ``"code: message"``; call after ``split_put_result`` checked the response."""
    out: list[tuple[PutEntry, str]] = []
    for entry, result in zip(entries, response.get("Records", []), strict=False):
        code = result.get("ErrorCode")
        if code and not is_retriable_error_code(str(code)):
            out.append((entry, f"{code}: {result.get('ErrorMessage', '')}".rstrip(": ")))
    return out
