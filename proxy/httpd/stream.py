"""Streaming responses: server-sent events and WebSocket, as the HTTP server sees them.

Knows no Powerwall. An app answers a stream route with a `Response` carrying a `Stream`; the
server writes the head (for WebSocket the 101 of the opening handshake), then keeps the
connection in its event loop and calls `Stream.open(sink)`. Whoever produces data offers
`Push` messages to the sink from any thread. A `Push` is encoded once per protocol and the
same bytes go to every listener.

WebSocket framing is `wsproto`'s (sans-IO: it parses and builds frames, we own the socket):
the opening handshake (`H11Handshake`), the frames a client sends (masked, fragmented, pings,
close) and the frames we send. Our own rules on top: a client message over `MAX_MESSAGE`
bytes closes with 1009, and no extension is negotiated, so a frame built once is valid on
every connection.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason, FrameProtocol
from wsproto.handshake import H11Handshake
from wsproto.utilities import ProtocolError, RemoteProtocolError

__all__ = ["MAX_MESSAGE", "SSE", "WEBSOCKET", "Push", "Sink", "Stream", "WebSocket", "handshake"]

SSE = "sse"
WEBSOCKET = "websocket"
MAX_MESSAGE = 64 * 1024  # the largest message (all its fragments) a client may send us
SSE_HEARTBEAT = b": keep-alive\n\n"  # a comment line: ignored by EventSource, keeps proxies open
GOING_AWAY = CloseReason.GOING_AWAY  # 1001: the server is shutting down
NORMAL = CloseReason.NORMAL_CLOSURE  # 1000
# The 101's own fields (wsproto writes them); an app's copy would contradict them.
_HANDSHAKE_OWNED = frozenset({"upgrade", "connection", "sec-websocket-accept", "sec-websocket-extensions",
                              "sec-websocket-protocol", "content-length", "transfer-encoding", "date",
                              "server", "content-type"})


class Push:
    """One message for every listener of a topic: a JSON body, its event id and type.

    The wire forms are built on first use and kept, so a thousand listeners share one encoding.
    `event` names the server-sent event's type (unnamed: a plain message); a WebSocket frame
    carries the data alone.
    """

    __slots__ = ("_sse", "_ws", "data", "event", "event_id")

    def __init__(self, data: bytes, event_id: str = "", event: str = "") -> None:
        if b"\n" in data or b"\r" in data:
            raise ValueError("a push is one line of JSON")
        if any("\n" in field or "\r" in field for field in (event_id, event)):
            raise ValueError("an event id or type is one line")
        self.data = data
        self.event_id = event_id
        self.event = event
        self._sse: bytes | None = None
        self._ws: bytes | None = None

    def sse(self) -> bytes:
        """The `text/event-stream` event: `event:` and `id:` (when there are), `data:`, a blank
        line."""
        encoded = self._sse
        if encoded is None:
            head = b"event: " + self.event.encode() + b"\n" if self.event else b""
            head += b"id: " + self.event_id.encode() + b"\n" if self.event_id else b""
            encoded = self._sse = head + b"data: " + self.data + b"\n\n"
        return encoded

    def websocket(self) -> bytes:
        """One unmasked, unfragmented text frame (what a server sends)."""
        encoded = self._ws
        if encoded is None:
            frames = FrameProtocol(client=False, extensions=[])
            encoded = self._ws = bytes(frames.send_data(self.data.decode("utf-8"), fin=True))
        return encoded

    def encoded(self, protocol: str) -> bytes:
        return self.websocket() if protocol == WEBSOCKET else self.sse()


class Sink(Protocol):
    """A listener's end of a stream, given to `Stream.open`; safe to use from any thread."""

    def offer(self, push: Push) -> bool:
        """Queue a push; False when the listener is gone (closed, or dropped as too slow)."""
        ...

    def end(self, push: Push | None = None) -> None:
        """Send a last push (if any), then close the stream normally."""
        ...


Unsubscribe = Callable[[], None]


@dataclass(frozen=True, slots=True)
class Stream:
    """What a streaming response does once its head is out.

    `open` runs in the server's event loop and must not block: it subscribes the sink and
    returns how to unsubscribe, which the server calls once when the connection ends.
    """

    protocol: str  # SSE or WEBSOCKET
    open: Callable[[Sink], Unsubscribe]
    retry_ms: int = 3000  # SSE: how long EventSource waits before reconnecting


# --- WebSocket -------------------------------------------------------------------------------


class Rejection(NamedTuple):
    """A refused opening handshake: the status, extra headers and why."""

    status: int
    headers: list[tuple[str, str]]
    reason: str


def handshake(request_bytes: bytes,
              headers: Sequence[tuple[str, str]] = ()) -> tuple[bytes, Connection] | Rejection:
    """Answer a WebSocket opening handshake (RFC 6455 4.2) given the raw request.

    Returns the 101 response (carrying ``headers`` too, e.g. CORS) and the connection to use
    from then on, or why it is refused: 400 for a malformed request (no `Sec-WebSocket-Key`,
    a key that is not 16 bytes in base64, no `Upgrade: websocket`), 426 with
    `Sec-WebSocket-Version: 13` for another version.
    """
    shake = H11Handshake(ConnectionType.SERVER)
    try:
        shake.receive_data(request_bytes)
        requests = [e for e in shake.events() if isinstance(e, Request)]
    except RemoteProtocolError as exc:
        return _rejection(exc)
    if not requests:
        return Rejection(400, [], "Bad Request: not a WebSocket handshake")
    key = dict(requests[0].extra_headers).get(b"sec-websocket-key", b"")
    if not _valid_key(key):
        return Rejection(400, [], "Bad Request: Sec-WebSocket-Key must be 16 bytes in base64")
    extra = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers
             if n.lower() not in _HANDSHAKE_OWNED]
    head = shake.send(AcceptConnection(extra_headers=extra))
    connection = shake.connection
    if connection is None:  # pragma: no cover - wsproto always sets it on accept
        return Rejection(500, [], "Internal Server Error")
    return head, connection


def _rejection(exc: RemoteProtocolError) -> Rejection:
    hint = exc.event_hint
    if isinstance(hint, RejectConnection):
        headers = [(bytes(n).decode("latin-1"), bytes(v).decode("latin-1")) for n, v in hint.headers]
        return Rejection(hint.status_code, headers, f"Bad WebSocket handshake: {exc}")
    return Rejection(400, [], f"Bad WebSocket handshake: {exc}")


def _valid_key(key: bytes) -> bool:
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


@dataclass(slots=True)
class WebSocket:
    """One open WebSocket, driven by the event loop: bytes in, bytes out, when to close.

    `received` feeds what the client sent and returns what to send back (pongs, the answer to
    a close). `closing` is set once a close frame went out; `finished` once nothing more may
    be sent or read, at which point the server closes the TCP connection.
    """

    connection: Connection
    message_size: int = 0  # bytes of the client's message under way
    closing: bool = False  # we sent a close frame
    finished: bool = False  # the close handshake is over (or the connection failed)

    def received(self, data: bytes) -> bytes:
        try:
            self.connection.receive_data(data)
        except ProtocolError:  # data after the close handshake: nothing more to say
            self.finished = True
            return b""
        return b"".join(self._answers())

    def _answers(self) -> Iterator[bytes]:
        for event in self.connection.events():
            if isinstance(event, Ping):
                yield self._send(event.response())
            elif isinstance(event, (TextMessage, BytesMessage)):
                data = event.data
                self.message_size += len(data.encode() if isinstance(data, str) else data)
                if self.message_size > MAX_MESSAGE:
                    yield self.close(CloseReason.MESSAGE_TOO_BIG, "message too big")
                    self.finished = True
                    return
                if event.message_finished:
                    self.message_size = 0
            elif isinstance(event, CloseConnection):
                yield self._on_close(event)
                return

    def _on_close(self, event: CloseConnection) -> bytes:
        state = self.connection.state
        if state is ConnectionState.REMOTE_CLOSING:  # the client started the close handshake
            self.finished = True
            return self._send(event.response())
        if state is ConnectionState.CLOSED:  # the client answered our close
            self.finished = True
            return b""
        # A protocol error found by the parser (unmasked frame, bad opcode, bad UTF-8 ...):
        # fail the connection with the code it names.
        out = self.close(event.code, event.reason or "")
        self.finished = True
        return out

    def close(self, code: int = NORMAL, reason: str = "") -> bytes:
        """Our close frame, once; b"" if one was already sent."""
        if self.closing or self.connection.state not in (ConnectionState.OPEN,
                                                         ConnectionState.REMOTE_CLOSING):
            return b""
        self.closing = True
        return self._send(CloseConnection(code=code, reason=reason or None))

    def ping(self) -> bytes:
        if self.closing or self.connection.state is not ConnectionState.OPEN:
            return b""
        return self._send(Ping())

    def _send(self, event: CloseConnection | Ping | object) -> bytes:
        try:
            return bytes(self.connection.send(event))  # type: ignore[arg-type]
        except ProtocolError:
            return b""

