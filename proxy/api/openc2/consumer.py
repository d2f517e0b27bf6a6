"""OpenC2: a Consumer of the OASIS OpenC2 Language 1.0 over HTTPS (transfer spec 1.1 and 1.0).

`POST /.well-known/openc2` takes the v1.1 envelope (`headers`/`body.openc2.request`),
`POST /openc2` a bare v1.0 Command; each answers in the form it was asked in, with the
OpenC2 status as the HTTP status. `POST /openc2/command/` and `POST /oc2/` speak the 2018
connector's pre-1.0 grammar. Queries answer from the window cache (`Site.read`), so a
command costs the gateway nothing beyond what its cache window already asked; `set` goes
through the very writes of `/control/*` (same validation, same audit line).

The profile is `x-esm` (energy storage and meter). Its properties are a table of frozen
rows (`PROPERTIES`), its writable settings another (`SETTINGS`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from typing import Any

from proxy import payloads
from proxy.api import control
from proxy.api.app import App, Call, Route, json_response
from proxy.errors import GatewayError, GatewayUnavailable, HTTPError, NotSupported, ProxyError
from proxy.gateway import user_number
from proxy.gateway.sources import (
    AGGREGATES,
    GRID_STATUS_RAW,
    LEVEL_SCALED,
    PW_SOURCES,
    RESERVE,
    SYSTEM_STATUS,
    TIME_REMAINING,
    VERSION,
    Source,
    poll,
)
from proxy.httpd.types import Response
from proxy.site.site import Site, State

log = logging.getLogger("proxy.openc2")

LANGUAGE_VERSION = "1.0"
NSID = "x-esm"  # energy storage and meter: the profile of the Language Spec's Annex A.3 example
SEED_ACTUATOR = "endpoint_smart_meter"  # the 2018 connector's actuator key (its routes only)
ENVELOPE_TYPE = "application/openc2+json;version=1.0"  # HTTPS transfer 1.1, both directions
COMMAND_TYPE = "application/openc2-cmd+json;version=1.0"  # HTTPS transfer 1.0, a Command
RESPONSE_TYPE = "application/openc2-rsp+json;version=1.0"  # HTTPS transfer 1.0, a Response
ACCEPTED_MEDIA = ("application/openc2+json", "application/openc2-cmd+json", "application/json")
RATE_LIMIT = 600  # authenticated commands per minute, all clients together (query features)
MAX_ID = 128  # request ids: printable ASCII, echoed in a header
MAX_PROPERTIES = 64
ACTIONS = ("scan", "locate", "query", "deny", "contain", "allow", "start", "stop", "restart",
           "cancel", "set", "update", "redirect", "create", "delete", "detonate", "restore",
           "copy", "investigate", "remediate")  # Language Spec 3.3.1.1: fixed, never extended
TARGETS = ("artifact", "command", "device", "domain_name", "email_addr", "features", "file",
           "idn_domain_name", "idn_email_addr", "ipv4_net", "ipv6_net", "ipv4_connection",
           "ipv6_connection", "iri", "mac_addr", "process", "properties", "uri")  # 3.3.1.2
FEATURES = ("versions", "profiles", "pairs", "rate_limit")
RESPONSE_TYPES = ("none", "ack", "status", "complete")
STATUSES = frozenset({102, 200, 400, 401, 403, 404, 500, 501, 503})  # Language Spec 3.3.2.1
COMMAND_NOT_SUPPORTED = "Command not supported"
TARGET_NOT_SUPPORTED = "Target type not supported"
OPTION_NOT_SUPPORTED = "Option not supported"
SET_DISABLED = "set disabled"
BAD_TOKEN = "Invalid or missing bearer token"
_ID = re.compile(rf"[\x20-\x7e]{{1,{MAX_ID}}}")
_COMMAND_ID = re.compile(r"\S{1,36}")
_DURATION = re.compile(r"([0-9.]+)(h|ms|us|µs|ns|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


class Flavor(Enum):
    """How a message is framed: as it came in, so it is answered."""

    ENVELOPE = "envelope"  # transfer 1.1: {"headers": …, "body": {"openc2": {"request": …}}}
    BARE = "bare"  # transfer 1.0: the Command itself
    SEED = "seed"  # the 2018 connector: {"id": …, "action": …} answered {"id_ref": …}


class Role(Enum):
    QUERY = "query"  # PW_OPENC2_TOKEN: may query
    CONTROL = "control"  # PW_CONTROL_SECRET: may query and set


@dataclass
class Exchange:
    """What the answer must echo, learnt while the request is read."""

    flavor: Flavor
    header_id: str | None = None  # X-Request-ID
    request_id: str | None = None  # headers.request_id, else X-Request-ID (transfer 1.1 3.3.3)
    sender: str | None = None  # headers.from: answered in headers.to
    seed_id: Any = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """An OpenC2 Response before it is framed."""

    status: int
    results: dict[str, Any] | None = None
    text: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    interim: int | None = None  # ack: 102 ahead of the final answer
    silent: bool = False  # response_requested none: no Response in the body


class CommandLimit:
    """At most `per_minute` commands per clock minute (fixed windows), for everyone together."""

    def __init__(self, per_minute: int = RATE_LIMIT, clock: Callable[[], float] = time.monotonic):
        self.per_minute = per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._window = -1
        self._count = 0

    def take(self) -> float:
        """0 when the command may run, else the seconds until the next window."""
        with self._lock:
            now = self._clock()
            window = int(now // 60)
            if window != self._window:
                self._window, self._count = window, 0
            if self._count >= self.per_minute:
                return 60.0 - now % 60
            self._count += 1
            return 0.0


# ---- the x-esm properties: one row each, values from window-cached sources -----------

Values = Sequence[Any]
SITE_INFO = poll("/api/site_info")
MODE = PW_SOURCES["get_mode"]
UPTIME = PW_SOURCES["uptime"]
DIN = PW_SOURCES["din"]


@dataclass(frozen=True, slots=True)
class Prop:
    """One readable property: its sources and a pure function of their values."""

    name: str
    kind: str  # "number", "integer" or "string" (null when the gateway did not give it)
    sources: tuple[Source, ...]
    extract: Callable[[Values, Site], Any]
    seed: str = ""  # the 2018 connector's name for it, if it had one
    seed_answer: str = ""  # the key that connector answered it under, where that differed


def number(value: Any) -> float | int | None:
    """A finite JSON number, else None (I-JSON has no NaN or infinity)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def section(value: Any, *keys: str) -> Any:
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def site_info_value(info: Any, key: str) -> Any:
    """A site_info field, flat (older firmware) or inside its `grid_code` object (newer)."""
    nested = section(info, "grid_code")
    if isinstance(nested, dict) and key in nested:
        return nested[key]
    return section(info, key)


def power(name: str) -> Callable[[Values, Site], Any]:
    """grid/home/solar/battery after PW_NEG_SOLAR and PW_SITE_ZERO_THRESHOLD, as /aggregates."""
    def extract(values: Values, site: Site) -> Any:
        if not isinstance(values[0], dict):
            return None
        shaped = payloads.power_values(values[0], neg_solar=site.shaping.neg_solar,
                                       zero_threshold=site.shaping.zero_threshold)
        return number(shaped[name])
    return extract


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


def device_count(values: Values, site: Site) -> int | None:
    blocks = section(values[0], "battery_blocks")
    return len(blocks) if isinstance(blocks, list) else None


def _first(convert: Callable[[Any], Any], *path: str) -> Callable[[Values, Site], Any]:
    return lambda values, site: convert(section(values[0], *path) if path else values[0])


def _site_info(key: str, convert: Callable[[Any], Any]) -> Callable[[Values, Site], Any]:
    return lambda values, site: convert(site_info_value(values[0], key))


PROPERTIES: tuple[Prop, ...] = (
    Prop("battery_percentage", "number", (LEVEL_SCALED,), _first(number), seed="battery_percentage"),
    Prop("site_power", "number", (AGGREGATES,), _first(number, "site", "instant_power")),
    Prop("solar_power", "number", (AGGREGATES,), power("solar")),
    Prop("battery_power", "number", (AGGREGATES,), power("battery")),
    Prop("load_power", "number", (AGGREGATES,), power("home")),
    Prop("grid_power", "number", (AGGREGATES,), power("grid")),
    Prop("grid_status", "string", (GRID_STATUS_RAW,), _first(text, "grid_status")),
    Prop("backup_reserve_percent", "number", (RESERVE,),
         lambda values, site: None if number(values[0]) is None else user_number(values[0])),
    Prop("operation_mode", "string", (MODE,), _first(text)),
    Prop("time_remaining_hours", "number", (TIME_REMAINING,), _first(number)),
    Prop("nominal_system_energy_kwh", "number", (SITE_INFO,),
         _first(number, "nominal_system_energy_kWh"), seed="nominal_system_energy_kwh"),
    Prop("site_name", "string", (SITE_INFO,), _first(text, "site_name"), seed="site_name"),
    Prop("timezone", "string", (SITE_INFO,), _first(text, "timezone"), seed="timezone",
         seed_answer="time_zone"),
    Prop("grid_code", "string", (SITE_INFO,), _site_info("grid_code", text), seed="grid_code"),
    Prop("grid_voltage_setting", "number", (SITE_INFO,), _site_info("grid_voltage_setting", number),
         seed="grid_voltage_setting"),
    Prop("grid_freq_setting", "number", (SITE_INFO,), _site_info("grid_freq_setting", number),
         seed="grid_freq_setting", seed_answer="grid_frequency_setting"),
    Prop("country", "string", (SITE_INFO,), _site_info("country", text), seed="country"),
    Prop("firmware_version", "string", (VERSION,), _first(text)),
    Prop("device_count", "integer", (SYSTEM_STATUS,), device_count, seed="device_count"),
    Prop("uptime", "number", (UPTIME,), _first(go_duration_seconds), seed="uptime"),
    Prop("site_instant_apparent_power", "number", (AGGREGATES,),
         _first(number, "site", "instant_apparent_power"), seed="instant_apparent_power"),
    Prop("site_last_communication_time", "string", (AGGREGATES,),
         _first(text, "site", "last_communication_time"), seed="last_communication_time"),
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
    values: dict[str, Any] = {}
    times: list[float] = []
    stale = False
    for source in sources:
        try:
            reading = site.read(source)
        except NotSupported:  # this gateway's mode has no such value: null
            continue
        if reading.state is State.UNAVAILABLE:
            raise reading.error or GatewayUnavailable("gateway unavailable")
        values[source.key] = reading.value
        stale = stale or reading.stale
        if reading.at is not None:
            times.append(reading.at)
    out = {p.name: p.extract([values.get(s.key) for s in p.sources], site) for p in props}
    return out, _age_headers(site, times, stale)


def _age_headers(site: Site, times: list[float], stale: bool) -> list[tuple[str, str]]:
    if not times:
        return []
    age = site.age(min(times))
    if stale and age > site.stale_ttl:
        raise GatewayUnavailable("gateway unavailable and the last good data is too old")
    return [("Age", str(int(age))), ("X-Cache", "STALE" if stale else "HIT")]


# ---- the writable settings: extended targets, written by /control/*'s own writes -------

@dataclass(frozen=True, slots=True)
class Setting:
    """One `set` target: the control write it runs, and the result it reports."""

    target: str
    write: Callable[[App, Call, str], dict[str, Any]]


def _set_reserve(app: App, call: Call, raw: str) -> dict[str, Any]:
    level = control.level_value(raw)
    control.write_reserve(app, call, level)
    return {"backup_reserve_percent": level}


def _set_mode(app: App, call: Call, raw: str) -> dict[str, Any]:
    mode = control.mode_value(raw)
    control.write_mode(app, call, mode)
    return {"operation_mode": mode.value}


def _set_grid_charging(app: App, call: Call, raw: str) -> dict[str, Any]:
    on = control.grid_charging_value(raw)
    control.write_grid_charging(app, call, on)
    return {"grid_charging": on}


def _set_grid_export(app: App, call: Call, raw: str) -> dict[str, Any]:
    rule = control.grid_export_value(raw)
    control.write_grid_export(app, call, rule)
    return {"grid_export": rule.value}


SETTINGS: tuple[Setting, ...] = (
    Setting(f"{NSID}:backup_reserve", _set_reserve),
    Setting(f"{NSID}:operation_mode", _set_mode),
    Setting(f"{NSID}:grid_charging", _set_grid_charging),
    Setting(f"{NSID}:grid_export", _set_grid_export),
)


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


# ---- reading a request -----------------------------------------------------------------

def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("repeated key")  # I-JSON (RFC 7493 2.3): member names are unique
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode(call: Call) -> dict[str, Any]:
    """The body as a JSON object: UTF-8, no repeated keys, no NaN; else 400."""
    kind = call.request.headers.get("Content-Type", "")
    media, _, params = kind.partition(";")
    if kind and media.strip().lower() not in ACCEPTED_MEDIA:
        raise HTTPError(400, f"Content-Type must be {ENVELOPE_TYPE} or {COMMAND_TYPE}")
    version = re.search(r"version\s*=\s*\"?([^\";\s]+)", params)
    if version and version.group(1) != LANGUAGE_VERSION:
        raise HTTPError(400, f"only OpenC2 version {LANGUAGE_VERSION} is understood")
    try:
        data = json.loads(call.request.body.decode("utf-8"), object_pairs_hook=_unique,
                          parse_constant=_no_constant)
    except (UnicodeError, ValueError, RecursionError):
        raise HTTPError(400, "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise HTTPError(400, "body must be a JSON object")
    return data


def request_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise HTTPError(400, f"{where} must be 1-{MAX_ID} printable ASCII characters")
    return value


def unwrap(message: dict[str, Any], ex: Exchange) -> dict[str, Any]:
    """The Command out of a v1.1 envelope, or the message itself when it is a bare Command."""
    if "action" in message or not ({"headers", "body"} & message.keys()):
        ex.flavor, ex.request_id = Flavor.BARE, ex.header_id
        return message
    ex.flavor = Flavor.ENVELOPE
    extra = set(message) - {"headers", "body", "signature"}
    if extra:
        raise HTTPError(400, f"unknown message field: {sorted(extra)[0]}")
    headers = message.get("headers", {})
    if not isinstance(headers, dict):
        raise HTTPError(400, "headers must be an object")
    if "request_id" in headers:
        ex.request_id = request_id(headers["request_id"], "headers.request_id")
    else:
        ex.request_id = ex.header_id  # transfer 1.1 3.3.3: filled from X-Request-ID
    sender = headers.get("from")
    ex.sender = sender if isinstance(sender, str) else None
    content = section(message.get("body"), "openc2")
    if not isinstance(content, dict) or len(content) != 1:
        raise HTTPError(400, "body.openc2 must hold one request")
    command = content.get("request")
    if not isinstance(command, dict):
        raise HTTPError(400, "body.openc2 must hold a request (this is a Consumer)")
    return command


@dataclass(frozen=True, slots=True)
class Command:
    action: str
    target: str
    value: Any
    args: dict[str, Any]
    actuator: dict[str, Any] | None
    command_id: str | None


def parse(command: dict[str, Any], ex: Exchange) -> Command:
    """A v1.0 Command, checked against the Language Spec's types (400 when it is not one)."""
    action = command.get("action")
    if action is None:
        raise HTTPError(400, "action is required")
    if action not in ACTIONS:
        raise HTTPError(400, f"unknown action: {str(action)[:40]}")
    target = command.get("target")
    if target is None:
        raise HTTPError(400, "target is required")
    if not isinstance(target, dict) or len(target) != 1:
        raise HTTPError(400, "target must be an object with exactly one key")
    (name, value), = target.items()
    if name not in TARGETS and not re.fullmatch(r"[a-z0-9-]{1,16}:[a-z0-9_]{1,32}", name):
        raise HTTPError(400, f"unknown target: {name[:40]}")
    extra = set(command) - {"action", "target", "args", "actuator", "command_id"}
    if extra:
        raise HTTPError(400, f"unknown command field: {sorted(extra)[0][:40]}")
    return Command(action, name, value, _args(command.get("args")), _actuator(command.get("actuator")),
                   _command_id(command.get("command_id"), ex))


def _args(args: Any) -> dict[str, Any]:
    if args is None:
        return {}
    if not isinstance(args, dict) or not args:
        raise HTTPError(400, "args must be an object with at least one argument")
    wanted = args.get("response_requested", "complete")
    if wanted not in RESPONSE_TYPES:
        raise HTTPError(400, f"response_requested must be one of {', '.join(RESPONSE_TYPES)}")
    for key in ("start_time", "stop_time", "duration"):
        if key in args and (isinstance(args[key], bool) or not isinstance(args[key], int) or args[key] < 0):
            raise HTTPError(400, f"{key} must be a whole number of milliseconds")
    return args


def _actuator(actuator: Any) -> dict[str, Any] | None:
    if actuator is None:
        return None
    if not isinstance(actuator, dict) or len(actuator) != 1:
        raise HTTPError(400, "actuator must be an object with exactly one key")
    (nsid, specifiers), = actuator.items()
    if nsid != NSID:
        raise HTTPError(501, COMMAND_NOT_SUPPORTED)  # addressed to a profile we do not implement
    if not isinstance(specifiers, dict):
        raise HTTPError(400, f"actuator {NSID} must be an object")
    if set(specifiers) - {"asset_id"}:
        raise HTTPError(501, OPTION_NOT_SUPPORTED)
    return specifiers


def _command_id(value: Any, ex: Exchange) -> str | None:
    if value is None:
        return ex.request_id  # Language Spec 3.3.1: the request_id is the command_id
    if not isinstance(value, str) or not _COMMAND_ID.fullmatch(value):
        raise HTTPError(400, "command_id must be 1-36 characters without spaces")
    return value


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
    site = app.sites.get(asset_id)
    if site is not None:
        return site
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


def on_site(app: App, call: Call, site: Site) -> Call:
    """The call as if it came in under that gateway's mount (its writes, stats and logs)."""
    return dataclasses.replace(call, site=site, mount="" if site is app.sites.default() else site.id)


# ---- the commands ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Context:
    app: App
    call: Call
    role: Role
    limit: CommandLimit
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
               "rate_limit": ctx.limit.per_minute}
    results = {f: answers[f] for f in dict.fromkeys(value)}  # a repeated name counts once
    return Outcome(200, results or None)


def pairs(app: App) -> dict[str, list[str]]:
    supported = {"query": ["features", "properties"]}
    if app.config.control_secret:
        supported["set"] = [s.target for s in SETTINGS]
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


def set_setting(ctx: Context, setting: Setting) -> Outcome:
    only_complete(ctx.command.args)
    if not ctx.app.config.control_secret or ctx.role is not Role.CONTROL:
        raise HTTPError(403, SET_DISABLED)
    raw = setting_text(ctx.command.value)
    result = setting.write(ctx.app, on_site(ctx.app, ctx.call, ctx.site), raw)
    return Outcome(200, {NSID: result})


def execute(ctx: Context) -> Outcome:
    """Dispatch an action-target pair; 501 for what the x-esm profile does not do."""
    command = ctx.command
    if command.action not in ("query", "set"):
        raise HTTPError(501, COMMAND_NOT_SUPPORTED)
    setting = next((s for s in SETTINGS if s.target == command.target), None)
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


def respond_as_asked(outcome: Outcome, args: dict[str, Any]) -> Outcome:
    """response_requested: ack -> 102 first; none -> no Response in the body; else the result."""
    wanted = args.get("response_requested", "complete")
    if wanted == "ack":
        return dataclasses.replace(outcome, interim=102)
    if wanted == "none":
        return dataclasses.replace(outcome, silent=True)
    return outcome


# ---- the seed connector's grammar ------------------------------------------------------

SEED_HEADERS = ("apikey", "oc2-api-key")


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


# ---- who is asking ---------------------------------------------------------------------

def authenticate(app: App, call: Call, flavor: Flavor) -> Role:
    """The bearer token (or the seed's key header): the control secret may set, the OpenC2
    token may query; anything else is 401 (429 -> 503 for a client that keeps guessing)."""
    headers = call.request.headers
    auth = headers.get("Authorization", "")
    token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    if not token and flavor is Flavor.SEED:
        token = next((headers.get(h, "") for h in SEED_HEADERS if headers.get(h)), "")
    secret = app.config.control_secret.reveal()
    if secret and control.same_secret(token, secret):
        return Role.CONTROL
    if control.same_secret(token, app.config.openc2_token.reveal()):
        return Role.QUERY
    raise control.refused_token(app, call, BAD_TOKEN)


# ---- answering -------------------------------------------------------------------------

def outcome_of(exc: ProxyError) -> Outcome:
    """A typed error as an OpenC2 status: only the Language Spec's codes go on the wire."""
    status = exc.status
    headers: list[tuple[str, str]] = []
    message = exc.message
    if isinstance(exc, GatewayError):
        status = 503
        headers.append(("Retry-After", str(max(1, math.ceil(exc.retry_after)))))
    elif isinstance(exc, HTTPError):
        headers.extend(exc.headers)
    if status == 405:
        status, message, headers = 400, "OpenC2 commands are sent with POST", [("Allow", "POST")]
    elif status not in STATUSES:
        status = 503 if status in (429, 502, 504) else 500 if status >= 500 else 400
    return Outcome(status, text=message, headers=tuple(headers))


def render(ex: Exchange, outcome: Outcome) -> Response:
    headers = [("Cache-Control", "no-cache"), *outcome.headers]
    echo = ex.header_id or ex.request_id
    rid = ex.request_id or ex.header_id  # transfer 1.1 3.3.3: from X-Request-ID when the body had none
    if echo is not None:
        headers.append(("X-Request-ID", echo))
    if outcome.silent and outcome.status == 200:
        return Response(200, headers, b"", interim=outcome.interim)
    response: dict[str, Any] = {"status": outcome.status}
    if outcome.text:
        response["status_text"] = outcome.text
    if outcome.results is not None:
        response["results"] = outcome.results
    if ex.flavor is Flavor.ENVELOPE:
        head: dict[str, Any] = {"created": int(time.time() * 1000)}
        if rid is not None:
            head["request_id"] = rid
        if ex.sender:
            head["to"] = [ex.sender]
        body: Any = {"headers": head, "body": {"openc2": {"response": response}}}
        kind = ENVELOPE_TYPE
    elif ex.flavor is Flavor.SEED:
        body = {"id_ref": ex.seed_id, **response}
        body.setdefault("results", "failed" if outcome.status >= 400 else None)
        kind = "application/json"
    else:
        body, kind = response, RESPONSE_TYPE
    data = json.dumps(body, allow_nan=False).encode()
    return Response(outcome.status, [("Content-Type", kind), *headers], data, interim=outcome.interim)


def _serve(app: App, call: Call, limit: CommandLimit, ex: Exchange) -> Outcome:
    given = call.request.headers.get("X-Request-ID")
    if given is not None:
        ex.header_id = request_id(given, "X-Request-ID")
    if call.request.method != "POST":
        raise HTTPError(405, "Method Not Allowed")
    role = authenticate(app, call, ex.flavor)
    wait = limit.take()
    if wait > 0:
        raise HTTPError(503, f"more than {limit.per_minute} commands a minute",
                        [("Retry-After", str(max(1, math.ceil(wait))))])
    message = decode(call)
    if ex.flavor is Flavor.SEED:
        return seed_command(app, message, ex)
    command = parse(unwrap(message, ex), ex)
    outcome = execute(Context(app, call, role, limit, command))
    return respond_as_asked(outcome, command.args)


def _flavor(call: Call) -> Flavor:
    if call.path == "/.well-known/openc2":
        return Flavor.ENVELOPE
    return Flavor.BARE if call.path == "/openc2" else Flavor.SEED


def _disabled() -> Response:
    return json_response(404, {"error": "Not Found"})


def render_error(app: App, exc: ProxyError, call: Call) -> Response:
    """The group's error renderer: errors raised before the handler ran (a wrong method)."""
    if not app.config.openc2_token:
        return _disabled()
    ex = Exchange(_flavor(call))
    given = call.request.headers.get("X-Request-ID")
    if given is not None and _ID.fullmatch(given):
        ex.header_id = given
    return render(ex, outcome_of(exc))


def routes(limit: CommandLimit) -> tuple[Route, ...]:
    """The OpenC2 route group: root only, POST only, its own error body."""
    def handler(app: App, call: Call) -> Response:
        if not app.config.openc2_token:
            return _disabled()
        ex = Exchange(_flavor(call))
        try:
            outcome = _serve(app, call, limit, ex)
        except ProxyError as exc:
            outcome = outcome_of(exc)
        except Exception:  # never a hang and never a non-OpenC2 500
            log.exception("openc2: command failed")
            outcome = Outcome(500, text="internal error")
        return render(ex, outcome)

    return tuple(Route(path, handler, methods=("POST", "OPTIONS"), root_only=True, errors=render_error,
                       doc=doc_for(path))
                 for path in PATHS)


# The v1.1 path, the v1.0 path, and the 2018 connector's two (with and without the slash,
# as its router took them).
PATHS = ("/.well-known/openc2", "/openc2", "/openc2/command/", "/openc2/command", "/oc2/", "/oc2")


# ---- what /openapi.json says about the group ------------------------------------------------
# Request shapes follow `parse`, `unwrap` and `seed_command`: a body that fits one answers
# 200, or 403/404/501/503 for reasons beyond its shape, never 400. Two legal choices are left
# out of the request shapes and only described: response_requested "none" (a 200 without a
# body) and "ack" (a 102 Processing first).

_SCHEMA_REF = "#/components/schemas/"
_UINT: dict[str, Any] = {"type": "integer", "minimum": 0}
_TARGET_NAME: dict[str, Any] = {"anyOf": [{"enum": list(TARGETS)},
                                          {"type": "string", "pattern": "^[a-z0-9-]{1,16}:[a-z0-9_]{1,32}$"}]}
_ASSET: dict[str, Any] = {"type": "object", "properties": {"asset_id": {
    "type": ["string", "null"], "description": "A gateway id or DIN; none: the default gateway"}}}
_COMMON: dict[str, Any] = {
    "args": {"type": "object", "minProperties": 1, "properties": {
        "response_requested": {"enum": ["status", "complete"],
                               "description": "also none (200 without a body) or ack (102 first)"},
        "start_time": _UINT, "stop_time": _UINT, "duration": _UINT},
        "description": "Anything but response_requested: 501 Option not supported"},
    "actuator": {"type": "object", "minProperties": 1, "maxProperties": 1,
                 "properties": {NSID: _ASSET},
                 "description": f"{NSID}: which gateway; another profile: 501"},
    "command_id": {"type": "string", "pattern": "^\\S{1,36}$"},
}


def _command(action: Any, target: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"type": "object", "required": ["action", "target"], "additionalProperties": False,
            "properties": {"action": action, "target": {
                "type": "object", "minProperties": 1, "maxProperties": 1, **target},
                **_COMMON, **fields}}


def _set(setting: str, value: dict[str, Any]) -> dict[str, Any]:
    return _command({"const": "set"}, {"required": [setting], "properties": {setting: value}})


def _shapes() -> dict[str, Any]:
    from proxy.api.apidoc import LEVEL, MODE

    settings = [s.target for s in SETTINGS]
    response: dict[str, Any] = {"type": "object", "required": ["status"], "properties": {
        "status": {"type": "integer"}, "status_text": {"type": "string"}, "results": {}}}
    return {
        "OpenC2Command": {"description": "An OpenC2 1.0 Command: what the x-esm profile does "
                          "(query features or properties, set a setting), or any other "
                          "action-target pair (501)", "anyOf": [
            _command({"const": "query"}, {"required": ["features"], "properties": {"features": {
                "type": "array", "maxItems": 10, "items": {"enum": list(FEATURES)}}}},
                args={"type": "object", "required": ["response_requested"], "additionalProperties": False,
                      "properties": {"response_requested": {"const": "complete"}}},
                actuator={"type": "object", "minProperties": 1, "maxProperties": 1,
                          "properties": {NSID: {"type": "object"}}}),
            _command({"const": "query"}, {"required": ["properties"], "properties": {"properties": {
                "type": "array", "minItems": 1, "maxItems": MAX_PROPERTIES, "items": {"type": "string"},
                "examples": [["battery_percentage", "site_power", "grid_status"]]}}}),
            _set(f"{NSID}:backup_reserve", dict(LEVEL)),
            _set(f"{NSID}:operation_mode", dict(MODE)),
            _set(f"{NSID}:grid_charging", dict(control.GRID_CHARGING_VALUE)),
            _set(f"{NSID}:grid_export", dict(control.GRID_EXPORT_VALUE)),
            _command({"enum": [a for a in ACTIONS if a not in ("query", "set")]},
                     {"propertyNames": _TARGET_NAME}, actuator={"type": "object", "minProperties": 1,
                                                                "maxProperties": 1}),
            _command({"enum": ["query", "set"]}, {"propertyNames": {
                "allOf": [_TARGET_NAME, {"not": {"enum": ["features", "properties", *settings]}}]}}),
        ]},
        "OpenC2Envelope": {"type": "object", "required": ["body"], "additionalProperties": False,
                           "description": "The HTTPS transfer 1.1 message around a Command",
                           "properties": {
                               "headers": {"type": "object", "properties": {
                                   "request_id": {"type": "string", "pattern": "^[\\x20-\\x7e]{1,128}$"}}},
                               "body": {"type": "object", "required": ["openc2"], "properties": {
                                   "openc2": {"type": "object", "required": ["request"],
                                              "additionalProperties": False, "properties": {
                                                  "request": {"$ref": _SCHEMA_REF + "OpenC2Command"}}}}},
                               "signature": {}}},
        "OpenC2Response": {**response, "description": "An OpenC2 1.0 Response; status is the "
                           "HTTP status"},
        "OpenC2ResponseEnvelope": {"type": "object", "required": ["headers", "body"], "properties": {
            "headers": {"type": "object", "required": ["created"], "properties": {
                "request_id": {"type": "string"}, "created": {"type": "integer"},
                "to": {"type": "array", "items": {"type": "string"}}}},
            "body": {"type": "object", "required": ["openc2"], "properties": {"openc2": {
                "type": "object", "required": ["response"], "properties": {
                    "response": {"$ref": _SCHEMA_REF + "OpenC2Response"}}}}}}},
        "OpenC2SeedCommand": {"description": "The 2018 connector's grammar", "anyOf": [
            {"type": "object", "required": ["action", "target"], "properties": {
                "id": {}, "action": {"enum": ["query", "Query", "QUERY"]},
                "target": {"oneOf": [
                    {"type": "object", "required": ["openc2"], "maxProperties": 1},
                    {"type": "object", "required": ["property"], "maxProperties": 1, "properties": {
                        "property": {"type": "object", "required": ["name"],
                                     "properties": {"name": {"type": "string"}}}}}]},
                "actuator": {"type": "object", "minProperties": 1, "maxProperties": 1,
                             "additionalProperties": {"anyOf": [_ASSET, {"not": {"type": "object"}}]}}}},
            {"type": "object", "required": ["action", "target"], "properties": {
                "id": {}, "action": {"enum": [a for a in ACTIONS if a != "query"]},
                "target": {"type": "object", "minProperties": 1, "maxProperties": 1}}}]},
        "OpenC2SeedResponse": {**response, "required": ["id_ref", "status", "results"],
                               "properties": {**response["properties"], "id_ref": {}}},
    }


def doc_for(path: str) -> Any:
    """The Doc of one OpenC2 path: what it takes and answers, in its own framing."""
    from proxy.api.apidoc import Answer, Doc, Param, Write

    ref = {"$ref": _SCHEMA_REF + "OpenC2Response"}
    envelope = {"$ref": _SCHEMA_REF + "OpenC2ResponseEnvelope"}
    seed = path not in ("/.well-known/openc2", "/openc2")
    replies: list[tuple[str, dict[str, Any]]]
    body: dict[str, Any]
    if seed:
        replies = [("application/json", {"$ref": _SCHEMA_REF + "OpenC2SeedResponse"})]
        body = {"application/json": {"$ref": _SCHEMA_REF + "OpenC2SeedCommand"}}
    else:
        command = {"anyOf": [{"$ref": _SCHEMA_REF + "OpenC2Envelope"},
                             {"$ref": _SCHEMA_REF + "OpenC2Command"}]}
        replies = [(ENVELOPE_TYPE, envelope), (RESPONSE_TYPE, ref)]  # as the request was framed
        body = {media: command for media in ("application/openc2+json", "application/openc2-cmd+json",
                                             "application/json")}
    off = Answer(404, "OpenC2 is off (PW_OPENC2_TOKEN is not set)", media="application/json")

    def answers(status: int, text: str, kinds: Any = replies, **more: Any) -> tuple[Answer, ...]:
        return tuple(Answer(status, text, schema, media=media, echo=("X-Request-ID",), **more)
                     for media, schema in kinds)

    write = Write(body, security=("openc2Token", "controlSecret"), summary="Run an OpenC2 command",
                  required=True,
                  description="Answered from the window cache; set writes as /control/* does. "
                              f"At most {RATE_LIMIT} commands a minute in all."
                              + (" The token may also come in an apikey or oc2-api-key header."
                                 if seed else ""),
                  headers=(Param("X-Request-ID", "Echoed in the answer",
                                 {"type": "string", "pattern": "^[\\x20-\\x7e]{1,128}$"}),),
                  answers=(
                      *answers(200, "The Response: results of the query, or the setting written"),
                      Answer(102, "Processing: the command asked for an ack (the result follows)",
                             None),
                      *answers(400, "Not an OpenC2 command (its status_text says why)"),
                      *answers(401, "Missing or wrong bearer token"),
                      *answers(403, "set without the control secret, or control disabled"),
                      *answers(404, "Unknown property or asset_id"), off,
                      *answers(500, "Internal error"),
                      *answers(501, "Command, target or option not supported"),
                      *answers(503, "Gateway unavailable, gateway refused the write, more than "
                                    f"{RATE_LIMIT} commands a minute, or too many wrong tokens",
                               retry_sometimes=True)))
    return Doc("OpenC2 Consumer (x-esm profile)" if not seed else "OpenC2, the 2018 connector's grammar",
               tag="openc2", write=write, shapes=_shapes(),
               other_methods="Any other method, OPTIONS included (there is no CORS preflight here), "
                             "answers 400 with Allow: POST in the OpenC2 framing of this path; "
                             "404 while OpenC2 is off.")
