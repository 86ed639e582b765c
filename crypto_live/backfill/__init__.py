"""Backfill and gap repair of 1-minute candles: Binance's REST klines through Kinesis.

`crypto-live backfill klines` and `crypto-live candles gaps [--repair]`. Backfilled candles go
into the stream the producer writes, so the consumers' idempotent sinks stay exactly-once.
"""

from core.errors import CryptoLiveError


class BackfillError(CryptoLiveError):
    """A backfill or a gap check could not be done; the message says why in one line."""


__all__ = ["BackfillError"]
