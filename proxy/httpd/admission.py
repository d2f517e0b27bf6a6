"""Who may hold a connection: accepting, the TLS handshake, the connection cap, eviction,
running out of descriptors, and how many of the connections live streams may take.

At the cap a new connection evicts the connection that has waited on its client the longest
(idle keep-alive, slow head, TLS handshake or lingering close); connections being answered
or streaming are never evicted. If every connection is busy, accepting stops for a moment
(`ROOM_WAIT`): newcomers wait in the listen backlog for a connection to come back from its
worker or to close (a worker's answer reaches its client a moment before the connection is
back in the loop; closing the newcomer then would turn a poller away for nothing). If none
comes free in that time, newcomers are accepted and closed at once, not left hanging.
Running out of file descriptors is handled the same way: when accept() fails with
EMFILE/ENFILE the longest-waiting connections go and accepting goes on (EMFILE also lowers
the cap below the connections then open, so the app's own sockets and files keep theirs);
with nothing to close, a spare descriptor is given up for a moment to accept a waiting
client and close it, so the listener never sits readable with nothing done.

Live streams never lock out polling: listeners hold at most 3/4 of the cap, so a poller or a
health check always finds a connection (the rest are idle keep-alive, evictable).

The `Door` accepts (in batches, so a connect flood cannot starve parked clients) and drives
TLS handshakes step by step on the loop (never a blocking handshake in the accept path), under
the same deadline as a request head. The tables are the loop's alone, except the stream
count, which workers take and the loop gives back (under its own lock).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import ssl
import threading
from typing import BinaryIO, Protocol, cast

from proxy.httpd.conn import Conn, Event, State
from proxy.httpd.wire import client_ip
from proxy.ratelog import RateLog

__all__ = ["Admission", "Door", "stream_share"]

logger = logging.getLogger("proxy.server")

NO_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})
FD_EVICT = 8  # connections closed per accept() that found no free descriptor
ACCEPT_BATCH = 64  # accepts per wake-up, so a connect flood can't starve parked clients
ACCEPT_PAUSE = 0.25  # after ENOBUFS & co. the listener stays readable; don't spin on it
ROOM_WAIT = 0.25  # every connection busy: how long newcomers wait in the backlog for one
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
STREAM_SHARE = (3, 4)  # live streams may hold at most this share of the connection cap


def stream_share(max_connections: int) -> int:
    """The most live streams `max_connections` leaves room for (3/4 of it, rounded down)."""
    share, whole = STREAM_SHARE
    return max(0, max_connections * share // whole)


class Admission:
    """The connection cap and the tables it is judged by; owned by the event loop."""

    def __init__(self, max_connections: int, max_streams: int) -> None:
        self.cap = max_connections
        self.max_streams = max_streams  # as configured; the limit in force is `stream_limit`
        self.conns: set[Conn] = set()  # every open connection
        self.parked: dict[Conn, None] = {}  # waiting on their client: the longest first
        self.evicted = 0
        self._streams = 0
        self._streams_lock = threading.Lock()
        self._spare = _open_spare()

    # --- connections ---

    def full(self) -> bool:
        return len(self.conns) >= self.cap

    def add(self, conn: Conn) -> None:
        self.conns.add(conn)

    def remove(self, conn: Conn) -> None:
        self.parked.pop(conn, None)
        self.conns.discard(conn)

    def park(self, conn: Conn, now: float) -> None:
        """The connection waits on its client from now on (the last to be evicted)."""
        conn.parked_at = now
        self.parked.pop(conn, None)
        self.parked[conn] = None

    def unpark(self, conn: Conn) -> None:
        self.parked.pop(conn, None)

    def victims(self, count: int, parked_before: float = float("inf")) -> list[Conn]:
        """Up to ``count`` connections to evict, the longest parked first (counted as evicted)."""
        chosen: list[Conn] = []
        for conn in self.parked:
            if len(chosen) >= count or conn.parked_at >= parked_before:
                break
            chosen.append(conn)
        self.evicted += len(chosen)
        return chosen

    def lower_cap(self) -> None:
        """The process ran out of descriptors with this many connections: that is too many."""
        cap = max(FD_EVICT, len(self.conns) - FD_EVICT)
        if cap < self.cap:
            logger.warning("out of file descriptors with %d connections open: connection cap %d -> %d",
                           len(self.conns), self.cap, cap)
            self.cap = cap

    # --- descriptors ---

    def turn_away(self, listener: socket.socket) -> bool | None:
        """Give up the spare descriptor to accept one waiting client and close it at once.

        Otherwise the client would wait in the backlog, keeping the listener readable and the
        loop awake with nothing to do. None: nobody was waiting; False: not possible.
        """
        if self._spare is None:
            self._spare = _open_spare()
            if self._spare is None:
                return False
        self.drop_spare()
        turned: bool | None = True
        try:
            sock, _ = listener.accept()
            close_quietly(sock)
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            turned = None
        except OSError:
            turned = False
        self._spare = _open_spare()
        return turned

    def drop_spare(self) -> None:
        if self._spare is not None:
            close_quietly(self._spare)
            self._spare = None

    # --- live streams (workers open them, the loop closes them) ---

    @property
    def stream_limit(self) -> int:
        """`max_streams` as configured, or 3/4 of the connection cap when that is smaller."""
        return min(self.max_streams, stream_share(self.cap))

    def open_stream(self) -> bool:
        with self._streams_lock:
            if self._streams >= self.stream_limit:
                return False
            self._streams += 1
            return True

    def close_stream(self) -> None:
        with self._streams_lock:
            self._streams = max(0, self._streams - 1)


class LoopSide(Protocol):
    """What the door needs of the event loop."""

    def watch(self, conn: Conn, events: int) -> bool: ...

    def park(self, conn: Conn, now: float) -> None: ...

    def close(self, conn: Conn) -> None: ...

    def read(self, conn: Conn, now: float, mask: int) -> None: ...


class Door:
    """The listener: accepting, refusing, and TLS handshakes (on the loop thread)."""

    def __init__(self, listener: socket.socket, selector: selectors.BaseSelector, tag: object,
                 admission: Admission, loop: LoopSide, *, ssl_context: ssl.SSLContext | None,
                 handshake_timeout: float) -> None:
        self._listener = listener
        self._sel = selector
        self._tag = tag  # what the selector reports for the listener
        self._admission = admission
        self._loop = loop
        self._ssl = ssl_context
        self._handshake_timeout = handshake_timeout
        self._paused_until = 0.0  # accept() failed (ENOBUFS & co.): not before then
        self._waiting_for_room = False  # every connection busy: not before one comes free ...
        self._room_wanted_since = 0.0  # ... or ROOM_WAIT after this
        self._listening = True
        self._errors = RateLog(logger)
        self._cap_warnings = RateLog(logger)
        selector.register(listener, READ, tag)

    def accept(self, now: float) -> None:
        for _ in range(ACCEPT_BATCH):
            if self._admission.full() and not self._admission.parked and self._wait_for_room(now):
                return
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in NO_DESCRIPTORS:
                    self._pause_accept(now, exc)  # ENOBUFS & co.: back off instead of spinning
                    return
                if self._make_room(now, exc):
                    continue
                return
            self._admit(sock, addr, now)

    def _admit(self, sock: socket.socket, addr: object, now: float) -> None:
        if self._admission.full():
            victims = self._admission.victims(1)
            if not victims:
                close_quietly(sock)  # every connection is still busy: turned away, not left hanging
                return
            self._loop.close(victims[0])
            self._cap_warnings.warning("connection cap (%d) reached: closing the longest-idle connections",
                                       self._admission.cap)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = self._wrap(sock, client_ip(addr), now)
        except (OSError, ValueError):
            close_quietly(sock)
            return
        self._admission.add(conn)
        self._loop.park(conn, now)

    def _wrap(self, sock: socket.socket, client: str, now: float) -> Conn:
        context = self._ssl
        if context is None:
            return Conn(sock, client, State.READING)
        # The handshake is driven step by step by the loop, so a silent client blocks nothing.
        tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return Conn(tls, client, State.HANDSHAKE, head_started=now)

    def _make_room(self, now: float, exc: OSError) -> bool:
        """accept() found no free descriptor: free some. True: go on accepting.

        Linux fails accept() on a full descriptor table even when nobody is waiting, so the
        connections accepted in this very pass (their requests not read yet) are spared.
        """
        if exc.errno == errno.EMFILE:
            self._admission.lower_cap()
        victims = self._admission.victims(FD_EVICT, parked_before=now)
        for conn in victims:
            self._loop.close(conn)
        if victims:
            self._warn_no_descriptors(exc, "closed the longest-idle connections")
            return True
        turned = self._admission.turn_away(self._listener)
        if turned is None:
            return False  # nobody waiting: nothing more to do in this pass
        if not turned:
            self._pause_accept(now, exc)  # not even the spare: the one way left not to spin
            return False
        self._warn_no_descriptors(exc, "turned a new client away (every connection is busy)")
        return True

    def _warn_no_descriptors(self, exc: OSError, what: str) -> None:
        self._errors.warning("out of file descriptors (%s): %s", exc.strerror, what)

    def _pause_accept(self, now: float, exc: OSError) -> None:
        self._errors.warning("accept failed (%s); pausing accepts for %.2fs", exc, ACCEPT_PAUSE)
        self._paused_until = now + ACCEPT_PAUSE
        self._listen()

    def resume(self, now: float) -> None:
        """The sweep: accepting goes on once a pause, or the wait for room, is over."""
        if self._paused_until and now >= self._paused_until:
            self._paused_until = 0.0
            self._listen()
        if self._waiting_for_room and now - self._room_wanted_since >= ROOM_WAIT:
            self._waiting_for_room = False
            self._listen()

    def _wait_for_room(self, now: float) -> bool:
        """Every connection is busy: True while newcomers may wait in the backlog for one to
        come free; False once they have waited ROOM_WAIT (they are then turned away)."""
        if not self._room_wanted_since:
            self._room_wanted_since = now
            self._cap_warnings.warning("connection cap (%d) reached and every connection busy: new clients "
                                       "wait a moment, then are turned away", self._admission.cap)
        if now - self._room_wanted_since >= ROOM_WAIT:
            return False
        self._waiting_for_room = True
        self._listen()
        return True

    def room(self) -> None:
        """A connection was parked or closed: a client waiting in the backlog may come in."""
        self._room_wanted_since = 0.0
        if self._waiting_for_room:
            self._waiting_for_room = False
            self._listen()

    def _listen(self) -> None:
        """Have the selector watch the listener unless accepting is paused or waits for room
        (a listener left readable with nothing done would spin the loop)."""
        wanted = not (self._paused_until or self._waiting_for_room)
        if wanted != self._listening:
            self._listening = wanted
            with contextlib.suppress(OSError, ValueError, KeyError):  # closed: we are stopping
                if wanted:
                    self._sel.register(self._listener, READ, self._tag)
                else:
                    self._sel.unregister(self._listener)

    def handshake(self, conn: Conn, now: float, mask: int) -> None:
        sock = cast(ssl.SSLSocket, conn.sock)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._loop.watch(conn, READ)
            return
        except ssl.SSLWantWriteError:
            self._loop.watch(conn, WRITE)
            return
        except OSError:  # not TLS, bad TLS, or gone: nothing to answer on
            self._loop.close(conn)
            return
        conn.to(Event.SECURED)
        conn.head_started = 0.0
        if self._loop.watch(conn, READ):
            self._loop.read(conn, now, mask)  # the request may already sit decrypted, unseen by select

    def handshake_due(self, conn: Conn, now: float) -> None:
        if now - conn.head_started > self._handshake_timeout:
            self._loop.close(conn)  # no TLS session to say 408 over


def close_quietly(sock: socket.socket | BinaryIO) -> None:
    with contextlib.suppress(OSError):
        sock.close()


def _open_spare() -> BinaryIO | None:
    """A descriptor held in reserve, given up when accept() finds none free."""
    try:
        return open(os.devnull, "rb", buffering=0)  # noqa: SIM115 - held open on purpose
    except OSError:
        return None
