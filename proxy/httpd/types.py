"""The two values that cross the line between the HTTP server and the app."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.httpd.stream import Stream


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed HTTP request, as the app sees it."""

    method: str
    target: str  # the raw request-target, e.g. "/pw-proxy/aggregates?x=1"
    headers: Mapping[str, str]  # case-insensitive lookup (an email.message.Message)
    body: bytes = b""
    client: str = ""  # peer IP address


@dataclass(slots=True)
class Response:
    """Status, headers and a fully encoded body; the server adds framing headers.

    With a `stream`, the body is ignored: the server writes the head and then keeps the
    connection open as a server-sent event stream or WebSocket (`proxy.httpd.stream`).
    """

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    stream: Stream | None = None
    interim: int | None = None  # a 1xx status sent (without content) ahead of this one, e.g. 102


App = Callable[[Request], Response]
