"""The candles table's open times (DynamoDB Query per symbol, paginated): what the consumers
wrote, keyed symbol (S) + open_time (N, epoch ms)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from core.aws_errors import aws_error
from crypto_live.backfill import BackfillError
from crypto_live.backfill.minutes import MinuteRange


class CandlesTable:
    """Reads which closed minutes of a symbol the candles table holds."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._dynamodb = dynamodb
        self._table = table
        self.queries = 0

    @property
    def name(self) -> str:
        return self._table

    def open_times(self, symbol: str, span: MinuteRange) -> set[int]:
        """Open times of ``symbol``'s items in ``span`` (Query pages, keys only)."""
        params: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#s = :s AND #t BETWEEN :a AND :b",
            "ExpressionAttributeNames": {"#s": "symbol", "#t": "open_time"},
            "ExpressionAttributeValues": {
                ":s": {"S": symbol},
                ":a": {"N": str(span.first)},
                ":b": {"N": str(span.last)},
            },
            "ProjectionExpression": "#t",
        }
        found: set[int] = set()
        while True:
            page = self._query(params)
            found.update(int(item["open_time"]["N"]) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return found
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _query(self, params: dict[str, Any]) -> dict[str, Any]:
        self.queries += 1
        try:
            page: dict[str, Any] = self._dynamodb.query(**params)
        except (BotoCoreError, ClientError) as err:
            raise BackfillError(
                f"cannot read the candles table {self._table}: {aws_error(err, 'Query')}"
            ) from err
        return page
