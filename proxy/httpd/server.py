"""The HTTP/1.1 server the app runs on: our own standard-library selector loop.

One event-loop thread parks every connection in a ``selectors`` loop and answers at once what
the app has at hand (`proxy.httpd.types.ReadyApp`: a cached body of this window); a request
that needs the app proper goes to a worker thread, started when needed. Slow or idle clients
cost a small buffer, never a thread. The parts, each in its module:

- `wire`: framing, pure functions of bytes (receive buffer, head parsing, response rendering);
- `conn`: a connection's states and the table of moves between them;
- `loop`: the selector, parking, reading, the loop's own writes, timers;
- `admission`: the connection cap, eviction, running out of descriptors, the streams' share;
- `exchange`: calling the app and framing its answer, on the loop or on a worker;
- `workers`: the threads, started on demand;
- `streams` and `stream`: server-sent events and WebSocket.

This module is the lifecycle: bind, start, stop, and the counters (`stats`).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time

from proxy.httpd.loop import Loop, Settings
from proxy.httpd.types import App

__all__ = ["HTTPServer"]

_BACKLOG = 1024  # absorbs a burst of pollers reconnecting at once


class HTTPServer:
    """HTTP/1.1 keep-alive server: a selector loop for waiting (and cached answers), workers
    for the rest."""

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
        """`workers` is the most worker threads at once (none is started before it is needed).
        At most `max_streams` live streams, and never more than 3/4 of `max_connections`."""
        if min(workers, max_connections, max_head) < 1 or max_body < 0:
            raise ValueError("workers, max_connections and max_head must be positive")
        if min(idle_timeout, head_timeout, stream_heartbeat) <= 0:
            raise ValueError("timeouts must be positive")
        if max_streams < 0 or stream_buffer < 1:
            raise ValueError("max_streams must not be negative, stream_buffer must be positive")
        settings = Settings(workers, max_connections, max_streams, idle_timeout, head_timeout,
                            max_head, max_body, stream_buffer, stream_heartbeat, access_log, ssl_context)
        self._listener = _listen(host, port)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._loop = Loop(app, self._listener, settings)
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._stop_lock = threading.RLock()  # re-entrant: a signal may land inside stop()
        self._stop_called = False

    # --- lifecycle ---

    def start(self) -> HTTPServer:
        """Start the loop thread (a daemon); workers start as requests need them. Returns self."""
        with self._stop_lock:
            if self._stop_called:
                raise RuntimeError("server was stopped")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop.run, name="pwproxy-loop", daemon=True)
                self._thread.start()
        return self

    def serve_forever(self) -> None:
        """start(), then block until stop() is called from another thread or a signal handler."""
        self.start()
        self._done.wait()

    def stop(self, timeout: float = 2.0) -> None:
        """End every stream cleanly, stop accepting, close every connection, join the threads;
        idempotent."""
        with self._stop_lock:
            if self._stop_called:
                return
            self._stop_called = True
        deadline = time.monotonic() + timeout
        self._end_streams(min(1.0, timeout / 2))
        self._loop.stop()
        threads = self._loop.workers.stop()
        if self._thread is not None:
            threads.append(self._thread)
        for thread in threads:
            if thread is not threading.current_thread():  # e.g. the app asked for a shutdown
                # RuntimeError: a worker whose start() is under way; it finds its way out.
                with contextlib.suppress(RuntimeError):
                    thread.join(max(0.0, deadline - time.monotonic()))
        self._loop.close_leftovers(started=self._thread is not None)
        self._done.set()

    def _end_streams(self, grace: float) -> None:
        """Close every stream cleanly (WebSocket 1001, event stream EOF); wait up to `grace`."""
        streams = self._loop.streams
        streams.draining.set()
        if self._thread is None or not streams.open_streams:
            return
        streams.gone.clear()
        self._loop.mailbox.wake()
        streams.gone.wait(grace)

    def stats(self) -> dict[str, int]:
        """Counters for /stats, /health and tests. `max_streams` is the limit in force: the
        configured one, or 3/4 of `max_connections` when that is smaller."""
        loop = self._loop
        admission, workers = loop.admission, loop.workers
        return {
            "open_connections": len(admission.conns),
            "busy_workers": workers.busy,
            "workers": workers.limit,
            "requests": loop.exchange.served,
            "max_connections": admission.cap,
            "evicted_connections": admission.evicted,
            "streams": len(loop.streams.open_streams),
            "max_streams": admission.stream_limit,
            "dropped_streams": loop.streams.dropped,
            "worker_threads": workers.threads,
            "loop_answers": loop.exchange.quick_answers,
        }


def _listen(host: str, port: int) -> socket.socket:
    """Listening socket; "" is every interface (IPv6 too where the kernel allows)."""
    host = host.strip("[]")
    if host == "" and socket.has_dualstack_ipv6():
        with contextlib.suppress(OSError):  # IPv6 switched off at runtime: IPv4 only
            return socket.create_server(
                ("", port), family=socket.AF_INET6, backlog=_BACKLOG, dualstack_ipv6=True
            )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=_BACKLOG)  # SO_REUSEADDR
