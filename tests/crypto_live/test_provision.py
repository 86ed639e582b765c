"""`provision` against a real moto server over HTTP."""

from __future__ import annotations

import json

import pytest

from core.aws import AwsClients
from core.settings import Settings
from crypto_live.provision import DEFAULT_STREAMS, provision
from tests.support.fault_proxy import FaultProxy

pytestmark = pytest.mark.integration


def test_provision_creates_everything_then_is_idempotent(
    aws_settings: Settings, aws: AwsClients
) -> None:
    first = provision(aws_settings, aws)
    assert sorted(first.created) == sorted(
        [
            "kinesis:crypto-live-miniticker",
            "dynamodb:crypto-live-miniticker",
            "dynamodb:crypto-live-ticker-latest",
            "dynamodb:crypto-live-orders",
            "dynamodb:crypto-live-candles",
            "s3:crypto-live-bucket",
            "secret:crypto-live.binance_ws",
            "secret:crypto-live.binance_api",
        ]
    )
    second = provision(aws_settings, aws)
    assert second.created == []
    assert sorted(second.existing) == sorted(first.created)

    shards = aws.kinesis.list_shards(StreamName="crypto-live-miniticker")["Shards"]
    assert len(shards) == aws_settings.kinesis_shard_count == 2

    history = aws.dynamodb.describe_table(TableName="crypto-live-miniticker")["Table"]
    assert {(k["AttributeName"], k["KeyType"]) for k in history["KeySchema"]} == {
        ("stream_type", "HASH"),
        ("iso_timestamp", "RANGE"),
    }
    ttl = aws.dynamodb.describe_time_to_live(TableName="crypto-live-miniticker")
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires_at"
    assert ttl["TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED"
    latest = aws.dynamodb.describe_table(TableName="crypto-live-ticker-latest")["Table"]
    assert [(k["AttributeName"], k["KeyType"]) for k in latest["KeySchema"]] == [("symbol", "HASH")]
    aws.s3.head_bucket(Bucket="crypto-live-bucket")
    secret = aws.secretsmanager.get_secret_value(SecretId="crypto-live.binance_ws")
    assert json.loads(secret["SecretString"]) == {"streams": list(DEFAULT_STREAMS)}
    orders = aws.dynamodb.describe_table(TableName="crypto-live-orders")["Table"]
    assert [(k["AttributeName"], k["KeyType"]) for k in orders["KeySchema"]] == [
        ("symbol", "HASH"),
        ("orderId", "RANGE"),
    ]
    assert {(a["AttributeName"], a["AttributeType"]) for a in orders["AttributeDefinitions"]} == {
        ("symbol", "S"),
        ("orderId", "N"),
    }
    candles = aws.dynamodb.describe_table(TableName="crypto-live-candles")["Table"]
    assert [(k["AttributeName"], k["KeyType"]) for k in candles["KeySchema"]] == [
        ("symbol", "HASH"),
        ("open_time", "RANGE"),
    ]
    assert {(a["AttributeName"], a["AttributeType"]) for a in candles["AttributeDefinitions"]} == {
        ("symbol", "S"),
        ("open_time", "N"),
    }
    candles_ttl = aws.dynamodb.describe_time_to_live(TableName="crypto-live-candles")
    assert candles_ttl["TimeToLiveDescription"]["TimeToLiveStatus"] == "DISABLED"  # kept
    api = aws.secretsmanager.get_secret_value(SecretId="crypto-live.binance_api")
    assert set(json.loads(api["SecretString"])) == {"api_key", "api_secret"}  # the sim's pair


def test_a_second_provision_looks_and_creates_nothing(
    aws_settings: Settings, aws: AwsClients
) -> None:
    """Provision checks before it creates: on a provisioned account it sends no create call
    (each would fail noisily, e.g. a stack trace in kinesis-mock's log)."""
    provision(aws_settings, aws)
    calls: list[str] = []

    def record(method: str, path: str, headers: dict[str, str]) -> None:
        target = next((v for k, v in headers.items() if k.lower() == "x-amz-target"), "")
        calls.append(target.rpartition(".")[2] if target else f"S3.{method}")

    with FaultProxy(aws_settings.aws_endpoint_url or "", record) as proxy:
        via_proxy = aws_settings.with_overrides(aws_endpoint_url=proxy.url)
        clients = AwsClients(via_proxy)
        try:
            report = provision(via_proxy, clients)
        finally:
            clients.close()
    assert report.created == []
    assert calls, "provision made no calls at all"
    assert not [call for call in calls if call.startswith("Create") or call == "S3.PUT"], calls
