"""Idempotent creation of the stream, tables, bucket and secret (`crypto-live provision`)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from core.aws import AwsClients
from core.aws_errors import error_code
from core.errors import CryptoLiveError
from core.settings import Settings
from crypto_live.exchange.rest import SIM_API_KEY, SIM_API_SECRET

log = logging.getLogger(__name__)

# The secret's default: each symbol's miniTicker (ticks) and its 1-minute klines (exact candles).
DEFAULT_STREAMS = (
    "btcusdt@miniTicker",
    "ethusdt@miniTicker",
    "bnbusdt@miniTicker",
    "solusdt@miniTicker",
    "xrpusdt@miniTicker",
    "btcusdt@kline_1m",
    "ethusdt@kline_1m",
    "bnbusdt@kline_1m",
    "solusdt@kline_1m",
    "xrpusdt@kline_1m",
)
TTL_ATTRIBUTE = "expires_at"


class ProvisionError(CryptoLiveError):
    """A resource could not be created or did not become ready."""


@dataclass
class ProvisionReport:
    """What provision created and what already existed."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)

    def add(self, name: str, created: bool) -> None:
        (self.created if created else self.existing).append(name)


def provision(settings: Settings, clients: AwsClients, timeout: float = 60.0) -> ProvisionReport:
    """Create whatever is missing; safe to run any number of times."""
    report = ProvisionReport()
    report.add(f"kinesis:{settings.kinesis_stream_name}", _stream(settings, clients, timeout))
    report.add(
        f"dynamodb:{settings.dynamo_table_name}",
        _table(
            clients,
            settings.dynamo_table_name,
            [("stream_type", "HASH"), ("iso_timestamp", "RANGE")],
            ttl=True,
        ),
    )
    report.add(
        f"dynamodb:{settings.dynamo_latest_table_name}",
        _table(clients, settings.dynamo_latest_table_name, [("symbol", "HASH")], ttl=False),
    )
    report.add(
        f"dynamodb:{settings.dynamo_orders_table_name}",
        _table(
            clients,
            settings.dynamo_orders_table_name,
            [("symbol", "HASH"), ("orderId", "RANGE")],
            ttl=False,
            numbers=("orderId",),
        ),
    )
    report.add(
        f"dynamodb:{settings.dynamo_candles_table_name}",
        _table(
            clients,
            settings.dynamo_candles_table_name,
            [("symbol", "HASH"), ("open_time", "RANGE")],
            ttl=False,  # closed 1-minute candles are kept (gap detection reads them)
            numbers=("open_time",),
        ),
    )
    report.add(f"s3:{settings.s3_bucket}", _bucket(settings, clients))
    report.add(
        f"secret:{settings.binance_websocket_secret}",
        _secret(
            clients,
            settings.binance_websocket_secret,
            json.dumps({"streams": list(DEFAULT_STREAMS)}),
        ),
    )
    # A placeholder: the simulated exchange's pair; put the real one in before using Binance.
    report.add(
        f"secret:{settings.binance_api_secret}",
        _secret(
            clients,
            settings.binance_api_secret,
            json.dumps({"api_key": SIM_API_KEY, "api_secret": SIM_API_SECRET}),
        ),
    )
    log.info("provisioned: created=%s existing=%s", report.created, report.existing)
    return report


_MISSING = frozenset({"ResourceNotFoundException", "NoSuchBucket", "404", "NotFound"})


def _exists(describe: Callable[[], object]) -> bool:
    """Whether the resource a describe call names is there (its not-found answer: False)."""
    try:
        describe()
    except ClientError as err:
        if error_code(err) in _MISSING:
            return False
        raise ProvisionError(f"cannot check for an existing resource: {err}") from err
    return True


def _stream(settings: Settings, clients: AwsClients, timeout: float) -> bool:
    kinesis = clients.kinesis
    name = settings.kinesis_stream_name
    created = False
    # Look before creating: a create of an existing resource is a noisy failure on some
    # emulators (kinesis-mock logs a stack trace) and in CloudTrail; the create still handles
    # losing a race with another provision.
    if not _exists(lambda: kinesis.describe_stream_summary(StreamName=name)):
        try:
            kinesis.create_stream(StreamName=name, ShardCount=settings.kinesis_shard_count)
            created = True
        except ClientError as err:
            if error_code(err) != "ResourceInUseException":
                raise ProvisionError(f"cannot create stream {name}: {err}") from err
    deadline = time.monotonic() + timeout
    while True:
        status = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        if status["StreamStatus"] == "ACTIVE":
            return created
        if time.monotonic() > deadline:
            raise ProvisionError(f"stream {name} not ACTIVE after {timeout}s")
        time.sleep(0.2)


def _table(
    clients: AwsClients,
    name: str,
    keys: list[tuple[str, str]],
    *,
    ttl: bool,
    numbers: tuple[str, ...] = (),
) -> bool:
    dynamodb = clients.dynamodb
    if _exists(lambda: dynamodb.describe_table(TableName=name)):
        return False
    try:
        dynamodb.create_table(
            TableName=name,
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": k, "KeyType": t} for k, t in keys],
            AttributeDefinitions=[
                {"AttributeName": k, "AttributeType": "N" if k in numbers else "S"} for k, _ in keys
            ],
        )
    except ClientError as err:
        if error_code(err) != "ResourceInUseException":
            raise ProvisionError(f"cannot create table {name}: {err}") from err
        return False
    dynamodb.get_waiter("table_exists").wait(
        TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    if ttl:
        dynamodb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
    return True


def _bucket(settings: Settings, clients: AwsClients) -> bool:
    s3 = clients.s3
    params: dict[str, Any] = {"Bucket": settings.s3_bucket}
    if settings.aws_region != "us-east-1":
        params["CreateBucketConfiguration"] = {"LocationConstraint": settings.aws_region}
    if _exists(lambda: s3.head_bucket(Bucket=settings.s3_bucket)):
        return False
    try:
        s3.create_bucket(**params)
    except ClientError as err:
        if error_code(err) in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            return False
        raise ProvisionError(f"cannot create bucket {settings.s3_bucket}: {err}") from err
    return True


def _secret(clients: AwsClients, name: str, value: str) -> bool:
    secrets = clients.secretsmanager
    if _exists(lambda: secrets.describe_secret(SecretId=name)):
        return False
    try:
        secrets.create_secret(Name=name, SecretString=value)
    except ClientError as err:
        if error_code(err) == "ResourceExistsException":
            return False
        raise ProvisionError(f"cannot create secret {name}: {err}") from err
    return True
