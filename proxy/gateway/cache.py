"""A single-flight cache of gateway verdicts whose entries live until the end of their window.

Time is cut into windows of `period` seconds on the monotonic clock. A verdict
fetched in window k is served for the rest of window k, then the next reader
fetches again. At most one fetch per key is in flight: readers of a missing
entry wait for it (for a bounded time) instead of making their own, so the
gateway sees at most one request per key per window. The fetch itself runs in
the gateway's own threads (`submit`), so a reader that stops waiting leaves it
to finish and fill the cache for everyone else.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from proxy.gateway.outcome import Kind, Verdict

Submit = Callable[[Callable[[], None]], Any]


@dataclass(frozen=True, slots=True)
class Entry:
    """One fetch's verdict, plus the newest data this key ever had."""

    window: int
    at: float  # monotonic time the fetch finished
    verdict: Verdict
    good: Any = None  # the newest DATA value (data is never None)
    good_at: float = 0.0

    @property
    def kind(self) -> Kind:
        return self.verdict.kind


@dataclass(slots=True)
class _Pending:
    window: int
    done: threading.Event = field(default_factory=threading.Event)
    entry: Entry | None = None


class WindowCache:
    """Single-flight, window-aligned cache owning its lock; bounded by `max_keys`."""

    def __init__(self, period: float, *, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 512) -> None:
        self._period = period
        self._clock = clock
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._entries: dict[Hashable, Entry] = {}
        self._pending: dict[Hashable, _Pending] = {}
        self._epoch = 0  # bumped by invalidate(): entries of older epochs are expired

    @property
    def period(self) -> float:
        return self._period

    def window(self) -> int:
        """The current window number (-1, never stored, when caching is off)."""
        if self._period <= 0:
            return -1
        return self._epoch * 1_000_000_000 + int(self._clock() // self._period)

    def now(self) -> float:
        return self._clock()

    def age(self, at: float) -> float:
        """Seconds between a monotonic timestamp and now."""
        return max(0.0, self._clock() - at)

    def fresh(self, key: Hashable) -> Entry | None:
        """The entry of the current window, if there is one (no lock: entries are immutable)."""
        entry = self._entries.get(key)
        if entry is not None and entry.window == self.window() and entry.window != -1:
            return entry
        return None

    def last(self, key: Hashable) -> Entry | None:
        """The newest entry, whatever its window."""
        return self._entries.get(key)

    def get(self, key: Hashable, fetch: Callable[[], Verdict], submit: Submit,
            wait: float) -> Entry | None:
        """The entry for `key` in this window, fetched once; None if not ready within `wait`."""
        hit = self.fresh(key)
        if hit is not None:
            return hit
        pending, start = self._join(key)
        if isinstance(pending, Entry):
            return pending
        if start:
            try:
                submit(lambda: self._run(key, pending, fetch))
            except RuntimeError:  # the gateway's threads are shut down: we are stopping
                self._finish(key, pending, Verdict(Kind.NO_ANSWER, reason="the proxy is stopping"))
        if not pending.done.wait(wait):
            return None
        return pending.entry

    def _join(self, key: Hashable) -> tuple[_Pending | Entry, bool]:
        with self._lock:
            window = self.window()
            entry = self._entries.get(key)
            if entry is not None and entry.window == window and window != -1:
                return entry, False
            pending = self._pending.get(key)
            if pending is not None:
                return pending, False
            pending = self._pending[key] = _Pending(window)
            return pending, True

    def _run(self, key: Hashable, pending: _Pending, fetch: Callable[[], Verdict]) -> None:
        try:
            verdict = fetch()
        except Exception as exc:  # a bug must not leave waiters hanging
            verdict = Verdict(Kind.NO_ANSWER, reason=f"gateway error ({type(exc).__name__})")
        self._finish(key, pending, verdict)

    def _finish(self, key: Hashable, pending: _Pending, verdict: Verdict) -> None:
        now = self._clock()
        with self._lock:
            old = self._entries.get(key)
            if verdict.kind is Kind.DATA:
                good, good_at = verdict.value, now
            else:
                good, good_at = (old.good, old.good_at) if old is not None else (None, 0.0)
            entry = Entry(pending.window, now, verdict, good, good_at)
            if key not in self._entries and len(self._entries) >= self._max_keys:
                self._entries.pop(next(iter(self._entries)))  # drop the oldest key
            self._entries[key] = entry
            if self._pending.get(key) is pending:
                del self._pending[key]
        pending.entry = entry
        pending.done.set()

    def in_flight(self) -> int:
        with self._lock:
            return len(self._pending)

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

    def snapshot(self) -> dict[Hashable, Entry]:
        """A copy of the entries, for /health and /stats."""
        with self._lock:
            return dict(self._entries)
