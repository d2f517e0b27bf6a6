"""The publish/subscribe hub behind live push (server-sent events, WebSocket, later MQTT).

One topic per gateway and one for the aggregate. A topic has a feed (read its gateways through
their window caches and build the payload) and a refresher thread that runs only while the
topic has listeners: it reads once per cache window, just after the window starts, and
publishes only when that read brought new data or a changed state (stale, offline); an
unchanged window publishes nothing. Readers and pollers share the same window cache, so the
gateway sees one request per resource per window however many listen.

A published `Push` is encoded once (JSON, then once per protocol) and offered to every
listener's sink. Sinks are bounded by whoever provides them (the HTTP server's out-buffers);
a sink that refuses a push (its listener is gone or too slow) is dropped from the topic.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.httpd.stream import Push, Sink

log = logging.getLogger("proxy.hub")

AGGREGATE = "aggregate"
AFTER_WINDOW = 0.02  # read this long after a window starts, so its first fetch is under way
MIN_WAIT = 0.05  # never spin, whatever a schedule says
ERROR_PAUSE = 1.0  # a feed that raised is retried after this


@dataclass(frozen=True, slots=True)
class Update:
    """What a feed read: the payload, and what it is made of (`news`).

    A topic publishes when `news` differs from what it last published: new gateway data
    (a reading's time), a reading turning stale or unavailable, a gateway's status changing.
    """

    body: Any
    news: Hashable


Feed = Callable[[], Update]
Schedule = Callable[[], float]  # seconds until the feed's next cache window


def gateway_topic(gateway_id: str) -> str:
    return "gateway:" + gateway_id


class Topic:
    """One stream of pushes: its listeners, its last push, and its refresher while listened."""

    def __init__(self, key: str, feed: Feed, schedule: Schedule, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.key = key
        self._feed = feed
        self._schedule = schedule
        self._clock = clock
        self._lock = threading.Lock()
        self._sinks: dict[int, Sink] = {}
        self._next_sink = 0
        self._last: Push | None = None  # the current snapshot while the refresher runs
        self._news: Hashable = None
        self._last_id = 0
        self._stop: threading.Event | None = None  # the running refresher's stop flag
        self._thread: threading.Thread | None = None
        self.published = 0
        self.refreshes = 0

    # --- listeners ---

    def subscribe(self, sink: Sink, last_event_id: str = "") -> Callable[[], None]:
        """Add a listener; it gets the current snapshot at once (unless `last_event_id` says it
        has it already). Returns the unsubscribe. Never blocks."""
        with self._lock:
            token = self._next_sink
            self._next_sink += 1
            self._sinks[token] = sink
            current = self._last
            if self._stop is None or self._stop.is_set():  # none, or one on its way out
                self._start()
        if current is not None and current.event_id != last_event_id and not sink.offer(current):
            self._remove(token)
        return lambda: self._remove(token)

    def _remove(self, token: int) -> None:
        with self._lock:
            self._sinks.pop(token, None)
            if not self._sinks and self._stop is not None:
                self._stop.set()  # the refresher ends without waiting for its next window

    def listeners(self) -> int:
        return len(self._sinks)

    def running(self) -> bool:
        return self._thread is not None

    # --- the refresher ---

    def _start(self) -> None:
        """Under the lock: start a refresher for the new first listener."""
        stop = self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(stop,), daemon=True,
                                        name=f"push-{self.key}")
        self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            pause = self._refresh_once()
            stop.wait(max(MIN_WAIT, pause))
            with self._lock:
                if stop.is_set() or not self._sinks:
                    if self._stop is stop:
                        # Nobody listens: forget the snapshot, so a later listener is sent a
                        # fresh one, not what was current when the last one left.
                        self._stop = self._thread = None
                        self._last, self._news = None, None
                    return

    def _refresh_once(self) -> float:
        try:
            update = self._feed()
        except Exception:
            log.exception("live push: reading topic %s failed", self.key)
            return ERROR_PAUSE
        self.refreshes += 1
        if update.news != self._news:
            self.publish(update)
        return self._schedule() + AFTER_WINDOW

    def publish(self, update: Update) -> Push:
        """Encode once and offer to every listener; drop the ones that refuse."""
        data = json.dumps(update.body).encode()
        with self._lock:
            push = Push(data, self._next_id())
            self._last, self._news = push, update.news
            sinks = list(self._sinks.items())
            self.published += 1
        refused = [token for token, sink in sinks if not sink.offer(push)]
        for token in refused:
            self._remove(token)
        return push

    def _next_id(self) -> str:
        """The publish time in milliseconds since the epoch, strictly increasing per topic."""
        now = int(self._clock() * 1000)
        self._last_id = max(now, self._last_id + 1)
        return str(self._last_id)

    def stop(self, timeout: float = 1.0) -> None:
        with self._lock:
            stop, thread = self._stop, self._thread
            self._sinks.clear()
        if stop is not None:
            stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)


class Hub:
    """Every topic by key: `AGGREGATE` and `gateway_topic(id)` per gateway; fixed once built."""

    def __init__(self, topics: Iterable[Topic]) -> None:
        self._topics = {t.key: t for t in topics}

    def topic(self, key: str) -> Topic | None:
        return self._topics.get(key)

    def topics(self) -> Sequence[Topic]:
        return list(self._topics.values())

    def stop(self) -> None:
        for topic in self._topics.values():
            topic.stop()

    def stats(self) -> dict[str, Any]:
        """Listeners and pushes per topic, for /stats."""
        topics = {t.key: {"listeners": t.listeners(), "refreshing": t.running(),
                          "pushes": t.published, "reads": t.refreshes} for t in self._topics.values()}
        return {"listeners": sum(t["listeners"] for t in topics.values()), "topics": topics}
