"""The event loop: one thread owns the selector, every connection waiting in it, and the timers.

Thread-per-connection puts one thread per keep-alive client in a fight for the GIL, so instead
this loop parks every idle or half-read connection in a ``selectors`` loop and answers what it
can at once: a complete request that the app can answer without blocking (`Exchange.quick`,
e.g. a cached body of this window) is written from here, and the connection stays registered
for its next request. Anything else goes to a worker (`proxy.httpd.workers`), which answers
and hands the connection back through the `Mailbox`. Slow or idle clients therefore cost a
small buffer, never a thread.

What a socket event means depends on the connection's state (`proxy.httpd.conn`): the loop
looks the handler up in a table by state, and the sweep looks up each waiting connection's
deadline the same way. Accepting and TLS handshakes are the `Door`'s (`proxy.httpd.admission`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from proxy.httpd.admission import Admission, Door, close_quietly
from proxy.httpd.conn import IN_LOOP, Conn, Event, State
from proxy.httpd.exchange import WRITE_TIMEOUT, Exchange, Job, Outcome
from proxy.httpd.streams import Streams
from proxy.httpd.types import App
from proxy.httpd.wire import CONTINUE, Framed, WireError
from proxy.httpd.workers import Workers
from proxy.ratelog import RateLog

__all__ = ["Loop", "Mailbox", "Settings"]

logger = logging.getLogger("proxy.server")

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
READ_SIZE = 16384  # per recv; bounds a parked connection's buffer to head + body + one read
LINGER_SECONDS = 2.0  # drain after our last answer so the client reads it, not a RST
LINGER_BYTES = 256 * 1024
_LISTEN, _WAKE = object(), object()  # selector tags that aren't connections


@dataclass(frozen=True, slots=True)
class Settings:
    """The server's limits, as its constructor was given them."""

    workers: int
    max_connections: int
    max_streams: int
    idle_timeout: float
    head_timeout: float
    max_head: int
    max_body: int
    stream_buffer: int
    stream_heartbeat: float
    access_log: bool
    ssl_context: ssl.SSLContext | None

    @property
    def sweep_interval(self) -> float:
        return max(0.01, min(0.5, self.head_timeout / 4, self.idle_timeout / 4, self.stream_heartbeat / 4))


class Mailbox:
    """How other threads reach the loop: connections handed back by workers, streams with
    news, and one wake-up byte per loop pass however many arrive."""

    def __init__(self) -> None:
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)
        self._pending = False
        self._returns: collections.deque[tuple[Conn, Event]] = collections.deque()
        self._news: collections.deque[Conn] = collections.deque()
        self.closed = False  # stopping: what comes back is closed, not queued

    def give_back(self, conn: Conn, how: Event) -> None:
        """A worker is done with a connection (any thread)."""
        if self.closed:
            close_quietly(conn.sock)
            return
        self._returns.append((conn, how))
        self._wake_soon()

    def notify(self, conn: Conn) -> None:
        """A stream has something to send, or must end (any thread)."""
        self._news.append(conn)
        self._wake_soon()

    def _wake_soon(self) -> None:
        if not self._pending:  # one wake-up byte per loop pass is enough
            self._pending = True
            self.wake()

    def wake(self) -> None:
        # OSError: buffer full (the loop will wake anyway) or closed (stopping).
        with contextlib.suppress(OSError):
            self._writer.send(b"\0")

    def take(self) -> tuple[list[tuple[Conn, Event]], list[Conn]]:
        """Everything handed in since the last call (loop thread)."""
        # Order matters: consume the wake-up bytes, then clear the flag, then empty the queues.
        # A thread that still saw the flag set appended before the clear, so before the drain;
        # one that sets it after the clear sends a byte this recv can no longer swallow.
        with contextlib.suppress(OSError):
            self.reader.recv(4096)
        self._pending = False
        returns = [self._returns.popleft() for _ in range(len(self._returns))]
        news = [self._news.popleft() for _ in range(len(self._news))]
        return returns, news

    def close(self) -> None:
        self.closed = True
        close_quietly(self.reader)
        close_quietly(self._writer)


class Loop:
    """The selector, the connections waiting in it, and what happens to them."""

    def __init__(self, app: App, listener: socket.socket, settings: Settings) -> None:
        self.settings = settings
        self.admission = Admission(settings.max_connections, settings.max_streams)
        self.mailbox = Mailbox()
        self.streams = Streams(self, self.admission, self.mailbox.notify,
                               buffer_limit=settings.stream_buffer, heartbeat=settings.stream_heartbeat)
        self.exchange = Exchange(app, self.streams, self.mailbox.give_back,
                                 tls=settings.ssl_context is not None, access_log=settings.access_log)
        self.workers: Workers[Job] = Workers(settings.workers, self.exchange.serve, _discard)
        self.stopping = threading.Event()
        self._listener = listener
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.mailbox.reader, READ, _WAKE)
        self.door = Door(listener, self._sel, _LISTEN, self.admission, self,
                         ssl_context=settings.ssl_context, handshake_timeout=settings.head_timeout)
        self._writing: dict[Conn, None] = {}  # answers the socket did not take at once
        self._scratch = memoryview(bytearray(READ_SIZE))  # what recv() reads into
        self._next_sweep = 0.0
        self._errors = RateLog(logger)
        # What a socket event means, and when a waiting connection is due, by state.
        self._on_event: dict[State, Callable[[Conn, float, int], None]] = {
            State.HANDSHAKE: self.door.handshake, State.READING: self.read, State.WRITING: self._write_more,
            State.STREAMING: self.streams.on_event, State.LINGER: self._drain,
        }
        self._deadline: dict[State, Callable[[Conn, float], None]] = {
            State.HANDSHAKE: self.door.handshake_due, State.READING: self._reading_due,
            State.LINGER: self._linger_due,
        }

    # --- running ---

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    self._once()
                except Exception:  # a bug here must not silently end all serving
                    self._errors.exception("unexpected error in the event loop")
                    self.stopping.wait(0.01)  # and must not spin either
        finally:
            self._close_all()

    def stop(self) -> None:
        self.stopping.set()
        self.mailbox.closed = True
        self.mailbox.wake()

    def _once(self) -> None:
        now = time.monotonic()
        timeout = min(max(0.0, self._next_sweep - now), self.workers.tick(now))
        events = self._sel.select(timeout)
        now = time.monotonic()
        for key, mask in events:
            tag = key.data
            if tag is _LISTEN:
                self.door.accept(now)
            elif tag is _WAKE:
                self._take_mail(now)
            else:
                self._guarded(cast(Conn, tag), now, mask)
        if self.streams.draining.is_set():
            self.streams.drain()
        if now >= self._next_sweep:
            self._sweep(now)
            self._next_sweep = now + self.settings.sweep_interval

    def _guarded(self, conn: Conn, now: float, mask: int) -> None:
        """One connection's bad luck must never take the loop down."""
        handler = self._on_event.get(conn.state)
        if handler is None:  # closed (or handed over) earlier in this very pass
            return
        try:
            handler(conn, now, mask)
        except Exception:
            self._errors.exception("unexpected error on a connection from %s", conn.client)
            self.close(conn)

    def _close_all(self) -> None:
        for conn in list(self.admission.conns):
            if conn.state in IN_LOOP:
                self.close(conn)
            else:
                # A worker owns it: shutdown wakes a blocked sendall; closing stays theirs.
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
        close_quietly(self._listener)
        self.admission.drop_spare()
        self._sel.close()

    def close_leftovers(self, started: bool) -> None:
        """After stop: whatever the loop could not close (never started, or a worker held it)."""
        for conn in list(self.admission.conns):
            close_quietly(conn.sock)
        self.admission.conns.clear()
        close_quietly(self._listener)
        self.mailbox.close()
        if not started:  # otherwise the loop closed them on its way out
            self._sel.close()
            self.admission.drop_spare()

    # --- the selector ---

    def watch(self, conn: Conn, events: int) -> bool:
        """Have the selector report ``events`` for the connection; False (and closed) if its
        socket is gone."""
        if conn.events == events:
            return True
        try:
            if conn.events:
                self._sel.modify(conn.sock, events, conn)
            else:
                self._sel.register(conn.sock, events, conn)
        except (OSError, ValueError, KeyError):
            self.close(conn)
            return False
        conn.events = events
        return True

    def unwatch(self, conn: Conn) -> None:
        if conn.events:
            with contextlib.suppress(OSError, ValueError, KeyError):
                self._sel.unregister(conn.sock)
            conn.events = 0

    def park(self, conn: Conn, now: float) -> None:
        """The connection waits on its client (handshake, request, or lingering close)."""
        if conn.buffer.pending and not conn.head_started:
            conn.head_started = now  # a pipelined partial head starts its deadline now
        if self.watch(conn, READ):
            self.admission.park(conn, now)
            self.door.room()

    def linger(self, conn: Conn, now: float) -> None:
        """After the last answer and its FIN: discard what the client still sends."""
        conn.buffer.clear()
        conn.head_started = 0.0
        conn.lingered = 0
        self.park(conn, now)

    def close(self, conn: Conn) -> None:
        if conn.state is State.CLOSED:
            return
        if conn.stream is not None:
            self.streams.detach(conn)
        self.admission.remove(conn)
        self._writing.pop(conn, None)
        self.unwatch(conn)
        conn.to(Event.CLOSED)
        close_quietly(conn.sock)
        self.door.room()

    # --- reading and answering ---

    def read(self, conn: Conn, now: float, mask: int) -> None:
        chunk = self.recv(conn)
        if chunk is None:
            return
        if not chunk:
            self.close(conn)  # EOF or error; a half-sent head gets no answer
            return
        if not conn.head_started:
            conn.head_started = now
        conn.buffer.feed(chunk)
        self._serve(conn, now)

    def recv(self, conn: Conn) -> bytes | memoryview | None:
        """Available bytes; None if none yet, empty on EOF or error. Use them at once: from a
        plain socket they sit in the loop's one read buffer (no allocation per read)."""
        sock = conn.sock
        try:
            if not isinstance(sock, ssl.SSLSocket):
                return self._scratch[:sock.recv_into(self._scratch)]
            chunk = sock.recv(READ_SIZE)
            # Bytes already decrypted inside the SSL object never make the socket readable.
            while (pending := sock.pending()) > 0:
                chunk += sock.recv(pending)
            self.watch(conn, READ)
        except (BlockingIOError, ssl.SSLWantReadError):
            return None
        except ssl.SSLWantWriteError:
            self.watch(conn, WRITE)
            return None
        except OSError:
            return b""
        return chunk

    def _serve(self, conn: Conn, now: float) -> None:
        """Answer the complete requests in the buffer that the loop can answer itself, in
        order; the first it cannot goes to a worker (which hands the connection back)."""
        settings = self.settings
        while conn.state is State.READING:
            framed = conn.buffer.next_request(settings.max_head, settings.max_body)
            if framed is None:
                if not conn.buffer.pending:
                    conn.head_started = 0.0
                self._maybe_continue(conn)
                return
            conn.head_started = now if conn.buffer.pending else 0.0
            conn.continue_sent = False
            if isinstance(framed, WireError) or not self._quick(conn, framed, now):
                self._hand_over(conn, framed)
                return

    def _quick(self, conn: Conn, framed: Framed, now: float) -> bool:
        started = time.perf_counter()
        outcome = self.exchange.quick(conn, *framed)
        if outcome is None:
            return False
        self.admission.park(conn, now)  # just served: the last to be evicted
        self._write(conn, outcome, now, started)
        return True

    def _hand_over(self, conn: Conn, payload: Framed | WireError) -> None:
        self.unwatch(conn)
        self.admission.unpark(conn)
        conn.to(Event.HANDED)
        self.workers.submit((conn, payload))

    def _maybe_continue(self, conn: Conn) -> None:
        """A client that sent Expect: 100-continue waits for this before sending the body."""
        if conn.buffer.awaiting_continue and not conn.continue_sent:
            conn.continue_sent = True
            with contextlib.suppress(OSError):  # tiny; an empty send buffer always takes it
                conn.sock.send(CONTINUE)

    def _drain(self, conn: Conn, now: float, mask: int) -> None:
        """Lingering close: discard what the client still sends until it closes too."""
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:
            data = b""
        conn.lingered += len(data)
        if not data or conn.lingered > LINGER_BYTES:
            self.close(conn)

    # --- writing the loop's own answers ---

    def _write(self, conn: Conn, outcome: Outcome, now: float, started: float) -> None:
        data = outcome.data
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            sent = 0
        except OSError:
            self.close(conn)
            return
        self.exchange.answered(conn, outcome, started, quick=True)
        if sent < len(data):  # the client is slow to read: the rest when it is writable
            conn.out = memoryview(data)[sent:]
            conn.close_after = outcome.close
            conn.write_by = now + WRITE_TIMEOUT
            conn.to(Event.STALLED)
            self.admission.unpark(conn)  # an answer under way is never evicted
            self._writing[conn] = None
            self.watch(conn, WRITE)
        elif outcome.close:
            self._finish(conn, now)

    def _write_more(self, conn: Conn, now: float, mask: int) -> None:
        out = conn.out
        assert out is not None
        try:
            sent = conn.sock.send(out)
        except (BlockingIOError, ssl.SSLWantWriteError):
            return
        except ssl.SSLWantReadError:
            self.watch(conn, READ)
            return
        except OSError:
            self.close(conn)
            return
        if sent < len(out):
            conn.out = out[sent:]
            self.watch(conn, WRITE)
            return
        conn.out = None
        self._writing.pop(conn, None)
        if conn.close_after:
            self._finish(conn, now)
            return
        conn.to(Event.WRITTEN)
        self.park(conn, now)
        self._serve(conn, now)

    def _finish(self, conn: Conn, now: float) -> None:
        """The last answer is out: FIN, then the lingering close."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close(conn)
            return
        conn.to(Event.FINISHED)
        self.linger(conn, now)

    # --- workers hand connections back ---

    def _take_mail(self, now: float) -> None:
        returns, news = self.mailbox.take()
        for conn, how in returns:
            try:
                self._reinstate(conn, how, now)
            except Exception:
                self._errors.exception("unexpected error taking back a connection from %s", conn.client)
                self.close(conn)
        for conn in news:
            self._guarded_news(conn, now)

    def _reinstate(self, conn: Conn, how: Event, now: float) -> None:
        if how is Event.CLOSED:
            self.close(conn)
        elif how is Event.STREAMED:
            self.streams.start(conn, now)
        elif how is Event.FINISHED:
            conn.to(Event.FINISHED)
            self.linger(conn, now)
        else:
            conn.to(Event.KEPT)
            self.park(conn, now)
            self._serve(conn, now)  # pipelined requests behind the one just answered

    def _guarded_news(self, conn: Conn, now: float) -> None:
        try:
            self.streams.news(conn, now)
        except Exception:
            self._errors.exception("unexpected error on a stream of %s", conn.client)
            self.close(conn)

    # --- timers ---

    def _sweep(self, now: float) -> None:
        for conn in list(self.admission.parked):
            self._deadline[conn.state](conn, now)
        for conn in list(self._writing):
            if now > conn.write_by:
                self.close(conn)  # it has not read our answer for WRITE_TIMEOUT
        self.streams.tick(now)
        self.door.resume(now)

    def _reading_due(self, conn: Conn, now: float) -> None:
        if conn.head_started:
            if now - conn.head_started > self.settings.head_timeout:
                self._hand_over(conn, WireError(408, "Request Timeout"))
        elif now - conn.parked_at > self.settings.idle_timeout:
            self.close(conn)

    def _linger_due(self, conn: Conn, now: float) -> None:
        if now - conn.parked_at > LINGER_SECONDS:
            self.close(conn)


def _discard(job: Job) -> None:
    """A job left in the queue when the server stops: its client gets a closed connection."""
    close_quietly(job[0].sock)
