"""The analytics tier on the S3 raw lake: compaction to Parquet, 1-minute candles, daily reports.

Pure logic (``layout``, ``candles``, ``report``, ``manifest``) imports no boto3; the jobs in
``crypto_live.lake.jobs`` read and write only through a ``LakeStore``.
"""

from __future__ import annotations

from core.errors import CryptoLiveError


class LakeError(CryptoLiveError):
    """Base of the lake jobs' errors: bad input objects, bad ranges, unexpected lake contents."""
