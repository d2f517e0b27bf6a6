"""A single-flight cache whose entries live until the end of their cache window.

Time is cut into windows of `period` seconds on the monotonic clock. An entry
fetched in window k is served for the rest of window k, then the next reader
fetches again. Concurrent readers of a missing entry wait for the one fetch in
flight instead of making their own, so the gateway sees at most one request
per key per window, and data is never older than one period plus the fetch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from proxy.errors import GatewayError, GatewayUnavailable

T = TypeVar("T")

# A reader waits at most this long for someone else's fetch; the fetch itself
# is bounded by the gateway timeout, so this only trips on a wedged library.
FOLLOWER_WAIT = 60.0


@dataclass(frozen=True, slots=True)
class Entry(Generic[T]):
    """What one fetch produced: a value, or the error, plus the last good value."""

    window: int
    fetched_at: float  # monotonic time the fetch finished
    value: T | None = None
    error: GatewayError | None = None
    good: T | None = None  # the newest value that was fetched successfully
    good_at: float = 0.0  # monotonic time of `good`

    @property
    def ok(self) -> bool:
        return self.error is None


class WindowCache(Generic[T]):
    """Single-flight, window-aligned cache owning its lock; bounded by `max_keys`."""

    def __init__(
        self,
        period: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 512,
    ) -> None:
        self._period = period
        self._clock = clock
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._entries: dict[Hashable, Entry[T]] = {}
        self._inflight: dict[Hashable, threading.Event] = {}
        self._epoch = 0  # bumped by invalidate(): entries of older epochs are expired

    def window(self) -> int:
        """The current window number (unique per call when caching is off)."""
        if self._period <= 0:
            return -1  # never equal to a stored window: every read fetches
        return self._epoch * 1_000_000_000 + int(self._clock() // self._period)

    def get(self, key: Hashable, fetch: Callable[[], T]) -> Entry[T]:
        """The entry for `key` in the current window, fetching it once if needed."""
        # Hot path without the lock: a dict read is atomic and entries are
        # immutable, so a hit in the current window needs no coordination.
        entry = self._entries.get(key)
        if entry is not None and entry.window == self.window() and entry.window != -1:
            return entry
        while True:
            with self._lock:
                window = self.window()
                entry = self._entries.get(key)
                if entry is not None and entry.window == window and window != -1:
                    return entry
                waiter = self._inflight.get(key)
                if waiter is None:
                    done = self._inflight[key] = threading.Event()
                    break
            if not waiter.wait(FOLLOWER_WAIT):
                raise GatewayUnavailable("timed out waiting for the gateway")
            with self._lock:
                entry = self._entries.get(key)
            if entry is not None and self._period <= 0:
                return entry  # caching off: the fetch we waited for is the answer
        return self._lead(key, fetch, window, done)

    def _lead(
        self, key: Hashable, fetch: Callable[[], T], window: int, done: threading.Event
    ) -> Entry[T]:
        try:
            value: T | None = fetch()
            error: GatewayError | None = None
        except GatewayError as exc:
            value, error = None, exc
        except BaseException:
            with self._lock:
                self._inflight.pop(key, None)
            done.set()
            raise
        now = self._clock()
        with self._lock:
            if error is not None and error.transient:
                old = self._entries.get(key)
                entry = Entry(-2, now, None, error, old.good if old else None, old.good_at if old else 0.0)
            else:
                entry = self._store(key, window, now, value, error)
            self._inflight.pop(key, None)
        done.set()
        return entry

    def _store(
        self, key: Hashable, window: int, now: float, value: T | None, error: GatewayError | None
    ) -> Entry[T]:
        old = self._entries.get(key)
        if error is None:
            good, good_at = value, now
        elif old is not None:
            good, good_at = old.good, old.good_at
        else:
            good, good_at = None, 0.0
        entry = Entry(window, now, value, error, good, good_at)
        if key not in self._entries and len(self._entries) >= self._max_keys:
            self._entries.pop(next(iter(self._entries)))  # drop the oldest key
        self._entries[key] = entry
        return entry

    def invalidate(self) -> None:
        """Expire every entry now (a write changed the data); last good values stay."""
        with self._lock:
            self._epoch += 1

    def clear(self) -> int:
        """Forget everything, including last good values; returns how many keys were dropped."""
        with self._lock:
            count = len(self._entries)
            self._entries.clear()
            return count

    def snapshot(self) -> dict[Hashable, Entry[T]]:
        """A copy of the entries, for /health and /stats."""
        with self._lock:
            return dict(self._entries)

    def age(self, at: float) -> float:
        """Seconds between a monotonic timestamp and now."""
        return max(0.0, self._clock() - at)
