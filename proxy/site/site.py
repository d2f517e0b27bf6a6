"""A `Site`: one gateway as the rest of the proxy sees it.

Routes, streams, scrapes and MQTT read a site, never the gateway adapter
directly. `read` applies the degradation rule in one place: data, absent
(`None`), the last good copy marked stale while it is younger than PW_CACHE_TTL,
or the typed error.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from proxy.config import GatewayConfig
from proxy.errors import GatewayError, NotSupported, UnknownGateway
from proxy.gateway import Gateway, Kind, error_for
from proxy.gateway.registry import Registry
from proxy.gateway.sources import Source
from proxy.reports import Reports
from proxy.stats import Stats


class State(Enum):
    DATA = "data"
    ABSENT = "absent"  # the gateway answered, with nothing: shown as null
    UNAVAILABLE = "unavailable"  # no answer and no last good copy young enough


@dataclass(frozen=True, slots=True)
class Reading:
    """One source's value for one reader."""

    state: State
    value: Any = None
    at: float | None = None  # monotonic time of the gateway data (None when unavailable)
    stale: bool = False
    error: GatewayError | None = None


@dataclass(frozen=True, slots=True)
class Shaping:
    """How derived payloads treat the numbers (PW_NEG_SOLAR, PW_SITE_ZERO_THRESHOLD)."""

    neg_solar: bool = True
    zero_threshold: int = 0


@dataclass(frozen=True, slots=True)
class Rendered:
    """A route's encoded body plus where its data came from (cached per window)."""

    body: bytes
    content_type: str = "application/json"
    data_at: float | None = None  # monotonic time of the oldest gateway data used
    stale: bool = False


class Renders:
    """Encoded bodies per route and window, so every poller gets the same bytes; bounded."""

    def __init__(self, max_keys: int = 512) -> None:
        self._lock = threading.Lock()
        self._max = max_keys
        self._items: dict[Hashable, tuple[int, Rendered]] = {}

    def get(self, key: Hashable, window: int) -> Rendered | None:
        item = self._items.get(key)  # no lock: a dict read is atomic, items are immutable
        if item is not None and item[0] == window and window != -1:
            return item[1]
        return None

    def put(self, key: Hashable, window: int, rendered: Rendered) -> None:
        with self._lock:
            if key not in self._items and len(self._items) >= self._max:
                self._items.pop(next(iter(self._items)))
            self._items[key] = (window, rendered)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class Site:
    """One gateway: its id, settings, shaping, and reads with the degradation rule."""

    def __init__(self, gateway: Gateway, *, cache_ttl: int, graceful: bool = True,
                 shaping: Shaping | None = None) -> None:
        self.gateway = gateway
        self.cache_ttl = cache_ttl
        self.graceful = graceful
        self.shaping = shaping or Shaping()
        self.renders = Renders()
        self.stats = Stats()  # this gateway's requests (the app's own Stats counts them all)

    @property
    def id(self) -> str:
        return self.gateway.id

    @property
    def config(self) -> GatewayConfig:
        return self.gateway.config

    def window(self) -> int:
        return self.gateway.cache.window()

    def age(self, at: float) -> float:
        return self.gateway.cache.age(at)

    def next_window_in(self) -> float:
        """Seconds until the next cache window starts (1 s when caching is off)."""
        cache = self.gateway.cache
        period = cache.period
        if period <= 0:
            return 1.0
        return period - cache.now() % period

    def read(self, source: Source, wait: float | None = None) -> Reading:
        """Data, absent, the last good copy (stale) within PW_CACHE_TTL, or the error."""
        entry = self.gateway.read(source, wait)
        kind = entry.kind
        if kind is Kind.DATA:
            return Reading(State.DATA, entry.verdict.value, entry.at)
        if kind is Kind.ABSENT:
            return Reading(State.ABSENT, None, entry.at)
        if kind is Kind.NOT_SUPPORTED:
            raise NotSupported(entry.verdict.reason)
        if self.graceful and entry.good is not None and self.age(entry.good_at) <= self.cache_ttl:
            return Reading(State.DATA, entry.good, entry.good_at, stale=True)
        return Reading(State.UNAVAILABLE, error=error_for(entry.verdict, self.gateway))

    def read_all(self, sources: Sequence[Source]) -> list[Reading]:
        """Several sources at once: their fetches run in parallel, the waits share one deadline."""
        if len(sources) > 1:
            self.gateway.prefetch(sources)
        deadline = self.gateway.cache.now() + self.gateway.wait
        return [self.read(s, max(0.0, deadline - self.gateway.cache.now())) for s in sources]


class Sites(Registry[Site]):
    """Every site by gateway id, the default one first; fixed once built.

    With a `Reports`, the sites report their gateways' counters as "gateways" (read by
    /metrics; /stats and /health show each gateway in their own words)."""

    def __init__(self, items: Sequence[Site], reports: Reports | None = None) -> None:
        super().__init__(items)
        if reports is not None:
            reports.register("gateways", self.report, pages=())

    def find(self, gateway_id: str) -> Site:
        """The site an outside id names (a path segment, ?gw=, a topic level); UnknownGateway
        ("Gateway not found", 404) when none does."""
        site = self.get(gateway_id)
        if site is None:
            raise UnknownGateway()
        return site

    def report(self) -> dict[str, Any]:
        """Each gateway's counters: calls, failures, cooldown and login backoff, cache lookups."""
        return {site.id: _counters(site.gateway) for site in self}


def _counters(gateway: Gateway) -> dict[str, Any]:
    health = gateway.health.snapshot()
    return {
        "requests": health.total_successes + health.total_failures,
        "failures": health.total_failures,
        "cooldown_seconds": gateway.cooldown.remaining(),
        "login_backoff_seconds": gateway.auth.remaining(),
        "cache_hits": gateway.lookups.get(("hit",)),
        "cache_misses": gateway.lookups.get(("miss",)),
    }
