"""The hot calls of JSON-protocol services (Kinesis PutRecords, DynamoDB BatchWriteItem and
PutItem) as signed HTTP requests with bodies we serialise ourselves.

A boto3 call spends about a millisecond of CPU per request outside the network: validating and
serialising the parameters by walking the service model, a dozen event hooks, parsing the answer
back through the model. For a request whose shape we build ourselves that is pure overhead, so
these calls go through the boto3 client's own signer and HTTP session (same credentials and
their refresh, region, endpoint, timeouts, proxies, TLS settings and connection pool) with an
orjson body, and the answer is parsed with orjson. An error answer raises botocore's
``ClientError`` with AWS's code and HTTP status, and transport failures raise botocore's own
exceptions, so ``core.aws_errors`` classifies both exactly as before. Each call is one attempt:
the callers' retry loops (which know what a partial failure means) do the retrying.
"""

from __future__ import annotations

import uuid
import zlib
from typing import Any, Final, Protocol, runtime_checkable

import orjson
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ChecksumError, ClientError

_USER_AGENT: Final = "crypto-live (signed JSON requests)"


@runtime_checkable
class JsonApi(Protocol):
    """Calls of a JSON-protocol AWS API: what writers need (tests put faults behind it)."""

    def call(self, operation: str, body: dict[str, Any]) -> dict[str, Any]: ...


class AwsJsonApi:
    """One JSON-protocol AWS service (``kinesis``, ``dynamodb``) behind a boto3 client."""

    __slots__ = ("_client", "_content_type", "_http", "_signer", "_target", "_url")

    def __init__(self, client: Any) -> None:
        metadata = client.meta.service_model.metadata
        if metadata.get("protocol") != "json":
            raise ValueError(f"{metadata.get('serviceId')} is not a JSON-protocol service")
        self._target = f"{metadata['targetPrefix']}."
        self._content_type = f"application/x-amz-json-{metadata['jsonVersion']}"
        self._url = client.meta.endpoint_url.rstrip("/") + "/"
        # The client's own signer and HTTP session: botocore keeps them as these attributes.
        # The signer refers to the client's events weakly: the client must stay alive.
        self._client = client
        self._signer = client._request_signer
        self._http = client._endpoint.http_session

    def call(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` as ``operation``; the parsed answer, or ClientError for an error answer."""
        request = AWSRequest(
            method="POST",
            url=self._url,
            data=orjson.dumps(body),
            headers={
                "X-Amz-Target": self._target + operation,
                "Content-Type": self._content_type,
                "User-Agent": _USER_AGENT,
                # The SDKs' request ids (AWS's logs and our fault proxy tell calls apart by
                # them); one attempt per call, as said above.
                "amz-sdk-invocation-id": str(uuid.uuid4()),
                "amz-sdk-request": "attempt=1; max=1",
            },
        )
        self._signer.sign(operation, request)
        response = self._http.send(request.prepare())
        content: bytes = response.content
        expected = response.headers.get("x-amz-crc32")
        if expected is not None and zlib.crc32(content) != int(expected):
            # DynamoDB's answer checksum: a corrupted answer is retried, as botocore does.
            raise ChecksumError(
                checksum_type="crc32",
                expected_checksum=expected,
                actual_checksum=str(zlib.crc32(content)),
            )
        status: int = response.status_code
        if status >= 300:
            raise _client_error(operation, status, content, response.headers)
        parsed: dict[str, Any] = orjson.loads(content) if content else {}
        return parsed


def _client_error(operation: str, status: int, content: bytes, headers: Any) -> ClientError:
    """botocore's ClientError for an error answer of a JSON-protocol service."""
    try:
        body = orjson.loads(content) if content else {}
    except orjson.JSONDecodeError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    # "__type" is "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException" or just the code;
    # the x-amzn-errortype header may carry it too ("Code:http://...").
    code = str(body.get("__type") or headers.get("x-amzn-errortype") or status)
    code = code.rsplit("#", 1)[-1].split(":", 1)[0]
    message = str(body.get("message") or body.get("Message") or "")
    error = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {
            "HTTPStatusCode": status,
            "RequestId": headers.get("x-amzn-requestid", ""),
        },
    }
    return ClientError(error, operation)
