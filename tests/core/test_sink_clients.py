"""Sink clients: the same service and endpoint, without botocore's client-side validation."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ParamValidationError

from core.aws import AwsClients
from core.settings import load_settings

# Not a valid BatchWriteItem: a PutRequest without its Item.
INVALID: dict[str, Any] = {"RequestItems": {"t": [{"PutRequest": {}}]}}


class SentError(Exception):
    """Raised instead of sending: the request got past the client's own checks."""


def stop_before_sending(**_: Any) -> None:
    raise SentError


def test_sink_clients_skip_client_side_validation_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    clients = AwsClients(load_settings())
    try:
        for service in ("dynamodb", "s3"):
            sink, plain = clients.sink_client(service), clients.client(service)
            assert sink is clients.sink_client(service)  # cached, like every client
            assert sink is not plain
            assert sink.meta.endpoint_url == plain.meta.endpoint_url
            assert sink.meta.config.retries == plain.meta.config.retries
        sink, plain = clients.sink_client("dynamodb"), clients.dynamodb
        for client in (sink, plain):
            client.meta.events.register("before-send.dynamodb.BatchWriteItem", stop_before_sending)
        with pytest.raises(SentError):  # left to the service to refuse
            sink.batch_write_item(**INVALID)
        with pytest.raises(ParamValidationError):  # every other client still validates
            plain.batch_write_item(**INVALID)
    finally:
        clients.close()
