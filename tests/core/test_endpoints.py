"""Per-service endpoints (AWS_ENDPOINT_URL_<SERVICE>) override AWS_ENDPOINT_URL per client."""

from __future__ import annotations

import pytest

from core.aws import AwsClients
from core.settings import load_settings


def test_a_service_variable_overrides_the_general_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    monkeypatch.setenv("AWS_ENDPOINT_URL_KINESIS", "http://127.0.0.1:4568")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://127.0.0.1:4570")
    clients = AwsClients(load_settings())
    try:
        assert clients.kinesis.meta.endpoint_url == "http://127.0.0.1:4568"
        assert clients.secretsmanager.meta.endpoint_url == "http://127.0.0.1:4570"
        assert clients.dynamodb.meta.endpoint_url == "http://127.0.0.1:4566"
        assert clients.s3.meta.endpoint_url == "http://127.0.0.1:4566"
    finally:
        clients.close()


def test_service_endpoints_without_a_general_one_leave_the_rest_on_aws(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:8000")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9005")
    settings = load_settings()
    assert settings.endpoint_url_for("dynamodb") == "http://127.0.0.1:8000"
    assert settings.endpoint_url_for("s3") == "http://127.0.0.1:9005"
    assert settings.endpoint_url_for("kinesis") is None
    clients = AwsClients(settings)
    try:
        assert clients.kinesis.meta.endpoint_url == "https://kinesis.ap-southeast-1.amazonaws.com"
        assert clients.s3.meta.endpoint_url == "http://127.0.0.1:9005"
    finally:
        clients.close()


def test_overrides_in_code_take_the_same_names() -> None:
    settings = load_settings(
        aws_endpoint_url="http://127.0.0.1:1", aws_endpoint_url_kinesis="http://127.0.0.1:2"
    )
    assert settings.endpoint_url_for("kinesis") == "http://127.0.0.1:2"
    assert settings.with_overrides(aws_endpoint_url_kinesis=None).endpoint_url_for("kinesis") == (
        "http://127.0.0.1:1"
    )
