"""The x-esm profile (energy storage and meter): what an OpenC2 Command may ask of the proxy.

`query features` (every Consumer answers it), `query properties` (values from the window
cache, `Site.read`, so a query costs the gateway nothing beyond its cache window) and `set`
of the control settings. The measurements among the properties are rows of the one
measurement table (`proxy.site.points`); the settings are the rows of the actions table
(`proxy.site.actions`) that offer an OpenC2 target, written as `/control/*` writes them
(same validation, same audit line, origin "openc2"). The 2018 connector's query grammar
(`seed_command`) reads the same rows. Every other action-target pair is 501.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from typing import Any

from proxy.api import control
from proxy.api.app import App
from proxy.api.openc2.answer import Outcome
from proxy.api.openc2.grammar import (
    ACTIONS,
    COMMAND_NOT_SUPPORTED,
    LANGUAGE_VERSION,
    OPTION_NOT_SUPPORTED,
    TARGET_NOT_SUPPORTED,
    Command,
    Exchange,
    section,
)
from proxy.api.routing import Call
from proxy.errors import GatewayUnavailable, HTTPError, NotSupported, ProxyError, UnknownGateway
from proxy.gateway.sources import AGGREGATES, PW_SOURCES, SYSTEM_STATUS, Source, poll
from proxy.payloads import number
from proxy.site import actions as control_actions
from proxy.site.actions import Action, Origin, for_openc2
from proxy.site.frames import Frame, frame_of
from proxy.site.points import POINTS, Point
from proxy.site.points import Kind as PointKind
from proxy.site.site import Reading, Site, State

NSID = "x-esm"  # energy storage and meter: the profile of the Language Spec's Annex A.3 example
SEED_ACTUATOR = "endpoint_smart_meter"  # the 2018 connector's actuator key (its routes only)
MAX_PROPERTIES = 64
READS_PER_MINUTE = 600  # queries a minute, all clients together (query features reports it)
WRITES_PER_MINUTE = 60  # sets a minute, all clients together: a budget of their own
FEATURES = ("versions", "profiles", "pairs", "rate_limit")
SET_DISABLED = "set disabled"
_DURATION = re.compile(r"([0-9.]+)(h|ms|us|µs|ns|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


class Role(Enum):
    QUERY = "query"  # PW_OPENC2_TOKEN: may query
    CONTROL = "control"  # PW_CONTROL_SECRET: may query and set


# ---- the x-esm properties: one row each, values from window-cached sources -----------
# The measurements are the rows of the one table (`proxy.site.points.POINTS`) that say how
# OpenC2 offers them; the rest (site settings, counts, times) are the profile's own.

SITE_INFO = poll("/api/site_info")
UPTIME = PW_SOURCES["uptime"]
DIN = PW_SOURCES["din"]
Extract = Callable[[Frame], Any]


@dataclass(frozen=True, slots=True)
class Prop:
    """One readable property: its sources and a pure function of the frame read from them."""

    name: str
    kind: str  # "number", "integer" or "string" (null when the gateway did not give it)
    sources: tuple[Source, ...]
    extract: Extract
    seed: str = ""  # the 2018 connector's name for it, if it had one
    seed_answer: str = ""  # the key that connector answered it under, where that differed


def text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def site_info_value(info: Any, key: str) -> Any:
    """A site_info field, flat (older firmware) or inside its `grid_code` object (newer)."""
    nested = section(info, "grid_code")
    if isinstance(nested, dict) and key in nested:
        return nested[key]
    return section(info, key)


def go_duration_seconds(value: Any) -> float | None:
    """The gateway's uptime ("61h18m9.51s", Go's duration text) in seconds."""
    if not isinstance(value, str) or not value:
        return None
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    try:
        return round(sum(float(n) * _DURATION_UNITS[u] for n, u in parts), 3)
    except ValueError:
        return None


def device_count(frame: Frame) -> int | None:
    blocks = section(frame.get(SYSTEM_STATUS), "battery_blocks")
    return len(blocks) if isinstance(blocks, list) else None


def _first(source: Source, convert: Callable[[Any], Any], *path: str) -> Extract:
    return lambda frame: convert(section(frame.get(source), *path))


def _site_info(key: str, convert: Callable[[Any], Any]) -> Extract:
    return lambda frame: convert(site_info_value(frame.get(SITE_INFO), key))


_KINDS = {PointKind.GAUGE: "number", PointKind.TOTAL: "number", PointKind.STATE: "string",
          PointKind.TEXT: "string"}


def measured(point: Point) -> Prop:
    """A row of the measurement table as OpenC2 offers it."""
    offer = point.openc2
    assert offer is not None
    return Prop(offer.name, _KINDS[point.kind], offer.sources or point.sources,
                offer.read or point.read, seed=offer.seed)


PROPERTIES: tuple[Prop, ...] = (
    *(measured(p) for p in POINTS if p.openc2 is not None),
    Prop("nominal_system_energy_kwh", "number", (SITE_INFO,),
         _first(SITE_INFO, number, "nominal_system_energy_kWh"), seed="nominal_system_energy_kwh"),
    Prop("site_name", "string", (SITE_INFO,), _first(SITE_INFO, text, "site_name"), seed="site_name"),
    Prop("timezone", "string", (SITE_INFO,), _first(SITE_INFO, text, "timezone"), seed="timezone",
         seed_answer="time_zone"),
    Prop("grid_code", "string", (SITE_INFO,), _site_info("grid_code", text), seed="grid_code"),
    Prop("grid_voltage_setting", "number", (SITE_INFO,), _site_info("grid_voltage_setting", number),
         seed="grid_voltage_setting"),
    Prop("grid_freq_setting", "number", (SITE_INFO,), _site_info("grid_freq_setting", number),
         seed="grid_freq_setting", seed_answer="grid_frequency_setting"),
    Prop("country", "string", (SITE_INFO,), _site_info("country", text), seed="country"),
    Prop("device_count", "integer", (SYSTEM_STATUS,), device_count, seed="device_count"),
    Prop("uptime", "number", (UPTIME,), _first(UPTIME, go_duration_seconds), seed="uptime"),
    Prop("site_instant_apparent_power", "number", (AGGREGATES,),
         _first(AGGREGATES, number, "site", "instant_apparent_power"), seed="instant_apparent_power"),
    Prop("site_last_communication_time", "string", (AGGREGATES,),
         _first(AGGREGATES, text, "site", "last_communication_time"), seed="last_communication_time"),
)


@cache
def _by_name() -> dict[str, Prop]:
    """Every accepted spelling (lower case) -> its row: the name, the seed's names, "site."."""
    names: dict[str, Prop] = {}
    for prop in PROPERTIES:
        for alias in (prop.name, prop.seed, prop.seed_answer, "site." + prop.name,
                      "site." + prop.seed if prop.seed else "", "powerwalls" if prop.seed ==
                      "device_count" else ""):
            if alias:
                names.setdefault(alias, prop)
    return names


def find_property(name: str) -> Prop | None:
    return _by_name().get(name.strip().lower())


def read_properties(site: Site, props: Sequence[Prop]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The values (None where the gateway gave nothing) and Age/X-Cache headers; a source lost
    beyond PW_CACHE_TTL raises its error (503)."""
    sources = list({s.key: s for p in props for s in p.sources}.values())
    if len(sources) > 1:
        site.gateway.prefetch(sources)
    readings: list[Reading | None] = []
    for source in sources:
        try:
            reading = site.read(source)
        except NotSupported:  # this gateway's mode has no such value: null
            readings.append(None)
            continue
        if reading.state is State.UNAVAILABLE:
            raise reading.error or GatewayUnavailable("gateway unavailable")
        readings.append(reading)
    frame = frame_of(site, sources, readings)
    out = {p.name: p.extract(frame) for p in props}
    times = [r.at for r in readings if r is not None and r.at is not None]
    return out, _age_headers(site, times, any(r is not None and r.stale for r in readings))


def _age_headers(site: Site, times: list[float], stale: bool) -> list[tuple[str, str]]:
    if not times:
        return []
    age = site.age(min(times))
    if stale and age > site.cache_ttl:
        raise GatewayUnavailable("gateway unavailable and the last good data is too old")
    return [("Age", str(int(age))), ("X-Cache", "STALE" if stale else "HIT")]


# ---- the writable settings: the rows of the actions table that OpenC2 offers -------------

SETTINGS: tuple[Action[Any], ...] = tuple(a for a in control_actions.ACTIONS if a.openc2)


def setting_target(action: Action[Any]) -> str:
    return f"{NSID}:{action.openc2}"


def setting_for(target: str) -> Action[Any] | None:
    prefix = NSID + ":"
    return for_openc2(target[len(prefix):]) if target.startswith(prefix) else None


def setting_text(value: Any) -> str:
    """A set value as the control routes' JSON body would spell it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.isascii():
        return value
    if isinstance(value, float):
        return repr(value)  # "30.0": refused by the same rule that refuses value=30.0
    raise HTTPError(400, "set value must be a string, an integer or a boolean")


def only_complete(args: dict[str, Any]) -> None:
    """Arguments beyond response_requested (times, extensions) are not supported: 501."""
    if set(args) - {"response_requested"}:
        raise HTTPError(501, OPTION_NOT_SUPPORTED)


def site_for(app: App, asset_id: Any) -> Site:
    """The gateway an asset_id names: a gateway id or DIN; none names the default gateway."""
    if asset_id in (None, ""):
        return app.sites.default()
    if not isinstance(asset_id, str):
        raise HTTPError(400, "asset_id must be a string")
    try:
        return app.sites.find(asset_id)
    except UnknownGateway:  # not an id: a DIN, or nothing (in the profile's own words)
        pass
    matches = [candidate for candidate in app.sites if _din(candidate) == asset_id.lower()]
    if len(matches) > 1:
        raise HTTPError(400, f"asset_id {asset_id[:64]} is the DIN of several gateways: use a gateway id")
    if not matches:
        raise HTTPError(404, f"unknown asset_id: {asset_id[:64]}")
    return matches[0]


def _din(site: Site) -> str | None:
    try:
        value = site.read(DIN).value
    except ProxyError:
        return None
    return value.lower() if isinstance(value, str) else None



# ---- the commands ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Context:
    app: App
    call: Call
    role: Role
    rate_limit: int  # queries a minute: what `query features` reports
    command: Command
    site: Site = field(default=None)  # type: ignore[assignment]


def query_features(ctx: Context) -> Outcome:
    args, value = ctx.command.args, ctx.command.value
    if args and args != {"response_requested": "complete"}:
        raise HTTPError(400, "query features accepts only response_requested=complete")
    if not isinstance(value, list) or len(value) > 10 or not all(isinstance(f, str) for f in value):
        raise HTTPError(400, "features must be a list of at most 10 names")
    unknown = [f for f in value if f not in FEATURES]
    if unknown:
        raise HTTPError(400, f"unknown feature: {unknown[0][:40]}")
    answers = {"versions": [LANGUAGE_VERSION], "profiles": [NSID], "pairs": pairs(ctx.app),
               "rate_limit": ctx.rate_limit}
    results = {f: answers[f] for f in dict.fromkeys(value)}  # a repeated name counts once
    return Outcome(200, results or None)


def pairs(app: App) -> dict[str, list[str]]:
    supported = {"query": ["features", "properties"]}
    if app.config.control_secret:
        supported["set"] = [setting_target(s) for s in SETTINGS]
    return supported


def query_properties(ctx: Context) -> Outcome:
    only_complete(ctx.command.args)
    names = ctx.command.value
    if not isinstance(names, list) or not names or len(names) > MAX_PROPERTIES \
            or not all(isinstance(n, str) for n in names):
        raise HTTPError(400, f"properties must be a list of 1 to {MAX_PROPERTIES} names")
    found = {n: find_property(n) for n in names}
    unknown = [n[:40] for n, p in found.items() if p is None]
    if unknown:
        raise HTTPError(404, f"unknown property: {', '.join(unknown)}")
    props = list({p.name: p for p in found.values() if p is not None}.values())
    values, headers = read_properties(ctx.site, props)
    return Outcome(200, {NSID: values}, headers=tuple(headers))


def set_setting(ctx: Context, action: Action[Any]) -> Outcome:
    only_complete(ctx.command.args)
    if not ctx.app.config.control_secret or ctx.role is not Role.CONTROL:
        raise HTTPError(403, SET_DISABLED)
    value = action.parse(setting_text(ctx.command.value))
    app, site = ctx.app, ctx.site
    control.write(app, site, action, value, Origin.OPENC2, control.client_of(app, ctx.call),
                  name_gateway=site is not app.sites.default())
    return Outcome(200, {NSID: {action.reports: action.shown(value)}})


def execute(ctx: Context) -> Outcome:
    """Dispatch an action-target pair; 501 for what the x-esm profile does not do."""
    command = ctx.command
    if command.action not in ("query", "set"):
        raise HTTPError(501, COMMAND_NOT_SUPPORTED)
    setting = setting_for(command.target)
    if command.action == "query" and command.target == "features":
        return query_features(ctx)  # no actuator needed: every Consumer answers it
    if not (command.action == "query" and command.target == "properties") and \
            not (command.action == "set" and setting is not None):
        raise HTTPError(501, TARGET_NOT_SUPPORTED)
    site = site_for(ctx.app, (command.actuator or {}).get("asset_id"))
    ctx = dataclasses.replace(ctx, site=site)
    if setting is not None:
        return set_setting(ctx, setting)
    return query_properties(ctx)


# ---- the seed connector's grammar ------------------------------------------------------

def seed_command(app: App, message: dict[str, Any], ex: Exchange) -> Outcome:
    """{"id", "action": "query", "target": {"property": {"name"}} | {"openc2": {}}, "actuator":
    {"endpoint_smart_meter": {"asset_id"}}}, as the 2018 connector took it."""
    seed_id = message.get("id")
    ex.seed_id = seed_id if isinstance(seed_id, (str, int)) and not isinstance(seed_id, bool) else None
    action, target = message.get("action"), message.get("target")
    if not isinstance(action, str) or not isinstance(target, dict) or len(target) != 1:
        raise HTTPError(400, "action and a one-key target are required")
    if action.lower() not in ACTIONS:
        raise HTTPError(400, f"unknown action: {action[:40]}")
    if action.lower() != "query":
        raise HTTPError(501, COMMAND_NOT_SUPPORTED)
    site = site_for(app, _seed_asset(message.get("actuator")))
    (kind, value), = target.items()
    if kind == "openc2":
        names = [p.seed for p in PROPERTIES if p.seed]
        return Outcome(200, {"action": "query", "target": {"property": names}})
    if kind != "property":
        raise HTTPError(501, TARGET_NOT_SUPPORTED)
    name = section(value, "name")
    if not isinstance(name, str):
        raise HTTPError(400, "target.property.name is required")
    prop = find_property(name)
    if prop is None:
        raise HTTPError(404, f"unknown property: {name[:40]}")
    values, headers = read_properties(site, [prop])
    answer = prop.seed_answer or prop.seed or prop.name  # answered under the name it had there
    return Outcome(200, {answer: values[prop.name]}, headers=tuple(headers))


def _seed_asset(actuator: Any) -> Any:
    if actuator is None:
        return None
    if not isinstance(actuator, dict) or len(actuator) != 1:
        raise HTTPError(400, "actuator must be an object with exactly one key")
    (nsid, specifiers), = actuator.items()
    if nsid not in (SEED_ACTUATOR, NSID):
        raise HTTPError(501, COMMAND_NOT_SUPPORTED)
    return section(specifiers, "asset_id")
