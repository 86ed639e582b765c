"""Signed JSON requests: what AWS gets (a valid SigV4 signature over the bytes on the wire),
what comes back (answers, error answers as botocore's ClientError), on moto and a local
capture server."""

from __future__ import annotations

import base64
import http.server
import threading
import zlib
from collections.abc import Iterator
from typing import Any, ClassVar

import orjson
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ChecksumError, ClientError

from core.aws import AwsClients
from core.aws_errors import ErrorKind, classify
from core.aws_json import AwsJsonApi
from core.settings import Settings, load_settings
from tests.support.emulator import DUMMY_CREDENTIALS

pytestmark = pytest.mark.integration


class Capture(http.server.BaseHTTPRequestHandler):
    """Keeps each request and answers ``answer`` (status, body, extra headers)."""

    requests: ClassVar[list[tuple[dict[str, str], bytes]]] = []
    answer: ClassVar[tuple[int, bytes, dict[str, str]]] = (200, b"{}", {})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Capture.requests.append((dict(self.headers.items()), body))
        status, content, headers = Capture.answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def capture() -> Iterator[str]:
    """The capture server's endpoint."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Capture.requests = []
    Capture.answer = (200, b"{}", {})
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def dynamodb_api(capture: str) -> Iterator[AwsJsonApi]:
    """DynamoDB's JSON API on the capture server."""
    clients = AwsClients(load_settings(aws_endpoint_url=capture))
    yield AwsJsonApi(clients.dynamodb)
    clients.close()


def test_the_request_on_the_wire_carries_a_valid_sigv4_signature(
    capture: str, dynamodb_api: AwsJsonApi
) -> None:
    body = {"TableName": "t", "Item": {"k": {"S": "é"}}}
    assert dynamodb_api.call("PutItem", body) == {}
    [(headers, sent)] = Capture.requests
    assert orjson.loads(sent) == body
    assert headers["X-Amz-Target"] == "DynamoDB_20120810.PutItem"
    assert headers["Content-Type"] == "application/x-amz-json-1.0"
    # Sign the received request again, independently, with the headers it says it signed.
    authorization = headers["Authorization"]
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"host", "x-amz-date", "x-amz-target", "content-type"} <= set(signed)
    received = AWSRequest(
        method="POST",
        url=capture + "/",
        data=sent,
        headers={k: v for k, v in headers.items() if k.lower() in signed},
    )
    credentials = Credentials(
        DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"], DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
    )
    signer = SigV4Auth(credentials, "dynamodb", load_settings().aws_region)
    received.context["timestamp"] = headers["X-Amz-Date"]
    canonical = signer.canonical_request(received)
    signature = signer.signature(signer.string_to_sign(received, canonical), received)
    assert authorization.endswith(f"Signature={signature}")


def test_an_error_answer_is_botocores_client_error(dynamodb_api: AwsJsonApi) -> None:
    error = (
        b'{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"no"}'
    )
    Capture.answer = (400, error, {"x-amzn-RequestId": "r1"})
    with pytest.raises(ClientError) as raised:
        dynamodb_api.call("PutItem", {"TableName": "missing"})
    response = raised.value.response
    assert response["Error"] == {"Code": "ResourceNotFoundException", "Message": "no"}
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert raised.value.operation_name == "PutItem"
    assert classify(raised.value) is ErrorKind.PERMANENT
    Capture.answer = (400, b'{"__type":"ProvisionedThroughputExceededException"}', {})
    with pytest.raises(ClientError) as raised:
        dynamodb_api.call("BatchWriteItem", {})
    assert classify(raised.value) is ErrorKind.THROTTLED
    Capture.answer = (503, b"<html>unavailable</html>", {})
    with pytest.raises(ClientError) as raised:
        dynamodb_api.call("BatchWriteItem", {})
    assert raised.value.response["Error"]["Code"] == "503"
    assert classify(raised.value) is ErrorKind.RETRIABLE


def test_a_corrupted_answer_fails_its_checksum(dynamodb_api: AwsJsonApi) -> None:
    content = b'{"UnprocessedItems":{}}'
    Capture.answer = (200, content, {"x-amz-crc32": str(zlib.crc32(content))})
    assert dynamodb_api.call("BatchWriteItem", {}) == {"UnprocessedItems": {}}
    Capture.answer = (200, content, {"x-amz-crc32": str(zlib.crc32(content) ^ 1)})
    with pytest.raises(ChecksumError) as raised:
        dynamodb_api.call("BatchWriteItem", {})
    assert classify(raised.value) is ErrorKind.RETRIABLE


def test_put_records_and_its_error_on_moto(aws_settings: Settings, aws: AwsClients) -> None:
    aws.kinesis.create_stream(StreamName="s", ShardCount=1)
    aws.kinesis.get_waiter("stream_exists").wait(StreamName="s")
    api = AwsJsonApi(aws.kinesis)
    records = [
        {"Data": base64.b64encode(bytes([i]) * i).decode(), "PartitionKey": f"k{i}"}
        for i in range(3)
    ]
    response = api.call("PutRecords", {"StreamName": "s", "Records": records})
    assert response["FailedRecordCount"] == 0
    assert [r["ShardId"] for r in response["Records"]] == ["shardId-000000000000"] * 3
    iterator = aws.kinesis.get_shard_iterator(
        StreamName="s", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    got = aws.kinesis.get_records(ShardIterator=iterator)["Records"]
    assert [(r["PartitionKey"], r["Data"]) for r in got] == [
        (f"k{i}", bytes([i]) * i) for i in range(3)
    ]
    with pytest.raises(ClientError) as raised:
        api.call("PutRecords", {"StreamName": "missing", "Records": records})
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_only_json_protocol_services() -> None:
    clients = AwsClients(load_settings(aws_endpoint_url="http://127.0.0.1:1"))
    with pytest.raises(ValueError, match="not a JSON-protocol service"):
        AwsJsonApi(clients.s3)
    clients.close()
