"""Small state objects about one gateway's condition, each owning its lock.

`Cooldown` leaves a refusing gateway (429/503) alone, `AuthBackoff` stops a
login storm after 401/403, `Health` remembers whether the last real answer was
a failure, and `EndpointStats` counts outcomes per resource for /health.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("proxy.gateway")

Clock = Callable[[], float]


class Cooldown:
    """How long to leave a refusing gateway alone: short, growing, capped, Retry-After aware."""

    def __init__(self, base: float = 5.0, cap: float = 300.0, clock: Clock = time.monotonic):
        self._base, self._cap, self._clock = base, cap, clock
        self._lock = threading.Lock()
        self._strikes = 0
        self._until = 0.0

    def trip(self, retry_after: float | None) -> float:
        """The gateway refused again: start (or extend) the cooldown; returns its length."""
        with self._lock:
            self._strikes += 1
            backoff = self._base * 2 ** (self._strikes - 1)
            seconds = float(min(self._cap, max(backoff, retry_after or 0.0)))
            self._until = self._clock() + seconds
            return seconds

    def remaining(self) -> float:
        with self._lock:
            return max(0.0, self._until - self._clock())

    def strikes(self) -> int:
        with self._lock:
            return self._strikes

    def reset(self) -> None:
        """The gateway answered: the next refusal starts short again."""
        with self._lock:
            self._strikes = 0
            self._until = 0.0


AUTH_BACKOFF_START = 60.0
AUTH_BACKOFF_CAP = 3600.0


class AuthBackoff:
    """After a refused login (wrong password, locked account): one attempt per step, 1 min to 1 h.

    A gateway that sees a failed login every few seconds locks its owner out, so
    after a 401/403 the proxy sends the gateway nothing until the step is over,
    then lets exactly one call through (`admit`) to try again.
    """

    def __init__(self, start: float = AUTH_BACKOFF_START, cap: float = AUTH_BACKOFF_CAP,
                 clock: Clock = time.monotonic, name: str = "gateway") -> None:
        self._start, self._cap, self._clock, self._name = start, cap, clock, name
        self._lock = threading.Lock()
        self._steps = 0
        self._until = 0.0
        self._probing = False
        self._reason = ""
        self._tripped_at = float("-inf")

    def trip(self, reason: str) -> float:
        """A login was refused: wait the next step (logged once per step); returns its length.

        `reason` says what was refused, starting with the connection state ("refused: ...").
        """
        with self._lock:
            now = self._clock()
            if self._steps and now < self._until and not self._probing:
                # Another call of the same step heard the same refusal: one step, one log line.
                return self._until - now
            seconds = float(min(self._cap, self._start * 2 ** self._steps))
            self._steps += 1
            self._until = now + seconds
            self._probing = False
            self._reason = reason
            self._tripped_at = now
        log.warning("%s: %s; next attempt in %.0f s", self._name, reason, seconds)
        return seconds

    def reason(self) -> str:
        """What the last refusal was ("" when no backoff is running)."""
        with self._lock:
            return self._reason if self._steps else ""

    def remaining(self) -> float:
        """Seconds until the next login may be tried (0 when no backoff is running)."""
        with self._lock:
            if self._steps == 0:
                return 0.0
            return max(0.0, self._until - self._clock())

    def admit(self) -> bool:
        """May a call go to the gateway now? After a step ends, only one caller is let through."""
        with self._lock:
            if self._steps == 0:
                return True
            if self._clock() < self._until or self._probing:
                return False
            self._probing = True
            return True

    def release(self) -> None:
        """The admitted call ended without a verdict on the login (e.g. the gateway was down)."""
        with self._lock:
            self._probing = False

    def reset(self, began: float | None = None) -> None:
        """A login (or any authenticated answer) worked; with `began` (when the call that
        showed it began, on this clock), only if it began after the last refusal: a call
        already under way when the gateway refused us says nothing about that refusal."""
        with self._lock:
            if began is not None and began <= self._tripped_at:
                return
            if self._steps:
                log.info("%s: the gateway accepts our login again", self._name)
            self._steps = 0
            self._until = 0.0
            self._probing = False

    def steps(self) -> int:
        with self._lock:
            return self._steps


@dataclass
class HealthCounters:
    consecutive_failures: int = 0
    total_failures: int = 0
    total_successes: int = 0
    last_success_time: float | None = None  # epoch seconds
    last_error: str | None = None
    last_error_time: float | None = None
    failing: bool = False  # the last real gateway exchange was a failure


class Health:
    """Counts only real gateway answers (not cache hits, not calls we skipped).

    `failing` follows the latest real outcome, so /health turns degraded in the
    window in which clients first get stale data or a 503 because the gateway
    failed, and ok again with the next real answer.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._c = HealthCounters()

    def success(self) -> None:
        with self._lock:
            self._c.consecutive_failures = 0
            self._c.total_successes += 1
            self._c.last_success_time = time.time()
            self._c.failing = False

    def failure(self, reason: str) -> None:
        with self._lock:
            self._c.consecutive_failures += 1
            self._c.total_failures += 1
            self._c.last_error = reason
            self._c.last_error_time = time.time()
            self._c.failing = True

    def snapshot(self) -> HealthCounters:
        with self._lock:
            return HealthCounters(**vars(self._c))

    def reset(self) -> None:
        with self._lock:
            self._c = HealthCounters()


MAX_ENDPOINTS = 128


@dataclass
class _EndpointCount:
    total: int = 0
    ok: int = 0
    last_ok: float | None = None  # monotonic
    last_failed: float | None = None


class EndpointStats:
    """Per-resource outcome counts (the reference's /health endpoint_statistics), bounded."""

    def __init__(self, clock: Clock = time.monotonic, limit: int = MAX_ENDPOINTS) -> None:
        self._clock, self._limit = clock, limit
        self._lock = threading.Lock()
        self._counts: OrderedDict[str, _EndpointCount] = OrderedDict()

    def record(self, key: str, ok: bool) -> None:
        now = self._clock()
        with self._lock:
            count = self._counts.get(key)
            if count is None:
                if len(self._counts) >= self._limit:
                    self._counts.popitem(last=False)  # forget the least recently seen
                count = self._counts[key] = _EndpointCount()
            self._counts.move_to_end(key)
            count.total += 1
            if ok:
                count.ok += 1
                count.last_ok = now
            else:
                count.last_failed = now

    def view(self) -> dict[str, dict[str, Any]]:
        now = self._clock()
        with self._lock:
            items = [(k, _EndpointCount(**vars(c))) for k, c in self._counts.items()]
        out: dict[str, dict[str, Any]] = {}
        for key, c in sorted(items):
            row: dict[str, Any] = {
                "total_calls": c.total,
                "successful_calls": c.ok,
                "failed_calls": c.total - c.ok,
                "success_rate_percent": round(100.0 * c.ok / c.total, 1) if c.total else 0.0,
            }
            if c.last_ok is not None:
                row["last_success_age_seconds"] = round(now - c.last_ok, 1)
            if c.last_failed is not None:
                row["last_failure_age_seconds"] = round(now - c.last_failed, 1)
            out[key] = row
        return out

    def clear(self) -> int:
        with self._lock:
            count = len(self._counts)
            self._counts.clear()
            return count
