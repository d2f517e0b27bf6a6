"""Typed errors: what went wrong, as data. `proxy.api.app.error_response` maps them to HTTP."""

from __future__ import annotations


class ProxyError(Exception):
    """Base of every error the proxy answers with a JSON body."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class HTTPError(ProxyError):
    """A client-side problem with a given status (400, 401, 403, 404, 405, 413, 429)."""

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or []


class BadValue(ProxyError):
    """A value a control action cannot take; the message says what it can."""

    status = 400


class WriteFailed(ProxyError):
    """The gateway took a write and said it failed (no answer, or an error in it)."""

    status = 502


class UnknownGateway(ProxyError):
    """No gateway has this id."""

    status = 404

    def __init__(self, message: str = "Gateway not found") -> None:
        super().__init__(message)


class GatewayError(ProxyError):
    """The gateway could not give us the data."""

    status = 503
    transient = False  # True: do not cache this outcome for the rest of the window

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class GatewayUnavailable(GatewayError):
    """No usable answer: unreachable, timed out, refused the login, or sent garbage."""


class GatewayStarting(GatewayUnavailable):
    """The proxy has not connected to the gateway yet."""

    # Not remembered for the cache window: the connection may land any moment.
    transient = True


class GatewayBusy(GatewayError):
    """The gateway asked us to back off (429/503); we leave it alone until the cooldown ends."""


class NotSupported(ProxyError):
    """The configured mode cannot answer this (e.g. /tedapi/* without TEDAPI)."""

    status = 404
