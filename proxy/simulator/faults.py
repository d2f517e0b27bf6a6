"""Faults injected on demand (POST /sim/fault), active for a while or until cleared.

A fault applies to every gateway path or to a listed set (an entry ending in "*"
matches by prefix). Several can be active at once; `FaultBoard` owns them under
its own lock and forgets them when they expire.

Kinds: `down` (connection dropped), `slow` (answer after `delay` s), `status` (an
error `status`, optional `retry_after`), `expire_session`, `malformed` (200 bodies
cut in half), `grid_outage`, `drip` (200 bodies written `chunk` bytes at a time,
`delay` s apart), `oversize` (200 bodies padded with whitespace to `size` bytes,
streamed), `login_401` (every login refused as a wrong password), `data_401` (logins
accepted, every request that needs one answered 401: a session the gateway will not honour).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

DOWN, SLOW, STATUS = "down", "slow", "status"
EXPIRE_SESSION, MALFORMED, GRID_OUTAGE = "expire_session", "malformed", "grid_outage"
DRIP, OVERSIZE, LOGIN_401, DATA_401 = "drip", "oversize", "login_401", "data_401"
KINDS = (DOWN, SLOW, STATUS, EXPIRE_SESSION, MALFORMED, GRID_OUTAGE, DRIP, OVERSIZE, LOGIN_401,
         DATA_401)
MAX_FAULTS = 64
MAX_PATHS = 64
MAX_SECONDS = 7 * 24 * 3600.0
MAX_DELAY = 600.0
DEFAULT_DELAY = 2.0
DEFAULT_DRIP_DELAY = 0.5
DEFAULT_STATUS = 503
DEFAULT_CHUNK = 64
MAX_CHUNK = 1 << 20
DEFAULT_SIZE = 64 << 20
MAX_SIZE = 1 << 40  # streamed, so only the client's patience limits it
SPEC_KEYS = frozenset({"kind", "paths", "seconds", "delay", "status", "retry_after", "chunk",
                       "size"})


@dataclass(frozen=True)
class Fault:
    kind: str
    paths: tuple[str, ...] | None  # None: every gateway path
    started: float  # monotonic
    expires: float | None  # monotonic; None: until cleared
    delay: float = 0.0
    status: int = DEFAULT_STATUS
    retry_after: int | None = None
    chunk: int = DEFAULT_CHUNK
    size: int = DEFAULT_SIZE

    def matches(self, path: str) -> bool:
        if self.paths is None:
            return True
        return any(path.startswith(p[:-1]) if p.endswith("*") else path == p
                   for p in self.paths)

    def describe(self, now: float) -> dict[str, Any]:
        """JSON view, as echoed by POST /sim/fault."""
        remaining = None if self.expires is None else round(max(0.0, self.expires - now), 3)
        view: dict[str, Any] = {"kind": self.kind,
                                "paths": None if self.paths is None else list(self.paths),
                                "seconds_remaining": remaining}
        if self.kind in (SLOW, DRIP):
            view["delay"] = self.delay
        if self.kind == DRIP:
            view["chunk"] = self.chunk
        if self.kind == OVERSIZE:
            view["size"] = self.size
        if self.kind == STATUS:
            view["status"] = self.status
            view["retry_after"] = self.retry_after
        return view


def _number(spec: Mapping[str, Any], key: str, low: float, high: float) -> float | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key} must be a number")
    if not low <= value <= high:
        raise ValueError(f"{key} must be between {low:g} and {high:g}")
    return float(value)


def _integer(spec: Mapping[str, Any], key: str, low: int, high: int, default: int) -> int:
    value = spec.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{key} must be an integer between {low} and {high}")
    return value


def _paths(spec: Mapping[str, Any]) -> tuple[str, ...] | None:
    paths = spec.get("paths")
    if paths is None:
        return None
    if (not isinstance(paths, list) or not paths or len(paths) > MAX_PATHS
            or not all(isinstance(p, str) and p.startswith("/") for p in paths)):
        raise ValueError(f"paths must be a list of 1 to {MAX_PATHS} paths starting with '/'")
    return tuple(paths)


def _status(spec: Mapping[str, Any]) -> int:
    value = spec.get("status", DEFAULT_STATUS)
    if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
        raise ValueError("status must be an integer HTTP error status (400-599)")
    return value


def _retry_after(spec: Mapping[str, Any]) -> int | None:
    value = spec.get("retry_after")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 86400:
        raise ValueError("retry_after must be an integer number of seconds (0-86400)")
    return value


def parse_fault(spec: Mapping[str, Any], now: float) -> Fault:
    """Validate a POST /sim/fault body; ValueError says what is wrong."""
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    seconds = _number(spec, "seconds", 0.001, MAX_SECONDS)
    delay = _number(spec, "delay", 0.0, MAX_DELAY)
    if delay is None:
        delay = DEFAULT_DRIP_DELAY if kind == DRIP else DEFAULT_DELAY
    return Fault(kind=str(kind), paths=_paths(spec), started=now,
                 expires=None if seconds is None else now + seconds, delay=delay,
                 status=_status(spec), retry_after=_retry_after(spec),
                 chunk=_integer(spec, "chunk", 1, MAX_CHUNK, DEFAULT_CHUNK),
                 size=_integer(spec, "size", 1, MAX_SIZE, DEFAULT_SIZE))


class FaultBoard:
    """The active faults; thread-safe, bounded, self-expiring."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def now(self) -> float:
        return self._clock()

    def _live(self, now: float) -> list[Fault]:
        # Called under the lock: drop expired faults so the list stays small.
        self._faults = [f for f in self._faults if f.expires is None or f.expires > now]
        return self._faults

    def add(self, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Activate the fault described by `spec`; returns the active faults."""
        now = self._clock()
        fault = parse_fault(spec, now)
        with self._lock:
            if len(self._live(now)) >= MAX_FAULTS:
                raise ValueError(f"at most {MAX_FAULTS} faults can be active")
            self._faults.append(fault)
            return [f.describe(now) for f in self._faults]

    def clear(self) -> None:
        with self._lock:
            self._faults = []

    def describe(self) -> list[dict[str, Any]]:
        now = self._clock()
        with self._lock:
            return [f.describe(now) for f in self._live(now)]

    def for_path(self, path: str) -> list[Fault]:
        """Active faults that apply to a request for `path`."""
        now = self._clock()
        with self._lock:
            return [f for f in self._live(now) if f.matches(path)]

    def grid_outage(self) -> bool:
        now = self._clock()
        with self._lock:
            return any(f.kind == GRID_OUTAGE for f in self._live(now))
