"""One classification of AWS errors: retriable, throttled or permanent.

Used by the producer, the engine and the sinks, so each retry loop asks one question
(``aws_error(err).retriable``) instead of keeping its own list of codes and statuses.
"""

from __future__ import annotations

import enum
from typing import Final

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from core.errors import AwsError


class ErrorKind(enum.Enum):
    """What retrying a failed AWS call can do."""

    RETRIABLE = "retriable"  # transient: 5xx, timeouts, lost connections
    THROTTLED = "throttled"  # refused for rate: retry after a (longer) backoff
    PERMANENT = "permanent"  # the request's fault: retrying cannot fix it

    @property
    def retriable(self) -> bool:
        return self is not ErrorKind.PERMANENT


THROTTLING_CODES: Final = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "LimitExceededException",
        "SlowDown",
        "KMSThrottlingException",
        "KMS.ThrottlingException",
    }
)
TRANSIENT_CODES: Final = frozenset(
    {
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "RequestTimeTooSkewed",  # a clock corrected by the next request's signature
        "OperationAborted",  # S3: a conflicting operation on the bucket, try again
        "TransactionInProgressException",
        "500",
        "503",
    }
)
# Request-level errors that a retry cannot fix: a missing resource, no permission, a bad request,
# KMS key problems. Other 4xx answers are the request's fault too (see ``classify_code``).
PERMANENT_CODES: Final = frozenset(
    {
        "ResourceNotFoundException",
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ValidationException",
        "InvalidArgumentException",
        "SerializationException",
        "ConditionalCheckFailedException",
        "NoSuchBucket",
        "KMSAccessDeniedException",
        "KMSDisabledException",
        "KMSInvalidStateException",
        "KMSNotFoundException",
        "KMSOptInRequired",
    }
)
# Per-record error codes (PutRecords results) a retry may fix.
RETRIABLE_RECORD_CODES: Final = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "InternalFailure",
        "ServiceUnavailable",
        "ThrottlingException",
        "KMSThrottlingException",
    }
)
_THROTTLING_WORDS: Final = ("Throttl", "LimitExceeded", "ProvisionedThroughputExceeded")
_TRANSIENT_WORDS: Final = ("Expired", "Timeout")


def classify_code(code: str, http_status: int | None = None) -> ErrorKind:
    """The kind of a failed call from AWS's error code and HTTP status."""
    if code in THROTTLING_CODES or http_status == 429:
        return ErrorKind.THROTTLED
    if code in TRANSIENT_CODES:
        return ErrorKind.RETRIABLE
    if code in PERMANENT_CODES:
        return ErrorKind.PERMANENT
    if any(word in code for word in _THROTTLING_WORDS):
        return ErrorKind.THROTTLED
    if any(word in code for word in _TRANSIENT_WORDS) or http_status == 408:
        return ErrorKind.RETRIABLE
    if http_status is not None and 400 <= http_status < 500:
        return ErrorKind.PERMANENT
    # 5xx, or no answer we understand: a retry may succeed, and a duplicate beats a loss.
    return ErrorKind.RETRIABLE


def classify_record_code(code: str) -> ErrorKind:
    """The kind of a per-record error (PutRecords ``ErrorCode``): only the codes AWS documents
    as transient are retried; anything else (KMS access errors, ...) is permanent."""
    if code not in RETRIABLE_RECORD_CODES:
        return ErrorKind.PERMANENT
    return ErrorKind.THROTTLED if code in THROTTLING_CODES else ErrorKind.RETRIABLE


def error_code(err: BaseException) -> str:
    """AWS's error code of a ClientError; empty for anything else."""
    if isinstance(err, ClientError):
        return str(err.response.get("Error", {}).get("Code", ""))
    return ""


def http_status(err: BaseException) -> int | None:
    """The HTTP status of a ClientError's answer; None for anything else."""
    if isinstance(err, ClientError):
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


def classify(err: BaseException) -> ErrorKind:
    """The kind of any exception a boto3 call raised. Connection failures, read timeouts and
    other botocore errors are retriable, except a request botocore itself found invalid;
    anything not from botocore (a bug) is permanent."""
    if isinstance(err, ClientError):
        return classify_code(error_code(err), http_status(err))
    if isinstance(err, ParamValidationError):
        return ErrorKind.PERMANENT
    if isinstance(err, BotoCoreError):
        return ErrorKind.RETRIABLE
    return ErrorKind.PERMANENT


def is_aws_error(err: BaseException) -> bool:
    """Whether ``err`` came from botocore (a ClientError or a BotoCoreError)."""
    return isinstance(err, ClientError | BotoCoreError)


def aws_error(err: BaseException, what: str = "") -> AwsError:
    """``err`` as the project's AwsError (``raise aws_error(err, "PutRecords") from err``)."""
    if isinstance(err, AwsError):
        return err
    kind = classify(err)
    prefix = f"{what} failed: " if what else ""
    return AwsError(
        f"{prefix}{err}",
        retriable=kind.retriable,
        throttled=kind is ErrorKind.THROTTLED,
        code=error_code(err),
    )
