"""HTTPS transport: a threading HTTP/1.1 server that hands requests to the Gateway.

The TLS handshake runs in each connection's own thread (never in accept), so a
slow or silent client cannot stall the listener. Connections are tracked so
`close_connections()` can end them all promptly on stop.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .gateway import Gateway, is_control
from .messages import Request, Response, gateway_error

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 120.0  # keep-alive connections are dropped after this much silence
MAX_BODY = 1 << 20
MAX_CONNECTIONS = 256


class GatewayHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client must never keep the process alive
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], gateway: Gateway,
                 tls: ssl.SSLContext, http10: bool = False) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.gateway = gateway
        self.tls = tls
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, Http10RequestHandler if http10 else GatewayRequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), which can
        # take seconds; the name is never used, so bind without it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self._connections_lock:
            return len(self._connections) < MAX_CONNECTIONS

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        """Cut every open connection, waking the threads blocked on them."""
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients vanish mid-request all the time (and faults cause it on purpose).
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class GatewayRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as pooled clients expect
    server: GatewayHTTPServer

    def version_string(self) -> str:
        return "SimulatedGateway"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def setup(self) -> None:
        raw = self.request
        self.server.track(raw)
        # Headers and body go out as separate writes; without NODELAY, Nagle plus the
        # client's delayed ACK would add ~40 ms to every answer.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.settimeout(HANDSHAKE_TIMEOUT)
        try:
            secure = self.server.tls.wrap_socket(raw, server_side=True,
                                                 do_handshake_on_connect=False)
        finally:
            self.server.untrack(raw)  # wrapping detaches the plain socket
        self.server.track(secure)
        try:
            secure.do_handshake()
        except (OSError, ValueError):
            self.server.untrack(secure)
            secure.close()
            raise
        secure.settimeout(IDLE_TIMEOUT)
        self.request = secure
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass  # the peer is gone; nothing left to flush
        finally:
            self.server.untrack(self.request)
            self.request.close()

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        path = urllib.parse.urlsplit(self.path).path
        self.server.gateway.count(path)
        if not is_control(path):
            self.server.gateway.counter.arrived()
            self._answering = True
        return True

    def handle_one_request(self) -> None:
        """One request; counted as being answered until the last bytes of its answer go out
        (or it is dropped)."""
        self._answering = False
        try:
            super().handle_one_request()
        finally:
            self._answered()

    def _answered(self) -> None:
        # Before the last write, not after: the client cannot have the whole answer (and
        # send its next request) while we still count this one.
        if self._answering:
            self._answering = False
            self.server.gateway.counter.answered()

    def _write_pieces(self, pieces: Iterator[bytes], delay: float) -> None:
        """Write the answer's pieces (`delay` apart); uncounted just before the last."""
        held: bytes | None = None
        for index, piece in enumerate(pieces):
            if held is not None:
                self.wfile.write(held)
            if index and delay and self.server.gateway.pause(delay):
                self.close_connection = True  # stopping: the answer stays unfinished
                return
            held = piece
        self._answered()
        if held is not None:
            self.wfile.write(held)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _read_chunked(self) -> bytes | None:
        """A chunked body (as Go's server accepts), or None if malformed or too big."""
        body = b""
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                return None
            if size < 0 or len(body) + size > MAX_BODY:
                return None
            if size == 0:
                break
            body += self.rfile.read(size)
            self.rfile.readline(1024)  # the CRLF closing the chunk
        while self.rfile.readline(1024).strip():
            pass  # trailer fields, which nothing here uses
        return body

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering a bad or oversized one."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = self._read_chunked()
        else:
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            body = self.rfile.read(length) if 0 <= length <= MAX_BODY else None
        if body is None:
            # The rest of the stream cannot be trusted, so this connection ends here.
            self.close_connection = True
            self._send(gateway_error(400, "Bad Request", "invalid or oversized body"))
        return body

    def _request(self, body: bytes) -> Request:
        parts = urllib.parse.urlsplit(self.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        return Request(self.command, parts.path, parts.query, headers, body)

    def _serve(self) -> None:
        body = self._read_body()
        if body is None:
            return
        response = self.server.gateway.handle(self._request(body))
        if response is None:
            self._drop()
        else:
            self._send(response)

    def _drop(self) -> None:
        """Close the connection without a word, like an unreachable gateway."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.request.shutdown(socket.SHUT_RDWR)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        if response.status != 204:
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(response.length))
        if not response.length:
            self._answered()
        self._end_headers()
        self._write_pieces(response.delivery.pieces(response.body), response.delivery.delay)

    def _end_headers(self) -> None:
        self.end_headers()


class Http10RequestHandler(GatewayRequestHandler):
    """An HTTP/1.0 gateway: one request per connection, said out loud on every answer."""

    protocol_version = "HTTP/1.0"

    def _end_headers(self) -> None:
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
