"""Who may hold a connection: the connection cap, eviction, running out of descriptors, and
how many of the connections live streams may take.

At the cap a new connection evicts the connection that has waited on its client the longest
(idle keep-alive, slow head, TLS handshake or lingering close); connections being answered
or streaming are never evicted. If every connection is busy the new one is closed at once.
Running out of file descriptors is handled the same way: when accept() fails with
EMFILE/ENFILE the longest-waiting connections go and accepting goes on (EMFILE also lowers
the cap below the connections then open, so the gateway and files keep their descriptors);
with nothing to close, a spare descriptor is given up for a moment to accept a waiting
client and close it, so the listener never sits readable with nothing done.

Live streams never lock out polling: listeners hold at most 3/4 of the cap, so a poller or a
health check always finds a connection (the rest are idle keep-alive, evictable).

Decisions only: the loop closes what this names. The tables are the loop's alone, except the
stream count, which workers take and the loop gives back (under its own lock).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import threading
from typing import BinaryIO

from proxy.httpd.conn import Conn

__all__ = ["NO_DESCRIPTORS", "Admission", "stream_share"]

logger = logging.getLogger("proxy.server")

NO_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})
FD_EVICT = 8  # connections closed per accept() that found no free descriptor
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
        """PW_MAX_STREAMS, or 3/4 of the connection cap when that is smaller."""
        return min(self.max_streams, stream_share(self.cap))

    @property
    def streams(self) -> int:
        return self._streams

    def open_stream(self) -> bool:
        with self._streams_lock:
            if self._streams >= self.stream_limit:
                return False
            self._streams += 1
            return True

    def close_stream(self) -> None:
        with self._streams_lock:
            self._streams = max(0, self._streams - 1)


def close_quietly(sock: socket.socket | BinaryIO) -> None:
    with contextlib.suppress(OSError):
        sock.close()


def _open_spare() -> BinaryIO | None:
    """A descriptor held in reserve, given up when accept() finds none free."""
    try:
        return open(os.devnull, "rb", buffering=0)  # noqa: SIM115 - held open on purpose
    except OSError:
        return None
