"""The threads that answer what the event loop cannot: started when needed, never idle in bulk.

No thread waits at start. A job (a request the loop could not answer itself) goes to an idle
worker; with none idle, a thread is started while fewer than `core` run. Past that a job waits
for a worker to come free. Only when none has come free for `stall` seconds (longer than a
normal backend fetch takes: the app is blocked on a slow one) is one more started, then one
every `step` seconds while none comes free, up to `limit`, so a request that needs no backend
(a status page, a file) still finds a thread soon. A burst of requests waiting on one fetch at
the start of a cache window therefore costs a few threads, not one each, and the count stays
flat from window to window. A worker idle for `idle` seconds ends.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Workers"]

logger = logging.getLogger("proxy.server")

T = TypeVar("T")

CORE = 4  # threads started as soon as jobs find none idle
STALL = 0.25  # no worker came free for this long while jobs wait: start another ...
STEP = 0.05  # ... and one more every this long while still none comes free
IDLE = 60.0  # a worker with nothing to do for this long ends


class Workers(Generic[T]):
    """At most `limit` threads running `run(job)`; the loop submits, and ticks the clock."""

    def __init__(self, limit: int, run: Callable[[T], None], discard: Callable[[T], None], *,
                 core: int = CORE, stall: float = STALL, step: float = STEP, idle: float = IDLE,
                 name: str = "pwproxy-worker") -> None:
        self.limit = limit
        self._run = run
        self._discard = discard  # a job left over when stopping
        self._core = min(core, limit)
        self._stall = stall
        self._step = step
        self._idle_timeout = idle
        self._name = name
        self._numbers = itertools.count()
        self._jobs: queue.SimpleQueue[T | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._idle = 0  # waiting workers no job is promised to
        self._waiting = 0  # jobs no worker is promised to
        self._stuck_since = 0.0  # since then no worker came free while jobs waited
        self._added = 0  # threads started since then
        self._busy = 0
        self._stopping = False

    @property
    def busy(self) -> int:
        return self._busy

    @property
    def threads(self) -> int:
        return len(self._threads)

    def submit(self, job: T) -> None:
        """Queue a job: an idle worker takes it, or a new one while fewer than `core` run."""
        with self._lock:
            if self._idle:
                self._idle -= 1
                start = False
            else:
                start = len(self._threads) < self._core
                if not start:
                    if not self._waiting:
                        self._unstuck(time.monotonic())
                    self._waiting += 1
            thread = self._new_thread() if start else None
        self._jobs.put(job)
        if thread is not None:
            thread.start()

    def tick(self, now: float) -> float:
        """Start a worker if jobs have waited `stall` seconds (then `step` more each) with
        none coming free; the seconds until this should be called again (inf: no need)."""
        # Every loop pass ticks: with no job waiting, answer without the lock. Only submit(),
        # on the ticking thread itself, adds waiting jobs, so a 0 read here is never stale.
        if not self._waiting:
            return float("inf")
        with self._lock:
            if not self._waiting or len(self._threads) >= self.limit or self._stopping:
                return float("inf")
            due = self._stuck_since + self._stall + self._added * self._step - now
            if due > 0:
                return due
            self._waiting -= 1  # the new thread's
            self._added += 1
            thread = self._new_thread()
        thread.start()
        return self._step

    def stop(self) -> list[threading.Thread]:
        """Leftover jobs are discarded, every worker ends; the threads, to join."""
        with self._lock:
            self._stopping = True
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(None)
        return threads

    def _new_thread(self) -> threading.Thread:
        """A worker thread (under the lock, so the count is right before it starts)."""
        thread = threading.Thread(target=self._work, name=f"{self._name}-{next(self._numbers)}", daemon=True)
        self._threads.add(thread)
        return thread

    def _work(self) -> None:
        while (job := self._next()) is not None:
            with self._lock:
                self._busy += 1
                stopping = self._stopping
            try:
                (self._discard if stopping else self._run)(job)
            except Exception:  # run() handles its own; this is the last line of defence
                logger.exception("unexpected error in a worker")
            finally:
                self._done()
        with self._lock:
            self._threads.discard(threading.current_thread())

    def _next(self) -> T | None:
        """The next job; None to end (stopping, or idle too long)."""
        while True:
            try:
                return self._jobs.get(timeout=self._idle_timeout)
            except queue.Empty:
                with self._lock:
                    if self._idle and not self._waiting:
                        self._idle -= 1  # this one: nothing is promised to it
                        return None

    def _done(self) -> None:
        with self._lock:
            self._busy -= 1
            if self._waiting:
                self._waiting -= 1  # this worker takes a waiting job next
                self._unstuck(time.monotonic())
            else:
                self._idle += 1

    def _unstuck(self, now: float) -> None:
        """A worker came free (or jobs start waiting): the stall clock starts again."""
        self._stuck_since = now
        self._added = 0
