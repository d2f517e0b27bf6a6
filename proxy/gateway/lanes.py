"""At most a few library calls in flight per gateway; the others wait their turn.

Owners' gateways fault when they are polled hard (HTTP 429, a dropped Wi-Fi
network, TACO faults), so one gateway gets at most `limit` calls at once
(PW_GATEWAY_CONCURRENCY, default 2). The rest wait in line:

- a control write goes ahead of every waiting read, and runs alone: it waits for
  the reads in flight to finish and no read starts until it is done, so the
  library's caches and the gateway's settings are its own while it writes;
- writes go one at a time, in the order they came; reads oldest first;
- a waiting read that is no longer needed when its turn comes (its window is over
  and nobody waits for its answer) is dropped instead of sent.

Waiting is the proxy's own business: the caller's deadline starts when its lane
is taken, and a call that waited is never reported as the gateway failing.

Reads run in the lanes' own few threads (`submit`): the limit plus a couple that
wait at the front of the line; the rest of the line is work not yet started, so a
slow gateway costs no thread per waiting read.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Lanes", "concurrency"]

DEFAULT_LIMIT = 2
MAX_LIMIT = 16
MAX_WAITING = 256  # calls in line at once; past it a read is turned away at once
SPARE_THREADS = 2  # reads waiting at the front of the line, ready to go the moment a lane frees


def concurrency(wanted: int, pool_maxsize: int) -> int:
    """The limit for a gateway: PW_GATEWAY_CONCURRENCY, lowered by a smaller PW_POOL_MAXSIZE
    (never below 1: a pool of 0 means "no keep-alive", not "no requests")."""
    return max(1, min(wanted, MAX_LIMIT, max(1, pool_maxsize)))


def _always() -> bool:
    return True


@dataclass(order=True)
class _Ticket:
    rank: tuple[int, int]  # (0 for a write, 1 for a read; arrival order)
    write: bool = field(compare=False)
    needed: Callable[[], bool] = field(compare=False, default=_always)


class Lanes:
    """The in-flight limit of one gateway; owns its condition (never held across I/O)."""

    def __init__(self, limit: int = DEFAULT_LIMIT, clock: Callable[[], float] = time.monotonic,
                 max_waiting: int = MAX_WAITING, name: str = "lanes") -> None:
        self.limit = max(1, limit)
        self._threads = ThreadPoolExecutor(max_workers=self.limit + SPARE_THREADS,
                                           thread_name_prefix=name)
        self._queued = 0  # submitted reads not yet started
        self._clock = clock
        self._max_waiting = max_waiting
        self._cond = threading.Condition()
        self._line: list[_Ticket] = []
        self._arrivals = itertools.count()
        self._busy = 0
        self._writing = False
        self._most = 0
        self._dropped = 0
        self._closed = False

    def submit(self, work: Callable[[], None]) -> None:
        """Run `work` (a read, which takes its own lane) in the lanes' threads, oldest first.
        RuntimeError once closed."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the gateway is stopping")
            self._queued += 1
        self._threads.submit(self._started, work)

    def _started(self, work: Callable[[], None]) -> None:
        with self._cond:
            self._queued -= 1
        work()

    @contextmanager
    def turn(self, *, write: bool = False, timeout: float,
             needed: Callable[[], bool] = _always) -> Iterator[bool]:
        """Hold a lane while the block runs; yields False (no lane held) when the call was
        dropped, turned away, or waited `timeout` seconds without its turn."""
        got = self.acquire(write=write, timeout=timeout, needed=needed)
        try:
            yield got
        finally:
            if got:
                self.release(write=write)

    def acquire(self, *, write: bool, timeout: float, needed: Callable[[], bool] = _always) -> bool:
        ticket = _Ticket((0 if write else 1, next(self._arrivals)), write, needed)
        deadline = self._clock() + timeout
        with self._cond:
            if self._closed or (len(self._line) >= self._max_waiting and not write):
                self._dropped += 1
                return False
            heapq.heappush(self._line, ticket)
            try:
                return self._wait(ticket, deadline)
            finally:
                self._cond.notify_all()  # the next in line may go now (or was waiting on us)

    def _wait(self, ticket: _Ticket, deadline: float) -> bool:
        """Under the condition: wait until `ticket` may go; False when it gives up or is dropped."""
        while True:
            if self._line[0] is ticket and self._free(ticket.write):
                heapq.heappop(self._line)
                if not ticket.needed():
                    self._dropped += 1
                    return False
                self._take(ticket.write)
                return True
            remaining = deadline - self._clock()
            if remaining <= 0 or self._closed:
                self._line.remove(ticket)
                heapq.heapify(self._line)
                return False
            self._cond.wait(remaining)

    def _free(self, write: bool) -> bool:
        if self._writing:
            return False
        return self._busy == 0 if write else self._busy < self.limit

    def _take(self, write: bool) -> None:
        self._busy += 1
        self._writing = write
        self._most = max(self._most, self._busy)

    def release(self, *, write: bool = False) -> None:
        with self._cond:
            self._busy -= 1
            if write:
                self._writing = False
            self._cond.notify_all()

    def close(self) -> None:
        """The gateway is stopping: every waiting call gives up now, and no new one waits."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._threads.shutdown(wait=False, cancel_futures=True)

    def view(self) -> dict[str, int]:
        """In flight, waiting, the most in flight at once, and reads dropped (for /stats)."""
        with self._cond:
            return {"limit": self.limit, "in_flight": self._busy,
                    "waiting": len(self._line) + self._queued, "most_in_flight": self._most,
                    "dropped": self._dropped}
