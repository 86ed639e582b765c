"""The error hierarchy shared by every crypto-live package."""


class CryptoLiveError(Exception):
    """Base of every error raised on purpose by crypto-live.

    ``retriable`` tells retry code whether trying the same call again may succeed,
    so callers check a flag instead of a list of exception types.
    """

    retriable: bool = False


class ConfigError(CryptoLiveError):
    """A setting is missing or invalid; the message names the variable."""


class SourceUnavailableError(CryptoLiveError):
    """The market data source (Binance or a local websocket server) cannot be reached."""

    retriable = True


class AwsError(CryptoLiveError):
    """An AWS call failed; made by ``core.aws_errors.aws_error`` from a botocore error.

    ``retriable``: sending the same call again may succeed (throttling, 5xx, timeouts, lost
    connections); ``throttled``: it was refused for rate, so back off harder; ``code`` is AWS's
    error code (empty for a connection-level failure).
    """

    def __init__(self, message: str, *, retriable: bool, throttled: bool = False, code: str = ""):
        super().__init__(message)
        self.retriable = retriable
        self.throttled = throttled
        self.code = code
