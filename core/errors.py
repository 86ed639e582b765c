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
