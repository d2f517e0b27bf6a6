"""The HTTP/1.1 server the app runs on.

Thread-per-connection (``ThreadingHTTPServer``) puts one thread per keep-alive client in a
fight for the GIL, so instead one event-loop thread parks every idle or half-read connection
in a ``selectors`` loop, and only a connection holding a complete request (head and body) is
handed to a small fixed pool of workers. Workers parse with ``BaseHTTPRequestHandler``, call
the app, answer with one ``sendall`` and hand the connection back. Slow or idle clients
therefore cost a small buffer, never a thread.

At ``max_connections`` a new connection evicts the connection that has been parked in the
loop the longest (idle keep-alive, slow head, TLS handshake or lingering close); connections
whose request is queued or being answered are never evicted. If every connection is busy the
new one is closed at once. Running out of file descriptors is handled the same way: when
accept() fails with EMFILE/ENFILE the longest-parked connections are closed and accepting goes
on (EMFILE also lowers the cap below the connections then open, so the gateway and files keep
their descriptors); with nothing to close, a spare descriptor is given up for a moment to
accept a waiting client and close it, so the listener never sits readable with nothing done.

Framing follows RFC 9112: a header line with whitespace before its colon, obsolete line folding
or no colon at all is a 400 (a header that one parser sees and another doesn't is how requests
are smuggled). An absolute-form target (``GET http://host:port/path``) is served as its path
when it names this server (the address and port the connection came in on, or this machine's
name) with the connection's scheme, and is a 400 otherwise: this is no forwarding proxy.

TLS handshakes are non-blocking and driven step by step by the loop (never a blocking
handshake in the accept path), under the same deadline as a request head.

Streams (server-sent events and WebSocket, `proxy.httpd.stream`): when the app answers with a
`Response` carrying a stream, the worker writes the head (for WebSocket the 101 that `wsproto`
builds from the raw request) and hands the connection back to the loop in a streaming state.
There it holds an out-buffer that producers fill from any thread; the loop flushes it when the
socket is writable, sends a heartbeat (an SSE comment or a WebSocket ping) after
``stream_heartbeat`` seconds of silence, reads the client's frames, and closes the stream when
its buffer would grow past ``stream_buffer`` bytes (a listener that cannot keep up is dropped,
never waited for). At most ``max_streams`` are open at once; past that a stream request is a
503. An idle listener costs its buffer, not a thread. stop() ends every stream cleanly first:
a WebSocket gets close code 1001, an event stream its end of file.
"""

from __future__ import annotations

import collections
import contextlib
import email.utils
import errno
import io
import ipaddress
import json
import logging
import os
import queue
import re
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import BinaryIO, NamedTuple, cast

from proxy.httpd.stream import (
    GOING_AWAY,
    SSE_HEARTBEAT,
    WEBSOCKET,
    Push,
    Rejection,
    Stream,
    WebSocket,
    handshake,
)
from proxy.httpd.types import App, Request, Response

__all__ = ["METHODS", "HTTPServer"]

logger = logging.getLogger("proxy.server")
access_logger = logging.getLogger("proxy.server.access")

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_ALLOW = "GET, HEAD, POST, OPTIONS"  # what the app's routes take, for a 405 answered here

_BACKLOG = 1024  # absorbs a burst of pollers reconnecting at once
_READ_SIZE = 16384  # per recv; bounds a parked connection's buffer to head + body + one read
_ACCEPT_BATCH = 64  # accepts per wake-up, so a connect flood can't starve parked clients
_ACCEPT_PAUSE = 0.25  # after ENOBUFS & co. the listener stays readable; don't spin on it
_NO_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})
_FD_EVICT = 8  # connections closed per accept() that found no free descriptor
_WRITE_TIMEOUT = 10.0  # a client that doesn't read can't hold a worker longer than this
_LINGER_SECONDS = 2.0  # drain after an error so the client reads our answer, not a RST
_LINGER_BYTES = 256 * 1024
_LOG_INTERVAL = 5.0  # at most one traceback/warning of a kind per interval

_HANDSHAKE, _READING, _LINGER, _STREAMING = 0, 1, 2, 3  # what a connection in the loop waits for
_KEEP, _CLOSE, _DROP, _STREAM = 0, 1, 2, 3  # how a worker hands a connection back
_CLOSE_WAIT = 2.0  # how long a WebSocket we closed may take to answer with its close frame
_STREAM_INPUT = 64 * 1024  # what an event-stream client may send before it is cut off

# Framing headers belong to the server; an app's copy would contradict ours.
_OWNED_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "date", "server"})
_NO_BODY = frozenset({204, 304})  # RFC 9110: no body, and (204) no Content-Length
_STATUS_LINES = {int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n" for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LISTEN, _WAKE = object(), object()  # selector tags that aren't connections

# RFC 9112 5.1: a field line is a name (visible ASCII, no colon) right before its colon. After
# every line feed of a head comes such a name, the final empty line, or the end of the head.
_FIELD_LINE_BREAK = re.compile(rb"\n(?![!-9;-~]+:|\r?\n|\Z)")
_ABSOLUTE_FORM = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")  # RFC 3986 scheme, then an authority
_DEFAULT_PORTS = {"http": 80, "https": 443}


class _Err(NamedTuple):
    """An error the server answers itself, before or instead of the app."""

    status: int
    text: str


class _Outcome(NamedTuple):
    data: bytes
    close: bool
    status: int
    line: str  # request line, for the access log
    stream: _Streaming | None = None  # becomes a stream once `data` (the head) is out


@dataclass(eq=False, slots=True)
class _Conn:
    """One client connection; owned by the loop or by exactly one worker at a time."""

    sock: socket.socket
    client: str
    state: int
    buf: bytearray = field(default_factory=bytearray)
    events: int = 0
    parked_at: float = 0.0
    head_started: float = 0.0  # 0: no request under way
    scan_from: int = 0  # where to resume looking for the end of the head
    head_len: int = -1  # -1: head not complete yet
    body_len: int = 0
    expect_continue: bool = False
    continue_sent: bool = False
    lingered: int = 0
    stream: _Streaming | None = None


class _Streaming:
    """A connection's life as a stream: an out-buffer any thread fills (the `Sink` given to
    `Stream.open`) and the loop drains, bounded by `limit` bytes not yet taken by the kernel."""

    def __init__(self, conn: _Conn, spec: Stream, limit: int, notify: Callable[[_Conn], None],
                 ws: WebSocket | None = None) -> None:
        self.conn = conn
        self.spec = spec
        self.protocol = spec.protocol
        self.limit = limit
        self.notify = notify
        self.ws = ws
        self.lock = threading.Lock()
        self.chunks: collections.deque[bytes] = collections.deque()
        self.queued = 0
        self.scheduled = False  # in the loop's list of streams to flush
        self.ending = False  # close once what is queued is out
        self.dropped = False  # overflowed: close at once, unsent data discarded
        self.closed = False
        self.close_code = 1000  # WebSocket: the code we close with
        # Loop thread only:
        self.sending: memoryview | None = None
        self.last_write = 0.0
        self.close_by = 0.0  # WebSocket: give up waiting for the client's close frame then
        self.input = 0  # event stream: bytes the client sent (it should send none)
        self.unsubscribe: Callable[[], None] | None = None

    # --- the Sink side (any thread) ---

    def offer(self, push: Push) -> bool:
        data = push.encoded(self.protocol)
        with self.lock:
            if self.ending or self.dropped or self.closed:
                return False
            if self.queued + len(data) > self.limit:
                self.dropped = True
                self.chunks.clear()
                self.queued = 0
            else:
                self.chunks.append(data)
                self.queued += len(data)
            wake = not self.scheduled
            self.scheduled = True
            accepted = not self.dropped
        if wake:
            self.notify(self.conn)
        return accepted

    def end(self, push: Push | None = None) -> None:
        with self.lock:
            if self.ending or self.dropped or self.closed:
                return
            if push is not None:
                data = push.encoded(self.protocol)
                self.chunks.append(data)
                self.queued += len(data)
            self.ending = True
            wake = not self.scheduled
            self.scheduled = True
        if wake:
            self.notify(self.conn)

    # --- loop side ---

    def put(self, data: bytes) -> None:
        """Bytes of the loop's own (pongs, pings, close frames, heartbeats). A client that keeps
        pinging without reading overflows like a slow listener."""
        if data:
            with self.lock:
                if self.queued + len(data) > self.limit:
                    self.dropped = True
                    self.chunks.clear()
                    self.queued = 0
                    return
                self.chunks.append(data)
                self.queued += len(data)

    def next_chunk(self) -> memoryview | None:
        if self.sending is None:
            with self.lock:
                if not self.chunks:
                    return None
                chunk = self.chunks.popleft()
                self.queued -= len(chunk)
            self.sending = memoryview(chunk)
        return self.sending

    def pending(self) -> bool:
        return self.sending is not None or bool(self.chunks)


class _Slots:
    """A counting limit owned by its lock (streams are opened by workers, closed by the loop)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    def acquire(self) -> bool:
        with self._lock:
            if self._used >= self.limit:
                return False
            self._used += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._used = max(0, self._used - 1)

    @property
    def used(self) -> int:
        return self._used


_Job = tuple[_Conn, bytes | _Err]


class _Throttle:
    """Lets one log message of a kind through per interval; a hot failure can't flood logs."""

    def __init__(self, interval: float = _LOG_INTERVAL) -> None:
        self._interval = interval
        self._next = 0.0
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            self.suppressed += 1
            return False
        self._next = now + self._interval
        return True


class _DateCache:
    """The Date header line, formatted at most once per second."""

    def __init__(self) -> None:
        self._cached = (0, "")  # one tuple, so readers never see a torn update

    def line(self) -> str:
        now = int(time.time())
        second, text = self._cached
        if second != now:
            text = f"Date: {email.utils.formatdate(now, usegmt=True)}\r\n"
            self._cached = (now, text)
        return text


_DATE = _DateCache()


# --- framing: find one complete request in a connection's buffer --------------------------


def _frame(conn: _Conn, max_head: int, max_body: int) -> bytes | _Err | None:
    """Cut the next complete request off ``conn.buf``; None while more bytes are needed."""
    if conn.head_len < 0:
        err = _scan_head(conn, max_head, max_body)
        if err is not None:
            return err
        if conn.head_len < 0:
            return None
    total = conn.head_len + conn.body_len
    if len(conn.buf) < total:
        return None
    data = bytes(conn.buf[:total])
    del conn.buf[:total]
    _reset_request(conn)
    return data


def _reset_request(conn: _Conn) -> None:
    conn.head_started = 0.0
    conn.scan_from = 0
    conn.head_len = -1
    conn.body_len = 0
    conn.expect_continue = conn.continue_sent = False


def _scan_head(conn: _Conn, max_head: int, max_body: int) -> _Err | None:
    """Look for the end of the head; on success record head and body length in ``conn``."""
    buf = conn.buf
    if buf.startswith((b"\r", b"\n")):  # RFC 9112 2.2: ignore empty lines before a request
        del buf[: len(buf) - len(buf.lstrip(b"\r\n"))]
        conn.scan_from = 0
    end = _find_head_end(buf, conn.scan_from)
    if end < 0:
        if len(buf) > max_head:
            return _too_long(buf, max_head)
        conn.scan_from = max(0, len(buf) - 3)  # the terminator may straddle two reads
        return None
    if end > max_head:
        return _too_long(buf, max_head)
    return _read_framing(conn, bytes(buf[:end]).lower(), max_body)


def _find_head_end(buf: bytearray, start: int) -> int:
    """Index just past the blank line ending the head, or -1. Bare LF lines are accepted."""
    crlf = buf.find(b"\r\n\r\n", start)
    lf = buf.find(b"\n\n", start, crlf if crlf >= 0 else len(buf))
    if lf >= 0:
        return lf + 2
    return crlf + 4 if crlf >= 0 else -1


def _too_long(buf: bytearray, max_head: int) -> _Err:
    if buf.find(b"\n", 0, max_head) < 0:
        return _Err(414, "Request-URI Too Long")
    return _Err(431, "Request Header Fields Too Large")


def _read_framing(conn: _Conn, head: bytes, max_body: int) -> _Err | None:
    """Pick Content-Length/Transfer-Encoding/Expect out of the lower-cased head."""
    bad_line = _bad_field_line(head)
    if bad_line is not None:
        return bad_line
    if b"\ntransfer-encoding:" in head:
        return _Err(411, "Length Required")  # no chunked bodies: they are never needed here
    length = _content_length(head, max_body)
    if isinstance(length, _Err):
        return length
    conn.head_len = len(head)
    conn.body_len = length
    conn.expect_continue = b"\nexpect:" in head and b"100-continue" in head
    return None


def _bad_field_line(head: bytes) -> _Err | None:
    """A 400 for the first header line that is not ``name:value`` (RFC 9112 5.1, 5.2)."""
    found = _FIELD_LINE_BREAK.search(head)
    if found is None:
        return None
    start = found.end()
    line = head[start : head.find(b"\n", start)].rstrip(b"\r")
    name, colon, _ = line.partition(b":")
    if line.startswith((b" ", b"\t")):
        return _Err(400, "Bad Request: obsolete line folding in the header")
    if not colon:
        return _Err(400, "Bad Request: a header line without a colon")
    if name.endswith((b" ", b"\t")):
        return _Err(400, "Bad Request: whitespace between a header field name and its colon")
    return _Err(400, "Bad Request: malformed header field name")


def _content_length(head: bytes, max_body: int) -> int | _Err:
    key = b"\ncontent-length:"
    at = head.find(key)
    if at < 0:
        return 0
    if head.find(key, at + 1) >= 0:
        return _Err(400, "Duplicate Content-Length")  # the classic smuggling vector
    start = at + len(key)
    value = head[start : head.find(b"\n", start)].strip()
    if not value.isdigit():
        return _Err(400, "Bad Content-Length")
    if len(value) > 9 or int(value) > max_body:  # length check first: int() of 5000 digits raises
        return _Err(413, "Request Entity Too Large")
    return int(value)


# --- parsing and rendering (worker side) ----------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Only the request parsing of BaseHTTPRequestHandler; the server does all I/O."""

    protocol_version = "HTTP/1.1"

    def __init__(self, data: bytes) -> None:  # skips socketserver's __init__/handle() loop
        self.rfile = io.BytesIO(data)
        self.error: _Err | None = None

    def parse(self) -> bool:
        self.raw_requestline = self.rfile.readline(65537)
        return self.parse_request()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # parse_request's messages embed the client's bytes in "(...)": keep the short part.
        text = message.split(" (", 1)[0] if message else HTTPStatus(code).phrase
        self.error = _Err(int(code), text)
        self.close_connection = True

    def handle_expect_100(self) -> bool:
        return True  # the body is already here; the loop sent 100 Continue if it was waited for


def _refusal(handler: _Handler, parsed: bool) -> _Err | None:
    if not parsed:
        return handler.error or _Err(400, "Bad request syntax")
    if handler.request_version == "HTTP/0.9":
        # A request line without a version ("GET /", or "GET  HTTP/1.1" with the
        # target missing) is malformed for HTTP/1.x: the client's mistake, a 400.
        return _Err(400, "Bad Request: no HTTP version in the request line")
    if handler.command not in METHODS:
        # A 4xx, not 501: an unknown method is the client's mistake, and every
        # resource here takes the same few methods (listed in Allow).
        return _Err(405, "Method Not Allowed")
    return None


def _to_request(handler: _Handler, target: str, client: str) -> Request:
    return Request(
        method=handler.command,
        target=target,
        headers=cast(Mapping[str, str], handler.headers),
        body=handler.rfile.read(),
        client=client,
    )


class _Absolute(NamedTuple):
    scheme: str  # lower case
    host: str  # lower case, no brackets, no trailing dot
    port: int
    path: str  # the origin form: path and query


def _split_absolute(target: str) -> _Absolute | None:
    """The parts of an absolute-form http(s) target; None if it is not one or is malformed."""
    scheme, _, rest = target.partition("://")
    scheme = scheme.lower()
    default_port = _DEFAULT_PORTS.get(scheme)
    if default_port is None:
        return None
    cut = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if "@" in authority:  # userinfo: RFC 9110 4.2.4 says to treat it as an error
        return None
    if authority.startswith("["):
        host, bracket, after = authority[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            return None
        port_text = after[1:]
    else:
        host, _, port_text = authority.partition(":")
    if not host:
        return None
    if not port_text:
        port = default_port
    elif port_text.isascii() and port_text.isdigit() and len(port_text) <= 5:
        port = int(port_text)
    else:
        return None
    return _Absolute(scheme, host.lower().rstrip("."), port, path if path.startswith("/") else "/" + path)


def _is_own_host(host: str, local_ip: str, names: frozenset[str]) -> bool:
    """Does ``host`` (from a target) name the address a connection came in on, or this machine?"""
    try:
        local = ipaddress.ip_address(local_ip)
    except ValueError:
        return False
    try:
        return ipaddress.ip_address(host) == local
    except ValueError:
        pass
    return host in names or (host == "localhost" and local.is_loopback)


def _machine_names() -> frozenset[str]:
    name = socket.gethostname().lower().rstrip(".")
    return frozenset(n for n in (name, name.split(".", 1)[0]) if n)


@lru_cache(maxsize=64)  # error texts are a small fixed set
def _error_body(text: str) -> bytes:
    return json.dumps({"error": text}).encode()


def _render_error(err: _Err, close: bool = True, head_only: bool = False) -> bytes:
    block = "Content-Type: application/json\r\n"
    if err.status == 405:
        block += f"Allow: {_ALLOW}\r\n"  # RFC 9110: a 405 lists what is allowed
    return _assemble(err.status, block, _error_body(err.text), head_only, close, False)


def _render_rejection(rejection: Rejection) -> bytes:
    """A refused WebSocket handshake: its status and headers, a JSON error, then close."""
    block = "Content-Type: application/json\r\n" + "".join(f"{n}: {v}\r\n" for n, v in rejection.headers)
    return _assemble(rejection.status, block, _error_body(rejection.reason), False, True, False)


def _stream_head(response: Response) -> bytes:
    """The head of an event stream: no length, the stream ends when the connection does."""
    block, _ = _header_block(response.headers, True)
    status_line = _STATUS_LINES.get(response.status) or f"HTTP/1.1 {response.status} \r\n"
    head = f"{status_line}{_DATE.line()}Server: pwproxy\r\n{block}Connection: close\r\n\r\n"
    return head.encode("latin-1")


def _render(response: Response, head_only: bool, close: bool, keep_10: bool) -> tuple[bytes, bool]:
    """The response bytes and whether to close; raises ValueError on an unsendable response."""
    if not 200 <= response.status <= 599:
        raise ValueError(f"status {response.status!r} cannot be sent")
    block, close = _header_block(response.headers, close)
    head = b""
    if response.interim is not None:
        head, close = _interim(response.interim), True
    return head + _assemble(response.status, block, response.body, head_only, close, keep_10), close


def _interim(status: int) -> bytes:
    """A 1xx response ahead of the final one (RFC 9110 15.2: no content). Its `Connection:
    close` also tells a client that takes it for the final answer (http.client does, for
    anything but 100) not to read another response from this connection."""
    if not 102 <= status <= 199:
        raise ValueError(f"interim status {status!r} cannot be sent")
    line = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} \r\n"
    return f"{line}Connection: close\r\n\r\n".encode("latin-1")


def _header_block(headers: list[tuple[str, str]], close: bool) -> tuple[str, bool]:
    lines = []
    for name, value in headers:
        lowered = name.lower()
        if lowered in _OWNED_HEADERS:
            close = close or (lowered == "connection" and value.lower() == "close")
            continue
        lines.append(f"{name}: {value}\r\n")
    block = "".join(lines)
    # One CR and one LF per line, or an app value is trying to start a header of its own.
    if block.count("\n") != len(lines) or block.count("\r") != len(lines):
        raise ValueError("CR or LF inside a response header")
    return block, close


def _assemble(status: int, block: str, body: bytes, head_only: bool, close: bool, keep_10: bool) -> bytes:
    no_body = status in _NO_BODY
    length = "" if no_body else f"Content-Length: {len(body)}\r\n"
    conn = "Connection: close\r\n" if close else "Connection: keep-alive\r\n" if keep_10 else ""
    status_line = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} \r\n"
    head = f"{status_line}{_DATE.line()}Server: pwproxy\r\n{block}{length}{conn}\r\n"
    data = head.encode("latin-1")
    return data if head_only or no_body else data + body


def _send(sock: socket.socket, data: bytes) -> bool:
    """Write all of ``data``: one non-blocking try, then a bounded blocking wait."""
    try:
        sent = sock.send(data)
    except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
        sent = 0  # TLS writes are all-or-nothing, so a retry starts from 0 as it must
    except OSError:
        return False
    if sent == len(data):
        return True
    try:
        sock.settimeout(_WRITE_TIMEOUT)
        sock.sendall(memoryview(data)[sent:])
        sock.setblocking(False)
    except OSError:
        return False
    return True


# --- binding -------------------------------------------------------------------------------


def _listen(host: str, port: int) -> socket.socket:
    """Listening socket; "" is every interface (IPv6 too where the kernel allows)."""
    host = host.strip("[]")
    if host == "" and socket.has_dualstack_ipv6():
        try:
            return socket.create_server(
                ("", port), family=socket.AF_INET6, backlog=_BACKLOG, dualstack_ipv6=True
            )
        except OSError:
            pass  # IPv6 switched off at runtime: IPv4 only
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=_BACKLOG)  # SO_REUSEADDR


def _client_ip(addr: object) -> str:
    host = str(addr[0]) if isinstance(addr, tuple) and addr else ""
    return host[7:] if host.startswith("::ffff:") and "." in host else host


def _close_quietly(sock: socket.socket | BinaryIO) -> None:
    with contextlib.suppress(OSError):
        sock.close()


def _open_spare() -> BinaryIO | None:
    """A descriptor held in reserve, given up when accept() finds none free."""
    try:
        return open(os.devnull, "rb", buffering=0)  # noqa: SIM115 - held open on purpose
    except OSError:
        return None


# --- the server ----------------------------------------------------------------------------


class HTTPServer:
    """HTTP/1.1 keep-alive server: a selector loop for waiting, a worker pool for answering."""

    def __init__(
        self,
        app: App,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        workers: int = 8,
        access_log: bool = False,
        max_connections: int = 1024,
        idle_timeout: float = 60.0,
        head_timeout: float = 10.0,
        max_head: int = 16384,
        max_body: int = 4096,
        max_streams: int = 1000,
        stream_buffer: int = 256 * 1024,
        stream_heartbeat: float = 15.0,
    ) -> None:
        if min(workers, max_connections, max_head) < 1 or max_body < 0:
            raise ValueError("workers, max_connections and max_head must be positive")
        if min(idle_timeout, head_timeout, stream_heartbeat) <= 0:
            raise ValueError("timeouts must be positive")
        if max_streams < 0 or stream_buffer < 1:
            raise ValueError("max_streams must not be negative, stream_buffer must be positive")
        self._stream_buffer = stream_buffer
        self._heartbeat = stream_heartbeat
        self._app = app
        self._ssl = ssl_context
        self._access_log = access_log
        self._max_conns = max_connections
        self._idle_timeout = idle_timeout
        self._head_timeout = head_timeout
        self._max_head = max_head
        self._max_body = max_body
        self._sweep_interval = max(0.01, min(0.5, head_timeout / 4, idle_timeout / 4, stream_heartbeat / 4))
        self._stream_slots = _Slots(max_streams)
        self._names = _machine_names()
        self._listener = _listen(host, port)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._init_loop_state()
        self._init_worker_state(workers)

    def _init_loop_state(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._listener, selectors.EVENT_READ, _LISTEN)
        self._sel.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._conns: set[_Conn] = set()  # every open connection; loop thread only
        self._parked: dict[_Conn, None] = {}  # the loop's; insertion order = time parked
        self._accept_paused_until = 0.0
        self._spare = _open_spare()
        self._evicted = 0
        self._streams: dict[_Conn, None] = {}  # open streams; loop thread only
        self._dropped_streams = 0  # listeners dropped for not keeping up
        self._draining = threading.Event()  # stop(): end every stream, accept no new ones
        self._streams_gone = threading.Event()
        self._drain_started = False
        self._next_sweep = 0.0
        self._loop_errors = _Throttle()
        self._accept_errors = _Throttle()
        self._cap_warnings = _Throttle()

    def _init_worker_state(self, workers: int) -> None:
        self._workers = workers
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._returns: collections.deque[tuple[_Conn, int]] = collections.deque()
        self._flushes: collections.deque[_Conn] = collections.deque()  # streams with news
        self._wake_pending = False
        self._busy = [0] * workers  # one slot per worker: counted without a lock
        self._served = [0] * workers
        self._app_errors = _Throttle()
        self._worker_errors = _Throttle()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._stop_lock = threading.RLock()  # re-entrant: a signal may land inside stop()
        self._stop_called = False

    # --- lifecycle ---

    def start(self) -> HTTPServer:
        """Start the loop and worker threads (daemons); returns self."""
        with self._stop_lock:
            if self._stop_called:
                raise RuntimeError("server was stopped")
            if not self._threads:
                self._threads = [threading.Thread(target=self._run_loop, name="pwproxy-loop")]
                self._threads += [
                    threading.Thread(target=self._run_worker, args=(i,), name=f"pwproxy-worker-{i}")
                    for i in range(self._workers)
                ]
                for thread in self._threads:
                    thread.daemon = True
                    thread.start()
        return self

    def serve_forever(self) -> None:
        """start(), then block until stop() is called from another thread or a signal handler."""
        self.start()
        self._done.wait()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting, close every connection, join the threads; idempotent."""
        with self._stop_lock:
            if self._stop_called:
                return
            self._stop_called = True
        deadline = time.monotonic() + timeout
        self._end_streams(min(1.0, timeout / 2))
        self._stopping.set()
        self._wake()
        for _ in range(self._workers):
            self._jobs.put(None)
        for thread in self._threads:
            if thread is not threading.current_thread():  # e.g. the app asked for a shutdown
                thread.join(max(0.0, deadline - time.monotonic()))
        self._close_leftovers()
        self._done.set()

    def _end_streams(self, grace: float) -> None:
        """Close every stream cleanly (WebSocket 1001, event stream EOF); wait up to `grace`."""
        self._draining.set()
        if not self._threads or not self._streams:
            return
        self._streams_gone.clear()
        self._wake()
        self._streams_gone.wait(grace)

    def stats(self) -> dict[str, int]:
        """Counters for /health and tests."""
        return {
            "open_connections": len(self._conns),
            "busy_workers": sum(self._busy),
            "workers": self._workers,
            "requests": sum(self._served),
            "max_connections": self._max_conns,
            "evicted_connections": self._evicted,
            "streams": len(self._streams),
            "max_streams": self._stream_slots.limit,
            "dropped_streams": self._dropped_streams,
        }

    def _close_leftovers(self) -> None:
        """Whatever the loop could not close (never started, or a worker held it)."""
        for conn in list(self._conns):
            _close_quietly(conn.sock)
        self._conns.clear()
        self._returns.clear()
        for sock in (self._listener, self._wake_r, self._wake_w):
            _close_quietly(sock)
        if not self._threads:  # otherwise the loop closes them on its way out
            self._sel.close()
            self._drop_spare()

    # --- event loop (one thread owns the selector, _conns and _parked) ---

    def _run_loop(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    self._loop_once()
                except Exception:  # a bug here must not silently end all serving
                    if self._loop_errors.allow():
                        logger.exception("unexpected error in the event loop")
                    self._stopping.wait(0.01)  # and must not spin either
        finally:
            self._close_all()

    def _loop_once(self) -> None:
        events = self._sel.select(self._sweep_interval)
        now = time.monotonic()
        for key, mask in events:
            tag = key.data
            if tag is _LISTEN:
                self._accept(now)
            elif tag is _WAKE:
                self._take_returns(now)
            else:
                self._guarded(tag, now, mask)
        if self._draining.is_set():
            self._drain_streams(now)
        if now >= self._next_sweep:
            self._sweep(now)
            self._next_sweep = now + self._sweep_interval

    def _guarded(self, conn: _Conn, now: float, mask: int = selectors.EVENT_READ) -> None:
        """One connection's bad luck must never take the loop down."""
        try:
            if conn.state == _STREAMING:
                self._stream_event(conn, now, mask)
            elif conn.state == _READING:
                self._read(conn, now)
            elif conn.state == _HANDSHAKE:
                self._handshake(conn, now)
            else:
                self._drain(conn)
        except Exception:
            if self._loop_errors.allow():
                logger.exception("unexpected error on a connection from %s", conn.client)
            self._close(conn)

    def _close_all(self) -> None:
        for conn in list(self._conns):
            if conn in self._parked or conn in self._streams:
                self._close(conn)
            else:
                # A worker owns it: shutdown wakes a blocked sendall; closing stays theirs.
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
        _close_quietly(self._listener)
        self._drop_spare()
        self._sel.close()

    def _drop_spare(self) -> None:
        if self._spare is not None:
            _close_quietly(self._spare)
            self._spare = None

    # --- accepting ---

    def _accept(self, now: float) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in _NO_DESCRIPTORS:
                    self._pause_accept(now, exc)  # ENOBUFS & co.: back off instead of spinning
                    return
                if self._make_room(now, exc):
                    continue
                return
            self._admit(sock, addr, now)

    def _admit(self, sock: socket.socket, addr: object, now: float) -> None:
        if len(self._conns) >= self._max_conns:
            if not self._evict(1):
                _close_quietly(sock)  # every connection is busy: refuse this one
                return
            if self._cap_warnings.allow():
                logger.warning("connection cap (%d) reached: closing the longest-idle connections",
                               self._max_conns)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = self._wrap(sock, _client_ip(addr), now)
        except (OSError, ValueError):
            _close_quietly(sock)
            return
        self._conns.add(conn)
        self._park(conn, now)

    def _wrap(self, sock: socket.socket, client: str, now: float) -> _Conn:
        if self._ssl is None:
            return _Conn(sock, client, _READING)
        # The handshake is driven step by step by the loop, so a silent client blocks nothing.
        tls = self._ssl.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return _Conn(tls, client, _HANDSHAKE, head_started=now)

    def _evict(self, count: int, parked_before: float = float("inf")) -> int:
        """Close up to ``count`` connections, the longest parked first; how many went."""
        closed = 0
        while closed < count and self._parked:
            victim = next(iter(self._parked))
            if victim.parked_at >= parked_before:
                break
            self._close(victim)
            closed += 1
        self._evicted += closed
        return closed

    def _make_room(self, now: float, exc: OSError) -> bool:
        """accept() found no free descriptor: free some. True: go on accepting.

        Linux fails accept() on a full descriptor table even when nobody is waiting, so the
        connections accepted in this very pass (their requests not read yet) are spared.
        """
        if exc.errno == errno.EMFILE:
            self._lower_cap()
        if self._evict(_FD_EVICT, parked_before=now):
            self._warn_no_descriptors(exc, "closed the longest-idle connections")
            return True
        turned = self._turn_away()
        if turned is None:
            return False  # nobody waiting: nothing more to do in this pass
        if not turned:
            self._pause_accept(now, exc)  # not even the spare: the one way left not to spin
            return False
        self._warn_no_descriptors(exc, "turned a new client away (every connection is busy)")
        return True

    def _warn_no_descriptors(self, exc: OSError, what: str) -> None:
        if self._accept_errors.allow():
            logger.warning("out of file descriptors (%s): %s", exc.strerror, what)

    def _lower_cap(self) -> None:
        """The process ran out of descriptors with this many connections: that is too many."""
        cap = max(_FD_EVICT, len(self._conns) - _FD_EVICT)
        if cap < self._max_conns:
            logger.warning("out of file descriptors with %d connections open: connection cap %d -> %d",
                           len(self._conns), self._max_conns, cap)
            self._max_conns = cap

    def _turn_away(self) -> bool | None:
        """Give up the spare descriptor to accept one waiting client and close it at once.

        Otherwise the client would wait in the backlog, keeping the listener readable and the
        loop awake with nothing to do. None: nobody was waiting; False: not possible.
        """
        if self._spare is None:
            self._spare = _open_spare()
            if self._spare is None:
                return False
        self._drop_spare()
        turned: bool | None = True
        try:
            sock, _ = self._listener.accept()
            _close_quietly(sock)
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            turned = None
        except OSError:
            turned = False
        self._spare = _open_spare()
        return turned

    def _pause_accept(self, now: float, exc: OSError) -> None:
        if self._accept_errors.allow():
            logger.warning("accept failed (%s); pausing accepts for %.2fs", exc, _ACCEPT_PAUSE)
        if not self._accept_paused_until:
            self._sel.unregister(self._listener)
        self._accept_paused_until = now + _ACCEPT_PAUSE

    def _resume_accept(self, now: float) -> None:
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self._sel.register(self._listener, selectors.EVENT_READ, _LISTEN)

    # --- parking ---

    def _park(self, conn: _Conn, now: float) -> None:
        conn.parked_at = now
        if conn.buf and not conn.head_started:
            conn.head_started = now  # a pipelined partial head starts its deadline now
        try:
            self._sel.register(conn.sock, selectors.EVENT_READ, conn)
        except (OSError, ValueError):
            self._close(conn)
            return
        conn.events = selectors.EVENT_READ
        self._parked[conn] = None

    def _unpark(self, conn: _Conn) -> None:
        self._parked.pop(conn, None)
        self._sel.unregister(conn.sock)
        conn.events = 0

    def _want(self, conn: _Conn, events: int) -> None:
        if conn.events != events:
            self._sel.modify(conn.sock, events, conn)
            conn.events = events

    def _close(self, conn: _Conn) -> None:
        if conn.stream is not None:
            self._detach_stream(conn)
        if conn in self._parked:
            self._parked.pop(conn)
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(conn.sock)
        self._conns.discard(conn)
        _close_quietly(conn.sock)

    # --- reading ---

    def _handshake(self, conn: _Conn, now: float) -> None:
        sock = cast(ssl.SSLSocket, conn.sock)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._want(conn, selectors.EVENT_WRITE)
            return
        except OSError:  # not TLS, bad TLS, or gone: nothing to answer on
            self._close(conn)
            return
        conn.state = _READING
        conn.head_started = 0.0
        self._want(conn, selectors.EVENT_READ)
        self._read(conn, now)  # the request may already sit decrypted, invisible to select

    def _read(self, conn: _Conn, now: float) -> None:
        chunk = self._recv(conn)
        if chunk is None:
            return
        if not chunk:
            self._close(conn)  # EOF or error; a half-sent head gets no answer
            return
        if not conn.head_started:
            conn.head_started = now
        conn.buf += chunk
        self._dispatch(conn)

    def _recv(self, conn: _Conn) -> bytes | None:
        """Available bytes; None if none yet, b"" on EOF or error."""
        sock = conn.sock
        try:
            chunk = sock.recv(_READ_SIZE)
            if isinstance(sock, ssl.SSLSocket):
                chunk += self._drain_pending(sock)
                self._want(conn, selectors.EVENT_READ)
        except (BlockingIOError, ssl.SSLWantReadError):
            return None
        except ssl.SSLWantWriteError:
            self._want(conn, selectors.EVENT_WRITE)
            return None
        except OSError:
            return b""
        return chunk

    @staticmethod
    def _drain_pending(sock: ssl.SSLSocket) -> bytes:
        # Bytes already decrypted inside the SSL object never make the socket readable again.
        extra = b""
        while (pending := sock.pending()) > 0:
            extra += sock.recv(pending)
        return extra

    def _dispatch(self, conn: _Conn) -> None:
        job = _frame(conn, self._max_head, self._max_body)
        if job is None:
            self._maybe_continue(conn)
            return
        self._unpark(conn)
        self._jobs.put((conn, job))

    def _maybe_continue(self, conn: _Conn) -> None:
        """A client that sent Expect: 100-continue waits for this before sending the body."""
        if conn.expect_continue and conn.head_len >= 0 and not conn.continue_sent:
            conn.continue_sent = True
            with contextlib.suppress(OSError):  # tiny; an empty send buffer always takes it
                conn.sock.send(_CONTINUE)

    def _drain(self, conn: _Conn) -> None:
        """Lingering close: discard what the client still sends until it closes too."""
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:
            data = b""
        conn.lingered += len(data)
        if not data or conn.lingered > _LINGER_BYTES:
            self._close(conn)

    # --- streams (loop side) ---

    def _start_stream(self, conn: _Conn, now: float) -> None:
        """A worker wrote a stream's head: watch the socket, subscribe, send what is queued."""
        st = conn.stream
        assert st is not None
        try:
            self._sel.register(conn.sock, selectors.EVENT_READ, conn)
        except (OSError, ValueError):
            conn.stream = None
            self._stream_slots.release()
            self._close(conn)
            return
        conn.state = _STREAMING
        conn.events = selectors.EVENT_READ
        self._streams[conn] = None
        st.last_write = now
        if self._draining.is_set():
            st.close_code = GOING_AWAY
            st.end()
        else:
            try:
                st.unsubscribe = st.spec.open(st)
            except Exception:
                if self._loop_errors.allow():
                    logger.exception("a stream for %s failed to open", conn.client)
                self._close(conn)
                return
        early, conn.buf = bytes(conn.buf), bytearray()
        if early:  # frames the client sent right behind its handshake
            self._stream_input(conn, early, now)
        if conn.stream is not None:
            self._pump(conn, now)

    def _stream_event(self, conn: _Conn, now: float, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._pump(conn, now)
        if mask & selectors.EVENT_READ and conn.stream is not None:
            chunk = self._recv(conn)
            if chunk is None:
                self._stream_interest(conn)  # a TLS read may have changed what we wait for
                return
            if not chunk:
                self._close(conn)  # the listener went away
                return
            self._stream_input(conn, chunk, now)
            if conn.stream is not None:
                self._pump(conn, now)

    def _stream_input(self, conn: _Conn, data: bytes, now: float) -> None:
        st = conn.stream
        assert st is not None
        if st.ws is None:
            st.input += len(data)  # an event-stream client has nothing to say
            if st.input > _STREAM_INPUT:
                self._close(conn)
            return
        st.put(st.ws.received(data))
        if st.ws.finished:
            with st.lock:
                st.ending = True

    def _pump(self, conn: _Conn, now: float) -> None:
        """Send what the stream has queued; end or drop it when that is due."""
        st = conn.stream
        if st is None:
            return
        with st.lock:
            st.scheduled = False
            dropped, ending = st.dropped, st.ending
        if dropped:
            self._dropped_streams += 1
            if self._loop_errors.allow():
                logger.info("dropped a stream listener at %s: it is not reading fast enough", conn.client)
            self._close(conn)
            return
        if ending and st.ws is not None and not st.ws.closing and not st.ws.finished:
            st.put(st.ws.close(st.close_code))
            st.close_by = now + _CLOSE_WAIT
        if not self._send_queued(conn, st, now):
            return
        if st.pending():
            self._stream_interest(conn)
            return
        self._stream_interest(conn)
        if ending and (st.ws is None or st.ws.finished):
            self._end_stream(conn)

    def _send_queued(self, conn: _Conn, st: _Streaming, now: float) -> bool:
        """Write until the queue is empty or the socket is full; False if the stream closed."""
        while (chunk := st.next_chunk()) is not None:
            try:
                sent = conn.sock.send(chunk)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return True
            except OSError:
                self._close(conn)
                return False
            st.last_write = now
            if sent < len(chunk):
                st.sending = chunk[sent:]
                return True
            st.sending = None
        return True

    def _stream_interest(self, conn: _Conn) -> None:
        st = conn.stream
        if st is not None:
            wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if st.pending() else 0)
            self._want(conn, wanted)

    def _end_stream(self, conn: _Conn) -> None:
        """A clean end: FIN after the last byte, then the usual lingering close."""
        self._detach_stream(conn)
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.state = _LINGER
        conn.buf.clear()
        self._park(conn, time.monotonic())

    def _detach_stream(self, conn: _Conn) -> None:
        """Forget a stream: unsubscribe it, free its slot, stop watching its socket."""
        st = conn.stream
        if st is None:
            return
        conn.stream = None
        with st.lock:
            st.closed = True
            st.chunks.clear()
        if conn in self._streams:
            del self._streams[conn]
            self._stream_slots.release()
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(conn.sock)
            conn.events = 0
        unsubscribe, st.unsubscribe = st.unsubscribe, None
        if unsubscribe is not None:
            try:
                unsubscribe()
            except Exception:
                if self._loop_errors.allow():
                    logger.exception("unsubscribing a stream of %s failed", conn.client)
        if self._draining.is_set() and not self._streams:
            self._streams_gone.set()

    def _stream_timers(self, conn: _Conn, now: float) -> None:
        st = conn.stream
        if st is None:
            return
        if st.close_by and now > st.close_by:  # our close frame went unanswered
            self._end_stream(conn)
            return
        if now - st.last_write >= self._heartbeat and not st.pending():
            st.put(st.ws.ping() if st.ws is not None else SSE_HEARTBEAT)
            st.last_write = now  # even if the socket is full: one heartbeat per period
            self._pump(conn, now)

    def _drain_streams(self, now: float) -> None:
        """stop() was called: end every stream once (WebSocket close 1001, event stream EOF)."""
        if not self._drain_started:
            self._drain_started = True
            for conn in list(self._streams):
                st = conn.stream
                if st is not None:
                    st.close_code = GOING_AWAY
                    st.end()
        if not self._streams:
            self._streams_gone.set()

    # --- timers ---

    def _sweep(self, now: float) -> None:
        for conn in list(self._parked):
            if conn.state == _LINGER:
                if now - conn.parked_at > _LINGER_SECONDS:
                    self._close(conn)
            elif conn.head_started:
                if now - conn.head_started > self._head_timeout:
                    self._time_out(conn)
            elif now - conn.parked_at > self._idle_timeout:
                self._close(conn)
        for conn in list(self._streams):
            self._stream_timers(conn, now)
        self._resume_accept(now)

    def _time_out(self, conn: _Conn) -> None:
        if conn.state == _HANDSHAKE:
            self._close(conn)  # no TLS session to say 408 over
            return
        self._unpark(conn)
        self._jobs.put((conn, _Err(408, "Request Timeout")))

    # --- hand-back from workers (they never touch the selector) ---

    def _give_back(self, conn: _Conn, how: int) -> None:
        """Worker side: return a connection to the loop."""
        if self._stopping.is_set():
            _close_quietly(conn.sock)
            return
        self._returns.append((conn, how))
        if not self._wake_pending:  # one wake-up byte per loop pass is enough
            self._wake_pending = True
            self._wake()

    def _wake(self) -> None:
        # OSError: buffer full (the loop will wake anyway) or closed (stopping).
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _take_returns(self, now: float) -> None:
        # Order matters: consume the wake-up bytes, then clear the flag, then empty the deque.
        # A worker that still saw the flag set appended before the clear, so before the drain;
        # one that sets it after the clear sends a byte this recv can no longer swallow.
        with contextlib.suppress(OSError):
            self._wake_r.recv(4096)
        self._wake_pending = False
        while self._returns:
            conn, how = self._returns.popleft()
            self._reinstate(conn, how, now)
        while self._flushes:
            conn = self._flushes.popleft()
            if conn in self._streams:  # else not handed over yet (that pumps it) or closed
                self._guarded(conn, now, selectors.EVENT_WRITE)

    def _reinstate(self, conn: _Conn, how: int, now: float) -> None:
        if how == _DROP:
            self._close(conn)
            return
        if how == _STREAM:
            self._start_stream(conn, now)
            return
        if how == _CLOSE:
            conn.state = _LINGER
            conn.buf.clear()
        self._park(conn, now)
        if how == _KEEP:
            self._maybe_continue(conn)

    # --- workers ---

    def _run_worker(self, slot: int) -> None:
        while (job := self._jobs.get()) is not None:
            conn, payload = job
            if self._stopping.is_set():
                _close_quietly(conn.sock)
                continue
            self._busy[slot] = 1
            try:
                self._serve(conn, payload, slot)
            except Exception:
                if self._worker_errors.allow():
                    logger.exception("unexpected error answering %s", conn.client)
                self._give_back(conn, _DROP)
            finally:
                self._busy[slot] = 0

    def _serve(self, conn: _Conn, payload: bytes | _Err, slot: int) -> None:
        started = time.perf_counter()
        if isinstance(payload, _Err):
            outcome = _Outcome(_render_error(payload), True, payload.status, "-")
        else:
            outcome = self._respond(conn, payload)
        if not _send(conn.sock, outcome.data):
            if outcome.stream is not None:
                self._stream_slots.release()
            self._give_back(conn, _DROP)
            return
        self._served[slot] += 1
        if self._access_log:
            self._log_access(conn, outcome, started)
        if outcome.stream is not None:
            conn.stream = outcome.stream
            self._give_back(conn, _STREAM)
        elif outcome.close:
            self._close_gently(conn)
        else:
            self._next_request(conn)

    def _respond(self, conn: _Conn, data: bytes) -> _Outcome:
        handler = _Handler(data)
        try:
            parsed = handler.parse()
        except Exception:  # garbage must never become a 5xx
            logger.debug("unparsable request from %s", conn.client, exc_info=True)
            parsed = False
        err = _refusal(handler, parsed)
        if err is None:
            target = handler.requestline.split()[1]  # raw: parse_request rewrites a leading "//"
            if _ABSOLUTE_FORM.match(target):
                target_or_err = self._origin_form(conn, target)
                if isinstance(target_or_err, _Err):
                    err = target_or_err
                else:
                    target = target_or_err
        if err is not None:
            line = getattr(handler, "requestline", "") or "-"
            return _Outcome(_render_error(err), True, err.status, line)
        return self._call_app(conn, _to_request(handler, target, conn.client), handler, data)

    def _origin_form(self, conn: _Conn, target: str) -> str | _Err:
        """The path of an absolute-form target that names this server; a 400 for any other."""
        parts = _split_absolute(target)
        if parts is None:
            return _Err(400, "Bad Request: malformed absolute-form target")
        try:
            local = conn.sock.getsockname()
        except OSError:
            local = ("", -1)
        ours = (
            (parts.scheme == "https") == (self._ssl is not None)
            and parts.port == local[1]
            and _is_own_host(parts.host, _client_ip(local), self._names)
        )
        if not ours:
            return _Err(400, "Bad Request: the target names another server; requests are not forwarded")
        return parts.path

    def _call_app(self, conn: _Conn, request: Request, handler: _Handler, raw: bytes) -> _Outcome:
        head_only = request.method == "HEAD"
        close = handler.close_connection
        keep_10 = not close and handler.request_version == "HTTP/1.0"
        try:
            response = self._app(request)
            if handler.request_version == "HTTP/1.0":
                response.interim = None  # RFC 9110 15.2: no 1xx to an HTTP/1.0 client
            spec = response.stream
            # HEAD of an event stream is its head alone; of a WebSocket, the handshake refuses it.
            if spec is not None and 200 <= response.status < 300 and (
                    not head_only or spec.protocol == WEBSOCKET):
                return self._open_stream(conn, response, spec, raw, handler.requestline)
            data, close = _render(response, head_only, close, keep_10)
            status = response.status
        except Exception:
            self._log_app_error(request)
            data, status = _render_error(_Err(500, "Internal Server Error"), close, head_only), 500
        return _Outcome(data, close, status, handler.requestline)

    def _open_stream(self, conn: _Conn, response: Response, spec: Stream, raw: bytes,
                     line: str) -> _Outcome:
        """The head of a stream and its state, or the refusal (503 past max_streams, a bad
        WebSocket handshake)."""
        ws: WebSocket | None = None
        if spec.protocol == WEBSOCKET:
            shaken = handshake(raw)
            if isinstance(shaken, Rejection):
                return _Outcome(_render_rejection(shaken), True, shaken.status, line)
            head, connection = shaken
            ws = WebSocket(connection)
        else:
            head = _stream_head(response) + f"retry: {int(spec.retry_ms)}\n\n".encode()
        if self._draining.is_set() or not self._stream_slots.acquire():
            busy = _Err(503, "Too many streams: the proxy's stream limit (PW_MAX_STREAMS) is reached")
            data = _assemble(503, "Content-Type: application/json\r\nRetry-After: 10\r\n",
                             _error_body(busy.text), False, True, False)
            return _Outcome(data, True, 503, line)
        streaming = _Streaming(conn, spec, self._stream_buffer, self._stream_news, ws)
        return _Outcome(head, False, 101 if ws is not None else response.status, line, streaming)

    def _stream_news(self, conn: _Conn) -> None:
        """Any thread: a stream has something to send (or must end); the loop will flush it."""
        self._flushes.append(conn)
        if not self._wake_pending:
            self._wake_pending = True
            self._wake()

    def _log_app_error(self, request: Request) -> None:
        if self._app_errors.allow():
            suppressed, self._app_errors.suppressed = self._app_errors.suppressed, 0
            logger.exception(
                "app failed on %s %r (%d similar errors suppressed before this one)",
                request.method,
                request.target,
                suppressed,
            )

    def _close_gently(self, conn: _Conn) -> None:
        try:
            conn.sock.shutdown(socket.SHUT_WR)  # FIN after the answer; the loop lingers
        except OSError:
            self._give_back(conn, _DROP)
            return
        self._give_back(conn, _CLOSE)

    def _next_request(self, conn: _Conn) -> None:
        job = _frame(conn, self._max_head, self._max_body)
        if job is None:
            self._give_back(conn, _KEEP)
        else:  # pipelined: back of the queue, so one client can't monopolise a worker
            self._jobs.put((conn, job))

    def _log_access(self, conn: _Conn, outcome: _Outcome, started: float) -> None:
        access_logger.info(
            '%s "%s" %d %d %.1fms',
            conn.client,
            ascii(outcome.line)[1:-1],  # escapes control characters: no forged log lines
            outcome.status,
            len(outcome.data),
            (time.perf_counter() - started) * 1000,
        )
