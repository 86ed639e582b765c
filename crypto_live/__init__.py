"""crypto-live: Binance miniTicker through Amazon Kinesis into DynamoDB and S3."""

__version__ = "0.1.0"
