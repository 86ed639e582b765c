"""Which Binance streams to read: BINANCE_STREAMS, else the Secrets Manager secret."""

from __future__ import annotations

import json
import re
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from core.errors import ConfigError

_STREAM = re.compile(r"^(?:[a-z0-9]{1,20}@(?:miniTicker|kline_1m)|!miniTicker@arr)$")


def check_streams(streams: list[str] | tuple[str, ...], origin: str) -> tuple[str, ...]:
    """The streams, or ConfigError naming ``origin`` when one is neither a miniTicker stream nor
    a 1-minute kline stream."""
    if not streams:
        raise ConfigError(f"invalid setting {origin}: no streams")
    for stream in streams:
        if not isinstance(stream, str) or not _STREAM.match(stream):
            raise ConfigError(
                f"invalid setting {origin} (got {stream!r}): "
                "expected <symbol lower>@miniTicker, <symbol lower>@kline_1m or !miniTicker@arr"
            )
    return tuple(streams)


def streams_from_secret(secretsmanager: Any, secret_id: str) -> tuple[str, ...]:
    """Read ``{"streams": [...]}`` from the secret named by BINANCE_WEBSOCKET_SECRET."""
    origin = f"BINANCE_WEBSOCKET_SECRET ({secret_id})"
    try:
        value = secretsmanager.get_secret_value(SecretId=secret_id)["SecretString"]
    except (ClientError, BotoCoreError) as err:
        raise ConfigError(f"invalid setting {origin}: cannot read the secret: {err}") from err
    try:
        streams = json.loads(value)["streams"]
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            f'invalid setting {origin}: expected JSON {{"streams": [...]}}: {err}'
        ) from err
    if not isinstance(streams, list):
        raise ConfigError(f"invalid setting {origin}: 'streams' must be a list")
    return check_streams(streams, origin)
