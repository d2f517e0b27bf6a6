"""What a route says about itself in the OpenAPI document: a `Doc` in its row.

A route row (`proxy.api.app.Route`) carries a `Doc`: a summary, the shape of its 200
body, the other statuses it can answer, its query and path parameters and, for a
write, its request body and security. `proxy.api.openapi` turns the rows into the
document; shapes shared by several routes are named in `SCHEMAS` and referred to
with `ref()`. Everything here is data: no route, no request, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.site.actions import Mode

Schema = Mapping[str, Any]

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"
FORM = "application/x-www-form-urlencoded"

ANY: Schema = {}  # any JSON value
OBJECT: Schema = {"type": "object"}
NUMBER_OR_NULL: Schema = {"type": ["number", "null"]}
STRING_OR_NULL: Schema = {"type": ["string", "null"]}


def ref(name: str) -> Schema:
    """A reference to a shared shape in `SCHEMAS`."""
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """The shape, or JSON null (the gateway gave no value: never a made-up 0)."""
    return {"anyOf": [schema, {"type": "null"}]}


def keyed(name: str, schema: Schema) -> Schema:
    """{"<name>": value}: the /pw/<name> wrapping."""
    return {"type": "object", "required": [name], "properties": {name: schema}}


NAME: Schema = {"type": "string", "pattern": "^[A-Za-z0-9_.~-]{1,64}$"}


@dataclass(frozen=True, slots=True)
class Param:
    """A query parameter, or the path parameter a prefix row's "*" stands for."""

    name: str
    description: str
    schema: Schema = field(default_factory=lambda: {"type": "string"})
    examples: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Answer:
    """A status a route can answer, and what it carries."""

    status: int
    description: str
    body: Schema | None = field(default_factory=lambda: ref("Error"))  # None: no body
    retry_after: bool = False  # a Retry-After header always comes with it ...
    retry_sometimes: bool = False  # ... or may come with it
    media: str = JSON
    echo: tuple[str, ...] = ()  # headers that may come back (e.g. X-Request-ID)


@dataclass(frozen=True, slots=True)
class Write:
    """A POST: its body by media type, the security that guards it, and its answers (a 200
    that is not listed is the control routes' "done, with the gateway's reply")."""

    body: Mapping[str, Schema]
    security: tuple[str, ...] = ("controlSecret",)
    answers: tuple[Answer, ...] = ()
    summary: str = ""
    description: str = ""
    headers: tuple[Param, ...] = ()  # request header parameters
    required: bool = False  # a body must be sent


@dataclass(frozen=True, slots=True)
class Doc:
    """One route's documentation, kept in its row of the route table."""

    summary: str
    body: Schema = field(default_factory=dict)  # the 200 body; {} is any JSON
    media: str = JSON
    tag: str = "data"
    description: str = ""
    answers: tuple[Answer, ...] = ()  # statuses besides 200 (400 and the mount's 404 are added)
    query: tuple[Param, ...] = ()
    wildcard: Param | None = None  # what "*" of a prefix row stands for, e.g. /pw/{name}
    write: Write | None = None  # documentation of POST when the row serves it
    # A row whose other methods (OPTIONS included: no preflight) get something else than the
    # usual 405, e.g. OpenC2's 400: what they get. Its OPTIONS is then no operation of its own.
    other_methods: str = ""
    shapes: Mapping[str, Schema] = field(default_factory=dict)  # named shapes the row brings


# ---- answers that many routes share ----------------------------------------------------

UNAVAILABLE = Answer(503, "Gateway data unavailable: no answer and no copy young enough "
                          "(PW_CACHE_TTL). Retry after the seconds given.", retry_after=True)
NOT_IN_MODE = Answer(404, "Not available from the gateway in its configured mode")
CONTROL_OFF = Answer(403, "Control disabled: PW_CONTROL_SECRET is not set")
DATA = (NOT_IN_MODE, UNAVAILABLE)  # a data route: the mode may not have it, the gateway may be down

WRITE_ANSWERS = (
    Answer(400, "Bad value or body"),
    Answer(401, "Missing or wrong control token"),
    CONTROL_OFF,
    Answer(404, "Not available for this gateway's transport, or unknown action"),
    Answer(415, "Body neither application/x-www-form-urlencoded nor application/json"),
    Answer(429, "Too many wrong tokens from this client: wait as Retry-After says", retry_after=True),
    Answer(502, "The gateway refused or failed the write"),
    UNAVAILABLE,
)


# ---- shared shapes ------------------------------------------------------------------------

def _obj(required: tuple[str, ...], **props: Schema) -> Schema:
    return {"type": "object", "required": list(required), "properties": dict(props)}


def _all_required(**props: Schema) -> Schema:
    return _obj(tuple(props), **props)


_INT: Schema = {"type": "integer"}
_NUM: Schema = {"type": "number"}
_STR: Schema = {"type": "string"}
_BOOL: Schema = {"type": "boolean"}
_INT_OR_NULL: Schema = {"type": ["integer", "null"]}
_STRINGS: Schema = {"type": "array", "items": _STR}
_GATEWAY_STATUS: Schema = {"type": "string", "enum": ["starting", "ok", "degraded"]}
_CONNECTION: Schema = {"type": "string", "enum": ["starting", "unreachable", "refused", "cooling_down",
                                                  "ok"],
                       "description": "The connection in one word; `connection_error` says why"}
_GRID: Schema = {"type": ["string", "null"], "enum": ["DOWN", "SYNCING", "UP", None]}
_COUNTS: Schema = {"type": "object", "additionalProperties": _INT}

_GATEWAY_NUMBERS = _all_required(
    name=_STR, type=_STR, status=_GATEWAY_STATUS, online=_BOOL, stale=_BOOL,
    site_power=NUMBER_OR_NULL, battery_power=NUMBER_OR_NULL, load_power=NUMBER_OR_NULL,
    solar_power=NUMBER_OR_NULL, grid_power=NUMBER_OR_NULL, battery_percent=NUMBER_OR_NULL,
    battery_capacity=NUMBER_OR_NULL, battery_remaining=NUMBER_OR_NULL, grid_status=_GRID,
    error=STRING_OR_NULL,
)
_GATEWAY_ROW = _all_required(
    id=_STR, name=_STR, type={"type": "string", "enum": ["powerwall", "inverter"]},
    status=_GATEWAY_STATUS, mode=_STR, online=_BOOL, last_updated=NUMBER_OR_NULL,
    error=STRING_OR_NULL,
)
_AGG_COMMON = {"stale": _BOOL, "num_gateways": _INT, "timestamp": _INT, "missing": _STRINGS}
_GATEWAY_STATE = _obj(
    ("id", "status", "connected", "simulated", "control"),
    id=_STR, status=_GATEWAY_STATUS, connection=_CONNECTION, connection_error=STRING_OR_NULL,
    connected=_BOOL, host=STRING_OR_NULL, simulated=_BOOL,
    cooldown_remaining_seconds=_NUM, cooldown_strikes=_INT, login_backoff_remaining_seconds=_NUM,
    login_backoff_steps=_INT, fetches_in_flight=_INT, connect_attempts=_INT,
    connect_error=STRING_OR_NULL, control=_BOOL,
    calls={**_obj(("limit", "in_flight", "waiting"), limit=_INT, in_flight=_INT, waiting=_INT,
                  most_in_flight=_INT, dropped=_INT),
           "description": "Library calls: the limit (PW_GATEWAY_CONCURRENCY), in flight, waiting "
                          "their turn, the most in flight at once, waiting reads dropped unneeded"},
    resources={"type": "object", "additionalProperties": _obj(("period_seconds",),
                                                               period_seconds=_NUM),
               "description": "Resources read so far by the names PW_CACHE_PERIODS takes"},
)

_HISTORY = {**_obj(("status", "error", "path", "file_bytes"),
                   status={"type": "string", "enum": ["ok", "error", "off"]}, error=STRING_OR_NULL,
                   path=STRING_OR_NULL, file_bytes=_INT_OR_NULL),
            "description": "The history store (at the root): ok, error (why: a read-only folder, "
                           "a full disk) or off. It never changes the proxy's own status"}

SCHEMAS: dict[str, Schema] = {
    "Error": {**_all_required(error=_STR), "description": 'Every error of the API: {"error": "…"}'},
    "MeterBlock": {"type": "object", "description": "One meter (site, battery, load, solar); W, Wh, V, A",
                   "properties": {"instant_power": NUMBER_OR_NULL, "energy_exported": NUMBER_OR_NULL,
                                  "energy_imported": NUMBER_OR_NULL,
                                  "last_communication_time": STRING_OR_NULL}},
    "Aggregates": {"type": "object", "description": "Meter blocks after PW_NEG_SOLAR and "
                   "PW_SITE_ZERO_THRESHOLD",
                   "properties": {k: ref("MeterBlock") for k in ("site", "battery", "load", "solar")}},
    "Percentage": _all_required(percentage=NUMBER_OR_NULL),
    "GridStatus": _obj(("grid_status",), grid_status=_STR,
                       grid_services_active={"type": ["boolean", "null"]}),
    "Csv": {"type": "string", "description": "Comma-separated numbers, two decimals, one line "
            "(after a header line with ?headers)", "examples": ["0.00,419.90,0.00,419.90,65.29\n"]},
    "Summary": _all_required(
        grid=NUMBER_OR_NULL, home=NUMBER_OR_NULL, solar=NUMBER_OR_NULL, battery=NUMBER_OR_NULL,
        soe=NUMBER_OR_NULL, grid_status={"type": ["integer", "null"], "enum": [0, 1, None]},
        reserve=NUMBER_OR_NULL, time_remaining_hours=NUMBER_OR_NULL,
        full_pack_energy=NUMBER_OR_NULL, energy_remaining=NUMBER_OR_NULL,
        strings={"type": ["object", "null"]}),
    "Version": _all_required(version=STRING_OR_NULL, vint=_INT_OR_NULL),
    "Strings": {"type": "object", "description": "Solar strings by name (A, B, …)",
                "additionalProperties": {"type": "object", "properties": {
                    "Connected": {"type": ["boolean", "null"]}, "Current": NUMBER_OR_NULL,
                    "Power": NUMBER_OR_NULL, "State": STRING_OR_NULL, "Voltage": NUMBER_OR_NULL}}},
    "Temps": {"type": "object", "additionalProperties": NUMBER_OR_NULL,
              "description": "°C by device (TEPOD--…) or by Powerwall (PW1_temp, …)"},
    "Alerts": {"type": "array", "items": _STR, "description": "Active alert names"},
    "AlertsPw": {"type": "object", "additionalProperties": {"type": "integer", "const": 1}},
    "Stats": {
        "type": "object", "description": "Counters and configuration of the proxy (or of one gateway "
        "under /api/gateways/{id}/stats); secrets masked",
        "required": ["pypowerwall", "mode", "gets", "posts", "errors", "timeout", "uri", "ts",
                     "start", "clear", "uptime", "config", "gateway"],
        "properties": {"pypowerwall": _STR, "mode": _STR, "gets": _INT, "posts": _INT, "errors": _INT,
                       "timeout": _INT, "starting": _INT, "uri": _COUNTS, "ts": _INT, "start": _INT,
                       "clear": _INT, "tedapi_auth_mode": _STR,
                       "uptime": _STR, "mem": _INT, "site_name": STRING_OR_NULL, "config": OBJECT,
                       "gateway": _GATEWAY_STATE,
                       "gateways": {"type": "object", "additionalProperties": _GATEWAY_STATE,
                                    "description": "With several gateways, at the root: each one"},
                       "server": OBJECT, "history": _HISTORY}},
    "Health": {
        "type": "object", "description": "ok only while the gateway (at the root: every gateway) is ok",
        "required": ["status", "connection", "pypowerwall", "mode", "proxy_stats", "cached_data",
                     "gateway"],
        "properties": {"status": _GATEWAY_STATUS, "connection": _CONNECTION, "pypowerwall": _STR,
                       "mode": _STR, "transports": OBJECT, "fallback_mode": OBJECT,
                       "tedapi_mode": STRING_OR_NULL, "startup_time": _STR, "current_time": _STR,
                       "proxy_stats": _COUNTS, "connection_health": OBJECT, "cached_data": OBJECT,
                       "endpoint_statistics": OBJECT, "gateway": _GATEWAY_STATE,
                       "gateways": {"type": "object", "additionalProperties": OBJECT},
                       "history": _HISTORY}},
    "HealthReset": _all_required(status={"type": "string", "const": "reset_complete"},
                                 health_counters_reset=_BOOL, cache_cleared=_BOOL,
                                 cache_entries_removed=_INT, endpoint_stats_cleared=_INT),
    "Gateway": _GATEWAY_ROW,
    "Gateways": {"type": "array", "items": ref("Gateway")},
    "GatewayDetail": {"allOf": [_GATEWAY_ROW, _obj(
        ("site_name", "host", "default", "data", "routes"), site_name=STRING_OR_NULL,
        host=STRING_OR_NULL, default=_BOOL, data=ref("GatewayNumbers"), routes=_STR)]},
    "GatewayNumbers": _GATEWAY_NUMBERS,
    "Aggregate": {**_all_required(
        total_site_power=NUMBER_OR_NULL, total_battery_power=NUMBER_OR_NULL,
        total_load_power=NUMBER_OR_NULL, total_solar_power=NUMBER_OR_NULL,
        total_grid_power=NUMBER_OR_NULL, total_battery_percent=NUMBER_OR_NULL,
        total_battery_capacity=NUMBER_OR_NULL, total_battery_remaining=NUMBER_OR_NULL,
        grid_status=_GRID, num_gateways=_INT, num_online=_INT, num_degraded=_INT,
        missing=_all_required(power=_STRINGS, battery=_STRINGS), stale=_BOOL,
        gateways={"type": "object", "additionalProperties": ref("GatewayNumbers")},
        timestamp=_INT), "description": "Every gateway added up; a gateway without data is "
        "named in missing, never counted as 0"},
    "AggregatePower": _all_required(
        total_site_power=NUMBER_OR_NULL, total_battery_power=NUMBER_OR_NULL,
        total_load_power=NUMBER_OR_NULL, total_solar_power=NUMBER_OR_NULL,
        total_grid_power=NUMBER_OR_NULL, **_AGG_COMMON),
    "AggregateSoe": _all_required(total_battery_percent=NUMBER_OR_NULL, **_AGG_COMMON),
    "AggregateBattery": _all_required(
        total_battery_percent=NUMBER_OR_NULL, total_battery_capacity=NUMBER_OR_NULL,
        total_battery_remaining=NUMBER_OR_NULL, total_battery_power=NUMBER_OR_NULL, **_AGG_COMMON),
    "AggregateStatus": _all_required(
        grid_status=_GRID, num_gateways=_INT, num_online=_INT, num_degraded=_INT, stale=_BOOL,
        timestamp=_INT, gateways={"type": "object", "additionalProperties": _all_required(
            status=_GATEWAY_STATUS, online=_BOOL, grid_status=_GRID, error=STRING_OR_NULL)}),
    "PerGateway": {"type": "object", "description": "Each gateway's value by gateway id; null: "
                   "that gateway gave nothing"},
    "ControlStatus": _all_required(
        enabled=_BOOL, ready=_BOOL, actions=_STRINGS, reserve=NUMBER_OR_NULL, mode=STRING_OR_NULL),
    "OpenAPI": {"type": "object", "required": ["openapi", "info", "paths"],
                "description": "This document"},
}


# ---- control bodies -----------------------------------------------------------------------

LEVEL: Schema = {"description": "Reserve, integer 0–100",
                 "anyOf": [{"type": "integer", "minimum": 0, "maximum": 100},
                           {"type": "string", "pattern": "^(0{0,2}[0-9]|0?[1-9][0-9]|100)$"}]}
MODE: Schema = {"type": "string", "enum": [m.value for m in Mode]}
ASCII: Schema = {"type": "string", "pattern": "^[\\u0000-\\u007f]*$"}
TOKEN: Schema = {**ASCII, "description": "PW_CONTROL_SECRET (or send it as Authorization: Bearer)"}
FORM_FIELDS = 10  # a form with more fields is refused (400)
_EMPTY: Schema = {"type": "string", "maxLength": 0}


FIELDS = ("value", "token", "mode", "level")  # the JSON fields a control body may carry ...
_FIELD: Schema = {"anyOf": [ASCII, {"type": "integer"}, {"type": "boolean"}]}  # ... and their types


def _form(properties: Mapping[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    return {"type": "object", "required": list(required), "properties": dict(properties),
            "maxProperties": FORM_FIELDS, "additionalProperties": ASCII}


def _json(properties: Mapping[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    return {"type": "object", "required": list(required),
            "properties": {**{name: _FIELD for name in FIELDS}, **properties}}


def control_body(value: Schema, **more: Schema) -> dict[str, Schema]:
    """A control POST body by media type. Without a value (or an empty one) it reads the current
    setting and ignores the other fields; with a value it writes it, with the `more` fields
    (empty: not given). Other fields are ignored; in a form they must be ASCII, not repeated,
    and at most ten in all. The whole body: at most 4 KiB."""
    read = {"value": _EMPTY, "token": TOKEN}
    write = {"value": value, **{name: {"anyOf": [schema, _EMPTY]} for name, schema in more.items()},
             "token": TOKEN}
    return {FORM: {"anyOf": [_form(read), _form(write, ("value",))]},
            JSON: {"anyOf": [_json(read), _json(write, ("value",))]}}


def token_body() -> dict[str, Schema]:
    """A POST body that carries only the token (other fields are ignored)."""
    return {FORM: _form({"token": TOKEN}), JSON: _json({"token": TOKEN})}
