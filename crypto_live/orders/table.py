"""Orders as the lake and DynamoDB hold them, pure: Binance's allOrders items to rows, rows to
Parquet/CSV bytes, object keys and DynamoDB items. Equal rows always give equal bytes."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from crypto_live.lake.arrow import pa
from crypto_live.lake.layout import orders_keys
from crypto_live.lake.parquet import to_parquet
from crypto_live.orders import OrdersError

# The columns, in its order and spelling.
COLUMNS: Final = ("Symbol", "OrderID", "Price", "OrigQty", "ExecutedQty", "status", "type", "side")
SCALE: Final = 8
ORDERS_SCHEMA: Final = pa.schema(
    [
        pa.field("Symbol", pa.string(), nullable=False),
        pa.field("OrderID", pa.int64(), nullable=False),
        pa.field("Price", pa.decimal128(38, SCALE)),
        pa.field("OrigQty", pa.decimal128(38, SCALE)),
        pa.field("ExecutedQty", pa.decimal128(38, SCALE)),
        pa.field("status", pa.string()),
        pa.field("type", pa.string()),
        pa.field("side", pa.string()),
    ]
)
_QUANTUM: Final = Decimal(1).scaleb(-SCALE)


@dataclass(frozen=True, slots=True)
class OrderRow:
    """One order; ``time_ms`` (placed) only picks the snapshot's date, it is not a column."""

    symbol: str
    order_id: int
    price: Decimal
    orig_qty: Decimal
    executed_qty: Decimal
    status: str
    type: str
    side: str
    time_ms: int

    def values(self) -> tuple[object, ...]:
        """The row in COLUMNS order."""
        return (
            self.symbol,
            self.order_id,
            self.price,
            self.orig_qty,
            self.executed_qty,
            self.status,
            self.type,
            self.side,
        )


def _amount(order: Mapping[str, Any], name: str) -> Decimal:
    try:
        return Decimal(str(order[name])).quantize(_QUANTUM)
    except (KeyError, InvalidOperation) as err:
        raise OrdersError(f"Binance sent an order without a valid {name}: {order!r}") from err


def order_row(order: Mapping[str, Any]) -> OrderRow:
    """One allOrders item as a row; amounts exact, at Binance's eight decimals."""
    try:
        return OrderRow(
            symbol=str(order["symbol"]),
            order_id=int(order["orderId"]),
            price=_amount(order, "price"),
            orig_qty=_amount(order, "origQty"),
            executed_qty=_amount(order, "executedQty"),
            status=str(order["status"]),
            type=str(order["type"]),
            side=str(order["side"]),
            time_ms=int(order["time"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise OrdersError(f"Binance sent an order this tool cannot read: {order!r}") from err


def order_rows(orders: Iterable[Mapping[str, Any]]) -> list[OrderRow]:
    """Rows by order id, one per id (pages that overlap give duplicates)."""
    by_id = {row.order_id: row for row in map(order_row, orders)}
    return [by_id[order_id] for order_id in sorted(by_id)]


def to_table(rows: Sequence[OrderRow]) -> Any:
    columns = list(zip(*(row.values() for row in rows), strict=True)) or [()] * len(COLUMNS)
    return pa.Table.from_arrays(
        [
            pa.array(list(values), type=field.type)
            for values, field in zip(columns, ORDERS_SCHEMA, strict=True)
        ],
        schema=ORDERS_SCHEMA,
    )


def to_parquet_bytes(rows: Sequence[OrderRow]) -> bytes:
    return to_parquet(to_table(rows))


def to_csv_bytes(rows: Sequence[OrderRow]) -> bytes:
    """CSV with the COLUMNS header; amounts as fixed-point text, never exponents."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(
            format(value, "f") if isinstance(value, Decimal) else value for value in row.values()
        )
    return out.getvalue().encode()


def snapshot_day(rows: Sequence[OrderRow]) -> date:
    """The UTC day of the snapshot's first order: its date partition."""
    return datetime.fromtimestamp(rows[0].time_ms / 1000, UTC).date()


def snapshot_keys(rows: Sequence[OrderRow]) -> tuple[str, str]:
    """(CSV key, Parquet key), fixed by the symbol and the first and last order ids."""
    if not rows:
        raise OrdersError("no orders to name a snapshot after")
    name = f"snapshot-{rows[0].order_id}-{rows[-1].order_id}"
    return orders_keys(rows[0].symbol, snapshot_day(rows), name)


def dynamodb_item(row: OrderRow) -> dict[str, dict[str, str]]:
    """The orders table's item (low-level attribute values), keyed (symbol, orderId)."""
    return {
        "symbol": {"S": row.symbol},
        "orderId": {"N": str(row.order_id)},
        "price": {"N": format(row.price.normalize(), "f")},
        "origQty": {"N": format(row.orig_qty.normalize(), "f")},
        "executedQty": {"N": format(row.executed_qty.normalize(), "f")},
        "status": {"S": row.status},
        "type": {"S": row.type},
        "side": {"S": row.side},
        "time": {"N": str(row.time_ms)},
    }
