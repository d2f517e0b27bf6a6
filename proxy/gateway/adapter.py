"""`Gateway`: one Powerwall gateway behind the proxy, and the only caller of pypowerwall.

Library calls go in; verdicts come out (`proxy.gateway.outcome`). Each call
runs in the gateway's lanes (`proxy.gateway.lanes`: at most PW_GATEWAY_CONCURRENCY
at once, writes first and alone, reads oldest first), at most one per resource at
a time, under a deadline (PW_TIMEOUT for the whole exchange) that starts when the
call is sent. The same gateway request is sent once per
window whatever asks (`proxy.gateway.book`). Readers wait a bounded time, and
only a bounded number of them at once, so a stalled gateway can hold a few
request threads but never all.

`Gateway` is the one entry point the rest of the proxy uses; it builds its parts and
runs the connect loop. The parts: the clients (`client`: constructor arguments, mode,
control backend), the call path's accounting (`calls`), the read path (`reads`), the
write path (`writes`) and the connection state (`connect`, `connection`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any

from proxy.config import GatewayConfig
from proxy.errors import GatewayBusy, GatewayStarting, GatewayUnavailable
from proxy.gateway import client, connection, library
from proxy.gateway.book import AnswerBook
from proxy.gateway.cache import Entry, WindowCache
from proxy.gateway.calls import Calls
from proxy.gateway.client import Clients, GatewayInfo
from proxy.gateway.connect import Connector
from proxy.gateway.connection import Condition
from proxy.gateway.health import AuthBackoff, Cooldown, EndpointStats, Health
from proxy.gateway.lanes import Lanes, concurrency
from proxy.gateway.outcome import Kind, Verdict
from proxy.gateway.reads import Reads
from proxy.gateway.sources import ANY, SITE_NAME, Source, periods
from proxy.gateway.traffic import Traffic, install
from proxy.gateway.writes import Writes
from proxy.stats import Tally

log = logging.getLogger("proxy.gateway")

CONNECT_BACKOFF_START = 1.0  # then doubling, at most the gateway's probe_interval


class Gateway:
    """One gateway: client, window cache, cooldowns, health, its own threads.

    `cooldown` and `auth` replace the default backoffs (tests shorten them)."""

    def __init__(self, config: GatewayConfig, *, factory: Callable[..., Any] | None = None,
                 simulated: bool = False, control_password: str = "", control_enabled: bool = False,
                 waiters: int = 8, name: str | None = None, cooldown: Cooldown | None = None,
                 auth: AuthBackoff | None = None) -> None:
        install()
        self.config = config
        self.id = config.id
        self.name = name or (f"gateway {config.id}" if config.id != "default" else "gateway")
        self.simulated = simulated
        self.control_enabled = control_enabled
        self._control_password = control_password  # --simulate: local writes, TEDAPI reads
        self.clients = Clients(factory or library.factory)
        self.cache = WindowCache(float(config.cache_expire), periods=periods(config))
        self.book = AnswerBook(self.cache.window)
        self.lanes = Lanes(concurrency(config.concurrency, config.pool_maxsize), name=f"gw-{config.id}")
        self.writes = Writes(self.lanes, float(config.timeout), config.pool_maxsize, self._written)
        self.cooldown = Cooldown() if cooldown is None else cooldown
        self.auth = AuthBackoff(name=self.name) if auth is None else auth
        self.health = Health()
        self.endpoints = EndpointStats()
        self.lookups = Tally(limit=4)  # ("hit",): answered from this window's entry; ("miss",)
        self.info = GatewayInfo(tedapi_api_version=config.tedapi_api_version,
                                tedapi_auth_mode=config.tedapi_auth_mode)
        self.connector = Connector(config, self.clients.make, self.cooldown, self.auth,
                                   book=self.book, exchanged=self.clients.stamp)
        self.calls = Calls(config, self.name, self.cache, book=self.book, health=self.health,
                           cooldown=self.cooldown, auth=self.auth, endpoints=self.endpoints,
                           connector=self.connector, clients=self.clients, connection=self.connection)
        self.reads = Reads(config, self.cache, self.lanes, self.lookups, self.call, waiters=waiters)
        self.pw: Any = None
        self.control_pw: Any = None
        self.control_error: str | None = None
        self.site_name: Any = None
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self._connect_loop, name=f"{config.id}-connect",
                                      daemon=True)

    # ---- lifecycle -------------------------------------------------------

    def start(self) -> None:
        """Connect in the background so the HTTP server can answer at once."""
        self._loop.start()

    def stop(self) -> None:
        self._stop.set()
        self.lanes.close()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def check(self) -> Condition:
        """One connect attempt now, in this thread (python3 -m proxy --check)."""
        condition = self._try_connect()
        if condition is not None:
            self.info = replace(self.info, connect_error=condition.text())
            return condition
        return self.connection()

    def _connect_loop(self) -> None:
        delay = CONNECT_BACKOFF_START
        cap = float(self.config.probe_interval)  # PW_TEDAPI_PROBE_INTERVAL: at least 5 s
        while not self._stop.is_set():
            condition = self._try_connect()
            if condition is None:
                return
            wait = self._connect_failed(condition, min(delay, cap))
            delay = min(delay * 2, cap)
            self._stop.wait(wait)

    def _connect_failed(self, condition: Condition, delay: float) -> float:
        """Record and log a failed connect; the seconds to wait before the next attempt."""
        text = condition.text()
        repeated = text == self.info.connect_error
        self.info = replace(self.info, connect_error=text)
        if condition.state == connection.COOLING_DOWN:
            wait = self.refused(text, condition.retry_after)  # logs, counts a failure
        else:
            self.health.failure(text)
            if condition.state == connection.REFUSED:
                wait = self.auth.trip(text)  # one log line per backoff step
            else:
                wait = delay
                # Said at once, then again when it changes (and now and then while it lasts).
                failures = self.connector.reconnects.failures()
                level = logging.DEBUG if repeated and failures % 10 else logging.WARNING
                log.log(level, "%s: %s; next attempt in %.0f s", self.name, text, wait)
        self.connector.failed(condition, wait)
        return wait

    def _try_connect(self) -> Condition | None:
        """One connect attempt that proves the login too (the site name needs it); None: through."""
        self.info = replace(self.info, connect_attempts=self.info.connect_attempts + 1)
        self.pw, condition = self.connector.attempt(self.pw, self.client_kwargs())
        if self._stop.is_set():  # stopped while the attempt ran: nothing to record or announce
            return None
        if condition is not None:
            return condition
        self.auth.reset()
        self.health.success()  # the gateway answered a call that needed the login
        self.connector.succeeded()
        self.info = client.described(self.info, self.pw, self.config, control=self.control_enabled,
                                     simulated=self.simulated)
        self._init_control()
        self._connected.set()
        entry = self.read(SITE_NAME)  # through the window cache, as every reader will
        self.site_name = entry.verdict.value if entry.kind is Kind.DATA else None
        log.info("%s: connected, mode %s", self.name, self.info.mode)
        partial = self.connector.partial()
        if partial:
            self.health.failure(f"refused: {partial}")
            log.warning("%s: refused: %s", self.name, partial)
        return None

    def client_kwargs(self) -> dict[str, Any]:
        """pypowerwall's constructor arguments, from the gateway's settings."""
        return client.client_kwargs(self.config)

    def _init_control(self) -> None:
        """Pick the control backend the way the reference does, plus local /api/operation writes."""
        if not self.control_enabled:
            return
        partial = self.connector.partial()
        if partial:
            self.control_error = f"refused: {partial}"
            return
        self.control_pw, self.control_error = client.control_backend(
            self.info, self.config, self.pw, self.clients, self._control_password)

    # ---- reads -------------------------------------------------------------

    def read(self, source: Source, wait: float | None = None) -> Entry:
        """The window-cached verdict on one source. A reader waits at most PW_TIMEOUT + 1 s (or
        `wait`) once the fetch is sent, and a bounded time for its turn before that."""
        if not self._ready():
            return self.reads.unready(source.key, self._not_connected())
        return self.reads.read(source, wait)

    def prefetch(self, sources: Sequence[Source]) -> None:
        """Start the fetches of several sources without waiting, so they run side by side."""
        if self._ready():
            self.reads.prefetch(sources)

    def _ready(self) -> bool:
        return self._connected.is_set() and self.pw is not None

    def call(self, source: Source, pw: Any = None) -> Verdict:
        """Run one library call now, under the deadline, and judge it (the caller holds a lane)."""
        return self.calls.call(source, self.pw if pw is None else pw)

    def waiter(self) -> AbstractContextManager[bool]:
        """A place among the request threads allowed to wait on this gateway longer than a
        moment (shared with data reads); yields False when all are taken."""
        return self.reads.waiter()

    # ---- control -----------------------------------------------------------

    def control(self, action: Callable[[Any], Any]) -> Any:
        """Run one write through the control backend (`proxy.gateway.writes`: one at a time,
        in order, ahead of reads, the settings read afresh); later reads see its effect.
        None when the gateway refused it."""
        if self.control_pw is None:
            if not self._connected.is_set():
                raise _error(self._not_connected())
            raise GatewayUnavailable(self.control_error or "control backend unavailable")
        verdict = self.calls.blocked(-1)
        if verdict is not None:
            raise _error(verdict)
        return self.writes.run(self.control_pw, action)

    def _written(self, traffic: Traffic) -> None:
        """After a write: the next read starts with fresh library caches and a new window (and a
        login backoff that let the write through lets the next call try)."""
        if self.control_pw is not None:
            library.answered(self.control_pw, traffic)
        self.clients.stamp(traffic.exchanges)
        self.auth.release()
        self.calls.written()
        self.cache.invalidate()

    def control_read(self, key: str, fetch: Callable[[Any], Any]) -> Entry:
        """A read through the control backend (GET /control/*), window cached."""
        control_pw = self.control_pw
        if control_pw is None or control_pw is self.pw:
            return self.read(Source(key, fetch, ANY))
        return self.read(Source(key, lambda _pw: fetch(control_pw), ANY))

    def refused(self, reason: str, retry_after: float | None) -> float:
        """The gateway said 429/503 (to a library call or a passed-through page): start or
        extend the one cooldown every caller honours; returns its length in seconds."""
        return self.calls.refused(reason, retry_after)

    # ---- state for /health and /stats -------------------------------------

    def status(self) -> str:
        """starting | ok | degraded."""
        if not self._connected.is_set():
            return "degraded" if self.auth.steps() else "starting"
        if (self.cooldown.remaining() > 0 or self.auth.steps() or self.health.snapshot().failing
                or self.connector.partial()):
            return "degraded"
        return "ok"

    def connection(self) -> Condition:
        """How the connection stands, in the words of the log lines and the 503 bodies."""
        return self.connector.condition(self._connected.is_set())

    def _not_connected(self) -> Verdict:
        """What a reader gets before the first connection: the reason, never cached."""
        condition = self.connection()
        wait = max(2.0, self.connector.reconnects.next_in(), self.auth.remaining(),
                   self.cooldown.remaining())
        return Verdict(Kind.STARTING, reason=condition.text(), retry_after=wait)

    def transports(self) -> dict[str, Any]:
        """/health transports: each TEDAPI transport's state and auth mode, and control's."""
        healthy = not self.health.snapshot().failing and self.cooldown.remaining() == 0
        return library.transports(self.pw if self.connected else None, self.control_pw,
                                  self.control_enabled, healthy)

    def fallback_view(self) -> dict[str, Any]:
        """The reference's fallback_mode block: the connect loop, while it has not connected."""
        alive = None if self._connected.is_set() else self._loop.is_alive()
        return self.connector.reconnects.view(alive)

    def reset_health(self) -> int:
        """/health/reset: forget counters, cooldowns and last-good data; returns entries dropped."""
        self.health.reset()
        self.cooldown.reset()
        self.endpoints.clear()
        self.calls.reset()
        return self.cache.clear()


def error_for(verdict: Verdict, gateway: Gateway | None = None) -> GatewayUnavailable | GatewayBusy:
    """The typed error a failed verdict becomes; with the gateway, Retry-After as of now
    (a refusal cached earlier in the window knew less of the cooldown)."""
    if gateway is not None and verdict.kind in (Kind.BUSY, Kind.AUTH):
        wait = max(gateway.cooldown.remaining(), gateway.auth.remaining())
        if wait > 0:
            verdict = replace(verdict, retry_after=wait)
    return _error(verdict)


def _error(verdict: Verdict) -> GatewayUnavailable | GatewayBusy:
    if verdict.kind is Kind.STARTING:
        return GatewayStarting(verdict.reason, retry_after=verdict.retry_after or 2.0)
    if verdict.kind in (Kind.BUSY, Kind.AUTH):
        return GatewayBusy(verdict.reason, retry_after=verdict.retry_after or 5.0)
    return GatewayUnavailable(verdict.reason or "gateway unavailable")

