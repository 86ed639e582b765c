"""Account orders: `crypto-live orders snapshot` (signed allOrders -> lake and DynamoDB)."""

from core.errors import CryptoLiveError


class OrdersError(CryptoLiveError):
    """An orders snapshot could not be taken; the message says why in one line."""


__all__ = ["OrdersError"]
