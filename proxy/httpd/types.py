"""The values that cross the line between the HTTP server and the app, and what an app is."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Protocol, runtime_checkable

if TYPE_CHECKING:
    from proxy.httpd.stream import Stream


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed HTTP request, as the app sees it."""

    method: str
    target: str  # the raw request-target, e.g. "/pw-proxy/aggregates?x=1"
    headers: Mapping[str, str]  # case-insensitive lookup; `get_all` for repeated fields
    body: bytes = b""
    client: str = ""  # peer IP address


@dataclass(slots=True)
class Response:
    """Status, headers and a fully encoded body; the server adds framing headers.

    With a `stream`, the body is ignored: the server writes the head and then keeps the
    connection open as a server-sent event stream or WebSocket (`proxy.httpd.stream`).
    With a `file` (open for reading, at its start), the body is that file: the worker writes
    it in chunks, so a large one never sits in memory whole, and closes it afterwards.
    """

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    stream: Stream | None = None
    interim: int | None = None  # a 1xx status sent (without content) ahead of this one, e.g. 102
    file: BinaryIO | None = None  # the body, read and sent in chunks (Content-Length: its size)


App = Callable[[Request], Response]
"""An app: any callable from a request to a response. The server calls it from a worker
thread, so it may block (on a backend, on a lock)."""


@runtime_checkable
class ReadyApp(Protocol):
    """An app that can also answer some requests at once, from the server's event loop.

    The server asks `ready` first for every GET and HEAD; a `Response` is written by the loop
    thread without a worker hop, None sends the request to a worker that calls the app. The
    two must give the same answer to the same request: `ready` is a shortcut, not a route.
    """

    def __call__(self, request: Request) -> Response: ...

    def ready(self, request: Request) -> Response | None:
        """The answer when it is already at hand (e.g. bytes rendered for this cache window),
        else None. Runs on the event loop: it must be cheap, never block, never do I/O, never
        wait for a lock that anyone holds across I/O, and never answer with a stream or a file
        (such an answer is declined, the file closed, and a worker asks the app again)."""
        ...
