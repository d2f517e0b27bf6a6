"""Request counters for /stats, bounded and owning their lock."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

URI_STATS_MAX = 100  # distinct paths counted; the rest go under "other"


@dataclass
class Counters:
    gets: int = 0
    posts: int = 0
    errors: int = 0
    timeout: int = 0
    starting: int = 0  # answered "not connected yet" before the gateway's first login
    uri: dict[str, int] = field(default_factory=dict)
    start: int = field(default_factory=lambda: int(time.time()))
    clear: int = field(default_factory=lambda: int(time.time()))


class Stats:
    """The reference's proxystats counters, without its unbounded growth."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._c = Counters()

    def count_get(self, path: str) -> None:
        with self._lock:
            self._c.gets += 1
            uri = self._c.uri
            key = path if path in uri or len(uri) < URI_STATS_MAX else "other"
            uri[key] = uri.get(key, 0) + 1

    def count_post(self) -> None:
        with self._lock:
            self._c.posts += 1

    def count_error(self) -> None:
        with self._lock:
            self._c.errors += 1

    def count_timeout(self) -> None:
        with self._lock:
            self._c.timeout += 1

    def count_starting(self) -> None:
        with self._lock:
            self._c.starting += 1

    def clear(self) -> None:
        """/stats/clear: as the reference, gets/errors/uri reset; posts and timeout kept."""
        with self._lock:
            self._c.gets = 0
            self._c.errors = 0
            self._c.uri = {}
            self._c.clear = int(time.time())

    def snapshot(self) -> Counters:
        with self._lock:
            c = self._c
            return Counters(c.gets, c.posts, c.errors, c.timeout, c.starting, dict(c.uri), c.start,
                            c.clear)


Key = tuple[str, ...]


class Tally:
    """Counts by a tuple of label values, for /metrics; never cleared (counters only grow).

    Bounded: past `limit` distinct keys, a new key is counted under `overflow`.
    """

    def __init__(self, limit: int = 512, overflow: Key = ("other",)) -> None:
        self._lock = threading.Lock()
        self._limit = limit
        self._overflow = overflow
        self._counts: dict[Key, int] = {}

    def add(self, key: Key, n: int = 1) -> None:
        with self._lock:
            counts = self._counts
            if key not in counts and len(counts) >= self._limit:
                key = self._overflow
            counts[key] = counts.get(key, 0) + n

    def get(self, key: Key) -> int:
        with self._lock:
            return self._counts.get(key, 0)

    def snapshot(self) -> dict[Key, int]:
        with self._lock:
            return dict(self._counts)
