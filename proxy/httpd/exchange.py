"""One request in, its answer out: what the loop answers at once and what a worker answers.

The event loop asks `quick` for every complete request: an app that implements `ready`
(`proxy.httpd.types.ReadyApp`) may answer a GET or HEAD on the spot, e.g. a cached body of
this window, and the loop writes it without a thread switch. Everything else goes to a worker
(`serve`): the app is called, its answer written with one bounded blocking send, and the
connection handed back to the loop. Both paths frame an answer with the same function, so a
response is byte for byte the same whichever path wrote it.

An absolute-form target (``GET http://host:port/path``) is served as its path when it names
this server (the address and port the connection came in on, or this machine's name) with the
connection's scheme, and is a 400 otherwise: this is no forwarding proxy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import BinaryIO, NamedTuple

from proxy.httpd.clock import DateLine
from proxy.httpd.conn import Conn, Event
from proxy.httpd.stream import WEBSOCKET
from proxy.httpd.streams import Streaming, Streams
from proxy.httpd.types import App, ReadyApp, Request, Response
from proxy.httpd.wire import (
    Framed,
    Head,
    WireError,
    client_ip,
    is_own_host,
    machine_names,
    render,
    render_error,
    split_absolute,
)
from proxy.ratelog import RateLog

__all__ = ["WRITE_TIMEOUT", "Exchange", "Job", "Outcome"]

logger = logging.getLogger("proxy.server")
access_logger = logging.getLogger("proxy.server.access")

WRITE_TIMEOUT = 10.0  # a client that doesn't read can't hold a worker (or an answer) longer
_ABSOLUTE_FORM = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")  # RFC 3986 scheme, then an authority
_INTERNAL = WireError(500, "Internal Server Error")

Job = tuple[Conn, "Framed | WireError"]  # what the loop hands a worker


class Outcome(NamedTuple):
    """An answer ready to write, and what follows it."""

    data: bytes
    close: bool
    status: int
    line: str  # the request line, for the access log
    streaming: Streaming | None = None  # becomes a stream once `data` (the head) is out
    file: BinaryIO | None = None  # the body, sent after `data` (the head) in chunks


class Exchange:
    """Answers requests: `quick` on the loop thread, `serve` on a worker."""

    def __init__(self, app: App, streams: Streams, give_back: Callable[[Conn, Event], None], *,
                 tls: bool, access_log: bool) -> None:
        self._app = app
        self._ready = app.ready if isinstance(app, ReadyApp) else None
        self._streams = streams
        self._give_back = give_back
        self._tls = tls
        self._access_log = access_log
        self._names = machine_names()
        self._date = DateLine()
        self._count_lock = threading.Lock()  # workers' answers only: the loop counts its own
        self._worker_answers = 0
        self.quick_answers = 0  # answers the loop wrote (loop thread only, so no lock)
        self._app_errors = RateLog(logger)
        self._ready_errors = RateLog(logger)
        self._errors = RateLog(logger)

    @property
    def served(self) -> int:
        """Answers written, by either path."""
        return self.quick_answers + self._worker_answers

    # --- the loop's path ---

    def quick(self, conn: Conn, head: Head, body: bytes) -> Outcome | None:
        """The app's answer if it has one at hand (`ReadyApp.ready`); None: ask a worker."""
        if self._ready is None or head.method not in ("GET", "HEAD") or not head.target.startswith("/"):
            return None
        try:
            response = self._ready(Request(head.method, head.target, head.headers, body, conn.client))
            if response is None:
                return None
            if response.stream is not None or response.file is not None:
                _close(response.file)  # the loop writes bytes only: a worker asks the app again
                return None
            outcome = self._framed(response, head)
        except Exception:  # the worker will call the app and answer (a 500 if that fails too)
            self._ready_errors.exception("the app's ready() failed on %s %r", head.method, head.target)
            return None
        return outcome

    def answered(self, conn: Conn, outcome: Outcome, started: float, *, quick: bool = False) -> None:
        """Count an answer that went out (and log it when asked to); `quick`: by the loop."""
        if quick:
            self.quick_answers += 1
        else:
            with self._count_lock:
                self._worker_answers += 1
        if self._access_log:
            access_logger.info(
                '%s "%s" %d %d %.1fms',
                conn.client,
                ascii(outcome.line)[1:-1],  # escapes control characters: no forged log lines
                outcome.status,
                len(outcome.data),
                (time.perf_counter() - started) * 1000,
            )

    # --- a worker's path ---

    def serve(self, job: Job) -> None:
        """Answer one request on a worker thread and hand the connection back to the loop."""
        conn, payload = job
        started = time.perf_counter()
        try:
            if isinstance(payload, WireError):
                outcome = Outcome(render_error(payload, self._date()), True, payload.status, "-")
            else:
                outcome = self.answer(conn, *payload)
            self._deliver(conn, outcome, started)
        except Exception:
            self._errors.exception("unexpected error answering %s", conn.client)
            self._give_back(conn, Event.CLOSED)

    def answer(self, conn: Conn, head: Head, body: bytes) -> Outcome:
        """Call the app (from a worker: it may block) and frame what it says."""
        target = head.target
        if _ABSOLUTE_FORM.match(target):
            resolved = self._origin_form(conn, target)
            if isinstance(resolved, WireError):
                return Outcome(render_error(resolved, self._date()), True, resolved.status, head.line)
            target = resolved
        request = Request(head.method, target, head.headers, body, conn.client)
        try:
            response = self._app(request)
            spec = response.stream
            # HEAD of an event stream is its head alone; of a WebSocket, the handshake refuses it.
            if spec is not None and 200 <= response.status < 300 and (
                    head.method != "HEAD" or spec.protocol == WEBSOCKET):
                opened = self._streams.open(conn, response, spec, head, self._date())
                return Outcome(opened.data, opened.streaming is None, opened.status, head.line,
                               opened.streaming)
            return self._framed(response, head)
        except Exception:
            self._log_app_error(request)
            close = not head.keep_alive
            data = render_error(_INTERNAL, self._date(), close=close, head_only=head.method == "HEAD")
            return Outcome(data, close, _INTERNAL.status, head.line)

    def _framed(self, response: Response, head: Head) -> Outcome:
        file = response.file
        try:
            length = None if file is None else os.fstat(file.fileno()).st_size - file.tell()
            data, close = render(response, self._date(), head_only=head.method == "HEAD",
                                 close=not head.keep_alive, keep_alive_10=head.keep_alive_10,
                                 interim_allowed=head.version >= (1, 1), length=length)
        except BaseException:
            _close(file)
            raise
        if head.method == "HEAD":
            _close(file)
            file = None
        return Outcome(data, close, response.status, head.line, file=file)

    def _deliver(self, conn: Conn, outcome: Outcome, started: float) -> None:
        sent = send_all(conn.sock, outcome.data)
        if outcome.file is not None:
            with outcome.file:
                sent = sent and send_file(conn.sock, outcome.file)
        if not sent:
            if outcome.streaming is not None:
                self._streams.abandon()
            self._give_back(conn, Event.CLOSED)
            return
        self.answered(conn, outcome, started)
        if outcome.streaming is not None:
            conn.stream = outcome.streaming
            self._give_back(conn, Event.STREAMED)
        elif outcome.close:
            try:
                conn.sock.shutdown(socket.SHUT_WR)  # FIN after the answer; the loop lingers
            except OSError:
                self._give_back(conn, Event.CLOSED)
                return
            self._give_back(conn, Event.FINISHED)
        else:
            self._give_back(conn, Event.KEPT)

    def _origin_form(self, conn: Conn, target: str) -> str | WireError:
        """The path of an absolute-form target that names this server; a 400 for any other."""
        parts = split_absolute(target)
        if parts is None:
            return WireError(400, "Bad Request: malformed absolute-form target")
        try:
            local = conn.sock.getsockname()
        except OSError:
            local = ("", -1)
        ours = (
            (parts.scheme == "https") == self._tls
            and parts.port == local[1]
            and is_own_host(parts.host, client_ip(local), self._names)
        )
        if not ours:
            return WireError(400, "Bad Request: the target names another server; requests are not forwarded")
        return parts.path

    def _log_app_error(self, request: Request) -> None:
        self._app_errors.exception("app failed on %s %r", request.method, request.target)


def send_all(sock: socket.socket, data: bytes) -> bool:
    """Write all of ``data`` from a worker: one non-blocking try, then a bounded blocking wait."""
    try:
        sent = sock.send(data)
    except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
        sent = 0  # TLS writes are all-or-nothing, so a retry starts from 0 as it must
    except OSError:
        return False
    if sent == len(data):
        return True
    try:
        sock.settimeout(WRITE_TIMEOUT)
        sock.sendall(memoryview(data)[sent:])
        sock.setblocking(False)
    except OSError:
        return False
    return True


FILE_CHUNK = 64 * 1024  # what a file body costs in memory while it is sent


def send_file(sock: socket.socket, file: BinaryIO) -> bool:
    """Write the rest of ``file`` from a worker, a chunk at a time, each within WRITE_TIMEOUT."""
    try:
        sock.settimeout(WRITE_TIMEOUT)
        while chunk := file.read(FILE_CHUNK):
            sock.sendall(chunk)
        sock.setblocking(False)
    except OSError:
        return False
    return True


def _close(file: BinaryIO | None) -> None:
    if file is not None:
        with contextlib.suppress(OSError):
            file.close()
