"""`Gateway`: one Powerwall gateway behind the proxy, and the only caller of pypowerwall.

Library calls go in; verdicts come out (`proxy.gateway.outcome`). Each call
runs in the gateway's own small thread pool under a deadline (PW_TIMEOUT for the
whole exchange), at most one per resource at a time and several resources in
parallel. Readers wait a bounded time, and only a bounded number of them at
once, so a stalled gateway can hold a few request threads but never all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from proxy.config import GatewayConfig
from proxy.errors import GatewayBusy, GatewayStarting, GatewayUnavailable
from proxy.gateway import library
from proxy.gateway.cache import Entry, WindowCache
from proxy.gateway.health import AuthBackoff, Cooldown, EndpointStats, Health
from proxy.gateway.outcome import Exchange, Kind, Verdict, judge
from proxy.gateway.sources import ANY, SITE_NAME, Source
from proxy.gateway.traffic import Traffic, install, watching
from proxy.stats import Tally

log = logging.getLogger("proxy.gateway")

CONNECT_BACKOFF_START = 1.0
CONNECT_BACKOFF_CAP = 60.0
CONNECT_CALLS = 4  # a connect makes a few exchanges (login, status, DIN): its deadline covers them
MAX_PARALLEL = 16  # gateway calls of different resources in flight at once (PW_POOL_MAXSIZE caps)
FOLLOWER_GRACE = 1.0  # a reader waits PW_TIMEOUT plus this for a fetch in flight
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
        self.cache = WindowCache(float(config.cache_expire))
        self.cooldown = Cooldown()
        self.auth = AuthBackoff(name=self.name)
        self.health = Health()
        self.endpoints = EndpointStats()
        self.lookups = Tally(limit=4)  # ("hit",): answered from this window's entry; ("miss",)
        self.info = GatewayInfo(tedapi_api_version=config.tedapi_api_version)
        self.pw: Any = None
        self.control_pw: Any = None
        self.control_error: str | None = None
        self.site_name: Any = None
        self.wait = float(config.timeout) + FOLLOWER_GRACE
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the three fields below
        self._failed_window: int | None = None
        self._library_window: int | None = None
        self._native_refused = False  # the gateway said 4xx to the library's local-API energy fetch
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(config.pool_maxsize, MAX_PARALLEL)),
                                        thread_name_prefix=f"gw-{config.id}")
        self._waiters = threading.BoundedSemaphore(max(1, waiters))
        self._probe = threading.Lock()  # one call at a time while the gateway is failing

    # ---- lifecycle -------------------------------------------------------

    def start(self) -> None:
        """Connect in the background so the HTTP server can answer at once."""
        threading.Thread(target=self._connect_loop, name=f"{self.id}-connect", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _connect_loop(self) -> None:
        delay = CONNECT_BACKOFF_START
        while not self._stop.is_set():
            refused = self._try_connect()
            if refused is None:
                return
            if refused:
                wait = self.auth.trip(self.info.connect_error or "login refused")
            else:
                wait, delay = delay, min(delay * 2, CONNECT_BACKOFF_CAP)
                log.warning("%s: not connected (%s); retrying in %.0f s", self.name,
                            self.info.connect_error, wait)
            self._stop.wait(wait)

    def _try_connect(self) -> bool | None:
        """None when connected; else whether the gateway refused our login."""
        self.info = replace(self.info, connect_attempts=self.info.connect_attempts + 1)
        traffic = Traffic(float(self.config.timeout) * CONNECT_CALLS)
        error = None
        with watching(traffic):
            try:
                if self.pw is None:
                    self.pw = self._factory(**self.client_kwargs())
                else:
                    self.pw.connect()
                # pypowerwall keeps a half-made client when a login fails, so ask
                # the gateway itself whether we are really through.
                if not (library.has_client(self.pw) and _answers(self.pw)):
                    error = "the gateway did not answer"
            except Exception as exc:  # a bad setting or an unreachable gateway: report and retry
                error = f"{type(exc).__name__}: {exc}"
        refused = _login_refused(traffic.exchanges)
        if refused is not None:
            error = refused
        if error is not None:
            self.info = replace(self.info, connect_error=error)
            return refused is not None
        self.auth.reset()
        self._describe()
        self._init_control()
        self._connected.set()
        entry = self.read(SITE_NAME)  # best effort: its failure is not news
        self.site_name = entry.verdict.value if entry.kind is Kind.DATA else None
        log.info("%s: connected, mode %s", self.name, self.info.mode)
        return None

    def client_kwargs(self) -> dict[str, Any]:
        """pypowerwall's constructor arguments, from the gateway's settings."""
        c = self.config
        cloud = c.cloud_mode or c.fleetapi  # a file's gateway may ask for the cloud by name
        return {
            "host": "" if cloud else c.host,
            "password": c.password.reveal(),
            "email": c.email,
            "timezone": c.timezone,
            # The proxy's window cache is the only time-based cache; the library's
            # cache only coalesces calls inside one window (see _sync_library).
            "pwcacheexpire": max(c.cache_expire, 0),
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
            # A local gateway that is briefly down must not flip us into cloud mode.
            "failover": not c.host or cloud,
            **({"cloudmode": c.cloud_mode, "fleetapi": c.fleetapi} if cloud else {}),
        }

    def _describe(self) -> None:
        d = library.describe(self.pw)
        self.info = replace(self.info, connected=True, cloudmode=d.cloudmode, fleetapi=d.fleetapi,
                            tedapi_mode=d.tedapi_mode, tedapi=d.tedapi, pw3=d.pw3, siteid=d.siteid,
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
                self.control_pw = self._factory(**(self.client_kwargs() | {
                    "password": password, "gw_pwd": None, "rsa_key_path": None}))
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
        """The window-cached verdict on one source; waits at most PW_TIMEOUT + 1 s (or `wait`)."""
        if not self._connected.is_set() or self.pw is None:
            return self._unready(source.key, Verdict(Kind.STARTING, reason="connecting to the gateway"))
        entry = self.cache.fresh(source.key)
        if entry is not None:
            self.lookups.add(HIT)
            return entry
        self.lookups.add(MISS)
        wait = self.wait if wait is None else wait
        fetch = partial(self.call, source)
        # A normal fetch is over in well under GRACE: everyone waits for it. Past that
        # the gateway is slow, and only so many request threads may keep waiting on it;
        # the rest get the last good copy or a 503 at once, so /health and the other
        # routes always find a free worker.
        entry = self.cache.get(source.key, fetch, self._pool.submit, min(wait, WAIT_GRACE))
        if entry is not None:
            return entry
        if wait <= WAIT_GRACE or not self._waiters.acquire(blocking=False):
            return self._unready(source.key, Verdict(Kind.NO_ANSWER, reason="the gateway is slow to answer"))
        try:
            entry = self.cache.get(source.key, fetch, self._pool.submit, wait - WAIT_GRACE)
        finally:
            self._waiters.release()
        if entry is None:
            timed_out = Verdict(Kind.NO_ANSWER, reason="timed out waiting for the gateway")
            return self._unready(source.key, timed_out)
        return entry

    def prefetch(self, sources: Sequence[Source]) -> None:
        """Start the fetches of several sources without waiting, so they run side by side."""
        if not self._connected.is_set() or self.pw is None:
            return
        for source in sources:
            if self.cache.fresh(source.key) is None:
                self.cache.get(source.key, partial(self.call, source), self._pool.submit, 0.0)

    def _unready(self, key: str, verdict: Verdict) -> Entry:
        """An answer for a reader that did not get a verdict in time (never cached)."""
        last = self.cache.last(key)
        now = self.cache.now()
        return Entry(-2, now, verdict, last.good if last else None, last.good_at if last else 0.0)

    def call(self, source: Source, pw: Any = None) -> Verdict:
        """Run one library call now, under the deadline, and judge it."""
        blocked = self._blocked(self.cache.window())
        if blocked is not None:
            return blocked
        if not self.health.snapshot().failing:
            return self._call(source, pw)
        # While the gateway is failing, calls go one at a time: the first of a window
        # finds out, and the others fail fast behind it instead of each waiting out
        # another timeout against a dead gateway.
        if not self._probe.acquire(timeout=float(self.config.timeout)):
            return Verdict(Kind.NO_ANSWER, reason=self.health.snapshot().last_error or "gateway unavailable")
        try:
            return self._blocked(self.cache.window()) or self._call(source, pw)
        finally:
            self._probe.release()

    def _call(self, source: Source, pw: Any) -> Verdict:
        window = self.cache.window()
        client = self.pw if pw is None else pw
        self._sync_library(client, window)
        library.forget_refusals(client)
        library.prepare(client, self.config.pool_maxsize)
        native_before = library.native_backoff(client)
        traffic = Traffic(float(self.config.timeout), close_connections=self.config.pool_maxsize == 0)
        value: Any = None
        raised: BaseException | None = None
        with watching(traffic):
            try:
                value = source.fetch(client)
            except Exception as exc:
                raised = exc
        pieced = self._pieced(client, traffic.exchanges, native_before)
        verdict = judge(value, raised, traffic.exchanges, traffic.library_errors, source.contract,
                        pieced=pieced)
        if not traffic.exchanges and verdict.kind in (Kind.DATA, Kind.ABSENT):
            self.auth.release()  # if this was the login probe, it proved nothing: the next one may try
            return verdict  # from the library's cache of this window: no news about the gateway
        return self._account(source.key, verdict, _logged_in(traffic.exchanges, self.auth.steps()))

    def _blocked(self, window: int) -> Verdict | None:
        """A verdict without asking the gateway: it is cooling down, refusing us, or unreachable."""
        remaining = self.cooldown.remaining()
        if remaining > 0:
            return Verdict(Kind.BUSY, reason="gateway cooling down after refusing requests",
                           retry_after=remaining)
        with self._lock:
            failed = window != -1 and self._failed_window == window
        if failed:
            # It did not answer earlier in this window: do not queue every other
            # resource behind another full timeout.
            return Verdict(Kind.NO_ANSWER, reason=self.health.snapshot().last_error or "gateway unavailable")
        if not self.auth.admit():
            return Verdict(Kind.AUTH, reason="the gateway refused our login; waiting before trying again",
                           retry_after=self.auth.remaining())
        return None

    def _account(self, key: str, verdict: Verdict, logged_in: bool = True) -> Verdict:
        """Let health, cooldowns and fail-fast hear about a real verdict; `logged_in`: the
        call showed that the gateway accepts our credentials."""
        kind = verdict.kind
        self.endpoints.record(key, ok=kind in (Kind.DATA, Kind.ABSENT))
        if kind in (Kind.DATA, Kind.ABSENT):
            self.health.success()
            self.cooldown.reset()
            if logged_in:
                self.auth.reset()
            else:
                self.auth.release()  # e.g. /api/status needs no login: it proves nothing
            with self._lock:
                self._failed_window = None
        elif kind is Kind.BUSY:
            return replace(verdict, retry_after=self.refused(verdict.reason, verdict.retry_after))
        elif kind is Kind.AUTH:
            seconds = self.auth.trip(verdict.reason)
            self.health.failure(verdict.reason)
            return replace(verdict, retry_after=seconds)
        elif kind is Kind.NO_ANSWER:
            self.health.failure(verdict.reason)
            self.auth.release()
            # Fail fast for the rest of the window in which the failure showed,
            # which is later than the one the call began in when it was slow to fail.
            with self._lock:
                self._failed_window = self.cache.window()
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
        """Run one write through the control backend; later reads see its effect."""
        if self.control_pw is None:
            if not self._connected.is_set():
                raise GatewayStarting("connecting to the gateway", retry_after=2.0)
            raise GatewayUnavailable(self.control_error or "control backend unavailable")
        verdict = self._blocked(-1)
        if verdict is not None:
            raise _error(verdict)
        library.prepare(self.control_pw, self.config.pool_maxsize)
        traffic = Traffic(float(self.config.timeout))
        with watching(traffic):
            try:
                result = action(self.control_pw)
            except (ValueError, TypeError):
                raise
            except Exception as exc:
                raise GatewayUnavailable(f"gateway error ({type(exc).__name__})") from None
        with self._lock:
            self._library_window = None  # the next read starts with fresh library caches
        self.cache.invalidate()
        return result

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
        log.warning("%s: %s; leaving it alone for %.0f s", self.name, reason, seconds)
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
        if self.cooldown.remaining() > 0 or self.auth.steps() or self.health.snapshot().failing:
            return "degraded"
        return "ok"

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
        return GatewayStarting(verdict.reason, retry_after=2.0)
    if verdict.kind in (Kind.BUSY, Kind.AUTH):
        return GatewayBusy(verdict.reason, retry_after=verdict.retry_after or 5.0)
    return GatewayUnavailable(verdict.reason or "gateway unavailable")


def _answers(pw: Any) -> bool:
    try:
        return bool(pw.is_connected())
    except Exception:
        return False


def _logged_in(exchanges: list[Exchange], backoff_steps: int) -> bool:
    """Whether a call proves our credentials work: a login or TEDAPI exchange that
    succeeded (with no backoff running, any good answer will do)."""
    if not backoff_steps:
        return True
    return any(x.is_login and x.status is not None and 200 <= x.status < 300 for x in exchanges)


def _login_refused(exchanges: list[Exchange]) -> str | None:
    for x in exchanges:
        if x.is_login and x.status in (401, 403):
            return f"login refused with HTTP {x.status}"
    return None
