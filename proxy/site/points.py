"""One table of measurements: what /metrics exports and MQTT publishes, one frozen row each.

A `Point` names a measurement once: its key (topic level, unique id, metric
stem), its unit, its kind, the Home Assistant device and state class, the
sources it needs and how to read it from one gateway's `Frame`. A frame is
one gateway's window-cached readings (`fleet.read_sites`), so every output
built on points costs no gateway request beyond the one per resource per
window that the cache already allows. Adding a measurement is adding a row.

Absence stays absence: a point with no data reads as None (or an empty
mapping) and is left out, never published or exported as a made-up 0.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from proxy import payloads
from proxy.gateway.sources import (
    AGGREGATES,
    ALERTS,
    GRID_STATUS,
    PW_SOURCES,
    RESERVE,
    SOE,
    SYSTEM_STATUS,
    TEMPS,
    TIME_REMAINING,
    VERSION,
    Source,
)
from proxy.site import frames as fleet
from proxy.site.site import Reading, Site, Sites, State

Scalar = float | str | bool


class Kind(Enum):
    GAUGE = "gauge"  # a number that goes up and down
    TOTAL = "total"  # a lifetime total that only grows (energy counters)
    STATE = "state"  # one of a few names (grid status, operation mode)
    TEXT = "text"  # free text (firmware version)
    FLAG = "flag"  # on or off (gateway online)


@dataclass(frozen=True, slots=True)
class Frame:
    """One gateway's readings of one window, as the points read them."""

    id: str
    name: str
    type: str
    status: str  # starting | ok | degraded
    values: Mapping[str, Any]  # source key -> value; missing when the source gave no data
    fresh: bool  # some value is gateway data of its window, not a last good copy
    stale: bool  # some value is a last good copy
    at: float | None  # monotonic time of the newest gateway data in the frame

    @property
    def online(self) -> bool:
        return self.status == "ok"

    def get(self, source: Source) -> Any:
        return self.values.get(source.key)


Read = Callable[[Any], Any]  # a frame (or the aggregate body) -> the value


@dataclass(frozen=True, slots=True)
class Point:
    """One measurement."""

    key: str  # topic level, unique-id suffix and metric stem: [a-z0-9_]
    name: str  # Home Assistant entity name and the metric's HELP text
    unit: str | None  # as Home Assistant shows it: W, %, Wh, h, °C
    kind: Kind
    device_class: str | None  # Home Assistant device class
    state_class: str | None  # Home Assistant state class
    sources: tuple[Source, ...]
    read: Read  # the value from a frame: a scalar, or {label value: scalar} with `label`
    label: str = ""  # several values, keyed by this label (per meter, per battery)
    states: tuple[str, ...] = ()  # STATE: the names it may take
    diagnostic: bool = False  # Home Assistant entity category "diagnostic"
    icon: str | None = None


# ---- reading helpers: pure functions of a frame ------------------------------------------

def number(value: Any) -> float | None:
    """A JSON number as float; None for anything else (booleans included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _section(frame: Frame, meter: str) -> dict[str, Any]:
    agg = frame.get(AGGREGATES)
    section = agg.get(meter) if isinstance(agg, dict) else None
    return section if isinstance(section, dict) else {}


def _power(meter: str) -> Read:
    return lambda frame: number(_section(frame, meter).get("instant_power"))


def _energy(direction: str) -> Read:
    def read(frame: Frame) -> dict[str, float]:
        found = {m: number(_section(frame, m).get(f"energy_{direction}")) for m in METERS}
        return {m: v for m, v in found.items() if v is not None}
    return read


def _grid_power(frame: Frame) -> float | None:
    # The aggregates are already shaped (PW_SITE_ZERO_THRESHOLD, PW_NEG_SOLAR) in the frame.
    return number(_section(frame, "site").get("instant_power"))


def _field(source: Source, name: str) -> Read:
    def read(frame: Frame) -> float | None:
        value = frame.get(source)
        return number(value.get(name)) if isinstance(value, dict) else None
    return read


def _value(source: Source) -> Read:
    return lambda frame: number(frame.get(source))


def _text(source: Source) -> Read:
    def read(frame: Frame) -> str | None:
        value = frame.get(source)
        return value.strip() or None if isinstance(value, str) else None
    return read


def _temperatures(frame: Frame) -> dict[str, float]:
    temps = frame.get(TEMPS)
    if not isinstance(temps, dict):
        return {}
    found = {str(name): number(value) for name, value in temps.items()}
    return {name: value for name, value in list(found.items())[:MAX_LABELS] if value is not None}


def _alerts(frame: Frame) -> float | None:
    alerts = frame.get(ALERTS)
    return float(len(alerts)) if isinstance(alerts, list) else None


def _grid_status(frame: Frame) -> str | None:
    value = frame.get(GRID_STATUS)
    return value if value in GRID_STATES else None


def _firmware(frame: Frame) -> str | None:
    version = _text(VERSION)(frame)
    return version.split()[0] if version else None


METERS = ("site", "solar", "battery", "load")
GRID_STATES = ("UP", "DOWN", "SYNCING")
MODES = ("self_consumption", "backup", "autonomous")
MAX_LABELS = 32  # values one labelled point may have (e.g. batteries); the rest are left out
MODE = PW_SOURCES["get_mode"]

# ---- the table --------------------------------------------------------------------------

POINTS: tuple[Point, ...] = (
    Point("site_power", "Site power", "W", Kind.GAUGE, "power", "measurement",
          (AGGREGATES,), _power("site")),
    Point("solar_power", "Solar power", "W", Kind.GAUGE, "power", "measurement",
          (AGGREGATES,), _power("solar")),
    Point("battery_power", "Battery power", "W", Kind.GAUGE, "power", "measurement",
          (AGGREGATES,), _power("battery")),
    Point("load_power", "Load power", "W", Kind.GAUGE, "power", "measurement",
          (AGGREGATES,), _power("load")),
    Point("grid_power", "Grid power", "W", Kind.GAUGE, "power", "measurement",
          (AGGREGATES,), _grid_power),
    Point("battery_level", "Battery level", "%", Kind.GAUGE, "battery", "measurement",
          (SOE,), _field(SOE, "percentage")),
    Point("battery_reserve", "Backup reserve", "%", Kind.GAUGE, None, "measurement",
          (RESERVE,), _value(RESERVE), icon="mdi:battery-lock"),
    Point("battery_remaining_energy", "Battery remaining energy", "Wh", Kind.GAUGE,
          "energy_storage", "measurement", (SYSTEM_STATUS,),
          _field(SYSTEM_STATUS, "nominal_energy_remaining")),
    Point("battery_full_energy", "Battery full energy", "Wh", Kind.GAUGE,
          "energy_storage", "measurement", (SYSTEM_STATUS,),
          _field(SYSTEM_STATUS, "nominal_full_pack_energy")),
    Point("battery_time_remaining", "Battery time remaining", "h", Kind.GAUGE, "duration",
          "measurement", (TIME_REMAINING,), _value(TIME_REMAINING)),
    Point("energy_imported", "energy imported", "Wh", Kind.TOTAL, "energy", "total_increasing",
          (AGGREGATES,), _energy("imported"), label="meter"),
    Point("energy_exported", "energy exported", "Wh", Kind.TOTAL, "energy", "total_increasing",
          (AGGREGATES,), _energy("exported"), label="meter"),
    Point("battery_temperature", "Battery temperature", "°C", Kind.GAUGE, "temperature",
          "measurement", (TEMPS,), _temperatures, label="battery", diagnostic=True),
    Point("grid_status", "Grid status", None, Kind.STATE, "enum", None,
          (GRID_STATUS,), _grid_status, states=GRID_STATES, icon="mdi:transmission-tower"),
    Point("operation_mode", "Operation mode", None, Kind.STATE, None, None,
          (MODE,), _text(MODE), states=MODES, icon="mdi:home-battery"),
    Point("alerts", "Active alerts", None, Kind.GAUGE, None, "measurement",
          (ALERTS,), _alerts, diagnostic=True, icon="mdi:alert-circle-outline"),
    Point("gateway_online", "Gateway online", None, Kind.FLAG, "connectivity", None,
          (), lambda frame: frame.online, diagnostic=True),
    Point("firmware_version", "Firmware version", None, Kind.TEXT, None, None,
          (VERSION,), _firmware, diagnostic=True, icon="mdi:chip"),
)


def sources_of(points: Sequence[Point]) -> tuple[Source, ...]:
    """Every source the points need, each once; the aggregate's snapshot sources first."""
    found: dict[str, Source] = {s.key: s for s in fleet.SNAPSHOT_SOURCES}
    for point in points:
        for source in point.sources:
            found.setdefault(source.key, source)
    return tuple(found.values())


POINT_SOURCES = sources_of(POINTS)


def values(point: Point, frame: Frame | dict[str, Any]) -> dict[str, Scalar]:
    """The point's values in a frame (or the aggregate body): {"": value} or
    {label value: value}; {} when there is none."""
    try:
        value = point.read(frame)
    except (TypeError, ValueError, AttributeError, KeyError):  # odd gateway data: no value
        return {}
    if point.label:
        return dict(value) if isinstance(value, dict) else {}
    return {} if value is None else {"": value}


# ---- frames: one gateway's window-cached readings ----------------------------------------

def frame(site: Site, sources: Sequence[Source], readings: Sequence[Reading | None]) -> Frame:
    found: dict[str, Any] = {}
    for source, reading in zip(sources, readings, strict=True):
        if reading is not None and reading.state is State.DATA and reading.value is not None:
            found[source.key] = reading.value
    agg = found.get(AGGREGATES.key)
    if isinstance(agg, dict):  # shaped as /aggregates shows it
        found[AGGREGATES.key] = payloads.process_aggregates(
            agg, neg_solar=site.shaping.neg_solar, zero_threshold=site.shaping.zero_threshold)
    data = [r for r in readings if r is not None and r.state is State.DATA]
    times = [r.at for r in data if r.at is not None]
    return Frame(
        id=site.id, name=display_name(site), type=site.config.type,
        status=site.gateway.status(), values=found,
        fresh=any(not r.stale for r in data), stale=any(r.stale for r in data),
        at=max(times) if times else None,
    )


def display_name(site: Site) -> str:
    """The configured name, else the site name the gateway reports, else "Powerwall <id>"."""
    site_name = site.gateway.site_name
    if site.config.name:
        return site.config.name
    if isinstance(site_name, str) and site_name.strip():
        return site_name.strip()
    return "Powerwall" if site.id == "default" else f"Powerwall {site.id}"


def read_frames(sites: Sites | Sequence[Site],
                sources: Sequence[Source] = POINT_SOURCES) -> list[tuple[Frame, fleet.Snapshot]]:
    """Each gateway's frame and its aggregate snapshot, read through the window cache."""
    group = sites if isinstance(sites, Sites) else Sites(list(sites))
    readings = fleet.read_sites(group, sources)
    count = len(fleet.SNAPSHOT_SOURCES)
    out = []
    for site in group:
        got = readings[site.id]
        out.append((frame(site, sources, got), fleet.snapshot(site, got[:count])))
    return out


# ---- the aggregate of several gateways ---------------------------------------------------

def _total(name: str) -> Read:
    return lambda body: number(body.get(name)) if isinstance(body, dict) else None


AGGREGATE_POINTS: tuple[Point, ...] = (
    Point("site_power", "Total site power", "W", Kind.GAUGE, "power", "measurement",
          (), _total("total_site_power")),
    Point("solar_power", "Total solar power", "W", Kind.GAUGE, "power", "measurement",
          (), _total("total_solar_power")),
    Point("battery_power", "Total battery power", "W", Kind.GAUGE, "power", "measurement",
          (), _total("total_battery_power")),
    Point("load_power", "Total load power", "W", Kind.GAUGE, "power", "measurement",
          (), _total("total_load_power")),
    Point("grid_power", "Total grid power", "W", Kind.GAUGE, "power", "measurement",
          (), _total("total_grid_power")),
    Point("battery_level", "Total battery level", "%", Kind.GAUGE, "battery", "measurement",
          (), _total("total_battery_percent")),
    Point("battery_remaining_energy", "Total battery remaining energy", "Wh", Kind.GAUGE,
          "energy_storage", "measurement", (), _total("total_battery_remaining")),
    Point("battery_full_energy", "Total battery full energy", "Wh", Kind.GAUGE,
          "energy_storage", "measurement", (), _total("total_battery_capacity")),
    Point("grid_status", "Grid status (worst)", None, Kind.STATE, "enum", None,
          (), lambda body: body.get("grid_status") if body.get("grid_status") in GRID_STATES
          else None, states=GRID_STATES, icon="mdi:transmission-tower"),
    Point("gateways_online", "Gateways online", None, Kind.GAUGE, None, "measurement",
          (), _total("num_online"), icon="mdi:lan-connect"),
)


def slug(text: str) -> str:
    """A topic level or id part from free text: [a-z0-9_-], never empty."""
    return re.sub(r"[^a-z0-9_-]+", "_", text.lower()).strip("_") or "x"
