"""Where a snapshot goes: the API secret read in, rows out to the lake and the orders table.

Each function makes the AWS calls its name says; nothing here decides what a snapshot holds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import SecretStr

from core.aws_errors import aws_error, error_code
from crypto_live.lake.store import CSV_CONTENT_TYPE, PARQUET_CONTENT_TYPE, LakeStore, put_if_changed
from crypto_live.orders import OrdersError
from crypto_live.orders.binance_api import ApiCredentials
from crypto_live.orders.table import (
    OrderRow,
    dynamodb_item,
    snapshot_keys,
    to_csv_bytes,
    to_parquet_bytes,
)

log = logging.getLogger(__name__)

# The item attribute -> its placeholder: a put changes the table only when the order is new or
# any of these differ, so a re-run of the same snapshot writes nothing.
_COMPARED = ("price", "origQty", "executedQty", "status", "type", "side", "time")
_CONDITION = "attribute_not_exists(orderId) OR " + " OR ".join(
    f"#{name} <> :{name}" for name in _COMPARED
)


def read_credentials(secretsmanager: Any, secret_id: str) -> ApiCredentials:
    """The API key and secret from JSON ``{"api_key", "api_secret"}``; errors never show them."""
    try:
        text = secretsmanager.get_secret_value(SecretId=secret_id)["SecretString"]
    except ClientError as err:
        if error_code(err) == "ResourceNotFoundException":
            raise OrdersError(
                f"secret {secret_id} not found: create it (crypto-live provision makes a "
                'placeholder) with JSON {"api_key": ..., "api_secret": ...}'
            ) from err
        raise aws_error(err, f"reading secret {secret_id}") from err
    except BotoCoreError as err:
        raise aws_error(err, f"reading secret {secret_id}") from err
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        value = None
    if not isinstance(value, dict):
        raise OrdersError(f"secret {secret_id} is not a JSON object") from None
    missing = [
        k for k in ("api_key", "api_secret") if not isinstance(value.get(k), str) or not value[k]
    ]
    if missing:
        raise OrdersError(f"secret {secret_id} has no {' or '.join(missing)}")
    return ApiCredentials(SecretStr(value["api_key"]), SecretStr(value["api_secret"]))


@dataclass(frozen=True, slots=True)
class LakeOutcome:
    csv_key: str
    parquet_key: str
    written: int  # objects written (0 on a re-run: the same bytes were there)


def write_lake(store: LakeStore, rows: Sequence[OrderRow]) -> LakeOutcome:
    """The snapshot's Parquet and CSV under keys fixed by its contents; unchanged ones skipped."""
    csv_key, parquet_key = snapshot_keys(rows)
    _, parquet_written = put_if_changed(
        store, parquet_key, to_parquet_bytes(rows), PARQUET_CONTENT_TYPE
    )
    _, csv_written = put_if_changed(store, csv_key, to_csv_bytes(rows), CSV_CONTENT_TYPE)
    return LakeOutcome(csv_key, parquet_key, int(parquet_written) + int(csv_written))


def _put_order(dynamodb: Any, table: str, row: OrderRow) -> bool:
    """One conditional PutItem; False when the table already holds this order unchanged."""
    item = dynamodb_item(row)
    try:
        dynamodb.put_item(
            TableName=table,
            Item=item,
            ConditionExpression=_CONDITION,
            ExpressionAttributeNames={f"#{name}": name for name in _COMPARED},
            ExpressionAttributeValues={f":{name}": item[name] for name in _COMPARED},
        )
    except ClientError as err:
        if error_code(err) == "ConditionalCheckFailedException":
            return False
        raise aws_error(err, f"PutItem into {table}") from err
    except BotoCoreError as err:
        raise aws_error(err, f"PutItem into {table}") from err
    return True


def write_orders_table(
    dynamodb: Any, table: str, rows: Sequence[OrderRow], max_in_flight: int = 4
) -> int:
    """Idempotent puts of every row keyed (symbol, orderId); returns how many changed the table."""
    with ThreadPoolExecutor(max_in_flight, thread_name_prefix="orders-put") as pool:
        return sum(pool.map(lambda row: _put_order(dynamodb, table, row), rows))
