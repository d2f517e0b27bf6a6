"""One login for many calls, and never a login storm.

pypowerwall logs in again on every 401 it sees (the local client's `_get_session`,
TEDAPI's bearer `_bearer_login` and its customer login for the local API's energy counters,
`_customer_login`, which says False when refused). A `LoginOnce` stands in for that method:

- Calls of several resources run side by side, so after a gateway restart each would log
  in on its own. The first call logs in; the others wait for it (no longer than their
  deadline) and retry on its session; a call that began before the last login finished
  uses that login instead of making another.
- A login the gateway refused is nobody's session: the calls that relied on it hear the
  refusal (its exchanges join their own record) and stop, instead of asking again.
- A 401 on the session of a fresh login that has not answered a single data request yet
  is the second 401 of "one re-login, then an authentication failure": no new login; the
  call records it as such (the adapter then starts the login backoff), so a gateway that
  takes the password but not the session sees one login, not one per request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from proxy.gateway.outcome import Exchange
from proxy.gateway.traffic import Traffic, current

# A session refused this soon after the login that made it, before it answered anything,
# was never accepted. Longer ago, a 401 is an ordinary expiry: log in again. The login
# backoff's first step (a minute) is longer, so each step still gets its one attempt.
FRESH_SESSION = 30.0


class LoginOnce:
    """The library's login method, made to log in once for many calls (see the module)."""

    def __init__(self, login: Callable[..., Any], serves: str = "/api/",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._login = login
        self._serves = serves  # the paths whose answers prove this login's session
        self._clock = clock
        self._lock = threading.Lock()
        self._running: threading.Event | None = None
        self._done_at = -1.0  # when the last login that worked finished
        self._proven = True  # its session has answered a data request (or there is none)
        self._refused: tuple[float, list[Exchange]] = (-1.0, [])  # the last refused one

    def __call__(self, *args: Any) -> Any:
        traffic = current()
        began = traffic.started if traffic is not None else self._clock()
        with self._lock:
            if self._done_at > began:
                return True  # a login finished after this call began: its session serves
            running = self._running
            stale = (running is None and not self._proven
                     and self._clock() - self._done_at < FRESH_SESSION)
            lead = running is None and not stale and self._refused[0] <= began
            if lead:
                mine = self._running = threading.Event()
        if stale:
            _second_refusal(traffic)
        if lead:
            return self._lead(traffic, mine, args)
        if running is not None:
            running.wait(max(0.0, traffic.remaining()) if traffic is not None else 10.0)
        self._follow(traffic, began)
        return True

    def answered(self, traffic: Traffic) -> None:
        """A call ended: did a data request get an answer on the current session?"""
        data = [x for x in traffic.exchanges if self._data(x)]
        worked = any(x.ok for x in data)
        with self._lock:
            if worked and not self._proven and (traffic.started > self._done_at
                                                or self._after_login(traffic)):
                self._proven = True

    def _data(self, x: Exchange) -> bool:
        return x.path.startswith(self._serves) and not x.logs_in

    def _after_login(self, traffic: Traffic) -> bool:
        """A data request answered after a login that worked, within this call."""
        logged_in = False
        for x in traffic.exchanges:
            if x.logs_in:
                logged_in = logged_in or x.ok
            elif logged_in and x.ok and self._data(x):
                return True
        return False

    def _lead(self, traffic: Traffic | None, mine: threading.Event, args: tuple[Any, ...]) -> Any:
        seen = len(traffic.exchanges) if traffic is not None else 0
        worked = False
        try:
            result = self._login(*args)
            worked = result is not False
            return result
        finally:
            shown = list(traffic.exchanges[seen:]) if traffic is not None else []
            with self._lock:
                if worked:
                    self._done_at, self._proven = self._clock(), False
                else:
                    self._refused = (self._clock(), shown)
                self._running = None
            mine.set()

    def _follow(self, traffic: Traffic | None, began: float) -> None:
        """After waiting on another call's login: retry on its session, or share its refusal."""
        with self._lock:
            refused_at, shown = self._refused
            refused = refused_at > began and refused_at > self._done_at
        if refused:
            for exchange in shown:
                if traffic is not None:
                    traffic.record(exchange)
            raise ConnectionError("the gateway refused the login this call waited for")


def _second_refusal(traffic: Traffic | None) -> None:
    """The 401 just received came on a fresh login's session: record it as the second one."""
    last = traffic.exchanges[-1] if traffic is not None and traffic.exchanges else None
    if traffic is not None and last is not None:
        traffic.record(replace(last))
    raise ConnectionError("the gateway refuses the session of the login it just accepted")
