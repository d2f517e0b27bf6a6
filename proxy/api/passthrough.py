"""The passthrough to the gateway's own web UI, shielded like the data routes.

A path the proxy does not serve itself is fetched from the gateway's web server
(no credentials, no cookies either way) and its answer kept:

- once per cache period (`PW_CACHE_EXPIRE`, at least 1 s) per path and query,
  however many browsers ask: the first asker fetches, the others wait for it
  (a bounded time) and share the answer; images, styles, scripts and fonts are
  kept for 10 minutes. A 404 is an answer too, and kept like a page.
- in a cache bounded by entries and bytes (least recently used go first).
- 429/503 from the gateway start the gateway's cooldown, the same one data
  routes honour; while it runs no page request reaches the gateway: the last
  copy is served (`X-Cache: STALE`), else a 503 with `Retry-After`.
- at most `FETCHES_PER_PERIOD` gateway fetches per period, so a scan of random
  paths cannot become a scan of the gateway; past it, the last copy or a 503.
- bodies are read in chunks up to `MAX_BODY`; a bigger one is a 502, never kept.

`Passthrough` is built once per gateway in `main`; its parts each own one lock
and none is held across network I/O.
"""

from __future__ import annotations

import http.cookiejar
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

import requests
import urllib3

from proxy.api.web import cache_control, inject
from proxy.errors import GatewayBusy, GatewayUnavailable, HTTPError, ProxyError
from proxy.gateway import Gateway
from proxy.httpd.types import Response

log = logging.getLogger("proxy.passthrough")

Clock = Callable[[], float]

MAX_BODY = 8 * 1024 * 1024  # one answer, as read from the gateway
MAX_ENTRIES = 256
MAX_BYTES = 32 * 1024 * 1024  # all kept answers together
ENTRY_OVERHEAD = 512  # bytes charged per entry beyond its body and headers
FETCHES_PER_PERIOD = 32  # gateway fetches of pages (any path) per cache period
MIN_PERIOD = 1.0
STATIC_KEEP = 600.0  # seconds an image, style, script or font is kept
CHUNK = 64 * 1024
WAIT_GRACE = 0.25  # any asker waits this long for a fetch in flight; longer only with a waiter place
FOLLOWER_GRACE = 1.0  # an asker waits at most PW_TIMEOUT plus this

BUSY_STATUSES = (429, 503)
STATIC_SUFFIXES = frozenset({
    ".css", ".js", ".mjs", ".map", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".ico", ".webp",
    ".avif", ".bmp", ".woff", ".woff2", ".ttf", ".otf", ".eot"})
STATIC_TYPES = ("text/css", "application/javascript", "text/javascript", "image/", "font/",
                "application/font", "application/x-font", "application/vnd.ms-fontobject")
# Headers from the gateway that are its own business, or that we recompute.
DROP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length",
                  "content-encoding", "set-cookie", "server", "date", "strict-transport-security",
                  "upgrade", "content-type", "cache-control", "age", "x-cache", "warning"})

TOO_MANY = "too many different gateway pages asked for; try again later"
SLOW = "the gateway's web UI is slow to answer"
COOLING = "gateway cooling down after refusing requests"


# ---- values ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Answer:
    """What the gateway answered for one target, ready to relay (HTML already styled)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    at: float  # monotonic time it arrived


@dataclass(frozen=True, slots=True)
class Failure:
    """Why there is no fresh answer: the gateway sent nothing usable, refused, or was spared."""

    status: int  # 502: an answer we will not relay (too large); 503 otherwise
    message: str
    retry_after: float = 5.0
    busy: bool = False  # the gateway is to be left alone (cooldown, fetch limit)

    def error(self) -> ProxyError:
        if self.status == 502:
            return HTTPError(502, self.message)
        if self.busy:
            return GatewayBusy(self.message, retry_after=self.retry_after)
        return GatewayUnavailable(self.message, retry_after=self.retry_after)


@dataclass(frozen=True, slots=True)
class Slot:
    """One target's cache entry: its newest answer, and whether the newest fetch failed."""

    answer: Answer | None
    failure: Failure | None
    until: float  # monotonic: no new fetch of this target before then

    @property
    def size(self) -> int:
        if self.answer is None:
            return ENTRY_OVERHEAD
        return ENTRY_OVERHEAD + len(self.answer.body) + sum(
            len(k) + len(v) for k, v in self.answer.headers)


@dataclass(slots=True)
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    slot: Slot | None = None  # what the fetch left in the cache
    failure: Failure | None = None  # why nothing was fetched


def is_static(path: str, kind: str) -> bool:
    """An image, style, script or font, by its suffix or its content type."""
    if PurePosixPath(path).suffix.lower() in STATIC_SUFFIXES:
        return True
    return kind.lower().startswith(STATIC_TYPES)


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After given in seconds (the HTTP-date form is ignored)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(min(int(value.strip()), 86400))


# ---- state -------------------------------------------------------------------------------------

class PageCache:
    """Answers by target, bounded by entries and bytes (least recently used go first), with
    one fetch in flight per target."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES,
                 clock: Clock = time.monotonic) -> None:
        self._max_entries, self._max_bytes, self._clock = max_entries, max_bytes, clock
        self._lock = threading.Lock()
        self._slots: OrderedDict[str, Slot] = OrderedDict()
        self._bytes = 0
        self._flights: dict[str, _Flight] = {}

    def now(self) -> float:
        return self._clock()

    def get(self, key: str) -> Slot | None:
        with self._lock:
            slot = self._slots.get(key)
            if slot is not None:
                self._slots.move_to_end(key)
            return slot

    def join(self, key: str) -> tuple[Slot | _Flight, bool]:
        """A fresh slot; or the fetch in flight to wait for; or a new flight to lead (True)."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is not None and self._clock() < slot.until:
                return slot, False
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = _Flight()
            return flight, True

    def finish(self, key: str, flight: _Flight, slot: Slot | None, failure: Failure | None) -> None:
        """The leader is done: keep its slot (if any) and wake everyone waiting."""
        with self._lock:
            if slot is not None:
                self._put(key, slot)
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight.slot, flight.failure = slot, failure
        flight.done.set()

    def _put(self, key: str, slot: Slot) -> None:
        old = self._slots.pop(key, None)
        if old is not None:
            self._bytes -= old.size
        if slot.size > self._max_bytes:
            return
        self._slots[key] = slot
        self._bytes += slot.size
        while len(self._slots) > self._max_entries or self._bytes > self._max_bytes:
            _, dropped = self._slots.popitem(last=False)
            self._bytes -= dropped.size

    def usage(self) -> tuple[int, int]:
        """(entries, bytes) kept."""
        with self._lock:
            return len(self._slots), self._bytes


class FetchBudget:
    """At most `limit` gateway fetches per period; a period starts with the first fetch after
    the previous one ended."""

    def __init__(self, limit: int, period: float, clock: Clock = time.monotonic) -> None:
        self._limit, self._period, self._clock = limit, period, clock
        self._lock = threading.Lock()
        self._start = -float("inf")
        self._used = 0

    def take(self) -> float:
        """0.0 when a fetch may go out now (and counts it); else seconds until one may."""
        with self._lock:
            now = self._clock()
            if now >= self._start + self._period:
                self._start, self._used = now, 0
            if self._used >= self._limit:
                return max(0.001, self._start + self._period - now)
            self._used += 1
            return 0.0


# ---- the passthrough -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Fetched:
    status: int
    headers: dict[str, Any]
    body: bytes


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


class Passthrough:
    """GETs of the gateway's own web pages, cached, single-flight, cooldown-aware and capped."""

    def __init__(self, gateway: Gateway, *, tags: bytes, browser_cache: int = 0,
                 clock: Clock = time.monotonic, cache: PageCache | None = None,
                 fetches_per_period: int = FETCHES_PER_PERIOD, max_body: int = MAX_BODY) -> None:
        self.gateway = gateway
        self.max_body = max_body
        self.tags = tags
        self.browser_cache = browser_cache
        self.period = max(float(gateway.config.cache_expire), MIN_PERIOD)
        self.timeout = float(gateway.config.timeout)
        self.wait = self.timeout + FOLLOWER_GRACE
        self._clock = clock
        self.cache = cache or PageCache(clock=clock)
        self.budget = FetchBudget(fetches_per_period, self.period, clock)
        self._lock = threading.Lock()
        self._session: requests.Session | None = None

    def get(self, path: str, query: str) -> Response:
        """The gateway's answer for `path` (and raw `query`), from the cache when it can be."""
        host = self.gateway.config.host
        if not host or not self.gateway.connected:
            raise HTTPError(404, "Not Found")
        # The target as the gateway will see it is the key: one entry per gateway resource.
        key = quote(path, safe=SAFE) + (f"?{query}" if query else "")
        joined, lead = self.cache.join(key)
        if isinstance(joined, Slot):
            return self._serve(joined)
        if lead:
            return self._lead(key, joined, path, f"https://{host}{key}")
        return self._follow(key, joined)

    # ---- asking the gateway ----

    def _lead(self, key: str, flight: _Flight, path: str, url: str) -> Response:
        slot: Slot | None = None
        failure: Failure | None = None
        old = self.cache.get(key)
        try:
            with self.gateway.waiter() as allowed:
                failure = self._spare(allowed)
                if failure is None:
                    slot, failure = self._fetch(path, url, old)
        finally:
            self.cache.finish(key, flight, slot, failure)
        return self._serve(slot, fetched=True) if slot is not None else self._last(old, failure)

    def _spare(self, allowed: bool) -> Failure | None:
        """Why the gateway is not to be asked now, if it is not."""
        cooling = self.gateway.cooldown.remaining()
        if cooling > 0:
            return Failure(503, COOLING, retry_after=cooling, busy=True)
        if not allowed:
            return Failure(503, SLOW)
        wait = self.budget.take()
        if wait > 0:
            return Failure(503, TOO_MANY, retry_after=wait, busy=True)
        return None

    def _fetch(self, path: str, url: str, old: Slot | None) -> tuple[Slot | None, Failure | None]:
        """One request to the gateway; the slot to keep, or why there is none."""
        previous = old.answer if old is not None else None
        try:
            fetched = self._download(url)
        except _TooLarge:
            failure = Failure(502, "gateway page too large")
            return Slot(previous, failure, self._clock() + self.period), failure
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, _TooSlow) as exc:
            # The body is read from urllib3 directly, whose errors requests does not wrap.
            failure = Failure(503, f"gateway web UI unreachable ({type(exc).__name__})")
            return Slot(previous, failure, self._clock() + self.period), failure
        if fetched.status in BUSY_STATUSES:
            reason = f"gateway answered HTTP {fetched.status} to a page request"
            header = fetched.headers.get("Retry-After")
            seconds = self.gateway.refused(reason, retry_after_seconds(
                str(header) if header is not None else None))
            return None, Failure(503, COOLING, retry_after=seconds, busy=True)
        answer = self._answer(fetched)
        static = answer.status == 200 and is_static(path, _kind(fetched.headers))
        keep = max(STATIC_KEEP, self.period) if static else self.period
        return Slot(answer, None, answer.at + keep), None

    def _download(self, url: str) -> _Fetched:
        """GET with the body read in chunks: never more than max_body, never past the deadline;
        in one of the gateway's lanes (its data calls and pages share the in-flight limit)."""
        with self.gateway.lanes.turn(timeout=self.timeout) as admitted:
            if not admitted:
                raise _TooSlow
            return self._get(url)

    def _get(self, url: str) -> _Fetched:
        deadline = self._clock() + self.timeout
        session = self._session_for()
        with session.get(url, verify=False, timeout=self.timeout, stream=True, allow_redirects=False,
                         headers={"Accept-Encoding": "identity"}) as r:
            declared = str(r.headers.get("Content-Length", ""))
            if declared.isdigit() and int(declared) > self.max_body:
                raise _TooLarge
            body = bytearray()
            while chunk := r.raw.read(min(CHUNK, self.max_body + 1 - len(body)), decode_content=True):
                body += chunk
                if len(body) > self.max_body:
                    raise _TooLarge
                if self._clock() > deadline:
                    raise _TooSlow
            return _Fetched(r.status_code, dict(r.headers), bytes(body))

    def _answer(self, fetched: _Fetched) -> Answer:
        kind = _kind(fetched.headers)
        body = fetched.body
        if kind.lower().startswith("text/html"):
            body = inject(body, self.tags)
        headers = [(k, str(v)) for k, v in fetched.headers.items() if k.lower() not in DROP]
        headers += [("Content-Type", kind), cache_control(self.browser_cache, kind)]
        return Answer(fetched.status, tuple(headers), body, self._clock())

    def _session_for(self) -> requests.Session:
        with self._lock:
            if self._session is None:
                self._session = requests.Session()
                self._session.cookies.set_policy(_NoCookies())
            return self._session

    # ---- waiting for another asker's fetch ----

    def _follow(self, key: str, flight: _Flight) -> Response:
        # A normal fetch is over in well under the grace; past it the gateway is slow, and
        # only so many request threads may keep waiting on it (the gateway's waiter places).
        if not flight.done.wait(min(self.wait, WAIT_GRACE)):
            with self.gateway.waiter() as allowed:
                if not allowed or not flight.done.wait(self.wait - WAIT_GRACE):
                    return self._last(self.cache.get(key), Failure(503, SLOW))
        if flight.slot is not None:
            return self._serve(flight.slot)
        return self._last(self.cache.get(key), flight.failure or Failure(503, SLOW))

    # ---- answering ----

    def _serve(self, slot: Slot, fetched: bool = False) -> Response:
        if slot.failure is not None or slot.answer is None:
            return self._last(slot, slot.failure or Failure(503, SLOW))
        return self._relay(slot.answer, "MISS" if fetched else "HIT")

    def _last(self, slot: Slot | None, failure: Failure | None) -> Response:
        """The last copy, marked stale; else the failure as an error."""
        if slot is not None and slot.answer is not None:
            return self._relay(slot.answer, "STALE")
        raise (failure or Failure(503, SLOW)).error()

    def _relay(self, answer: Answer, state: str) -> Response:
        if answer.status == 404:
            # Unknown to us and to the gateway: our JSON 404, not its plain-text page.
            raise HTTPError(404, "Not Found")
        age = int(max(0.0, self._clock() - answer.at))
        headers = [*answer.headers, ("Age", str(age)), ("X-Cache", state)]
        if state == "STALE":
            headers.append(("Warning", '110 - "Response is Stale"'))
        return Response(answer.status, headers, answer.body)


SAFE = "/:@!$&()*+,;=-._~"  # a decoded "?" or "#" in a path stays part of the path


def _kind(headers: dict[str, Any]) -> str:
    return str(headers.get("Content-Type", "application/octet-stream"))


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """A cookie policy that accepts nothing, so gateway cookies never stick or leak."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False
