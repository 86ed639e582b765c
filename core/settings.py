"""Every setting of every service, validated once at start-up into one frozen object."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigError

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _strict_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected one of true/false/1/0/yes/no")


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


StrictBool = Annotated[bool, BeforeValidator(_strict_bool)]
CommaList = Annotated[tuple[str, ...] | None, BeforeValidator(_comma_list)]

DEFAULT_BINANCE_STREAM_URL = "wss://stream.binance.com:9443/"
# boto3 service name -> its per-service endpoint setting (AWS_ENDPOINT_URL_<SERVICE>).
_SERVICE_ENDPOINTS = {
    "kinesis": "aws_endpoint_url_kinesis",
    "dynamodb": "aws_endpoint_url_dynamodb",
    "s3": "aws_endpoint_url_s3",
    "secretsmanager": "aws_endpoint_url_secrets_manager",
}


class Settings(BaseSettings):
    """The DESIGN.md settings table plus tuning knobs; env vars are the field names upper-cased."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    aws_endpoint_url: str | None = None
    # Per-service endpoints (the AWS SDKs' convention): each overrides AWS_ENDPOINT_URL for its
    # service, e.g. Kinesis on kinesis-mock and the rest on LocalStack or moto.
    aws_endpoint_url_kinesis: str | None = None
    aws_endpoint_url_dynamodb: str | None = None
    aws_endpoint_url_s3: str | None = None
    aws_endpoint_url_secrets_manager: str | None = None
    aws_region: str = Field(
        default="ap-southeast-1", validation_alias=AliasChoices("AWS_REGION", "REGION")
    )
    pipeline_iam_user: str = ""

    kinesis_stream_name: str = Field(default="crypto-live-miniticker", min_length=1)
    kinesis_shard_count: int = Field(default=2, ge=1, le=500)

    binance_websocket_secret: str = "crypto-live.binance_ws"  # noqa: S105 - a name
    binance_streams: Annotated[CommaList, Field(default=None)]
    binance_stream_url: str = DEFAULT_BINANCE_STREAM_URL
    testnet: StrictBool = False
    binance_api_key: SecretStr | None = None
    # Signed REST calls (`orders snapshot`): Secrets Manager secret, JSON
    # {"api_key": "...", "api_secret": "..."}; read into SecretStr, never logged.
    binance_api_secret: str = Field(default="crypto-live.binance_api", min_length=1)  # a name
    # python-binance's REST base (its API_URL), e.g. the simulated exchange's
    # http://127.0.0.1:PORT/api; unset: Binance's (or its testnet's with TESTNET).
    binance_api_url: str | None = None
    # Binance closes every connection after 24 h: open the next one before that, on purpose.
    binance_rotate_hours: float = Field(default=23.0, gt=0, le=24)
    # /healthz turns unhealthy once no websocket connection has been open for this long.
    binance_down_unhealthy_seconds: float = Field(default=30.0, gt=0)

    dynamo_table_name: str = "crypto-live-miniticker"
    dynamo_latest_table_name: str = "crypto-live-ticker-latest"
    dynamo_orders_table_name: str = Field(default="crypto-live-orders", min_length=3)
    # Closed 1-minute klines: HASH symbol, RANGE open_time (a number); no TTL.
    dynamo_candles_table_name: str = Field(default="crypto-live-candles", min_length=3)
    retention_ttl_days: int = Field(default=1, ge=1)

    s3_bucket: str = Field(default="crypto-live-bucket", min_length=3)
    s3_jsonl_dir_path: str = "batch_jsonl"
    # Closed klines' gzipped JSONL, in the same hour partitions as the miniTicker prefix.
    s3_klines_dir_path: str = Field(default="klines_jsonl", min_length=1)
    max_batch_size: int = Field(default=1000, ge=1)
    max_batch_timeout: int = Field(default=10, ge=1)

    consumer_app_name: str | None = None
    initial_position: str = "TRIM_HORIZON"

    # Consumer engine (KCL names where KCL has one).
    failover_seconds: float = Field(default=10.0, ge=1.0)
    shard_discovery_seconds: float = Field(default=10.0, gt=0)
    idle_time_between_reads_ms: int = Field(default=500, ge=0)
    get_records_limit: int = Field(default=10_000, ge=1, le=10_000)
    # User records one GetRecords page may hold (a KPL aggregate counts as the records in it):
    # what a consumer far behind holds in memory per shard, and how fast it catches up.
    get_records_max_user_records: int = Field(default=10_000, ge=1)
    dynamodb_max_in_flight: int = Field(default=4, ge=1, le=64)
    s3_sse: Literal["AES256", "aws:kms"] | None = None
    s3_kms_key_id: str | None = None
    max_batch_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    batch_grace_ms: int = Field(default=2000, ge=0)

    # Producer tuning (KPL names where KPL has one).
    record_max_buffered_time_ms: int = Field(default=100, ge=1, le=60_000)
    # At most a Kinesis record (1 MiB) less the longest partition key (1 KiB, counted in it).
    aggregation_max_bytes: int = Field(default=51_200, ge=1024, le=1_047_552)
    producer_queue_size: int = Field(default=10_000, ge=1)
    max_in_flight_puts: int = Field(default=4, ge=1, le=64)
    shard_map_refresh_seconds: float = Field(default=30.0, gt=0)
    shutdown_timeout_seconds: float = Field(default=15.0, gt=0)
    dead_letter_flush_seconds: float = Field(default=5.0, gt=0)
    # Dead letters waiting for S3 at most (then producing waits), and where they go when S3
    # cannot take them at shutdown (relative to the working directory).
    dead_letter_max_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    dead_letter_dir: str = Field(default="dead-letters", min_length=1)

    # Simulated exchange.
    exchange_host: str = "127.0.0.1"
    exchange_port: int = Field(default=9443, ge=0, le=65535)
    exchange_symbols: int = Field(default=20, ge=1, le=5000)
    exchange_rate_hz: float = Field(default=1.0, gt=0, le=1000)
    # Like Binance, end every connection with a close frame after this long (24 h there).
    exchange_max_connection_seconds: float = Field(default=24 * 3600, gt=0)
    # Close each connection after this many frames (tests and `up --source sim`); 0 = never.
    exchange_close_after_frames: int = Field(default=0, ge=0)
    # REST request weight one client may use per minute before 429 answers (Binance: 6000).
    exchange_weight_limit: int = Field(default=6_000, ge=1)

    # Embedded AWS (moto server) used by `crypto-live up` when AWS_ENDPOINT_URL is unset.
    embedded_aws_port: int = Field(default=4566, ge=0, le=65535)

    # Analytics and dashboard.
    lake_slack_hours: int = Field(default=1, ge=0, le=24)
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(default=8050, ge=0, le=65535)
    dashboard_metrics_urls: Annotated[CommaList, Field(default=None)]

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # /metrics and /healthz: unset, each service's own port (core.health.DEFAULT_PORTS);
    # 0 picks a free port, -1 turns the endpoint off; a taken port falls back to a free one.
    metrics_port: int | None = Field(default=None, ge=-1, le=65535)
    metrics_host: str = "0.0.0.0"  # noqa: S104 - containers are scraped from outside
    # Where a service writes the port it serves on (for `crypto-live healthcheck`); unset: nowhere.
    metrics_port_file: str | None = None

    @field_validator("s3_klines_dir_path")
    @classmethod
    def _klines_apart(cls, value: str, info: ValidationInfo) -> str:
        # Mixed into the miniTicker prefix, kline rows would break every reader of either.
        if value.strip("/") in ("", str(info.data.get("s3_jsonl_dir_path", "")).strip("/")):
            raise ValueError("must be a prefix of its own, not empty nor S3_JSONL_DIR_PATH")
        return value

    def endpoint_url_for(self, service: str) -> str | None:
        """The endpoint of boto3 service ``service``: its own variable, else AWS_ENDPOINT_URL."""
        field = _SERVICE_ENDPOINTS.get(service)
        own: str | None = getattr(self, field) if field else None
        return own or self.aws_endpoint_url or None

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields replaced and validated again (CLI flags mirror env vars)."""
        return type(self).model_validate({**self.model_dump(), **changes})


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = first.get("loc") or ("settings",)
    name = str(loc[0]).upper()
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"invalid setting {name}{shown}: {first.get('msg', 'invalid value')}"


def load_settings(**overrides: Any) -> Settings:
    """Read the environment once; a bad value raises ConfigError naming the variable."""
    try:
        settings = Settings(**overrides)
    except ValidationError as err:
        raise ConfigError(_describe(err)) from err
    _check_position(settings.initial_position)
    return settings


def _check_position(position: str) -> None:
    from datetime import datetime

    if position in ("TRIM_HORIZON", "LATEST"):
        return
    if position.startswith("AT_TIMESTAMP:"):
        try:
            datetime.fromisoformat(position.removeprefix("AT_TIMESTAMP:"))
        except ValueError as err:
            raise ConfigError(
                f"invalid setting INITIAL_POSITION (got {position!r}): bad ISO time"
            ) from err
        return
    raise ConfigError(
        f"invalid setting INITIAL_POSITION (got {position!r}): "
        "expected TRIM_HORIZON, LATEST or AT_TIMESTAMP:<iso time>"
    )
