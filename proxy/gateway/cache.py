"""A single-flight cache of gateway verdicts whose entries live until the end of their window.

Time is cut into windows of `period` seconds on the monotonic clock (a resource
the owner slowed down has windows of its own period). A verdict fetched in
window k is served for the rest of window k, then the next reader fetches
again. At most one fetch per key is in flight: readers of a missing entry join
its `Claim` and wait for it (for a bounded time) instead of making their own,
so the gateway sees at most one request per key per window. The fetch itself
runs in the gateway's own threads (`submit`), so a reader that stops waiting
leaves it to finish and fill the cache for everyone else.

A fetch may wait for its turn at the gateway before it is sent (`sent`): its
answer belongs to the window in which it was sent, and a fetch that is no
longer needed when its turn comes (its window is over and nobody waits for it)
is dropped (`drop`) without an entry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
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


@dataclass(slots=True, eq=False)
class Claim:
    """One fetch of a key, from the moment it is wanted until its entry is in."""

    key: Hashable
    window: int  # the window its answer is for: when it was wanted, then when it was sent
    done: threading.Event = field(default_factory=threading.Event)
    sent: threading.Event = field(default_factory=threading.Event)
    sent_at: float | None = None
    entry: Entry | None = None  # None once done: dropped, nobody needed it any more
    waiters: int = 0


Fetch = Callable[[Claim], Verdict | None]  # None: dropped before it was sent


class WindowCache:
    """Single-flight, window-aligned cache owning its lock; bounded by `max_keys`."""

    def __init__(self, period: float, *, periods: Mapping[str, float] | None = None,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 512) -> None:
        self._period = period
        self._periods = dict(periods or {})
        self._clock = clock
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._entries: dict[Hashable, Entry] = {}
        self._pending: dict[Hashable, Claim] = {}
        self._epoch = 0  # bumped by invalidate(): entries of older epochs are expired

    @property
    def period(self) -> float:
        """The base period (PW_CACHE_EXPIRE)."""
        return self._period

    def period_of(self, key: Hashable) -> float:
        """The period of one key: its own where the owner set one, else the base period."""
        return self._periods.get(key, self._period) if isinstance(key, str) else self._period

    def longest_period(self) -> float:
        return max((self._period, *self._periods.values()))

    def window(self, key: Hashable | None = None) -> int:
        """The current window number of `key` (or the base one); -1, never stored, when caching
        is off."""
        period = self._period if key is None else self.period_of(key)
        if period <= 0:
            return -1
        return self._epoch * 1_000_000_000 + int(self._clock() // period)

    def now(self) -> float:
        return self._clock()

    def age(self, at: float) -> float:
        """Seconds between a monotonic timestamp and now."""
        return max(0.0, self._clock() - at)

    def fresh(self, key: Hashable) -> Entry | None:
        """The entry of the current window, if there is one (no lock: entries are immutable)."""
        entry = self._entries.get(key)
        if entry is not None and entry.window == self.window(key) and entry.window != -1:
            return entry
        return None

    def last(self, key: Hashable) -> Entry | None:
        """The newest entry, whatever its window."""
        return self._entries.get(key)

    def claim(self, key: Hashable, fetch: Fetch, submit: Submit) -> Entry | Claim:
        """This window's entry for `key`, or the claim of its fetch (started here if needed)."""
        hit = self.fresh(key)
        if hit is not None:
            return hit
        found, start = self._join(key)
        if isinstance(found, Claim) and start:
            try:
                submit(lambda: self._run(found, fetch))
            except RuntimeError:  # the gateway's threads are shut down: we are stopping
                self._finish(found, Verdict(Kind.NO_ANSWER, reason="the proxy is stopping"))
        return found

    def wait(self, claim: Claim, timeout: float) -> bool:
        """Wait (counted among its waiters, so it is not dropped) until the claim is done."""
        with self._waiting(claim):
            return claim.done.wait(max(0.0, timeout))

    def wait_sent(self, claim: Claim, timeout: float) -> bool:
        """Wait (counted among its waiters) until the claim's fetch is sent, or done."""
        with self._waiting(claim):
            return claim.sent.wait(max(0.0, timeout))  # `_finish` sets it too

    @contextmanager
    def _waiting(self, claim: Claim) -> Iterator[None]:
        with self._lock:
            claim.waiters += 1
        try:
            yield
        finally:
            with self._lock:
                claim.waiters -= 1

    def needed(self, claim: Claim) -> bool:
        """Is this fetch still wanted: its window is not over, or someone waits for it?"""
        return claim.waiters > 0 or claim.window == self.window(claim.key)

    def sent(self, claim: Claim) -> None:
        """The fetch goes to the gateway now: its answer is for the window of this moment."""
        with self._lock:
            claim.window = self.window(claim.key)
            claim.sent_at = self._clock()
        claim.sent.set()

    def _join(self, key: Hashable) -> tuple[Claim | Entry, bool]:
        with self._lock:
            window = self.window(key)
            entry = self._entries.get(key)
            if entry is not None and entry.window == window and window != -1:
                return entry, False
            pending = self._pending.get(key)
            if pending is not None:
                return pending, False
            pending = self._pending[key] = Claim(key, window)
            return pending, True

    def _run(self, claim: Claim, fetch: Fetch) -> None:
        verdict: Verdict | None
        try:
            verdict = fetch(claim)
        except Exception as exc:  # a bug must not leave waiters hanging
            verdict = Verdict(Kind.NO_ANSWER, reason=f"gateway error ({type(exc).__name__})")
        self._finish(claim, verdict)

    def _finish(self, claim: Claim, verdict: Verdict | None) -> None:
        now = self._clock()
        key = claim.key
        entry = None
        with self._lock:
            if verdict is not None:
                entry = self._store(key, claim.window, verdict, now)
            if self._pending.get(key) is claim:
                del self._pending[key]
        claim.entry = entry
        claim.sent.set()
        claim.done.set()

    def _store(self, key: Hashable, window: int, verdict: Verdict, now: float) -> Entry:
        """Under the lock: file a verdict, carrying the last good value along."""
        old = self._entries.get(key)
        if verdict.kind is Kind.DATA:
            good, good_at = verdict.value, now
        else:
            good, good_at = (old.good, old.good_at) if old is not None else (None, 0.0)
        entry = Entry(window, now, verdict, good, good_at)
        if key not in self._entries and len(self._entries) >= self._max_keys:
            self._entries.pop(next(iter(self._entries)))  # drop the oldest key
        self._entries[key] = entry
        return entry

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
