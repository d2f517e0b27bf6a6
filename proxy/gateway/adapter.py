"""`Gateway`: one Powerwall gateway behind the proxy, and the only caller of pypowerwall.

Library calls go in; verdicts come out (`proxy.gateway.outcome`). Each call
runs in the gateway's lanes (`proxy.gateway.lanes`: at most PW_GATEWAY_CONCURRENCY
at once, writes first and alone, reads oldest first), at most one per resource at
a time, under a deadline (PW_TIMEOUT for the whole exchange) that starts when the
call is sent. The same gateway request is sent once per
window whatever asks (`proxy.gateway.book`). Readers wait a bounded time, and
only a bounded number of them at once, so a stalled gateway can hold a few
request threads but never all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from proxy.config import GatewayConfig
from proxy.errors import GatewayBusy, GatewayStarting, GatewayUnavailable
from proxy.gateway import connection, cookies, library
from proxy.gateway.book import AnswerBook
from proxy.gateway.cache import Claim, Entry, WindowCache
from proxy.gateway.connect import Connector
from proxy.gateway.connection import Condition
from proxy.gateway.health import AuthBackoff, Cooldown, EndpointStats, Health
from proxy.gateway.lanes import Lanes, concurrency
from proxy.gateway.outcome import Exchange, Kind, Verdict, judge
from proxy.gateway.sources import ANY, SITE_NAME, Source, periods
from proxy.gateway.traffic import Traffic, install, watching
from proxy.gateway.writes import Writes
from proxy.stats import Tally

log = logging.getLogger("proxy.gateway")

CONNECT_BACKOFF_START = 1.0  # then doubling, at most the gateway's probe_interval
FOLLOWER_GRACE = 1.0  # a reader waits PW_TIMEOUT plus this for a fetch once it is sent
WAIT_GRACE = 0.25  # any reader waits this long; longer only within the gateway's waiter limit
HIT, MISS = ("hit",), ("miss",)  # window-cache lookups, counted for /metrics


@dataclass(frozen=True, slots=True)
class GatewayInfo:
    """What the gateway client turned out to be, for /stats and /health."""

    connected: bool = False
    mode: str = "Unknown"
    tedapi_mode: str = "off"
    cloudmode: bool = False
    fleetapi: bool = False
    tedapi: bool = False
    pw3: bool = False
    tedapi_api_version: str = "V2024_06"
    tedapi_auth_mode: str = "basic"
    siteid: Any = None
    counter: Any = None
    connect_attempts: int = 0
    connect_error: str | None = None


class Gateway:
    """One gateway: client, window cache, cooldowns, health, its own threads."""

    def __init__(self, config: GatewayConfig, *, factory: Callable[..., Any] | None = None,
                 simulated: bool = False, control_password: str = "", control_enabled: bool = False,
                 waiters: int = 8, name: str | None = None) -> None:
        install()
        self.config = config
        self.id = config.id
        self.name = name or (f"gateway {config.id}" if config.id != "default" else "gateway")
        self.simulated = simulated
        self.control_enabled = control_enabled
        self._control_password = control_password  # --simulate: local writes, TEDAPI reads
        self._factory = factory or library.factory
        self.cache = WindowCache(float(config.cache_expire), periods=periods(config))
        self.book = AnswerBook(self.cache.window)
        self.lanes = Lanes(concurrency(config.concurrency, config.pool_maxsize), name=f"gw-{config.id}")
        self.writes = Writes(self.lanes, float(config.timeout), config.pool_maxsize, self._written)
        self.cooldown = Cooldown()
        self.auth = AuthBackoff(name=self.name)
        self.health = Health()
        self.endpoints = EndpointStats()
        self.lookups = Tally(limit=4)  # ("hit",): answered from this window's entry; ("miss",)
        self.info = GatewayInfo(tedapi_api_version=config.tedapi_api_version,
                                tedapi_auth_mode=config.tedapi_auth_mode)
        self.connector = Connector(config, lambda **kwargs: self._client(kwargs), self.cooldown,
                                   self.auth, book=self.book, exchanged=self._stamp_logins)
        self.pw: Any = None
        self.control_pw: Any = None
        self.control_error: str | None = None
        self.site_name: Any = None
        self._cookie_kwargs: dict[str, Any] = {}  # the client whose login is saved in a file
        self.wait = float(config.timeout) + FOLLOWER_GRACE
        # The longest a reader waits for its fetch to be sent (then `wait` for its answer).
        self.queue_wait = max(float(config.cache_expire), float(config.timeout)) + float(config.timeout)
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the three fields below
        self._failed_window: int | None = None
        self._library_window: int | None = None
        self._native_refused = False  # the gateway said 4xx to the library's local-API energy fetch
        self._waiters = threading.BoundedSemaphore(max(1, waiters))
        self._probe = threading.Lock()  # one call at a time while the gateway is failing
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
        if condition is not None:
            return condition
        self.auth.reset()
        self.health.success()  # the gateway answered a call that needed the login
        self.connector.succeeded()
        self._describe()
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

    def _client(self, kwargs: dict[str, Any]) -> Any:
        """A new library client; its saved login only if these credentials made it."""
        cookies.vouch(kwargs)
        if cookies.applies(kwargs):
            self._cookie_kwargs = kwargs
        client = self._factory(**kwargs)
        cookies.stamp(kwargs)
        return client

    def _stamp_logins(self, exchanges: list[Exchange]) -> None:
        """After a call that logged in, the cookie file it wrote is vouched for."""
        if self._cookie_kwargs and cookies.logged_in((x.path, x.status) for x in exchanges):
            cookies.stamp(self._cookie_kwargs)

    def client_kwargs(self) -> dict[str, Any]:
        """pypowerwall's constructor arguments, from the gateway's settings."""
        c = self.config
        cloud = c.cloud_mode or c.fleetapi  # a file's gateway may ask for the cloud by name
        return {
            "host": "" if cloud else c.host,
            "password": c.password.reveal(),
            "email": c.email,
            "timezone": c.timezone,
            # The proxy's window cache is the only time-based cache, and its answer book
            # coalesces the library's repeat requests at the transport, where every answer
            # (a web page too) is seen: the library's own caches stay off.
            "pwcacheexpire": 0,
            "timeout": c.timeout,
            # Our transport watch needs a requests.Session; PW_POOL_MAXSIZE=0 ("no
            # keep-alive") is honoured by asking the gateway to close instead.
            "poolmaxsize": max(1, c.pool_maxsize),
            "siteid": c.siteid or None,
            "authpath": c.auth_path,
            "authmode": c.auth_mode,
            "cachefile": c.cache_file,
            "auto_select": True,
            "retry_modes": False,  # we retry in the background ourselves
            "gw_pwd": c.gw_pwd.reveal() or None,
            "rsa_key_path": c.rsa_key_path or None,
            "wifi_host": c.wifi_host or None,
            "tedapi_api_version": c.tedapi_api_version,
            "tedapi_auth_mode": c.tedapi_auth_mode,
            # A local gateway that is briefly down must not flip us into cloud mode.
            "failover": not c.host or cloud,
            **({"cloudmode": c.cloud_mode, "fleetapi": c.fleetapi} if cloud else {}),
        }

    def _describe(self) -> None:
        d = library.describe(self.pw)
        self.info = replace(self.info, connected=True, cloudmode=d.cloudmode, fleetapi=d.fleetapi,
                            tedapi_mode=d.tedapi_mode, tedapi=d.tedapi, pw3=d.pw3, siteid=d.siteid,
                            tedapi_auth_mode=d.tedapi_auth_mode or self.config.tedapi_auth_mode,
                            counter=d.counter, connect_error=None)
        self.info = replace(self.info, mode=self._mode_label())

    def _mode_label(self) -> str:
        info = self.info
        if info.fleetapi:
            label = "FleetAPI"
        elif info.cloudmode:
            label = "Cloud"
        elif info.tedapi_mode != "off":
            extras = [info.tedapi_mode]
            if self.config.wifi_host and info.tedapi_mode == "v1r":
                extras.append("wifi")
            if self.control_enabled:
                extras.append("control")
            label = f"Local ({'+'.join(extras)})"
        else:
            label = "Local"
        return f"{label} [simulated]" if self.simulated else label

    # ---- control backend -------------------------------------------------

    def _init_control(self) -> None:
        """Pick the control backend the way the reference does, plus local /api/operation writes."""
        if not self.control_enabled:
            return
        partial = self.connector.partial()
        if partial:
            self.control_error = f"refused: {partial}"
            return
        info, c = self.info, self.config
        try:
            if info.cloudmode or info.tedapi_mode == "v1r" or (
                    info.tedapi_mode in ("off", "hybrid") and c.password):
                # cloud/FleetAPI/v1r write through the main client; so does a
                # customer-password local client (the gateway's /api/operation).
                self.control_pw = self.pw
            elif library.has_cloud_auth(c.auth_path):
                self.control_pw = self._factory(**self._cloud_control_kwargs())
            elif c.password or self._control_password:
                password = c.password.reveal() or self._control_password
                self.control_pw = self._client(self.client_kwargs() | {
                    "password": password, "gw_pwd": None, "rsa_key_path": None})
            else:
                self.control_error = "Unable to connect to cloud mode - Run Setup"
        except Exception as exc:
            self.control_error = f"{type(exc).__name__}: {exc}"
        if self.control_pw is not None and not library.has_client(self.control_pw):
            self.control_pw = None
            self.control_error = "Unable to connect to cloud mode - Run Setup"

    def _cloud_control_kwargs(self) -> dict[str, Any]:
        c = self.config
        return {"host": "", "password": c.password.reveal(), "email": c.email,
                "siteid": c.siteid or None, "authpath": c.auth_path, "authmode": c.auth_mode,
                "cachefile": c.cache_file, "auto_select": True}

    # ---- reads -------------------------------------------------------------

    def read(self, source: Source, wait: float | None = None) -> Entry:
        """The window-cached verdict on one source. A reader waits at most PW_TIMEOUT + 1 s (or
        `wait`) once the fetch is sent, and a bounded time for its turn before that."""
        if not self._connected.is_set() or self.pw is None:
            return self._unready(source.key, self._not_connected())
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
        return self._unready(source.key, late)

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
        if not self._connected.is_set() or self.pw is None:
            return
        for source in sources:
            if self.cache.fresh(source.key) is None:
                self.cache.claim(source.key, partial(self._fetch, source), self.lanes.submit)

    def _unready(self, key: str, verdict: Verdict) -> Entry:
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
            return self.call(source)

    def call(self, source: Source, pw: Any = None) -> Verdict:
        """Run one library call now, under the deadline, and judge it (the caller holds a lane)."""
        blocked = self._blocked(self.cache.window())
        if blocked is not None:
            return blocked
        if not self.health.snapshot().failing:
            return self._call(source, pw)
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
            return self._call(source, pw)
        finally:
            self._probe.release()

    def _call(self, source: Source, pw: Any) -> Verdict:
        window = self.cache.window()
        client = self.pw if pw is None else pw
        self._sync_library(client, window)
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
        self._stamp_logins(traffic.exchanges)
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

    def _blocked(self, window: int) -> Verdict | None:
        """A verdict without asking the gateway: it is cooling down, refusing us, or unreachable."""
        held = self._held(window)
        if held is not None:
            return held
        if not self.auth.admit():
            return Verdict(Kind.AUTH, reason=self.connection().text(), retry_after=self.auth.remaining())
        return None

    def _held(self, window: int) -> Verdict | None:
        remaining = self.cooldown.remaining()
        if remaining > 0:
            return Verdict(Kind.BUSY, reason=self.connection().text(), retry_after=remaining)
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
            with self._lock:
                self._failed_window = None
            self.connector.answered(None)
        elif kind is Kind.BUSY:
            seconds = self.refused(verdict.reason, verdict.retry_after)
            return replace(verdict, reason=self.connection().text(), retry_after=seconds)
        elif kind is Kind.AUTH:
            seconds = self.auth.trip(verdict.reason)
            self.health.failure(verdict.reason)
            return replace(verdict, reason=self.connection().text(), retry_after=seconds)
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

    # ---- control -----------------------------------------------------------

    def control(self, action: Callable[[Any], Any]) -> Any:
        """Run one write through the control backend (`proxy.gateway.writes`: one at a time,
        in order, ahead of reads, the settings read afresh); later reads see its effect.
        None when the gateway refused it."""
        if self.control_pw is None:
            if not self._connected.is_set():
                raise _error(self._not_connected())
            raise GatewayUnavailable(self.control_error or "control backend unavailable")
        verdict = self._blocked(-1)
        if verdict is not None:
            raise _error(verdict)
        return self.writes.run(self.control_pw, action)

    def _written(self, traffic: Traffic) -> None:
        """After a write: the next read starts with fresh library caches and a new window (and a
        login backoff that let the write through lets the next call try)."""
        if self.control_pw is not None:
            library.answered(self.control_pw, traffic)
        self._stamp_logins(traffic.exchanges)
        self.auth.release()
        with self._lock:
            self._library_window = None
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
        seconds = self.cooldown.trip(retry_after)
        self.health.failure(reason)
        self.connector.busy(reason)
        log.warning("%s: %s; leaving it alone for %.0f s", self.name,
                    reason if reason.startswith(connection.COOLING_DOWN) else
                    f"{connection.COOLING_DOWN}: {reason}", seconds)
        return seconds

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

    def check_cooldown(self) -> None:
        """Raise GatewayBusy while the gateway is to be left alone."""
        remaining = self.cooldown.remaining()
        if remaining > 0:
            raise GatewayBusy("gateway cooling down after refusing requests", retry_after=remaining)

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
        with self._lock:
            self._failed_window = None
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


def _logged_in(exchanges: list[Exchange], backoff_steps: int) -> bool:
    """Whether a call proves our credentials work: a login or TEDAPI exchange that
    succeeded (with no backoff running, any good answer will do)."""
    if not backoff_steps:
        return True
    return any(x.is_login and x.status is not None and 200 <= x.status < 300 for x in exchanges)
