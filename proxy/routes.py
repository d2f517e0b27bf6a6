"""The route table: one row per GET/POST route of the reference, plus ours.

Search this file for a path to find its handler. Data routes are `cached`:
rendered once per cache window from window-cached gateway readings, then
served as the same bytes to every poller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy import payloads, status_pages
from proxy.app import CSV, App, Call, Rendered, Route, json_bytes
from proxy.control import CONTROL_ROUTES
from proxy.errors import GatewayError, HTTPError, NotSupported

Fetch = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Source:
    """One library call whose result is shared, per cache window, by every route that needs it."""

    key: str
    fetch: Fetch
    empty_ok: bool = False  # {} / [] is a real answer (e.g. no alerts)
    none_ok: bool = False  # None is a real answer (e.g. no time remaining)


def poll(path: str) -> Source:
    return Source(f"poll:{path}", lambda pw: pw.poll(path), empty_ok=True)


# Not poll(): an empty aggregates answer is a failure, not "nothing to report".
AGGREGATES = Source("poll:/api/meters/aggregates", lambda pw: pw.poll("/api/meters/aggregates"))
SOE = Source("poll:/api/system_status/soe", lambda pw: pw.poll("/api/system_status/soe"))
GRID_STATUS_RAW = Source("poll:/api/system_status/grid_status",
                         lambda pw: pw.poll("/api/system_status/grid_status"))
LEVEL = Source("level", lambda pw: pw.level())
LEVEL_SCALED = Source("level:scaled", lambda pw: pw.level(scale=True))
GRID_STATUS = Source("grid_status", lambda pw: pw.grid_status())
GRID_STATUS_NUMERIC = Source("grid_status:numeric", lambda pw: pw.grid_status("numeric"))
VITALS = Source("vitals", lambda pw: pw.vitals())
STRINGS = Source("strings", lambda pw: pw.strings(), empty_ok=True)
TEMPS = Source("temps", lambda pw: pw.temps(), empty_ok=True)
ALERTS = Source("alerts", lambda pw: pw.alerts(), empty_ok=True)
SYSTEM_STATUS = Source("system_status", lambda pw: pw.system_status())
RESERVE = Source("reserve", lambda pw: pw.get_reserve())
TIME_REMAINING = Source("time_remaining", lambda pw: pw.get_time_remaining(), none_ok=True)
VERSION = Source("version", lambda pw: pw.version())
FANS = Source("fans", lambda pw: pw.tedapi.get_fan_speeds() if pw.tedapi else {}, empty_ok=True)


class Reader:
    """Reads sources for one rendering and remembers how old and how stale the data is."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.gateway = app.gateway
        self.data_at: float | None = None
        self.stale = False

    def get(self, source: Source) -> Any:
        """The value, the last good value (marked stale) within PW_CACHE_TTL, or the error."""
        entry = self.gateway.read(source.key, source.fetch, empty_ok=source.empty_ok,
                                  none_ok=source.none_ok)
        if entry.error is None:
            self._note(entry.fetched_at, stale=False)
            return entry.value
        config = self.app.config
        if (config.graceful_degradation and entry.good is not None
                and self.gateway.cache.age(entry.good_at) <= config.cache_ttl):
            self._note(entry.good_at, stale=True)
            return entry.good
        raise entry.error

    def optional(self, source: Source) -> Any:
        """A secondary value: None when the gateway cannot give it (shown as JSON null)."""
        try:
            return self.get(source)
        except (GatewayError, NotSupported):
            return None

    def csv_optional(self, source: Source) -> Any:
        """A secondary CSV value: None (written 0, as the reference does) only when the
        gateway has no such value. CSV has no null, so a value lost to an outage
        fails the route (stale copy, then 503) instead of becoming a made-up 0."""
        try:
            return self.get(source)
        except NotSupported:
            return None

    def _note(self, at: float, *, stale: bool) -> None:
        self.data_at = at if self.data_at is None else min(self.data_at, at)
        self.stale = self.stale or stale

    def render(self, body: bytes | str, content_type: str = "application/json") -> Rendered:
        data = body.encode() if isinstance(body, str) else body
        return Rendered(data, content_type, self.data_at, self.stale)

    def json(self, obj: Any) -> Rendered:
        return self.render(json_bytes(obj))

    def pretty(self, obj: Any) -> Rendered:
        return self.render(payloads.pretty_json(obj))


def _shaping(app: App) -> dict[str, Any]:
    return {"neg_solar": app.config.neg_solar, "zero_threshold": app.config.site_zero_threshold}


# ---- /aggregates, /soe and the other meter routes ---------------------------

def get_aggregates(app: App, call: Call) -> Rendered:
    r = Reader(app)
    return r.json(payloads.process_aggregates(r.get(AGGREGATES), **_shaping(app)))


def get_soe(app: App, call: Call) -> Rendered:
    r = Reader(app)
    return r.json(r.get(SOE))


def get_api_soe(app: App, call: Call) -> Rendered:
    r = Reader(app)
    return r.json({"percentage": r.get(LEVEL_SCALED)})


def get_grid_status(app: App, call: Call) -> Rendered:
    r = Reader(app)
    return r.json(r.get(GRID_STATUS_RAW))


def get_csv(app: App, call: Call) -> Rendered:
    r = Reader(app)
    agg = r.get(AGGREGATES)
    body = payloads.csv_body(agg, r.csv_optional(LEVEL), headers=call.flag("headers"), **_shaping(app))
    return r.render(body, CSV)


def get_csv_v2(app: App, call: Call) -> Rendered:
    r = Reader(app)
    agg = r.get(AGGREGATES)
    grid = r.csv_optional(GRID_STATUS)
    body = payloads.csv_v2_body(agg, r.csv_optional(LEVEL), None if grid is None else grid == "UP",
                                r.csv_optional(RESERVE), headers=call.flag("headers"), **_shaping(app))
    return r.render(body, CSV)


def get_json(app: App, call: Call) -> Rendered:
    r = Reader(app)
    agg = r.get(AGGREGATES)
    return r.json(payloads.json_summary(
        agg, r.optional(LEVEL), r.optional(GRID_STATUS), r.optional(RESERVE),
        r.optional(TIME_REMAINING), r.optional(SYSTEM_STATUS), r.optional(STRINGS),
        **_shaping(app)))


def headers_variant(call: Call) -> str:
    return "headers" if call.flag("headers") else ""


# ---- device data (vitals, strings, temps, alerts, fans) -----------------------

def get_vitals(app: App, call: Call) -> Rendered:
    r = Reader(app)
    return r.pretty(r.get(VITALS))


def get_strings(app: App, call: Call) -> Rendered:
    r = Reader(app)
    return r.pretty(r.get(STRINGS))


def get_temps(app: App, call: Call) -> Rendered:
    r = Reader(app)
    return r.pretty(r.get(TEMPS))


def get_temps_pw(app: App, call: Call) -> Rendered:
    r = Reader(app)
    return r.json(payloads.temps_pw(r.get(TEMPS)))


def get_alerts(app: App, call: Call) -> Rendered:
    r = Reader(app)
    return r.pretty(r.get(ALERTS))


def get_alerts_pw(app: App, call: Call) -> Rendered:
    r = Reader(app)
    return r.json(payloads.alerts_pw(r.get(ALERTS)))


def get_fans(app: App, call: Call) -> Rendered:
    r = Reader(app)
    return r.json(r.get(FANS))


def get_fans_pw(app: App, call: Call) -> Rendered:
    r = Reader(app)
    return r.json(payloads.fans_pw(r.get(FANS)))


def get_freq(app: App, call: Call) -> Rendered:
    r = Reader(app)
    status = r.get(SYSTEM_STATUS)
    return r.json(payloads.freq_body(status, r.optional(VITALS), r.optional(GRID_STATUS_NUMERIC)))


def get_pod(app: App, call: Call) -> Rendered:
    r = Reader(app)
    status = r.get(SYSTEM_STATUS)
    return r.json(payloads.pod_body(status, r.optional(VITALS), r.optional(TIME_REMAINING),
                                    r.optional(RESERVE)))


def get_version(app: App, call: Call) -> Rendered:
    r = Reader(app)
    return r.json(payloads.version_body(str(r.get(VERSION))))


def get_problems(app: App, call: Call) -> Rendered:
    # The gateway removed this API; the reference answers a constant.
    return Rendered(json_bytes({"problems": []}))


def get_registration(app: App, call: Call) -> Rendered:
    raise HTTPError(404, "API Disabled")


# ---- allow-listed /api/* paths, answered from the gateway -------------------

ALLOWLIST = (
    "/api/status", "/api/site_info/site_name", "/api/meters/site", "/api/meters/solar",
    "/api/sitemaster", "/api/powerwalls", "/api/system_status", "/api/system/update/status",
    "/api/site_info", "/api/system_status/grid_faults", "/api/operation",
    "/api/site_info/grid_codes", "/api/solars", "/api/solars/brands", "/api/customer",
    "/api/meters", "/api/installer", "/api/networks", "/api/system/networks",
    "/api/meters/readings", "/api/synchrometer/ct_voltage_references",
    "/api/auth/toggle/supported", "/api/solar_powerwall",
)


def get_allowlisted(app: App, call: Call) -> Rendered:
    r = Reader(app)
    return r.json(r.get(poll(call.path)))


# ---- /tedapi/*, /cloud/*, /fleetapi/* ------------------------------------------

TEDAPI_CALLS: dict[str, Fetch] = {
    "/tedapi/config": lambda pw: pw.tedapi.get_config(),
    "/tedapi/status": lambda pw: pw.tedapi.get_status(),
    "/tedapi/components": lambda pw: pw.tedapi.get_components(),
    "/tedapi/battery": lambda pw: pw.tedapi.get_battery_blocks(),
    "/tedapi/controller": lambda pw: pw.tedapi.get_device_controller(),
}
CLOUD_CALLS: dict[str, Fetch] = {
    "/cloud/battery": lambda pw: pw.client.get_battery(),
    "/cloud/power": lambda pw: pw.client.get_site_power(),
    "/cloud/config": lambda pw: pw.client.get_site_config(),
}
FLEETAPI_CALLS: dict[str, Fetch] = {
    "/fleetapi/info": lambda pw: pw.client.get_site_info(),
    "/fleetapi/status": lambda pw: pw.client.get_live_status(),
}


def _backend_route(calls: dict[str, Fetch], enabled: Callable[[App], bool], disabled: str,
                   usage: str) -> Callable[[App, Call], Rendered]:
    def handler(app: App, call: Call) -> Rendered:
        if not enabled(app):
            raise NotSupported(disabled)
        fetch = calls.get(call.path)
        if fetch is None:
            raise NotSupported(usage)
        r = Reader(app)
        return r.json(r.get(Source(call.path, fetch, empty_ok=True)))
    return handler


def _tedapi_on(app: App) -> bool:
    return app.gateway.info.tedapi


def _cloud_on(app: App) -> bool:
    return app.gateway.info.cloudmode and not app.gateway.info.fleetapi


def _fleetapi_on(app: App) -> bool:
    return app.gateway.info.fleetapi


get_tedapi = _backend_route(TEDAPI_CALLS, _tedapi_on, "TEDAPI not enabled",
                            "Use " + ", ".join(TEDAPI_CALLS))
get_cloud = _backend_route(CLOUD_CALLS, _cloud_on, "Cloud API not enabled",
                           "Use " + ", ".join(CLOUD_CALLS))
get_fleetapi = _backend_route(FLEETAPI_CALLS, _fleetapi_on, "FleetAPI not enabled",
                              "Use " + ", ".join(FLEETAPI_CALLS))


# ---- /pw/<name>: the library's methods by name --------------------------------

PW_CALLS: dict[str, Callable[[Any], Any]] = {
    "level": lambda pw: {"level": pw.level()},
    "power": lambda pw: pw.power(),
    "site": lambda pw: pw.site(verbose=True),
    "solar": lambda pw: pw.solar(verbose=True),
    "battery": lambda pw: pw.battery(verbose=True),
    "load": lambda pw: pw.load(verbose=True),
    "grid": lambda pw: pw.grid(verbose=True),
    "home": lambda pw: pw.home(verbose=True),
    "battery_blocks": lambda pw: pw.battery_blocks(),
    "vitals": lambda pw: pw.vitals(),
    "temps": lambda pw: pw.temps(),
    "strings": lambda pw: pw.strings(verbose=True),
    "din": lambda pw: {"din": pw.din()},
    "uptime": lambda pw: {"uptime": pw.uptime()},
    "version": lambda pw: {"version": pw.version()},
    "status": lambda pw: pw.status(),
    "system_status": lambda pw: pw.system_status(),
    "grid_status": lambda pw: pw.poll("/api/system_status/grid_status"),
    "aggregates": lambda pw: pw.poll("/api/meters/aggregates"),
    "site_name": lambda pw: {"site_name": pw.site_name()},
    "alerts": lambda pw: {"alerts": pw.alerts()},
    "is_connected": lambda pw: {"is_connected": pw.is_connected()},
    "get_reserve": lambda pw: {"reserve": pw.get_reserve()},
    "get_mode": lambda pw: {"mode": pw.get_mode()},
    "get_time_remaining": lambda pw: {"time_remaining": pw.get_time_remaining()},
}


def _pw_route(name: str) -> Route:
    fetch = PW_CALLS[name]

    def handler(app: App, call: Call) -> Rendered:
        r = Reader(app)
        value = r.get(Source(f"pw:{name}", fetch, empty_ok=True))
        if isinstance(value, dict) and len(value) == 1 and next(iter(value.values())) is None:
            raise GatewayError(f"gateway gave no {name}")  # e.g. {"level": null}: not a success
        return r.json(value)
    handler.__name__ = f"get_pw_{name}"
    return Route(f"/pw/{name}", handler, cached=True)


def get_pw_unknown(app: App, call: Call) -> Rendered:
    raise HTTPError(404, "Invalid Request")


# ---- the table -------------------------------------------------------------------

def _data(path: str, handler: Callable[[App, Call], Rendered], **kw: Any) -> Route:
    return Route(path, handler, cached=True, **kw)


ROUTES: tuple[Route, ...] = (
    _data("/aggregates", get_aggregates),
    _data("/api/meters/aggregates", get_aggregates),
    _data("/soe", get_soe),
    _data("/api/system_status/soe", get_api_soe),
    _data("/api/system_status/grid_status", get_grid_status),
    _data("/csv", get_csv, vary=headers_variant),
    _data("/csv/v2", get_csv_v2, vary=headers_variant),
    _data("/vitals", get_vitals),
    _data("/strings", get_strings),
    Route("/stats", status_pages.get_stats),
    Route("/stats/clear", status_pages.get_stats_clear),
    Route("/health", status_pages.get_health),
    Route("/health/reset", status_pages.get_health_reset),
    _data("/temps", get_temps),
    _data("/temps/pw", get_temps_pw),
    _data("/alerts", get_alerts),
    _data("/alerts/pw", get_alerts_pw),
    _data("/freq", get_freq),
    _data("/pod", get_pod),
    _data("/json", get_json),
    _data("/version", get_version),
    Route("/help", status_pages.get_help),
    Route("/api/troubleshooting/problems", get_problems),
    Route("/api/customer/registration", get_registration),
    *(_data(path, get_allowlisted) for path in ALLOWLIST),
    *(_data(path, get_tedapi) for path in TEDAPI_CALLS),
    _data("/tedapi*", get_tedapi),
    *(_data(path, get_cloud) for path in CLOUD_CALLS),
    _data("/cloud*", get_cloud),
    *(_data(path, get_fleetapi) for path in FLEETAPI_CALLS),
    _data("/fleetapi*", get_fleetapi),
    _data("/fans", get_fans),
    _data("/fans/pw", get_fans_pw),
    *(_pw_route(name) for name in PW_CALLS),
    Route("/pw/*", get_pw_unknown),
    *CONTROL_ROUTES,
)
