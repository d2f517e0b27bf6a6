"""The reference proxy's routes: one row per GET route of pyPowerwall's proxy (its data, the
gateway's own /api paths, /pw/*, /tedapi/*, /cloud/*, /fleetapi/*).

Mounted for the default gateway at the root and for each gateway under /api/gateways/{id}/
(`proxy.api.mounts`, where every other group is listed). Search for a path to find its row.
Data routes are `cached`: rendered once per cache window from window-cached gateway readings,
then served as the same bytes to every poller. A data route names its sources and a pure
render function; `Need` says what a missing source does to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

from proxy import payloads
from proxy.api.apidoc import (
    ANY,
    DATA,
    NAME,
    NUMBER_OR_NULL,
    OBJECT,
    STRING_OR_NULL,
    UNAVAILABLE,
    Answer,
    Doc,
    Param,
    Schema,
    keyed,
    nullable,
    ref,
)
from proxy.api.app import CSV, JSON, App, json_bytes
from proxy.api.routing import Call, Route
from proxy.errors import HTTPError, NotSupported
from proxy.gateway.sources import (
    AGGREGATES,
    ALERTS,
    CLOUD_SOURCES,
    FANS,
    FLEETAPI_SOURCES,
    GRID_STATUS,
    GRID_STATUS_NUMERIC,
    GRID_STATUS_RAW,
    LEVEL,
    LEVEL_SCALED,
    PW_SOURCES,
    RESERVE,
    SOE,
    STRINGS,
    SYSTEM_STATUS,
    TEDAPI_SOURCES,
    TEMPS,
    TIME_REMAINING,
    VERSION,
    VITALS,
    Source,
    poll,
)
from proxy.site.site import Rendered, Site, State

Values = Sequence[Any]
Body = tuple[bytes, str]
Render = Callable[[Values, Call, Site], Body]


class Need(Enum):
    """What a source that is lost to an outage (no answer, no young copy) does to a route."""

    ALL = "all"  # the route fails (stale copy, then 503): CSV cannot say null
    ANY = "any"  # composites: null in its place; 503 only when no source has data


def build(call: Call, sources: Sequence[Source], render: Render, need: Need = Need.ALL) -> Rendered:
    """Read the sources (in parallel), apply the route's need, render the body."""
    site = call.site
    readings = site.read_all(sources)
    lost = [r for r in readings if r.state is State.UNAVAILABLE]
    if lost and (need is Need.ALL or not any(r.state is State.DATA for r in readings)):
        assert lost[0].error is not None
        raise lost[0].error
    body, content_type = render([r.value for r in readings], call, site)
    times = [r.at for r in readings if r.at is not None]
    return Rendered(body, content_type, min(times) if times else None, any(r.stale for r in readings))


def data(path: str, sources: Sequence[Source], render: Render, need: Need = Need.ALL,
         vary: Callable[[Call], str] | None = None, doc: Doc | None = None) -> Route:
    """A cached data route: these sources, this render."""
    def handler(app: App, call: Call) -> Rendered:
        return build(call, sources, render, need)
    handler.__name__ = "get" + path.replace("/", "_")
    return Route(path, handler, cached=True, vary=vary, doc=doc)


def doc(summary: str, body: Schema = ANY, **more: Any) -> Doc:
    """A data route's documentation: the mode may lack it (404), the gateway may be down (503)."""
    return Doc(summary, body, answers=more.pop("answers", DATA), **more)


HEADERS = (Param("headers", "Present (any value, or none): a first line naming the columns",
                 {"type": "string"}, ("",)),)


# ---- renders: pure functions of the values ---------------------------------------

def as_json(values: Values, call: Call, site: Site) -> Body:
    return json_bytes(values[0]), JSON


def as_pretty(values: Values, call: Call, site: Site) -> Body:
    return payloads.pretty_json(values[0]).encode(), JSON


def pretty_or(empty: Any) -> Render:
    """Indented JSON; `empty` when the gateway had none (as the reference: {} temps, [] alerts)."""
    def render(values: Values, call: Call, site: Site) -> Body:
        return payloads.pretty_json(empty if values[0] is None else values[0]).encode(), JSON
    return render


def json_with(build_body: Callable[[Any], Any]) -> Render:
    """JSON of a pure function of the single value."""
    def render(values: Values, call: Call, site: Site) -> Body:
        return json_bytes(build_body(values[0])), JSON
    return render


def wrapped(name: str) -> Render:
    """{"<name>": value}, e.g. /pw/level -> {"level": 42.1} (null when the gateway had none)."""
    return json_with(lambda value: {name: value})


def _shaping(site: Site) -> dict[str, Any]:
    return {"neg_solar": site.shaping.neg_solar, "zero_threshold": site.shaping.zero_threshold}


def render_aggregates(values: Values, call: Call, site: Site) -> Body:
    agg = values[0]
    return json_bytes(None if agg is None else payloads.process_aggregates(agg, **_shaping(site))), JSON


def render_api_soe(values: Values, call: Call, site: Site) -> Body:
    return json_bytes(None if values[0] is None else {"percentage": values[0]}), JSON


def render_csv(values: Values, call: Call, site: Site) -> Body:
    agg, level = values
    return payloads.csv_body(agg, level, headers=call.flag("headers"), **_shaping(site)).encode(), CSV


def render_csv_v2(values: Values, call: Call, site: Site) -> Body:
    agg, level, grid, reserve = values
    body = payloads.csv_v2_body(agg, level, None if grid is None else grid == "UP", reserve,
                                headers=call.flag("headers"), **_shaping(site))
    return body.encode(), CSV


def render_json(values: Values, call: Call, site: Site) -> Body:
    return json_bytes(payloads.json_summary(*values, **_shaping(site))), JSON


def render_freq(values: Values, call: Call, site: Site) -> Body:
    return json_bytes(payloads.freq_body(*values)), JSON


def render_pod(values: Values, call: Call, site: Site) -> Body:
    return json_bytes(payloads.pod_body(*values)), JSON


def render_version(values: Values, call: Call, site: Site) -> Body:
    version = values[0]
    body = {"version": None, "vint": None} if version is None else payloads.version_body(str(version))
    return json_bytes(body), JSON


def headers_variant(call: Call) -> str:
    return "headers" if call.flag("headers") else ""


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


# ---- /tedapi/*, /cloud/*, /fleetapi/*: only in their mode ----------------------------

def _backend_routes(calls: dict[str, Source], enabled: Callable[[Site], bool], disabled: str,
                    prefix: str) -> tuple[Route, ...]:
    usage = "Use " + ", ".join(calls)
    mode = prefix.strip("/")

    def handler(app: App, call: Call) -> Rendered:
        if not enabled(call.site):
            raise NotSupported(disabled)
        source = calls.get(call.path)
        if source is None:
            raise NotSupported(usage)
        return build(call, [source], as_json)
    handler.__name__ = "get_" + prefix.strip("/")
    rows = [Route(path, handler, cached=True, doc=doc(f"{path[len(prefix) + 1:]} object of the "
                                                        f"{mode} backend", tag=mode, description=disabled
                                                        + " otherwise (404)")) for path in calls]
    rest = Doc(f"Any other {prefix}/… path: 404 naming the paths there are", tag=mode,
               wildcard=Param("name", f"Any other name under {prefix}/", NAME, ("unknown",)),
               answers=(Answer(404, f"{disabled}, or no such path: the answer names the paths"),
                        UNAVAILABLE))
    return (*rows, Route(prefix + "*", handler, cached=True, doc=rest))


def _tedapi_on(site: Site) -> bool:
    return site.gateway.info.tedapi


def _cloud_on(site: Site) -> bool:
    return site.gateway.info.cloudmode and not site.gateway.info.fleetapi


def _fleetapi_on(site: Site) -> bool:
    return site.gateway.info.fleetapi


# ---- /pw/<name>: the library's methods by name --------------------------------

# Names whose library value the reference wraps in an object, e.g. {"level": 42.1}.
PW_WRAPPED = {"level": "level", "din": "din", "uptime": "uptime", "version": "version",
              "site_name": "site_name", "alerts": "alerts", "is_connected": "is_connected",
              "get_reserve": "reserve", "get_mode": "mode", "get_time_remaining": "time_remaining"}


# The wrapped values' shapes; the others are the library's own objects.
PW_SHAPES: dict[str, Schema] = {
    "level": NUMBER_OR_NULL, "uptime": STRING_OR_NULL, "version": STRING_OR_NULL, "din": STRING_OR_NULL,
    "site_name": STRING_OR_NULL, "alerts": nullable(ref("Alerts")),
    "is_connected": {"type": ["boolean", "null"]}, "reserve": NUMBER_OR_NULL,
    "mode": STRING_OR_NULL, "time_remaining": NUMBER_OR_NULL,
}


def _pw_route(name: str) -> Route:
    if name in PW_WRAPPED:
        key = PW_WRAPPED[name]
        render, body = wrapped(key), keyed(key, PW_SHAPES[key])
    else:
        render, body = as_json, ANY
    return data(f"/pw/{name}", [PW_SOURCES[name]], render,
                doc=doc(f"pypowerwall's {name}()", body, tag="pw"))


def get_pw_unknown(app: App, call: Call) -> Rendered:
    raise HTTPError(404, "Invalid Request")


# ---- the table -------------------------------------------------------------------

ROUTES: tuple[Route, ...] = (
    data("/aggregates", [AGGREGATES], render_aggregates,
         doc=doc("Meter blocks: site, battery, load, solar", nullable(ref("Aggregates")))),
    data("/api/meters/aggregates", [AGGREGATES], render_aggregates,
         doc=doc("Meter blocks, as the gateway's own path", nullable(ref("Aggregates")), tag="api")),
    data("/soe", [SOE], as_json, doc=doc("Raw state of charge", nullable(ref("Percentage")))),
    data("/api/system_status/soe", [LEVEL_SCALED], render_api_soe,
         doc=doc("State of charge scaled like the Tesla app", nullable(ref("Percentage")), tag="api")),
    data("/api/system_status/grid_status", [GRID_STATUS_RAW], as_json,
         doc=doc("Grid status as the gateway names it", nullable(ref("GridStatus")), tag="api")),
    data("/csv", [AGGREGATES, LEVEL], render_csv, vary=headers_variant,
         doc=doc("Grid,Home,Solar,Battery,BatteryLevel", ref("Csv"), media=CSV, query=HEADERS)),
    data("/csv/v2", [AGGREGATES, LEVEL, GRID_STATUS, RESERVE], render_csv_v2, vary=headers_variant,
         doc=doc("As /csv plus GridStatus (1 up, 0 down) and Reserve", ref("Csv"), media=CSV,
                 query=HEADERS)),
    data("/vitals", [VITALS], as_pretty, doc=doc("Device vitals keyed by device")),
    data("/strings", [STRINGS], as_pretty, doc=doc("Solar strings", nullable(ref("Strings")))),
    data("/temps", [TEMPS], pretty_or({}), doc=doc("Temperatures by device, °C", ref("Temps"))),
    data("/temps/pw", [TEMPS], json_with(payloads.temps_pw),
         doc=doc("Temperatures as PW1_temp, PW2_temp, …", ref("Temps"))),
    data("/alerts", [ALERTS], pretty_or([]), doc=doc("Active alerts", ref("Alerts"))),
    data("/alerts/pw", [ALERTS], json_with(payloads.alerts_pw),
         doc=doc("Active alerts as {name: 1}", ref("AlertsPw"))),
    data("/freq", [SYSTEM_STATUS, VITALS, GRID_STATUS_NUMERIC], render_freq, Need.ANY,
         doc=doc("Per-battery frequency and voltage, island and meter signals", OBJECT)),
    data("/pod", [SYSTEM_STATUS, VITALS, TIME_REMAINING, RESERVE], render_pod, Need.ANY,
         doc=doc("Per-battery pod fields, energies, time remaining, reserve", OBJECT)),
    data("/json", [AGGREGATES, LEVEL, GRID_STATUS, RESERVE, TIME_REMAINING, SYSTEM_STATUS, STRINGS],
         render_json, Need.ANY, doc=doc("Powers, level, grid, reserve, energies, strings", ref("Summary"))),
    data("/version", [VERSION], render_version, doc=doc("Firmware version", ref("Version"))),
    Route("/api/troubleshooting/problems", get_problems,
          doc=Doc("Always {\"problems\": []} (the gateway removed this API)",
                  keyed("problems", {"type": "array"}), tag="api")),
    Route("/api/customer/registration", get_registration,
          doc=Doc("Always 404 (removed by the firmware)", tag="api",
                  answers=(Answer(404, '{"error": "API Disabled"}'),))),
    *(data(path, [poll(path)], as_json, doc=doc("The gateway's JSON for this path", tag="api"))
      for path in ALLOWLIST),
    *_backend_routes(TEDAPI_SOURCES, _tedapi_on, "TEDAPI not enabled", "/tedapi"),
    *_backend_routes(CLOUD_SOURCES, _cloud_on, "Cloud API not enabled", "/cloud"),
    *_backend_routes(FLEETAPI_SOURCES, _fleetapi_on, "FleetAPI not enabled", "/fleetapi"),
    data("/fans", [FANS], json_with(lambda fans: {} if fans is None else fans),
         doc=doc("Fan speeds by device (TEDAPI)", OBJECT)),
    data("/fans/pw", [FANS], json_with(payloads.fans_pw),
         doc=doc("Fan speeds as FAN1_actual, FAN1_target, …", OBJECT)),
    *(_pw_route(name) for name in PW_SOURCES),
    Route("/pw/*", get_pw_unknown,
          doc=Doc("Any other /pw/ name: 404", tag="pw",
                  wildcard=Param("name", "Any other name", NAME, ("unknown",)),
                  answers=(Answer(404, '{"error": "Invalid Request"}'), *DATA))),
)
