"""HTTP/1.1 on the wire, as pure functions of bytes: no socket, no thread, no clock.

A `ReceiveBuffer` holds what a client sent and cuts complete requests off it. It remembers
how far it has already looked for the end of a head, so a head that trickles in a byte at a
time is scanned once, not once per byte (the idea of h11's receive buffer). `parse_head` turns
the bytes of a head into a `Head` or a `WireError`; the render functions turn a status,
headers and body into the bytes of a response (the caller passes the Date line in).

Framing follows RFC 9112: a header line with whitespace before its colon, obsolete line
folding or no colon at all is a 400 (a header that one parser sees and another does not is
how requests are smuggled); Transfer-Encoding is refused (411: no client of ours needs a
chunked body); a repeated or malformed Content-Length is a 400, one over the body limit a 413
before the body is read. Empty lines before a request are ignored and bare LF line ends are
accepted (RFC 9112 2.2).
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from collections.abc import Iterator, Mapping
from functools import lru_cache
from http import HTTPStatus
from typing import NamedTuple

from proxy.httpd.types import Response

__all__ = ["ALLOW", "METHODS", "Head", "Headers", "ReceiveBuffer", "WireError", "parse_head"]

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
ALLOW = "GET, HEAD, POST, OPTIONS"  # what the app's routes take, for a 405 answered here
MAX_HEADERS = 100  # header fields in one request (http.client's limit)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# Framing headers belong to the server; an app's copy would contradict ours.
_OWNED_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "date", "server"})
_NO_BODY = frozenset({204, 304})  # RFC 9110: no body, and (204) no Content-Length
_STATUS_LINES = {int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n" for s in HTTPStatus}
_SERVER = "Server: pwproxy\r\n"

# RFC 9112 5.1: a field line is a name (visible ASCII, no colon) right before its colon. After
# every line feed of a head comes such a name, the final empty line, or the end of the head.
_FIELD_LINE_BREAK = re.compile(rb"\n(?![!-9;-~]+:|\r?\n|\Z)")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class WireError(NamedTuple):
    """A request the server answers itself with an error (and then closes)."""

    status: int
    text: str


class Headers(Mapping[str, str]):
    """A request's header fields, looked up case-insensitively. `get` gives the first of a
    repeated field (as the email package did), `get_all` every one in order."""

    __slots__ = ("_fields", "_first")

    def __init__(self, first: dict[str, str], fields: tuple[tuple[str, str], ...]) -> None:
        self._first = first  # lower-case name -> first value
        self._fields = fields  # (lower-case name, value), as sent

    def __getitem__(self, name: str) -> str:
        return self._first[name.lower()]

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return self._first.get(name.lower(), default)

    def get_all(self, name: str) -> list[str] | None:
        lowered = name.lower()
        found = [value for key, value in self._fields if key == lowered]
        return found or None

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def __repr__(self) -> str:
        return f"Headers({list(self._fields)!r})"


class Head(NamedTuple):
    """A parsed request head (a tuple: made once per request, on the loop thread)."""

    method: str
    target: str  # as sent (an absolute form is the server's to resolve)
    version: tuple[int, int]
    headers: Headers
    line: str  # the request line, for the access log
    body_length: int
    keep_alive: bool  # HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with "keep-alive"
    expect_continue: bool  # the client waits for 100 Continue before sending its body
    raw: bytes  # the head as sent (the WebSocket handshake reads it again)

    @property
    def keep_alive_10(self) -> bool:
        """An HTTP/1.0 client that asked to keep the connection: tell it we do."""
        return self.keep_alive and self.version < (1, 1)


Framed = tuple[Head, bytes]  # a complete request: its head and its body


class ReceiveBuffer:
    """What one connection has sent and is not a request yet.

    Bounded by its reader: a head larger than `max_head` or a body larger than `max_body` is
    an error, so the buffer never holds more than a head, a body and one read.
    """

    __slots__ = ("_data", "_head", "_searched")

    def __init__(self) -> None:
        self._data = bytearray()
        self._searched = 0  # where to resume looking for the end of the head
        self._head: Head | None = None  # parsed, waiting for its body

    def __len__(self) -> int:
        return len(self._data)

    @property
    def pending(self) -> bool:
        """Part of a request is here (some of its head, or a head waiting for its body)."""
        return bool(self._data) or self._head is not None

    def feed(self, data: bytes | memoryview) -> None:
        self._data += data

    def clear(self) -> None:
        self._data.clear()
        self._searched = 0
        self._head = None

    def take_all(self) -> bytes:
        """Everything buffered, e.g. WebSocket frames sent right behind the handshake."""
        data = bytes(self._data)
        self.clear()
        return data

    @property
    def awaiting_continue(self) -> bool:
        """A complete head whose client waits for 100 Continue before sending the body."""
        head = self._head
        return head is not None and head.expect_continue and len(self._data) < head.body_length

    def next_request(self, max_head: int, max_body: int) -> Framed | WireError | None:
        """Cut the next complete request off the buffer; None while more bytes are needed."""
        head = self._head
        if head is None:
            end = self._find_head(max_head)
            if end is None or isinstance(end, WireError):
                return end
            parsed = parse_head(bytes(self._data[:end]), max_body)
            if isinstance(parsed, WireError):
                return parsed
            del self._data[:end]
            self._searched = 0
            self._head = head = parsed
        size = head.body_length
        if not size:
            self._head = None
            return head, b""
        if len(self._data) < size:
            return None
        body = bytes(self._data[:size])
        del self._data[:size]
        self._head = None
        return head, body

    def _find_head(self, max_head: int) -> int | WireError | None:
        data = self._data
        if data.startswith((b"\r", b"\n")):  # RFC 9112 2.2: ignore empty lines before a request
            del data[: len(data) - len(data.lstrip(b"\r\n"))]
            self._searched = 0
        end = _head_end(data, self._searched)
        if end < 0:
            if len(data) > max_head:
                return _too_long(data, max_head)
            self._searched = max(0, len(data) - 3)  # the terminator may straddle two reads
            return None
        if end > max_head:
            return _too_long(data, max_head)
        return end


def _head_end(data: bytearray, start: int) -> int:
    """Index just past the blank line ending the head, or -1. Bare LF lines are accepted."""
    crlf = data.find(b"\r\n\r\n", start)
    lf = data.find(b"\n\n", start, crlf if crlf >= 0 else len(data))
    if lf >= 0:
        return lf + 2
    return crlf + 4 if crlf >= 0 else -1


def _too_long(data: bytearray, max_head: int) -> WireError:
    if data.find(b"\n", 0, max_head) < 0:
        return WireError(414, "Request-URI Too Long")
    return WireError(431, "Request Header Fields Too Large")


# --- parsing a head ---------------------------------------------------------------------------


class _Line(NamedTuple):
    method: str
    target: str
    version: tuple[int, int]
    text: str


def parse_head(data: bytes, max_body: int) -> Head | WireError:
    """A head (request line, header lines, the empty line) as a `Head`, or why it is refused."""
    bad_line = _bad_field_line(data)
    if bad_line is not None:
        return bad_line
    cut = data.find(b"\n")
    line = _request_line(data[:cut])
    if isinstance(line, WireError):
        return line
    fields = _fields(data[cut + 1:])
    if isinstance(fields, WireError):
        return fields
    first, listed = fields
    length = _body_length(first, listed, max_body)
    if isinstance(length, WireError):
        return length
    connection = first.get("connection", "").lower()
    keep = connection != "close" if line.version >= (1, 1) else connection == "keep-alive"
    expect = line.version >= (1, 1) and first.get("expect", "").lower() == "100-continue"
    return Head(line.method, line.target, line.version, Headers(first, listed), line.text, length,
                keep, expect, data)


def _request_line(raw: bytes) -> _Line | WireError:
    """method SP target SP HTTP/x.y (RFC 9112 3)."""
    text = raw.rstrip(b"\r").decode("latin-1")
    words = raw.split()
    version = (0, 9)
    if len(words) >= 3:
        checked = _version(words[-1])
        if isinstance(checked, WireError):
            return checked
        version = checked
    if len(words) == 2 and words[0] == b"GET":
        # "GET /" (HTTP/0.9), or "GET  HTTP/1.1" with the target missing: malformed for
        # HTTP/1.x, the client's mistake.
        return WireError(400, "Bad Request: no HTTP version in the request line")
    if len(words) != 3:
        return WireError(400, "Bad request syntax")
    method = words[0].decode("latin-1")
    if method not in METHODS:
        # A 4xx, not 501: an unknown method is the client's mistake, and every resource here
        # takes the same few methods (listed in Allow).
        return WireError(405, "Method Not Allowed")
    return _Line(method, words[1].decode("latin-1"), version, text)


def _version(word: bytes) -> tuple[int, int] | WireError:
    if word == b"HTTP/1.1":
        return 1, 1
    major, dot, minor = word[5:].partition(b".")
    if (not word.startswith(b"HTTP/") or not dot or not (major.isdigit() and minor.isdigit())
            or len(major) > 10 or len(minor) > 10):
        return WireError(400, "Bad request version")
    version = int(major), int(minor)
    if version >= (2, 0):
        return WireError(505, "Invalid HTTP version")
    return version


def _bad_field_line(head: bytes) -> WireError | None:
    """A 400 for the first header line that is not ``name:value`` (RFC 9112 5.1, 5.2)."""
    found = _FIELD_LINE_BREAK.search(head)
    if found is None:
        return None
    start = found.end()
    line = head[start : head.find(b"\n", start)].rstrip(b"\r")
    name, colon, _ = line.partition(b":")
    if line.startswith((b" ", b"\t")):
        return WireError(400, "Bad Request: obsolete line folding in the header")
    if not colon:
        return WireError(400, "Bad Request: a header line without a colon")
    if name.endswith((b" ", b"\t")):
        return WireError(400, "Bad Request: whitespace between a header field name and its colon")
    return WireError(400, "Bad Request: malformed header field name")


def _fields(raw: bytes) -> tuple[dict[str, str], tuple[tuple[str, str], ...]] | WireError:
    """The header fields (already checked line by line): first values by lower-case name, and
    every field in order."""
    first: dict[str, str] = {}
    listed: list[tuple[str, str]] = []
    for line in raw.decode("latin-1").split("\n"):
        name, colon, value = line.partition(":")
        if not colon:
            break  # the empty line ending the head
        name = name.lower()
        value = value.strip(" \t\r")
        listed.append((name, value))
        first.setdefault(name, value)
    if len(listed) > MAX_HEADERS:
        return WireError(431, "Too many headers")
    return first, tuple(listed)


def _body_length(first: dict[str, str], fields: tuple[tuple[str, str], ...],
                 max_body: int) -> int | WireError:
    if "transfer-encoding" in first:
        return WireError(411, "Length Required")  # no chunked bodies: they are never needed here
    value = first.get("content-length")
    if value is None:
        return 0
    if sum(1 for name, _ in fields if name == "content-length") > 1:
        return WireError(400, "Duplicate Content-Length")  # the classic smuggling vector
    if not (value.isascii() and value.isdigit()):
        return WireError(400, "Bad Content-Length")
    if len(value) > 9 or int(value) > max_body:  # length check first: int() of 5000 digits raises
        return WireError(413, "Request Entity Too Large")
    return int(value)


# --- absolute-form targets (RFC 9112 3.2.2) ---------------------------------------------------


class Absolute(NamedTuple):
    scheme: str  # lower case
    host: str  # lower case, no brackets, no trailing dot
    port: int
    path: str  # the origin form: path and query


def split_absolute(target: str) -> Absolute | None:
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
    host_port = _host_port(authority)
    if host_port is None:
        return None
    host, port_text = host_port
    if not port_text:
        port = default_port
    elif port_text.isascii() and port_text.isdigit() and len(port_text) <= 5:
        port = int(port_text)
    else:
        return None
    return Absolute(scheme, host.lower().rstrip("."), port, path if path.startswith("/") else "/" + path)


def _host_port(authority: str) -> tuple[str, str] | None:
    if authority.startswith("["):
        host, bracket, after = authority[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            return None
        port_text = after[1:]
    else:
        host, _, port_text = authority.partition(":")
    return (host, port_text) if host else None


def is_own_host(host: str, local_ip: str, names: frozenset[str]) -> bool:
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


def client_ip(addr: object) -> str:
    """The IP address of a socket address, an IPv4-mapped IPv6 one as plain IPv4."""
    host = str(addr[0]) if isinstance(addr, tuple) and addr else ""
    return host[7:] if host.startswith("::ffff:") and "." in host else host


def machine_names() -> frozenset[str]:
    name = socket.gethostname().lower().rstrip(".")
    return frozenset(n for n in (name, name.split(".", 1)[0]) if n)


# --- rendering a response ---------------------------------------------------------------------


@lru_cache(maxsize=64)  # error texts are a small fixed set
def error_body(text: str) -> bytes:
    return json.dumps({"error": text}).encode()


def render(response: Response, date: str, *, head_only: bool, close: bool,
           keep_alive_10: bool, interim_allowed: bool = True,
           length: int | None = None) -> tuple[bytes, bool]:
    """The response bytes and whether to close; raises ValueError on an unsendable response.
    A 1xx ahead of it only where `interim_allowed` (RFC 9110 15.2: never to an HTTP/1.0 client).
    `length`: the head of a body sent after it (a file), that many bytes long."""
    if not 200 <= response.status <= 599:
        raise ValueError(f"status {response.status!r} cannot be sent")
    block, close = header_block(response.headers, close)
    head = b""
    if response.interim is not None and interim_allowed:
        head, close = interim(response.interim), True
    return head + assemble(response.status, block, response.body, date, head_only=head_only,
                           close=close, keep_alive_10=keep_alive_10, length=length), close


def render_error(err: WireError, date: str, *, close: bool = True, head_only: bool = False,
                 extra: str = "") -> bytes:
    """A JSON error the server answers itself; `extra` is more header lines."""
    block = "Content-Type: application/json\r\n" + extra
    if err.status == 405:
        block += f"Allow: {ALLOW}\r\n"  # RFC 9110: a 405 lists what is allowed
    return assemble(err.status, block, error_body(err.text), date, head_only=head_only, close=close)


def header_lines(headers: list[tuple[str, str]]) -> str:
    return "".join(f"{name}: {value}\r\n" for name, value in headers)


def stream_head(response: Response, date: str) -> bytes:
    """The head of an event stream: no length, the stream ends when the connection does."""
    block, _ = header_block(response.headers, True)
    head = f"{_status_line(response.status)}{date}{_SERVER}{block}Connection: close\r\n\r\n"
    return head.encode("latin-1")


def interim(status: int) -> bytes:
    """A 1xx response ahead of the final one (RFC 9110 15.2: no content). Its `Connection:
    close` also tells a client that takes it for the final answer (http.client does, for
    anything but 100) not to read another response from this connection."""
    if not 102 <= status <= 199:
        raise ValueError(f"interim status {status!r} cannot be sent")
    return f"{_status_line(status)}Connection: close\r\n\r\n".encode("latin-1")


def header_block(headers: list[tuple[str, str]], close: bool) -> tuple[str, bool]:
    """An app's header lines without the framing ones; an app's `Connection: close` closes."""
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


def assemble(status: int, block: str, body: bytes, date: str, *, head_only: bool = False,
             close: bool = False, keep_alive_10: bool = False, length: int | None = None) -> bytes:
    """Status line, headers and body; with `length`, the head alone of a body that long."""
    no_body = status in _NO_BODY
    size = len(body) if length is None else length
    framing = "" if no_body else f"Content-Length: {size}\r\n"
    conn = "Connection: close\r\n" if close else "Connection: keep-alive\r\n" if keep_alive_10 else ""
    head = f"{_status_line(status)}{date}{_SERVER}{block}{framing}{conn}\r\n"
    data = head.encode("latin-1")
    return data if head_only or no_body or length is not None else data + body


def _status_line(status: int) -> str:
    return _STATUS_LINES.get(status) or f"HTTP/1.1 {status} \r\n"
