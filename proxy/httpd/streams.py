"""Live streams inside the server: a worker opens one, the event loop keeps it.

When the app answers with a `Response` carrying a stream (`proxy.httpd.stream`), the worker
writes the head (for WebSocket the 101 that `wsproto` builds from the raw request, with the
app's headers, e.g. CORS) and hands the connection back to the loop in the STREAMING state.
There it holds an out-buffer that producers fill from any thread; the loop flushes it when the
socket is writable, sends a heartbeat (an SSE comment or a WebSocket ping) after
``heartbeat`` seconds of silence, reads the client's frames, and closes the stream when its
buffer would grow past ``buffer_limit`` bytes (a listener that cannot keep up is dropped,
never waited for). Past the stream limit (`Admission.stream_limit`) a stream request is a
503. An idle listener costs its buffer, not a thread. `drain` ends every stream cleanly: a
WebSocket gets close code 1001, an event stream its end of file.
"""

from __future__ import annotations

import collections
import logging
import selectors
import socket
import ssl
import threading
from collections.abc import Callable
from typing import NamedTuple, Protocol

from proxy.httpd.admission import Admission
from proxy.httpd.conn import Conn, Event, State
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
from proxy.httpd.types import Response
from proxy.httpd.wire import Head, WireError, header_block, header_lines, render_error, stream_head
from proxy.ratelog import RateLog

__all__ = ["Opened", "Streaming", "Streams"]

logger = logging.getLogger("proxy.server")

CLOSE_WAIT = 2.0  # how long a WebSocket we closed may take to answer with its close frame
STREAM_INPUT = 64 * 1024  # what an event-stream client may send before it is cut off
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
TOO_MANY = WireError(503, "Too many streams: the stream limit is reached (polling is not limited)")
NEEDS_HTTP11 = Rejection(400, [], "Bad Request: a WebSocket upgrade needs HTTP/1.1 (RFC 6455 4.2.1)")


class Streaming:
    """A connection's life as a stream: an out-buffer any thread fills (the `Sink` given to
    `Stream.open`) and the loop drains, bounded by `limit` bytes not yet taken by the kernel."""

    def __init__(self, conn: Conn, spec: Stream, limit: int, notify: Callable[[Conn], None],
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
            self._queue(data)
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

    def _queue(self, data: bytes) -> None:
        """Queue under the lock, or drop the listener if that would overflow its buffer."""
        if self.queued + len(data) > self.limit:
            self.dropped = True
            self.chunks.clear()
            self.queued = 0
        else:
            self.chunks.append(data)
            self.queued += len(data)

    # --- loop side ---

    def put(self, data: bytes) -> None:
        """Bytes of the loop's own (pongs, pings, close frames, heartbeats). A client that keeps
        pinging without reading overflows like a slow listener."""
        if data:
            with self.lock:
                self._queue(data)

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


class Opened(NamedTuple):
    """What a worker writes for a stream response: the head (or a refusal) and the stream."""

    data: bytes
    status: int
    streaming: Streaming | None


class LoopSide(Protocol):
    """What the streams need of the event loop."""

    def watch(self, conn: Conn, events: int) -> bool: ...

    def unwatch(self, conn: Conn) -> None: ...

    def close(self, conn: Conn) -> None: ...

    def linger(self, conn: Conn, now: float) -> None: ...

    def recv(self, conn: Conn) -> bytes | memoryview | None: ...


class Streams:
    """Every open stream; `open` runs on a worker, everything else on the loop thread."""

    def __init__(self, loop: LoopSide, admission: Admission, notify: Callable[[Conn], None], *,
                 buffer_limit: int, heartbeat: float) -> None:
        self._loop = loop
        self._admission = admission
        self._notify = notify
        self._buffer_limit = buffer_limit
        self._heartbeat = heartbeat
        self.open_streams: dict[Conn, None] = {}  # loop thread only
        self.dropped = 0  # listeners dropped for not keeping up
        self.draining = threading.Event()  # stopping: end every stream, open no new one
        self.gone = threading.Event()  # set once draining left no stream open
        self._drain_started = False
        self._errors = RateLog(logger)
        self._drops = RateLog(logger)  # slow listeners: a flood of them must not hide a trace

    # --- a worker opens a stream ---

    def open(self, conn: Conn, response: Response, spec: Stream, head: Head, date: str) -> Opened:
        """The head of a stream and its state, or the refusal (503 past the stream limit, a
        bad WebSocket handshake)."""
        ws: WebSocket | None = None
        if spec.protocol == WEBSOCKET:
            header_block(response.headers, True)  # raises ValueError on CR or LF in a value
            shaken = handshake(head.raw, response.headers) if head.version >= (1, 1) else NEEDS_HTTP11
            if isinstance(shaken, Rejection):
                refused = render_error(WireError(shaken.status, shaken.reason), date,
                                       extra=header_lines(shaken.headers))
                return Opened(refused, shaken.status, None)
            data, connection = shaken
            ws = WebSocket(connection)
        else:
            data = stream_head(response, date) + f"retry: {int(spec.retry_ms)}\n\n".encode()
        if self.draining.is_set() or not self._admission.open_stream():
            return Opened(render_error(TOO_MANY, date, extra="Retry-After: 10\r\n"), TOO_MANY.status, None)
        streaming = Streaming(conn, spec, self._buffer_limit, self._notify, ws)
        return Opened(data, 101 if ws is not None else response.status, streaming)

    def abandon(self) -> None:
        """A worker could not write the head: the stream never opened."""
        self._admission.close_stream()

    # --- the loop keeps it ---

    def start(self, conn: Conn, now: float) -> None:
        """A worker wrote a stream's head: watch the socket, subscribe, send what is queued."""
        st = conn.stream
        assert st is not None
        conn.to(Event.STREAMED)
        self.open_streams[conn] = None
        if not self._loop.watch(conn, _READ):
            return  # the socket is gone (and closed)
        st.last_write = now
        if self.draining.is_set():
            st.close_code = GOING_AWAY
            st.end()
        elif not self._subscribe(conn, st):
            return
        early = conn.buffer.take_all()
        if early:  # frames the client sent right behind its handshake
            self._input(conn, early)
        if conn.stream is not None:
            self.pump(conn, now)

    def _subscribe(self, conn: Conn, st: Streaming) -> bool:
        try:
            st.unsubscribe = st.spec.open(st)
        except Exception:
            self._errors.exception("a stream for %s failed to open", conn.client)
            self._loop.close(conn)
            return False
        return True

    def on_event(self, conn: Conn, now: float, mask: int) -> None:
        if mask & _WRITE:
            self.pump(conn, now)
        if mask & _READ and conn.stream is not None:
            chunk = self._loop.recv(conn)
            if chunk is None:
                self._interest(conn)  # a TLS read may have changed what we wait for
                return
            if not chunk:
                self._loop.close(conn)  # the listener went away
                return
            self._input(conn, chunk)
            if conn.stream is not None:
                self.pump(conn, now)

    def _input(self, conn: Conn, data: bytes | memoryview) -> None:
        st = conn.stream
        assert st is not None
        if st.ws is None:
            st.input += len(data)  # an event-stream client has nothing to say
            if st.input > STREAM_INPUT:
                self._loop.close(conn)
            return
        st.put(st.ws.received(bytes(data)))
        if st.ws.finished:
            with st.lock:
                st.ending = True

    def pump(self, conn: Conn, now: float) -> None:
        """Send what the stream has queued; end or drop it when that is due."""
        st = conn.stream
        if st is None:
            return
        with st.lock:
            st.scheduled = False
            dropped, ending = st.dropped, st.ending
        if dropped:
            self.dropped += 1
            self._drops.info("dropped a stream listener at %s: it is not reading fast enough", conn.client)
            self._loop.close(conn)
            return
        if ending and st.ws is not None and not st.ws.closing and not st.ws.finished:
            st.put(st.ws.close(st.close_code))
            st.close_by = now + CLOSE_WAIT
        if not self._send_queued(conn, st, now):
            return
        self._interest(conn)
        if not st.pending() and ending and (st.ws is None or st.ws.finished):
            self._end(conn, now)

    def _send_queued(self, conn: Conn, st: Streaming, now: float) -> bool:
        """Write until the queue is empty or the socket is full; False if the stream closed."""
        while (chunk := st.next_chunk()) is not None:
            try:
                sent = conn.sock.send(chunk)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return True
            except OSError:
                self._loop.close(conn)
                return False
            st.last_write = now
            if sent < len(chunk):
                st.sending = chunk[sent:]
                return True
            st.sending = None
        return True

    def _interest(self, conn: Conn) -> None:
        st = conn.stream
        if st is not None:
            self._loop.watch(conn, _READ | (_WRITE if st.pending() else 0))

    def _end(self, conn: Conn, now: float) -> None:
        """A clean end: FIN after the last byte, then the usual lingering close."""
        self.detach(conn)
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._loop.close(conn)
            return
        conn.to(Event.ENDED)
        self._loop.linger(conn, now)

    def detach(self, conn: Conn) -> None:
        """Forget a stream: unsubscribe it, free its place, stop watching its socket."""
        st = conn.stream
        if st is None:
            return
        conn.stream = None
        with st.lock:
            st.closed = True
            st.chunks.clear()
        if conn in self.open_streams:
            del self.open_streams[conn]
            self._admission.close_stream()
            self._loop.unwatch(conn)
        unsubscribe, st.unsubscribe = st.unsubscribe, None
        if unsubscribe is not None:
            try:
                unsubscribe()
            except Exception:
                self._errors.exception("unsubscribing a stream of %s failed", conn.client)
        if self.draining.is_set() and not self.open_streams:
            self.gone.set()

    def news(self, conn: Conn, now: float) -> None:
        """A producer queued something (or asked to end): flush it, if the stream is ours yet."""
        if conn in self.open_streams and conn.state is State.STREAMING:
            self.pump(conn, now)

    # --- timers ---

    def tick(self, now: float) -> None:
        for conn in list(self.open_streams):
            self._timers(conn, now)

    def _timers(self, conn: Conn, now: float) -> None:
        st = conn.stream
        if st is None:
            return
        if st.close_by and now > st.close_by:  # our close frame went unanswered
            self._end(conn, now)
            return
        if now - st.last_write >= self._heartbeat and not st.pending():
            st.put(st.ws.ping() if st.ws is not None else SSE_HEARTBEAT)
            st.last_write = now  # even if the socket is full: one heartbeat per period
            self.pump(conn, now)

    def drain(self) -> None:
        """Stopping: end every stream once (WebSocket close 1001, event stream EOF)."""
        if not self._drain_started:
            self._drain_started = True
            for conn in list(self.open_streams):
                st = conn.stream
                if st is not None:
                    st.close_code = GOING_AWAY
                    st.end()
        if not self.open_streams:
            self.gone.set()
