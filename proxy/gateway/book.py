"""One request per distinct gateway request per window, whatever asks.

Several resources need the same gateway request (TEDAPI's device queries behind
vitals, temps, alerts and strings; /api/system_status/grid_status behind alerts
and the grid status; the library's own repeat calls). The transport watch
(`proxy.gateway.traffic`) looks every request up here first, by what it asks:
the credentials it carries, method, URL and a digest of its body (TEDAPI
queries all share one path). Within one cache window the first asker sends it;
askers while it is in flight wait for its answer; later askers get the answer
again without a request.

What is kept for the window: an answer (data, empty, 404, a web page, any
other status below 500 but 401, 403 and 429) or an answer too large to hold.
A 401/403 is never handed to another caller: the library answers it with a
fresh login, which each caller must be free to make. Failures (no answer, 429,
5xx) reach only the askers already waiting for that very request; the next
one asks again, when the cooldown and fail-fast rules let it.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Answer", "AnswerBook", "Flight", "request_key"]

MAX_ENTRIES = 256  # distinct requests kept per window
MAX_BYTES = 16 * 1024 * 1024  # their bodies together
UNSHARED_PATHS = ("/api/login", "/api/logout")  # a login's answer is its caller's session
NEVER_REPLAYED = (401, 403)
NOT_KEPT = (401, 403, 429)


@dataclass(frozen=True, slots=True)
class Answer:
    """What one request got: a response (status, reason, headers, body) or an error name."""

    status: int | None
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    error: str | None = None  # a transport error, "deadline" or "too large"

    @property
    def replayable(self) -> bool:
        """May another caller be handed this answer (while it waited for it)?"""
        return self.status not in NEVER_REPLAYED

    @property
    def keepable(self) -> bool:
        """May it serve later callers in the same window?"""
        if self.error is not None:
            return self.error == "too large"
        return self.status is not None and self.status < 500 and self.status not in NOT_KEPT


@dataclass(slots=True)
class Flight:
    """A request in flight; its waiters read `answer` once `done` is set."""

    window: int
    done: threading.Event = field(default_factory=threading.Event)
    answer: Answer | None = None


def _digest(data: Any) -> str:
    if data is None:
        return ""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return hashlib.sha256(raw).hexdigest()[:32]


def request_key(request: Any) -> Hashable | None:
    """What a prepared request asks, or None for one whose answer is its caller's alone."""
    url = str(request.url)
    if urlsplit(url).path.startswith(UNSHARED_PATHS):
        return None
    headers = request.headers
    credentials = _digest(f"{headers.get('Authorization', '')}\n{headers.get('Cookie', '')}")
    body = request.body
    if body is not None and not isinstance(body, (bytes, bytearray, str)):
        return None  # a streamed body: nothing to compare
    return (credentials, str(request.method or "GET"), url, _digest(body))


class AnswerBook:
    """A gateway's answers of the current window, and its requests in flight; owns its lock."""

    def __init__(self, window: Callable[[], int], max_entries: int = MAX_ENTRIES,
                 max_bytes: int = MAX_BYTES) -> None:
        self._window = window
        self._max_entries, self._max_bytes = max_entries, max_bytes
        self._lock = threading.Lock()
        self._kept_window: int | None = None
        self._kept: dict[Hashable, Answer] = {}
        self._bytes = 0
        self._flights: dict[Hashable, Flight] = {}

    def claim(self, key: Hashable) -> tuple[Answer | Flight, bool]:
        """(a kept answer, False), (the flight to wait for, False) or (a new flight, True):
        the caller that gets True sends the request and must `settle` it."""
        with self._lock:
            window = self._window()
            self._roll(window)
            kept = self._kept.get(key)
            if kept is not None:
                return kept, False
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = Flight(window)
            return flight, True

    def settle(self, key: Hashable, flight: Flight, answer: Answer) -> None:
        """The leader's answer: to its waiters, and kept for the window it was sent in."""
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
            self._roll(self._window())
            if (answer.keepable and flight.window != -1 and flight.window == self._kept_window
                    and len(self._kept) < self._max_entries
                    and self._bytes + len(answer.body) <= self._max_bytes):
                self._kept[key] = answer
                self._bytes += len(answer.body)
        flight.answer = answer
        flight.done.set()

    def _roll(self, window: int) -> None:
        if window != self._kept_window:
            self._kept_window = window
            self._kept = {}
            self._bytes = 0
