"""The call path of one gateway: whether a library call may go out, and what its verdict tells.

Before a call: a gateway cooling down (429/503), refusing our login (a backoff step
running) or that did not answer earlier in this window gets a verdict without being
asked; while it is failing, calls go one at a time. After a call, health, the cooldown,
the login backoff and the connection state hear about a real verdict; an answer from
the library's cache, or one another call got from the gateway in this window, is no
news about the gateway.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from proxy.config import GatewayConfig
from proxy.gateway import connection, library
from proxy.gateway.book import AnswerBook
from proxy.gateway.cache import WindowCache
from proxy.gateway.client import Clients
from proxy.gateway.connect import Connector
from proxy.gateway.connection import Condition
from proxy.gateway.health import AuthBackoff, Cooldown, EndpointStats, Health
from proxy.gateway.outcome import Exchange, Kind, Verdict, judge
from proxy.gateway.sources import Source
from proxy.gateway.traffic import Traffic, watching

log = logging.getLogger("proxy.gateway")


class Calls:
    """One gateway's library calls and their accounting, owning the lock of what they remember."""

    def __init__(self, config: GatewayConfig, name: str, cache: WindowCache, *, book: AnswerBook,
                 health: Health, cooldown: Cooldown, auth: AuthBackoff, endpoints: EndpointStats,
                 connector: Connector, clients: Clients,
                 connection: Callable[[], Condition]) -> None:
        self.config, self.name, self.cache, self.book = config, name, cache, book
        self.health, self.cooldown, self.auth, self.endpoints = health, cooldown, auth, endpoints
        self.connector, self.clients = connector, clients
        self._connection = connection  # how it stands now: the words of a refusal's verdict
        self._lock = threading.Lock()  # the three fields below
        self._failed_window: int | None = None
        self._library_window: int | None = None
        self._native_refused = False  # the gateway said 4xx to the library's local-API energy fetch
        self._probe = threading.Lock()  # one call at a time while the gateway is failing

    def call(self, source: Source, client: Any) -> Verdict:
        """Run one library call on `client` now, under the deadline, and judge it (the caller
        holds a lane)."""
        blocked = self.blocked(self.cache.window())
        if blocked is not None:
            return blocked
        if not self.health.snapshot().failing:
            return self._run(source, client)
        # While the gateway is failing, calls go one at a time: the first of a window
        # finds out, and the others fail fast behind it instead of each waiting out
        # another timeout against a dead gateway.
        if not self._probe.acquire(timeout=float(self.config.timeout)):
            self.auth.release()  # an admitted login attempt that never went out
            return Verdict(Kind.NO_ANSWER, reason=self.health.snapshot().last_error or "gateway unavailable")
        try:
            held = self._held(self.cache.window())  # the login gate already let this call by
            if held is not None:
                self.auth.release()
                return held
            return self._run(source, client)
        finally:
            self._probe.release()

    def _run(self, source: Source, client: Any) -> Verdict:
        self._sync_library(client, self.cache.window())
        library.forget_refusals(client)
        library.prepare(client, self.config.pool_maxsize)
        native_before = library.native_backoff(client)
        traffic = Traffic(float(self.config.timeout), close_connections=self.config.pool_maxsize == 0,
                          book=self.book)
        value: Any = None
        raised: BaseException | None = None
        with watching(traffic):
            try:
                value = source.fetch(client)
            except Exception as exc:
                raised = exc
        library.answered(client, traffic)
        self.clients.stamp(traffic.exchanges)
        pieced = self._pieced(client, traffic.exchanges, native_before)
        verdict = judge(value, raised, traffic.exchanges, traffic.library_errors, source.contract,
                        pieced=pieced)
        if not any(not x.shared for x in traffic.exchanges) and (
                traffic.exchanges or verdict.kind in (Kind.DATA, Kind.ABSENT)):
            # From the library's cache, or answers another call got from the gateway in this
            # window (that call told health): no news about the gateway, nor about our login
            # (a login backoff lets the next call try).
            self.auth.release()
            return verdict
        verdict = connection.explain(verdict, traffic.exchanges, self.connector.passwords,
                                     self.config.host)
        logged_in = _logged_in(traffic.exchanges, self.auth.steps())
        return self._account(source.key, verdict, logged_in, began=traffic.started)

    def blocked(self, window: int) -> Verdict | None:
        """A verdict without asking the gateway: it is cooling down, refusing us, or unreachable."""
        held = self._held(window)
        if held is not None:
            return held
        if not self.auth.admit():
            return Verdict(Kind.AUTH, reason=self._connection().text(), retry_after=self.auth.remaining())
        return None

    def _held(self, window: int) -> Verdict | None:
        remaining = self.cooldown.remaining()
        if remaining > 0:
            return Verdict(Kind.BUSY, reason=self._connection().text(), retry_after=remaining)
        with self._lock:
            failed = window != -1 and self._failed_window == window
        if failed:
            # It did not answer earlier in this window: do not queue every other
            # resource behind another full timeout.
            return Verdict(Kind.NO_ANSWER, reason=self.health.snapshot().last_error or "gateway unavailable")
        return None

    def _account(self, key: str, verdict: Verdict, logged_in: bool = True,
                 began: float | None = None) -> Verdict:
        """Let health, cooldowns and fail-fast hear about a real verdict; `logged_in`: the
        call (which `began` then) showed that the gateway accepts our credentials."""
        kind = verdict.kind
        self.endpoints.record(key, ok=kind in (Kind.DATA, Kind.ABSENT))
        if kind in (Kind.DATA, Kind.ABSENT):
            self.health.success()
            self.cooldown.reset()
            if logged_in:
                self.auth.reset(began)
            else:
                self.auth.release()  # e.g. /api/status needs no login: it proves nothing
            self.reset()
            self.connector.answered(None)
        elif kind is Kind.BUSY:
            seconds = self.refused(verdict.reason, verdict.retry_after)
            return replace(verdict, reason=self._connection().text(), retry_after=seconds)
        elif kind is Kind.AUTH:
            seconds = self.auth.trip(verdict.reason)
            self.health.failure(verdict.reason)
            return replace(verdict, reason=self._connection().text(), retry_after=seconds)
        elif kind is Kind.NO_ANSWER:
            self.health.failure(verdict.reason)
            self.auth.release()
            # Fail fast for the rest of the window in which the failure showed,
            # which is later than the one the call began in when it was slow to fail.
            with self._lock:
                self._failed_window = self.cache.window()
            self.connector.answered(verdict.reason)
            log.debug("%s: %s", self.name, verdict.reason)
        else:
            self.auth.release()
        return verdict

    def refused(self, reason: str, retry_after: float | None) -> float:
        """The gateway said 429/503 (to a library call or a passed-through page): start or
        extend the one cooldown every caller honours; returns its length in seconds."""
        seconds = self.cooldown.trip(retry_after)
        self.health.failure(reason)
        self.connector.busy(reason)
        log.warning("%s: %s; leaving it alone for %.0f s", self.name,
                    reason if reason.startswith(connection.COOLING_DOWN) else
                    f"{connection.COOLING_DOWN}: {reason}", seconds)
        return seconds

    def written(self) -> None:
        """After a write, the next call starts with fresh library caches."""
        with self._lock:
            self._library_window = None

    def reset(self) -> None:
        """The gateway answered (or /health/reset): no failure to fail fast behind."""
        with self._lock:
            self._failed_window = None

    def _sync_library(self, pw: Any, window: int) -> None:
        with self._lock:
            if window == self._library_window and window != -1:
                return
            self._library_window = window
            keep = self._native_refused
        library.empty_caches(pw, keep_native_backoff=keep)

    def _pieced(self, pw: Any, exchanges: list[Exchange], native_before: float) -> bool:
        """Did the library give up on the local API's energy counters during this call?

        In TEDAPI mode /api/meters/aggregates is TEDAPI data plus the local API's
        energy counters; without them every energy field is a made-up 0. A 4xx means
        this gateway has none (keep the library's backoff); a 200 it could not use
        means the value was pieced together.
        """
        if library.native_backoff(pw) <= native_before:
            return False
        local = [x.status for x in exchanges if x.path.startswith("/api/")]
        status = local[-1] if local else None
        refused = status is not None and 400 <= status < 500
        with self._lock:
            self._native_refused = refused
        return status is not None and not refused


def _logged_in(exchanges: list[Exchange], backoff_steps: int) -> bool:
    """Whether a call proves our credentials work: a login or TEDAPI exchange that
    succeeded (with no backoff running, any good answer will do)."""
    if not backoff_steps:
        return True
    return any(x.is_login and x.ok for x in exchanges)
