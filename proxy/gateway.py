"""The one place that talks to pypowerwall.

A `Gateway` owns everything gateway-facing: the library client(s), the
window cache, the cooldown and the health counters. Library calls go in;
data or a typed error (`proxy.errors`) comes out. pypowerwall's `None`s,
`"null"` strings, swallowed exceptions and private negative caches stop here.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from proxy.cache import Entry, WindowCache
from proxy.config import Config
from proxy.errors import (
    GatewayBusy,
    GatewayError,
    GatewayStarting,
    GatewayUnavailable,
    NotSupported,
)

log = logging.getLogger("proxy.gateway")

Fetch = Callable[[Any], Any]  # a library call: Powerwall -> value

HEALTH_FAILURE_THRESHOLD = 3  # consecutive real failures before /health says degraded
CONNECT_BACKOFF_START = 1.0
CONNECT_BACKOFF_CAP = 60.0
CLOUD_AUTH_FILES = (".pypowerwall.auth", ".pypowerwall.fleetapi")


class Cooldown:
    """How long to leave a refusing gateway alone: short, growing, capped, Retry-After aware."""

    def __init__(self, base: float = 5.0, cap: float = 300.0, clock: Callable[[], float] = time.monotonic):
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


@dataclass
class HealthCounters:
    consecutive_failures: int = 0
    total_failures: int = 0
    total_successes: int = 0
    last_success_time: float | None = None  # epoch seconds
    last_error: str | None = None
    last_error_time: float | None = None


class Health:
    """Counts only real gateway answers (not cache hits, not calls we skipped)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._c = HealthCounters()

    def success(self) -> None:
        with self._lock:
            self._c.consecutive_failures = 0
            self._c.total_successes += 1
            self._c.last_success_time = time.time()

    def failure(self, reason: str) -> None:
        with self._lock:
            self._c.consecutive_failures += 1
            self._c.total_failures += 1
            self._c.last_error = reason
            self._c.last_error_time = time.time()

    def snapshot(self) -> HealthCounters:
        with self._lock:
            return HealthCounters(**vars(self._c))

    def reset(self) -> None:
        with self._lock:
            self._c = HealthCounters()


@dataclass
class _Observed:
    """What the library's HTTP traffic did during one call (seen by wrapping its adapters)."""

    status: int | None = None
    retry_after: float | None = None
    requests: int = 0
    transport_error: str | None = None
    last_failed: bool = False  # the last exchange got no answer, or a 5xx
    local_api_status: int | None = None  # the last /api/* exchange (0: no answer)
    library_errors: int = 0  # errors pypowerwall logged (and swallowed) during the call


class _LibraryErrors(logging.Handler):
    """Counts the errors pypowerwall logs while a call runs in this thread.

    The library swallows a garbled answer (a protobuf or JSON it cannot parse),
    logs it at ERROR and returns {} as if the gateway had nothing to say.
    """

    current = threading.local()  # .seen: the _Observed of the call running in this thread
    _installed = False
    _lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        seen = getattr(self.current, "seen", None)
        if seen is not None:
            seen.library_errors += 1

    @classmethod
    def install(cls) -> None:
        with cls._lock:
            if not cls._installed:
                logging.getLogger("pypowerwall").addHandler(cls(logging.ERROR))
                cls._installed = True


@dataclass
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


def _parse_retry_after(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None  # an HTTP-date: rare from a gateway; our own backoff applies


_NOT_IN_THIS_MODE = "TIMEOUT!"  # what pypowerwall's TEDAPI mode returns for APIs it lacks


def _uses_bare_requests(pw: Any) -> bool:
    return getattr(getattr(pw, "client", None), "session", None) is requests


def _is_empty(value: Any) -> bool:
    return value is None or value == "null" or (isinstance(value, (dict, list)) and not value)


class Gateway:
    """One Powerwall gateway behind the proxy: client, cache, cooldown, health."""

    def __init__(
        self,
        config: Config,
        *,
        factory: Callable[..., Any] | None = None,
        simulated: bool = False,
        control_password: str = "",
        name: str = "gateway",
    ) -> None:
        self.config = config
        self.name = name
        self.simulated = simulated
        self._control_password = control_password  # --simulate: local writes, TEDAPI reads
        self._factory = factory or _pypowerwall_factory
        self.cache: WindowCache[Any] = WindowCache(float(config.cache_expire))
        self.cooldown = Cooldown()
        self.health = Health()
        self.info = GatewayInfo(tedapi_api_version=config.tedapi_api_version)
        self.pw: Any = None
        self.control_pw: Any = None
        self.control_error: str | None = None
        self.site_name: Any = None
        self._turn = threading.Lock()  # one conversation with the gateway at a time
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._observed = _Observed()
        self._hooked_all = False
        self._library_window: int | None = None
        self._failed_window: int | None = None
        _LibraryErrors.install()
        self._native_refused = False  # the gateway said 4xx to the library's local-API energy fetch

    # ---- lifecycle -------------------------------------------------------

    def start(self) -> None:
        """Connect in the background so the HTTP server can answer at once."""
        threading.Thread(target=self._connect_loop, name=f"{self.name}-connect", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _connect_loop(self) -> None:
        delay = CONNECT_BACKOFF_START
        while not self._stop.is_set():
            if self._try_connect():
                return
            log.warning("%s: not connected (%s); retrying in %.0f s",
                        self.name, self.info.connect_error, delay)
            self._stop.wait(delay)
            delay = min(delay * 2, CONNECT_BACKOFF_CAP)

    def _try_connect(self) -> bool:
        self.info.connect_attempts += 1
        try:
            with self._turn:
                if self.pw is None:
                    self.pw = self._factory(**self.client_kwargs())
                else:
                    self.pw.connect()
                # pypowerwall keeps a half-made client when a login fails, so ask
                # the gateway itself whether we are really through.
                answered = getattr(self.pw, "client", None) is not None and self._answers(self.pw)
        except Exception as exc:  # a bad setting or an unreachable gateway: report and retry
            self.info.connect_error = f"{type(exc).__name__}: {exc}"
            return False
        if not answered:
            self.info.connect_error = "the gateway did not answer"
            return False
        self._describe()
        self._init_control()
        self.info.connect_error = None
        self._connected.set()
        self.site_name = self._quiet(lambda pw: pw.site_name())
        log.info("%s: connected, mode %s", self.name, self.info.mode)
        return True

    @staticmethod
    def _answers(pw: Any) -> bool:
        try:
            return bool(pw.is_connected())
        except Exception:
            return False

    def _quiet(self, fetch: Fetch) -> Any:
        """One best-effort call whose failure is not news (e.g. the site name at start)."""
        try:
            return self.call(fetch)
        except Exception:
            return None

    def client_kwargs(self) -> dict[str, Any]:
        """pypowerwall's constructor arguments, from the reference's variables."""
        c = self.config
        return {
            "host": c.host,
            "password": c.password.reveal(),
            "email": c.email,
            "timezone": c.timezone,
            # The proxy's window cache is the only time-based cache; the library's
            # cache only coalesces calls inside one window (see _sync_library_window).
            "pwcacheexpire": max(c.cache_expire, 0),
            "timeout": c.timeout,
            "poolmaxsize": c.pool_maxsize,
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
            "failover": not c.host,
        }

    def _describe(self) -> None:
        pw, info = self.pw, self.info
        info.connected = True
        info.cloudmode = bool(getattr(pw, "cloudmode", False))
        info.fleetapi = bool(getattr(pw, "fleetapi", False))
        info.tedapi_mode = str(getattr(pw, "tedapi_mode", "off") or "off")
        tedapi = getattr(pw, "tedapi", None)
        info.tedapi = bool(tedapi)
        info.pw3 = bool(getattr(tedapi, "pw3", False)) if tedapi else False
        client = getattr(pw, "client", None)
        info.siteid = getattr(client, "siteid", None) if info.cloudmode else None
        info.counter = getattr(client, "counter", None) if info.cloudmode else None
        info.mode = self._mode_label()

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
            if self.config.control_secret:
                extras.append("control")
            label = f"Local ({'+'.join(extras)})"
        else:
            label = "Local"
        return f"{label} [simulated]" if self.simulated else label

    # ---- control backend -------------------------------------------------

    def _init_control(self) -> None:
        """Pick the control backend the way the reference does, plus local /api/operation writes."""
        if not self.config.control_secret:
            return
        info = self.info
        try:
            if info.cloudmode or info.tedapi_mode == "v1r" or (
                    info.tedapi_mode in ("off", "hybrid") and self.config.password):
                # cloud/FleetAPI/v1r write through the main client; so does a
                # customer-password local client (the gateway's /api/operation).
                self.control_pw = self.pw
            elif self._has_cloud_auth():
                self.control_pw = self._factory(**self._cloud_control_kwargs())
            elif self.config.password or self._control_password:
                password = self.config.password.reveal() or self._control_password
                self.control_pw = self._factory(**(self.client_kwargs() | {
                    "password": password, "gw_pwd": None, "rsa_key_path": None}))
            else:
                self.control_error = "Unable to connect to cloud mode - Run Setup"
        except Exception as exc:
            self.control_error = f"{type(exc).__name__}: {exc}"
        if self.control_pw is not None and getattr(self.control_pw, "client", None) is None:
            self.control_pw = None
            self.control_error = "Unable to connect to cloud mode - Run Setup"

    def _has_cloud_auth(self) -> bool:
        base = self.config.auth_path or "."
        return any(os.path.exists(os.path.join(base, name)) for name in CLOUD_AUTH_FILES)

    def _cloud_control_kwargs(self) -> dict[str, Any]:
        c = self.config
        return {
            "host": "",
            "password": c.password.reveal(),
            "email": c.email,
            "siteid": c.siteid or None,
            "authpath": c.auth_path,
            "authmode": c.auth_mode,
            "cachefile": c.cache_file,
            "auto_select": True,
        }

    # ---- reads -------------------------------------------------------------

    def read(self, key: str, fetch: Fetch, *, empty_ok: bool = False,
             none_ok: bool = False) -> Entry[Any]:
        """The window-cached result of one library call (value or typed error)."""
        return self.cache.get(key, lambda: self.call(fetch, empty_ok=empty_ok, none_ok=none_ok))

    def call(self, fetch: Fetch, *, empty_ok: bool = False, none_ok: bool = False) -> Any:
        """Run one library call now and classify its outcome."""
        pw = self._require_client()
        self.check_cooldown()
        with self._turn:
            self.check_cooldown()
            # The window after waiting our turn, not before: a call queued behind a
            # slow failing one must not make the gateway wait out another timeout.
            window = self.cache.window()
            if window != -1 and self._failed_window == window:
                # The gateway already failed in this window: do not queue
                # every other resource behind another full timeout.
                raise GatewayUnavailable(self.health.snapshot().last_error or "gateway unavailable")
            self._sync_library_window(pw, window)
            self._install_hooks(pw)
            self._observed = _Observed()
            native_backoff = _native_backoff(pw)
            _LibraryErrors.current.seen = self._observed
            try:
                value = fetch(pw)
            except NotSupported:
                raise
            except Exception as exc:
                self._fail(window, f"{type(exc).__name__}: {exc}")
                raise GatewayUnavailable(f"gateway error ({type(exc).__name__})") from None
            finally:
                _LibraryErrors.current.seen = None
            return self._classify(value, window, empty_ok, none_ok,
                                  native_armed=_native_backoff(pw) > native_backoff)

    def _classify(self, value: Any, window: int, empty_ok: bool, none_ok: bool,
                  native_armed: bool = False) -> Any:
        seen = self._observed
        if seen.status in (429, 503):
            seconds = self.cooldown.trip(seen.retry_after)
            self.health.failure(f"gateway answered HTTP {seen.status}")
            log.warning("%s: gateway answered %s; leaving it alone for %.0f s",
                        self.name, seen.status, seconds)
            raise GatewayBusy(f"gateway busy (HTTP {seen.status})", retry_after=seconds)
        if value == _NOT_IN_THIS_MODE:
            raise NotSupported("not available from the gateway in this mode")
        if isinstance(value, dict) and len(value) == 1 and "ERROR" in value:
            raise NotSupported(str(value["ERROR"]))
        garbled = seen.library_errors > 0 and not 400 <= (seen.status or 200) < 500
        if value is None and none_ok and seen.transport_error is None and (seen.status or 200) < 400 \
                and not garbled:
            return None  # e.g. no time remaining while nothing is drawn: a real answer
        if value is None or value == "null" or (not empty_ok and _is_empty(value)):
            self._absent(seen, window)
        if garbled and _is_empty(value):
            # {} because the library could not read the answer, not because the
            # gateway has nothing (that would be a 4xx, or no error at all).
            self._fail(window, "the gateway sent no usable data")
            raise GatewayUnavailable("the gateway sent no usable data")
        self._check_complete(seen, window, native_armed)
        self.health.success()
        self.cooldown.reset()
        self._failed_window = None
        return value

    def _check_complete(self, seen: _Observed, window: int, native_armed: bool) -> None:
        """Refuse a value the library pieced together while the gateway was failing.

        pypowerwall returns what it has when a later request of one call fails: in
        TEDAPI mode /api/meters/aggregates is built from TEDAPI data plus the
        local API's energy counters, and without the latter every energy field is
        a made-up 0. Such a value is an outage, not data.
        """
        if native_armed:
            # The library gave up on the local API's energy counters for 5 minutes.
            # A 4xx means this gateway has none (keep the library's backoff); no
            # answer, a 5xx or garbage (a 200 it could not use) means an outage.
            status = seen.local_api_status
            self._native_refused = status is not None and 400 <= status < 500
            if status is not None and not self._native_refused:
                reason = "the gateway's local API failed part way through an answer"
                self._fail(window, reason)
                raise GatewayUnavailable(reason)
        if seen.last_failed:
            reason = self._reason(seen)
            self._fail(window, reason)
            raise GatewayUnavailable(reason)

    def _absent(self, seen: _Observed, window: int) -> None:
        """No data: decide whether the gateway failed or simply has no such thing."""
        if seen.transport_error is None and (seen.status == 404 or (
                seen.requests == 0 and self._hooked_all)):
            # The gateway (or the library, without asking it) says this does not
            # exist here, e.g. vitals on firmware >= 23.44: not an outage.
            raise NotSupported("not available from the gateway in this mode")
        reason = self._reason(seen)
        self._fail(window, reason)
        raise GatewayUnavailable(reason)

    @staticmethod
    def _reason(seen: _Observed) -> str:
        if seen.transport_error is not None:
            return f"gateway unreachable ({seen.transport_error})"
        if seen.status is not None and seen.status >= 400:
            return f"gateway answered HTTP {seen.status}"
        if seen.requests == 0:
            return "no answer from the gateway"
        return "the gateway sent no usable data"

    def _fail(self, window: int, reason: str) -> None:
        # Fail fast for the rest of the window in which the failure showed, which is
        # later than the one the call began in when the gateway was slow to fail.
        now = self.cache.window()
        self._failed_window = now if now != -1 else window
        self.health.failure(reason)
        log.debug("%s: %s", self.name, reason)

    def _require_client(self) -> Any:
        if not self._connected.is_set() or self.pw is None:
            raise GatewayStarting("connecting to the gateway", retry_after=2.0)
        return self.pw

    def check_cooldown(self) -> None:
        """Raise GatewayBusy while the gateway is to be left alone."""
        remaining = self.cooldown.remaining()
        if remaining > 0:
            raise GatewayBusy("gateway cooling down after refusing requests", retry_after=remaining)

    # ---- library plumbing -----------------------------------------------

    def _sync_library_window(self, pw: Any, window: int) -> None:
        """Start each cache window with empty library caches and no library cooldown.

        The library's own TTL cache would stack on ours (double staleness), and
        its 5-minute negative caches after a 429/503 would keep us dark after
        the gateway is back. Inside one window it still coalesces the calls
        several library methods make for the same data.
        """
        if window == self._library_window and window != -1:
            return
        self._library_window = window
        for obj in _library_objects(pw):
            for attr in ("pwcache", "pwcachetime"):
                store = getattr(obj, attr, None)
                if isinstance(store, dict):
                    store.clear()
            if hasattr(obj, "pwcooldown"):
                obj.pwcooldown = 0
            if not self._native_refused and isinstance(getattr(obj, "_native_fail_until", None),
                                                       (int, float)):
                # Its 5-minute backoff after a failed local-API energy fetch would serve
                # zeros for 5 minutes after an outage; only a gateway that said no keeps it.
                obj._native_fail_until = 0.0

    def _install_hooks(self, pw: Any) -> None:
        """Watch every HTTP exchange the library makes, without changing what it does."""
        sessions = _library_sessions(pw)
        # Without a requests.Session (PW_POOL_MAXSIZE=0) we cannot see the traffic.
        self._hooked_all = bool(sessions) and not _uses_bare_requests(pw)
        for session in sessions:
            if _is_tedapi_session(pw, session) and not getattr(session, "_pwproxy_no_retry", False):
                # urllib3 retries 429/5xx five times with backoff: a retry storm
                # at the moment the gateway asks for calm. We back off ourselves.
                session.mount("https://", HTTPAdapter(pool_connections=1, max_retries=0,
                                                      pool_maxsize=max(1, self.config.pool_maxsize)))
                session._pwproxy_no_retry = True  # type: ignore[attr-defined]
            for adapter in session.adapters.values():
                if not getattr(adapter, "_pwproxy_watched", False):
                    self._watch(adapter)

    def _watch(self, adapter: Any) -> None:
        send = adapter.send

        def watched_send(request: Any, *args: Any, **kwargs: Any) -> Any:
            seen = self._observed
            seen.requests += 1
            local_api = str(getattr(request, "path_url", "")).startswith("/api/")
            try:
                response = send(request, *args, **kwargs)
            except Exception as exc:
                seen.transport_error = type(exc).__name__
                seen.last_failed = True
                if local_api:
                    seen.local_api_status = 0
                raise
            seen.status = response.status_code
            seen.retry_after = _parse_retry_after(response.headers.get("Retry-After"))
            seen.last_failed = response.status_code >= 500
            if local_api:
                seen.local_api_status = response.status_code
            return response

        adapter.send = watched_send
        adapter._pwproxy_watched = True

    # ---- control -----------------------------------------------------------

    def control(self, action: Callable[[Any], Any]) -> Any:
        """Run one write through the control backend; later reads see its effect."""
        if self.control_pw is None:
            if not self._connected.is_set():
                raise GatewayStarting("connecting to the gateway", retry_after=2.0)
            raise GatewayUnavailable(self.control_error or "control backend unavailable")
        self.check_cooldown()
        with self._turn:
            self._observed = _Observed()
            self._install_hooks(self.control_pw)
            try:
                result = action(self.control_pw)
            except (ValueError, TypeError):
                raise
            except Exception as exc:
                raise GatewayUnavailable(f"gateway error ({type(exc).__name__})") from None
            self._library_window = None  # the next read starts with fresh library caches
        self.cache.invalidate()
        return result

    def control_read(self, key: str, fetch: Fetch) -> Entry[Any]:
        """A read through the control backend (GET /control/*), window cached."""
        if self.control_pw is None or self.control_pw is self.pw:
            return self.read(key, fetch, empty_ok=True)
        control_pw = self.control_pw
        return self.cache.get(key, lambda: self.call(lambda _pw: fetch(control_pw), empty_ok=True))

    # ---- state for /health and /stats -------------------------------------

    def status(self) -> str:
        """starting | ok | degraded."""
        if not self._connected.is_set():
            return "starting"
        counters = self.health.snapshot()
        if self.cooldown.remaining() > 0 or counters.consecutive_failures >= HEALTH_FAILURE_THRESHOLD:
            return "degraded"
        return "ok"

    def reset_health(self) -> int:
        """/health/reset: forget counters, cooldown and last-good data; returns entries dropped."""
        self.health.reset()
        self.cooldown.reset()
        self._failed_window = None
        return self.cache.clear()


def reserve_for_backend(pw: Any, level: int) -> float:
    """The reserve to write, on the scale the control backend expects.

    Users (and GET /control/reserve) speak the Tesla app's scale. The local
    /api/operation takes the gateway's raw scale (app x 0.95 + 5) verbatim;
    cloud, FleetAPI and v1r convert by themselves.
    """
    from pypowerwall.local.pypowerwall_local import PyPowerwallLocal

    if isinstance(getattr(pw, "client", None), PyPowerwallLocal):
        return round(level * 0.95 + 5, 2)
    return float(level)


def _library_objects(pw: Any) -> list[Any]:
    objs = [pw, getattr(pw, "client", None), getattr(pw, "tedapi", None)]
    client = getattr(pw, "client", None)
    objs.append(getattr(client, "tedapi", None))
    unique: list[Any] = []
    for obj in objs:
        if obj is not None and obj is not False and all(obj is not u for u in unique):
            unique.append(obj)
    return unique


def _native_backoff(pw: Any) -> float:
    """Until when pypowerwall skips the local API's energy counters (TEDAPI mode)."""
    until = [getattr(obj, "_native_fail_until", 0.0) for obj in _library_objects(pw)]
    return max((float(u) for u in until if isinstance(u, (int, float))), default=0.0)


def _library_sessions(pw: Any) -> list[requests.Session]:
    sessions: list[requests.Session] = []
    for obj in _library_objects(pw):
        if hasattr(obj, "api_session") and obj.api_session is None and hasattr(obj, "_native_get"):
            # TEDAPI's local-API session (energy counters) is made on first use; make
            # it now, as the library would, so its first exchanges are watched too.
            obj.api_session = requests.Session()
            obj.api_session.verify = False
        for attr in ("session", "wifi_session", "api_session"):
            session = getattr(obj, attr, None)
            if isinstance(session, requests.Session) and all(session is not s for s in sessions):
                sessions.append(session)
    return sessions


def _is_tedapi_session(pw: Any, session: requests.Session) -> bool:
    tedapi = getattr(pw, "tedapi", None)
    return bool(tedapi) and (getattr(tedapi, "session", None) is session
                             or getattr(tedapi, "wifi_session", None) is session)


def _pypowerwall_factory(**kwargs: Any) -> Any:
    # Imported here, not at module import: pypowerwall costs ~0.2 s and 30 MB,
    # and nothing should happen at import time.
    import pypowerwall

    return pypowerwall.Powerwall(**kwargs)


def error_retry_after(error: GatewayError) -> int:
    """Whole seconds for a Retry-After header (at least 1)."""
    return max(1, int(error.retry_after + 0.999))
