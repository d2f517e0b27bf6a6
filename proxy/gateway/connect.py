"""Connecting one gateway: attempts that prove the login, and what the connection is now.

A `Connector` makes one connect attempt at a time for its `Gateway`: it builds (or
reconnects) the pypowerwall client under a watched deadline and asks for the site name,
which needs the login, so an attempt the gateway refused never passes for "connected".
When only the customer password is refused and a gateway password is set, it tries the
gateway password alone (TEDAPI) and says the customer password is wrong. It remembers
why the last attempt failed, what the gateway said when it asked for calm, and whether
calls after connecting get no answer, so `condition()` can say how things stand in the
words of the log lines and the 503 bodies.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from proxy.config import GatewayConfig
from proxy.gateway import connection, cookies, library
from proxy.gateway.book import AnswerBook
from proxy.gateway.connection import Condition, Reconnects
from proxy.gateway.health import AuthBackoff, Cooldown
from proxy.gateway.outcome import Exchange, judge
from proxy.gateway.sources import SITE_NAME
from proxy.gateway.traffic import Traffic, watching

CONNECT_CALLS = 4  # a connect makes a few exchanges (login, status, DIN): its deadline covers them


class Connector:
    """One gateway's connect attempts and connection state, owning its lock."""

    def __init__(self, config: GatewayConfig, factory: Callable[..., Any], cooldown: Cooldown,
                 auth: AuthBackoff, *, book: AnswerBook | None = None,
                 exchanged: Callable[[list[Exchange]], None] | None = None) -> None:
        self.config = config
        self._factory = factory  # builds a client, its saved login vouched for (cookies)
        self._book = book  # the gateway's shared answers of the window
        self._exchanged = exchanged or (lambda exchanges: None)  # told what an attempt sent
        self._cooldown, self._auth = cooldown, auth
        self.passwords = connection.passwords(config)  # which setting each password comes from
        self.reconnects = Reconnects()
        self._lock = threading.Lock()
        self._problem: Condition | None = None  # why the last connect attempt failed
        self._trouble: Condition | None = None  # connected, but the last call got no answer
        self._busy = ""  # what the gateway said when it asked for calm
        self._partial: str | None = None  # customer password refused, TEDAPI serving

    # ---- attempts ----------------------------------------------------------------------

    def attempt(self, pw: Any, kwargs: dict[str, Any]) -> tuple[Any, Condition | None]:
        """(the client, None) when through; else (what to keep, what went wrong)."""
        self.reconnects.attempt()
        pw, condition = self._once(pw, kwargs)
        if condition is None or not self._tedapi_may_serve(condition):
            return pw, condition
        tedapi, fallback = self._once(None, kwargs | {"password": ""})
        if fallback is not None:
            return None, condition  # next time, the customer password again
        with self._lock:
            self._partial = (f"{condition.message}; serving TEDAPI data with "
                             f"{self.passwords.named('gateway')} meanwhile")
        return tedapi, None

    def _once(self, pw: Any, kwargs: dict[str, Any]) -> tuple[Any, Condition | None]:
        traffic = Traffic(float(self.config.timeout) * CONNECT_CALLS, book=self._book)
        value: Any = None
        raised: BaseException | None = None
        with watching(traffic):
            try:
                if pw is None:
                    pw = self._factory(**kwargs)
                else:
                    cookies.vouch(kwargs)  # a saved login of other credentials is not used
                    pw.connect()
                    cookies.stamp(kwargs)
                # pypowerwall keeps a half-made client when a login fails and logs in
                # lazily: only a call that needs the login shows whether we are through.
                if library.has_client(pw):
                    value = SITE_NAME.fetch(pw)
            except Exception as exc:  # a bad setting or an unreachable gateway: report and retry
                raised = exc
        self._exchanged(traffic.exchanges)
        verdict = judge(value, raised, traffic.exchanges, traffic.library_errors, SITE_NAME.contract)
        return pw, connection.after_connect(verdict, traffic.exchanges, self.passwords,
                                            self.config.host, raised, library.has_client(pw))

    def _tedapi_may_serve(self, condition: Condition) -> bool:
        c = self.config
        return (condition.refused == "customer" and bool(c.password) and bool(c.gw_pwd)
                and not c.rsa_key_path and not (c.cloud_mode or c.fleetapi))

    # ---- what happened -----------------------------------------------------------------

    def failed(self, condition: Condition, wait: float) -> None:
        with self._lock:
            self._problem = condition
        self.reconnects.failed(wait)

    def succeeded(self) -> None:
        self.reconnects.succeeded()

    def partial(self) -> str | None:
        """Connected with the gateway password only: what was refused."""
        with self._lock:
            return self._partial

    def busy(self, reason: str) -> None:
        """The gateway asked for calm (429/503), in these words."""
        with self._lock:
            self._busy = reason.removeprefix(connection.COOLING_DOWN + ": ")

    def answered(self, reason: str | None) -> None:
        """A call after connecting: answered (None), or failed for `reason`."""
        trouble = None
        if reason is not None and reason.startswith(connection.UNREACHABLE + ": "):
            trouble = Condition(connection.UNREACHABLE, reason.split(": ", 1)[1])
        with self._lock:
            self._trouble = trouble

    # ---- how things stand --------------------------------------------------------------

    def condition(self, connected: bool) -> Condition:
        """The connection in one word and one sentence (the log's and the 503 bodies')."""
        remaining = self._cooldown.remaining()
        with self._lock:
            busy, problem, trouble, partial = self._busy, self._problem, self._trouble, self._partial
        if remaining > 0:
            return Condition(connection.COOLING_DOWN, f"{busy}; next request in {math.ceil(remaining)} s",
                             retry_after=remaining)
        if self._auth.steps():
            refused = self._auth.reason().removeprefix(connection.REFUSED + ": ")
            return Condition(connection.REFUSED,
                             f"{refused}; next attempt in {math.ceil(self._auth.remaining())} s")
        if not connected:
            if problem is None:
                return Condition(connection.STARTING,
                                 f"connecting to the gateway at {self.config.host or 'the cloud'}")
            wait = self.reconnects.next_in()
            when = f"next attempt in {math.ceil(wait)} s" if wait > 0 else "trying again now"
            return replace(problem, message=f"{problem.message}; {when}")
        if partial:
            return Condition(connection.REFUSED, partial)
        return trouble or Condition(connection.OK)
