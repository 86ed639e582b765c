"""boto3 clients from settings: the same code talks to moto, LocalStack and AWS."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from core.settings import Settings

# Standard retries let botocore back off on throttling before our own retry logic sees it.
# Timeouts are per service and short enough that no call waits minutes on a dead network (a
# partition accepts the connection and never answers): a hung call gives up after about
# max_attempts * (connect or read timeout). Kinesis and DynamoDB answer in milliseconds; S3
# gets longer for large objects.
_TIMEOUTS: dict[str, tuple[float, float]] = {  # service -> (connect, read) seconds
    "kinesis": (3.0, 5.0),
    "dynamodb": (3.0, 10.0),
    "s3": (3.0, 20.0),
}
_DEFAULT_TIMEOUTS = (5.0, 30.0)


def client_config(service: str, *, validated: bool = True) -> Config:
    """The botocore Config of ``service``'s clients: its timeouts, standard retries; without
    client-side parameter validation when not ``validated`` (see ``AwsClients.sink_client``)."""
    connect, read = _TIMEOUTS.get(service, _DEFAULT_TIMEOUTS)
    return Config(
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=connect,
        read_timeout=read,
        max_pool_connections=32,
        parameter_validation=validated,
    )


def list_shards(kinesis: Any, stream: str) -> list[dict[str, Any]]:
    """Every shard of the stream, open and closed, following NextToken pages."""
    response = kinesis.list_shards(StreamName=stream)
    shards: list[dict[str, Any]] = list(response["Shards"])
    while token := response.get("NextToken"):
        response = kinesis.list_shards(NextToken=token)
        shards.extend(response["Shards"])
    return shards


class AwsClients:
    """One boto3 session per service; clients are created once and shared (they are thread-safe)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._session = boto3.session.Session(
            profile_name=settings.pipeline_iam_user or None,
            region_name=settings.aws_region,
        )
        self._clients: dict[str, Any] = {}

    @property
    def endpoint_url(self) -> str | None:
        return self._settings.aws_endpoint_url

    def client(self, service: str, *, validated: bool = True) -> Any:
        """A cached boto3 client for ``service`` on its endpoint: AWS_ENDPOINT_URL_<SERVICE>, else
        AWS_ENDPOINT_URL, else AWS."""
        key = service if validated else f"{service} (unvalidated)"
        if key not in self._clients:
            self._clients[key] = self._session.client(
                service,
                endpoint_url=self._settings.endpoint_url_for(service),
                config=client_config(service, validated=validated),
            )
        return self._clients[key]

    def sink_client(self, service: str) -> Any:
        """A client of ``service`` for a consumer sink's writes: botocore's client-side parameter
        validation off (Config(parameter_validation=False)). The sinks build every request from
        fixed shapes and the service validates it anyway; botocore's walk over every attribute
        of every item was the DynamoDB consumer's largest CPU cost."""
        return self.client(service, validated=False)

    @property
    def kinesis(self) -> Any:
        return self.client("kinesis")

    @property
    def dynamodb(self) -> Any:
        return self.client("dynamodb")

    @property
    def s3(self) -> Any:
        return self.client("s3")

    @property
    def secretsmanager(self) -> Any:
        return self.client("secretsmanager")

    def close(self) -> None:
        """Close every client's connection pool (idempotent)."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()
