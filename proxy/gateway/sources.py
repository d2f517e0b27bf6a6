"""Every pypowerwall call the proxy makes, one frozen row each, with its contract.

A `Source` is one library call whose result is shared, per cache window, by
every route (and stream, scrape or MQTT publish) that needs it. Its contract
says what the value must look like; the gateway adapter checks it in one place
(`proxy.gateway.outcome.judge`), so a web page where an object belongs never
reaches a client as data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from proxy.config import ConfigError, GatewayConfig
from proxy.gateway.library import app_reserve
from proxy.gateway.outcome import Contract, Shape

Fetch = Callable[[Any], Any]  # a library call: Powerwall -> value

OBJECT = Contract(Shape.OBJECT)  # {} is an answer too: e.g. no string data
LIST = Contract(Shape.LIST)  # [] is an answer too: e.g. no alerts
JSON = Contract(Shape.JSON)
NUMBER = Contract(Shape.NUMBER)
TEXT = Contract(Shape.TEXT)
BOOL = Contract(Shape.BOOL)
ANY = Contract(Shape.ANY)


@dataclass(frozen=True, slots=True)
class Source:
    """One library call: its cache key, the call, and what its value must look like."""

    key: str
    fetch: Fetch
    contract: Contract


def poll(path: str, contract: Contract = JSON) -> Source:
    """A gateway /api/* path as the library's poll() returns it."""
    return Source(f"poll:{path}", lambda pw: pw.poll(path), contract)


AGGREGATES = poll("/api/meters/aggregates", OBJECT)
SOE = poll("/api/system_status/soe", OBJECT)
GRID_STATUS_RAW = poll("/api/system_status/grid_status", OBJECT)
LEVEL = Source("level", lambda pw: pw.level(), NUMBER)
LEVEL_SCALED = Source("level:scaled", lambda pw: pw.level(scale=True), NUMBER)
GRID_STATUS = Source("grid_status", lambda pw: pw.grid_status(), TEXT)
GRID_STATUS_NUMERIC = Source("grid_status:numeric", lambda pw: pw.grid_status("numeric"), NUMBER)
VITALS = Source("vitals", lambda pw: pw.vitals(), OBJECT)
STRINGS = Source("strings", lambda pw: pw.strings(), OBJECT)
TEMPS = Source("temps", lambda pw: pw.temps(), OBJECT)
ALERTS = Source("alerts", lambda pw: pw.alerts(), LIST)
SYSTEM_STATUS = Source("system_status", lambda pw: pw.system_status(), OBJECT)
RESERVE = Source("reserve", app_reserve, NUMBER)
TIME_REMAINING = Source("time_remaining", lambda pw: pw.get_time_remaining(), NUMBER)
VERSION = Source("version", lambda pw: pw.version(), TEXT)
SITE_NAME = Source("site_name", lambda pw: pw.site_name(), TEXT)
FANS = Source("fans", lambda pw: pw.tedapi.get_fan_speeds() if pw.tedapi else {}, OBJECT)

# /pw/<name>: the library's methods by name. The route wraps some of them in an
# object ({"level": ...}); the source is the library's own value.
PW_SOURCES: dict[str, Source] = {
    "level": LEVEL,
    "power": Source("pw:power", lambda pw: pw.power(), OBJECT),
    "site": Source("pw:site", lambda pw: pw.site(verbose=True), OBJECT),
    "solar": Source("pw:solar", lambda pw: pw.solar(verbose=True), OBJECT),
    "battery": Source("pw:battery", lambda pw: pw.battery(verbose=True), OBJECT),
    "load": Source("pw:load", lambda pw: pw.load(verbose=True), OBJECT),
    "grid": Source("pw:grid", lambda pw: pw.grid(verbose=True), OBJECT),
    "home": Source("pw:home", lambda pw: pw.home(verbose=True), OBJECT),
    "battery_blocks": Source("pw:battery_blocks", lambda pw: pw.battery_blocks(), OBJECT),
    "vitals": VITALS,
    "temps": TEMPS,
    "strings": Source("pw:strings", lambda pw: pw.strings(verbose=True), OBJECT),
    "din": Source("pw:din", lambda pw: pw.din(), TEXT),
    "uptime": Source("pw:uptime", lambda pw: pw.uptime(), TEXT),
    "version": VERSION,
    "status": Source("pw:status", lambda pw: pw.status(), OBJECT),
    "system_status": SYSTEM_STATUS,
    "grid_status": GRID_STATUS_RAW,
    "aggregates": AGGREGATES,
    "site_name": SITE_NAME,
    "alerts": ALERTS,
    "is_connected": Source("pw:is_connected", lambda pw: pw.is_connected(), BOOL),
    "get_reserve": RESERVE,
    "get_mode": Source("pw:get_mode", lambda pw: pw.get_mode(), TEXT),
    "get_time_remaining": TIME_REMAINING,
}

TEDAPI_SOURCES: dict[str, Source] = {
    "/tedapi/config": Source("/tedapi/config", lambda pw: pw.tedapi.get_config(), OBJECT),
    "/tedapi/status": Source("/tedapi/status", lambda pw: pw.tedapi.get_status(), OBJECT),
    "/tedapi/components": Source("/tedapi/components", lambda pw: pw.tedapi.get_components(), OBJECT),
    "/tedapi/battery": Source("/tedapi/battery", lambda pw: pw.tedapi.get_battery_blocks(), JSON),
    "/tedapi/controller": Source("/tedapi/controller", lambda pw: pw.tedapi.get_device_controller(), OBJECT),
}
CLOUD_SOURCES: dict[str, Source] = {
    "/cloud/battery": Source("/cloud/battery", lambda pw: pw.client.get_battery(), JSON),
    "/cloud/power": Source("/cloud/power", lambda pw: pw.client.get_site_power(), JSON),
    "/cloud/config": Source("/cloud/config", lambda pw: pw.client.get_site_config(), JSON),
}
FLEETAPI_SOURCES: dict[str, Source] = {
    "/fleetapi/info": Source("/fleetapi/info", lambda pw: pw.client.get_site_info(), JSON),
    "/fleetapi/status": Source("/fleetapi/status", lambda pw: pw.client.get_live_status(), JSON),
}


def _static_keys() -> set[str]:
    tables = (PW_SOURCES, TEDAPI_SOURCES, CLOUD_SOURCES, FLEETAPI_SOURCES)
    fixed = (AGGREGATES, SOE, GRID_STATUS_RAW, LEVEL, LEVEL_SCALED, GRID_STATUS, GRID_STATUS_NUMERIC,
             VITALS, STRINGS, TEMPS, ALERTS, SYSTEM_STATUS, RESERVE, TIME_REMAINING, VERSION,
             SITE_NAME, FANS)
    return {s.key for s in fixed} | {s.key for table in tables for s in table.values()}


# Resources named by a prefix: any mirrored gateway path, any control read.
_NAMED_BY_PREFIX = ("poll:/api/", "control:")


def unknown_resources(names: Iterable[str]) -> list[str]:
    """The names that are no resource (as /stats and /health list them)."""
    known = _static_keys()
    return [n for n in names if n not in known and not n.startswith(_NAMED_BY_PREFIX)]


def periods(config: GatewayConfig) -> dict[str, float]:
    """The owner's per-resource periods; a name that is no resource fails at start."""
    names = [name for name, _ in config.periods]
    unknown = unknown_resources(names)
    if unknown:
        raise ConfigError(f"gateway {config.id!r}: PW_CACHE_PERIODS (or the file's 'periods') names "
                          f"{unknown[0]!r}, which is no resource; use the names /stats lists "
                          "under gateway.resources, e.g. vitals or poll:/api/meters/aggregates")
    return {name: float(seconds) for name, seconds in config.periods}
