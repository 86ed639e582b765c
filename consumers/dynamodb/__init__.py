"""The DynamoDB sink: miniTicker history with TTL, plus the latest ticker per symbol."""

from consumers.dynamodb.processor import DynamoDbProcessor, DynamoDbProcessorFactory
from consumers.dynamodb.writer import (
    DynamoDbRetriesExhaustedError,
    DynamoDbSinkError,
    DynamoDbSinkWriter,
    DynamoDbWriteError,
    DynamoDbWriter,
    MemoryDynamoDbWriter,
)

__all__ = [
    "DynamoDbProcessor",
    "DynamoDbProcessorFactory",
    "DynamoDbRetriesExhaustedError",
    "DynamoDbSinkError",
    "DynamoDbSinkWriter",
    "DynamoDbWriteError",
    "DynamoDbWriter",
    "MemoryDynamoDbWriter",
]
