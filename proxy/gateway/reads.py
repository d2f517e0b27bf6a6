"""The read path of one connected gateway: window-cached verdicts, and how long a reader waits.

A source is fetched once per window whatever asks (`proxy.gateway.cache`): the first
reader claims the fetch, which waits for a lane (`proxy.gateway.lanes`) and then
calls; the others wait for it. A reader waits at most PW_TIMEOUT + 1 s once the fetch
is sent, and a bounded time for its turn before that; past a short grace only a
bounded number of readers keep waiting, so a stalled gateway can hold a few request
threads but never all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial

from proxy.config import GatewayConfig
from proxy.gateway.cache import Claim, Entry, WindowCache
from proxy.gateway.lanes import Lanes
from proxy.gateway.outcome import Kind, Verdict
from proxy.gateway.sources import Source
from proxy.stats import Tally

FOLLOWER_GRACE = 1.0  # a reader waits PW_TIMEOUT plus this for a fetch once it is sent
WAIT_GRACE = 0.25  # any reader waits this long; longer only within the gateway's waiter limit
HIT, MISS = ("hit",), ("miss",)  # window-cache lookups, counted for /metrics


class Reads:
    """One gateway's window-cached reads; `call` runs a claimed fetch (in a lane)."""

    def __init__(self, config: GatewayConfig, cache: WindowCache, lanes: Lanes, lookups: Tally,
                 call: Callable[[Source], Verdict], *, waiters: int = 8) -> None:
        self.cache, self.lanes, self.lookups, self._call = cache, lanes, lookups, call
        self.wait = float(config.timeout) + FOLLOWER_GRACE
        # The longest a reader waits for its fetch to be sent (then `wait` for its answer).
        self.queue_wait = max(float(config.cache_expire), float(config.timeout)) + float(config.timeout)
        self._waiters = threading.BoundedSemaphore(max(1, waiters))

    def read(self, source: Source, wait: float | None = None) -> Entry:
        """The window-cached verdict on one source, waiting at most `wait` once it is sent."""
        entry = self.cache.fresh(source.key)
        if entry is not None:
            self.lookups.add(HIT)
            return entry
        self.lookups.add(MISS)
        wait = self.wait if wait is None else wait
        late = Verdict(Kind.NO_ANSWER, reason="the gateway is slow to answer")
        for _ in range(2):  # a fetch that waited out its window was dropped: ask in this one
            found = self.cache.claim(source.key, partial(self._fetch, source), self.lanes.submit)
            if isinstance(found, Entry):
                return found
            entry = self._await(found, wait)
            if entry is not None:
                return entry
            late = self._late(found)
            if not found.done.is_set():
                break
        return self.unready(source.key, late)

    def _await(self, claim: Claim, wait: float) -> Entry | None:
        """The claim's entry, if it comes in time (None: dropped, or not in time)."""
        # A normal fetch is over in well under GRACE: everyone waits for it. Past that
        # the gateway is slow (or busy with other calls), and only so many request threads
        # may keep waiting on it; the rest get the last good copy or a 503 at once, so
        # /health and the other routes always find a free worker.
        if self.cache.wait(claim, min(wait, WAIT_GRACE)) or wait <= WAIT_GRACE:
            return claim.entry
        with self.waiter() as allowed:
            if not allowed:
                return None
            began = self.cache.now()
            # Our own queue is not the gateway's slowness: the wait starts when it is sent.
            if not self.cache.wait_sent(claim, self.queue_wait):
                return None
            start = max(began, claim.sent_at or began)
            self.cache.wait(claim, start + wait - WAIT_GRACE - self.cache.now())
        return claim.entry

    def _late(self, claim: Claim) -> Verdict:
        """Why a reader got no verdict in time (never cached, never news about health)."""
        if not claim.sent.is_set():
            return Verdict(Kind.NO_ANSWER, reason="waiting for a turn at the gateway "
                           f"({self.lanes.view()['waiting']} calls in line)")
        return Verdict(Kind.NO_ANSWER, reason="the gateway is slow to answer")

    def prefetch(self, sources: Sequence[Source]) -> None:
        """Start the fetches of several sources without waiting, so they run side by side."""
        for source in sources:
            if self.cache.fresh(source.key) is None:
                self.cache.claim(source.key, partial(self._fetch, source), self.lanes.submit)

    def unready(self, key: str, verdict: Verdict) -> Entry:
        """An answer for a reader that did not get a verdict in time (never cached)."""
        last = self.cache.last(key)
        now = self.cache.now()
        return Entry(-2, now, verdict, last.good if last else None, last.good_at if last else 0.0)

    def _fetch(self, source: Source, claim: Claim) -> Verdict | None:
        """A claimed fetch: wait for a lane, then call; None when it was no longer needed."""
        with self.lanes.turn(timeout=2 * self.queue_wait,
                             needed=partial(self.cache.needed, claim)) as admitted:
            if not admitted:
                return None
            self.cache.sent(claim)
            return self._call(source)

    @contextmanager
    def waiter(self) -> Iterator[bool]:
        """A place among the request threads allowed to wait on this gateway longer than a
        moment (shared with data reads); yields False when all are taken."""
        got = self._waiters.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                self._waiters.release()
