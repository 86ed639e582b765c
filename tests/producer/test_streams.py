"""Which Binance streams the producer reads: the Secrets Manager secret, or BINANCE_STREAMS."""

from __future__ import annotations

import json

import pytest

from core.aws import AwsClients
from core.errors import ConfigError
from core.settings import Settings
from crypto_live.provision import DEFAULT_STREAMS, provision
from producer.app import resolve_streams
from producer.streams import check_streams

pytestmark = pytest.mark.integration


def test_streams_come_from_the_secret_unless_overridden(
    aws_settings: Settings, aws: AwsClients
) -> None:
    provision(aws_settings, aws)
    assert resolve_streams(aws_settings, aws) == DEFAULT_STREAMS
    overridden = aws_settings.with_overrides(binance_streams="!miniTicker@arr")
    assert resolve_streams(overridden, aws) == ("!miniTicker@arr",)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("not json", "expected JSON"),
        (json.dumps({"symbols": []}), "expected JSON"),
        (json.dumps({"streams": "btcusdt@miniTicker"}), "must be a list"),
        (json.dumps({"streams": ["BTCUSDT@trade"]}), "expected <symbol lower>@miniTicker"),
        (json.dumps({"streams": []}), "no streams"),
    ],
)
def test_a_bad_secret_is_a_clear_config_error(
    aws_settings: Settings, aws: AwsClients, secret: str, message: str
) -> None:
    aws.secretsmanager.create_secret(
        Name=aws_settings.binance_websocket_secret, SecretString=secret
    )
    with pytest.raises(ConfigError, match=message) as raised:
        resolve_streams(aws_settings, aws)
    assert "BINANCE_WEBSOCKET_SECRET" in str(raised.value)


def test_a_missing_secret_names_the_setting(aws_settings: Settings, aws: AwsClients) -> None:
    with pytest.raises(ConfigError, match=r"BINANCE_WEBSOCKET_SECRET .*cannot read the secret"):
        resolve_streams(aws_settings, aws)


def test_miniticker_and_one_minute_kline_streams_are_accepted() -> None:
    streams = ["btcusdt@miniTicker", "btcusdt@kline_1m", "!miniTicker@arr"]
    assert check_streams(streams, "BINANCE_STREAMS") == tuple(streams)


@pytest.mark.parametrize("stream", ["btcusdt@kline_5m", "BTCUSDT@kline_1m", "btcusdt@kline"])
def test_other_kline_streams_are_a_config_error_naming_the_setting(stream: str) -> None:
    with pytest.raises(ConfigError, match=r"BINANCE_STREAMS .*<symbol lower>@kline_1m"):
        check_streams([stream], "BINANCE_STREAMS")
