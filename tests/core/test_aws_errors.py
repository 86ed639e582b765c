"""One classification of AWS errors: retriable, throttled or permanent."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from core.aws_errors import (
    ErrorKind,
    aws_error,
    classify,
    classify_code,
    classify_record_code,
    error_code,
    http_status,
)
from core.errors import AwsError, CryptoLiveError

RETRIABLE, THROTTLED, PERMANENT = ErrorKind.RETRIABLE, ErrorKind.THROTTLED, ErrorKind.PERMANENT


def client_error(code: str, status: int | None = 400, message: str = "m") -> ClientError:
    response: dict[str, object] = {"Error": {"Code": code, "Message": message}}
    if status is not None:
        response["ResponseMetadata"] = {"HTTPStatusCode": status}
    return ClientError(response, "Op")


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("ProvisionedThroughputExceededException", 400, THROTTLED),
        ("ThrottlingException", 400, THROTTLED),
        ("RequestLimitExceeded", 400, THROTTLED),
        ("SlowDown", 503, THROTTLED),
        ("KMS.ThrottlingException", 400, THROTTLED),
        ("SomethingNew", 429, THROTTLED),
        ("WriteLimitExceededSomewhere", 400, THROTTLED),
        ("InternalFailure", 500, RETRIABLE),
        ("InternalServerError", 500, RETRIABLE),
        ("ServiceUnavailable", 503, RETRIABLE),
        ("RequestTimeout", 400, RETRIABLE),
        ("RequestTimeTooSkewed", 403, RETRIABLE),
        ("OperationAborted", 409, RETRIABLE),
        ("ExpiredTokenException", 400, RETRIABLE),
        ("Whatever", 408, RETRIABLE),
        ("Whatever", 502, RETRIABLE),
        ("Whatever", None, RETRIABLE),
        ("500", 500, RETRIABLE),
        ("ResourceNotFoundException", 400, PERMANENT),
        ("AccessDenied", 403, PERMANENT),
        ("ValidationException", 400, PERMANENT),
        ("KMSDisabledException", 400, PERMANENT),
        ("ConditionalCheckFailedException", 400, PERMANENT),
        ("NoSuchBucket", 404, PERMANENT),
        ("SomeOtherClientFault", 400, PERMANENT),
        ("ValidationException", None, PERMANENT),
    ],
)
def test_code_and_status(code: str, status: int | None, kind: ErrorKind) -> None:
    assert classify_code(code, status) is kind
    assert classify(client_error(code, status)) is kind
    assert kind.retriable is (kind is not PERMANENT)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("ProvisionedThroughputExceededException", THROTTLED),
        ("KMSThrottlingException", THROTTLED),
        ("InternalFailure", RETRIABLE),
        ("ServiceUnavailable", RETRIABLE),
        ("KMSAccessDeniedException", PERMANENT),
        ("SlowDown", PERMANENT),  # not a PutRecords record code
        ("", PERMANENT),
    ],
)
def test_per_record_codes_only_retry_the_documented_transient_ones(
    code: str, kind: ErrorKind
) -> None:
    assert classify_record_code(code) is kind


@pytest.mark.parametrize(
    ("err", "kind"),
    [
        (EndpointConnectionError(endpoint_url="http://x"), RETRIABLE),
        (ConnectTimeoutError(endpoint_url="http://x"), RETRIABLE),
        (ReadTimeoutError(endpoint_url="http://x"), RETRIABLE),
        (NoCredentialsError(), RETRIABLE),
        (ParamValidationError(report="bad"), PERMANENT),
        (ValueError("a bug"), PERMANENT),
    ],
)
def test_botocore_exceptions(err: Exception, kind: ErrorKind) -> None:
    assert classify(err) is kind
    assert error_code(err) == "" and http_status(err) is None


def test_aws_error_carries_the_flags_and_chains() -> None:
    original = client_error("ProvisionedThroughputExceededException", 400)
    with pytest.raises(AwsError) as caught:
        try:
            raise original
        except ClientError as err:
            raise aws_error(err, "PutRecords") from err
    error = caught.value
    assert isinstance(error, CryptoLiveError)
    assert (error.retriable, error.throttled, error.code) == (
        True,
        True,
        original.response["Error"]["Code"],
    )
    assert str(error).startswith("PutRecords failed: ")
    assert error.__cause__ is original
    refused = aws_error(client_error("AccessDeniedException", 400))
    assert (refused.retriable, refused.throttled, refused.code) == (
        False,
        False,
        "AccessDeniedException",
    )
    timeout = aws_error(ReadTimeoutError(endpoint_url="http://x"))
    assert (timeout.retriable, timeout.throttled, timeout.code) == (True, False, "")
    assert aws_error(refused) is refused
