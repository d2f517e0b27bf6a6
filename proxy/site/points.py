"""One table of measurements: what /metrics exports, MQTT publishes and OpenC2 answers.

A `Point` names a measurement once: its key (topic level, unique id, metric stem), its
unit, its kind, the Home Assistant device and state class, the sources it needs and how
to read it from one gateway's `Frame` (`proxy.site.frames`). A row may say how it reads
over all gateways (`Total`: the /api/aggregate key that carries it) and under which name
OpenC2 offers it (`Property`). A frame is one gateway's window-cached readings, so every
output built on points costs no gateway request beyond the one per resource per window
that the cache already allows. Adding a measurement is adding a row.

Absence stays absence: a point with no data reads as None (or an empty mapping) and is
left out, never published or exported as a made-up 0.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from proxy.gateway import user_number
from proxy.gateway.sources import (
    AGGREGATES,
    ALERTS,
    GRID_STATUS,
    GRID_STATUS_RAW,
    LEVEL_SCALED,
    PW_SOURCES,
    RESERVE,
    SOE,
    SYSTEM_STATUS,
    TEMPS,
    TIME_REMAINING,
    VERSION,
    Source,
)
from proxy.payloads import number, real
from proxy.site.actions import Mode
from proxy.site.frames import Frame, with_core

Scalar = float | str | bool
Read = Callable[[Any], Any]  # a frame (or the aggregate body) -> the value


class Kind(Enum):
    GAUGE = "gauge"  # a number that goes up and down
    TOTAL = "total"  # a lifetime total that only grows (energy counters)
    STATE = "state"  # one of a few names (grid status, operation mode)
    TEXT = "text"  # free text (firmware version)
    FLAG = "flag"  # on or off (gateway online)


@dataclass(frozen=True, slots=True)
class Total:
    """How a point reads over all gateways: the /api/aggregate key that carries it."""

    field: str
    name: str = ""  # the aggregate entity's name; "" for "Total <the point's name>"
    key: str = ""  # its own key where it differs from the point's
    count: bool = False  # a count of gateways rather than a sum: a plain gauge
    icon: str | None = None


@dataclass(frozen=True, slots=True)
class Property:
    """How OpenC2's x-esm profile offers a measurement: its property name and, where the
    profile words the value as the gateway does (the Tesla app's charge, the gateway's grid
    status text, the whole firmware text), that reading instead of the row's."""

    name: str
    sources: tuple[Source, ...] = ()  # () for the row's own
    read: Read | None = None  # None for the row's own
    seed: str = ""  # the 2018 connector's name for it, if it had one


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
    total: Total | None = None  # how it reads over all gateways, if it does
    openc2: Property | None = None  # how OpenC2 offers it, if it does


# ---- reading helpers: pure functions of a frame ------------------------------------------

def _section(frame: Frame, meter: str) -> dict[str, Any]:
    agg = frame.get(AGGREGATES)
    section = agg.get(meter) if isinstance(agg, dict) else None
    return section if isinstance(section, dict) else {}


def _power(meter: str) -> Read:
    """A power as /aggregates shows it (PW_NEG_SOLAR, PW_SITE_ZERO_THRESHOLD on grid)."""
    return lambda frame: real((frame.power or {}).get(meter))


def _energy(direction: str) -> Read:
    def read(frame: Frame) -> dict[str, float]:
        found = {m: real(_section(frame, m).get(f"energy_{direction}")) for m in METERS}
        return {m: v for m, v in found.items() if v is not None}
    return read


def _field(source: Source, name: str) -> Read:
    def read(frame: Frame) -> float | None:
        value = frame.get(source)
        return real(value.get(name)) if isinstance(value, dict) else None
    return read


def _value(source: Source) -> Read:
    return lambda frame: real(frame.get(source))


def _text(source: Source) -> Read:
    def read(frame: Frame) -> str | None:
        value = frame.get(source)
        return value.strip() or None if isinstance(value, str) else None
    return read


def _as_given(source: Source, *path: str) -> Read:
    """A text exactly as the gateway gave it (OpenC2 answers in the gateway's words)."""
    def read(frame: Frame) -> str | None:
        value = frame.get(source)
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return value if isinstance(value, str) else None
    return read


def _reserve(frame: Frame) -> float | int | None:
    value = number(frame.get(RESERVE))
    return None if value is None else user_number(value)  # 20, not 20.000000000000004


def _temperatures(frame: Frame) -> dict[str, float]:
    temps = frame.get(TEMPS)
    if not isinstance(temps, dict):
        return {}
    found = {str(name): real(value) for name, value in temps.items()}
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
MODES = tuple(m.value for m in Mode)  # the modes the control actions write
MAX_LABELS = 32  # values one labelled point may have (e.g. batteries); the rest are left out
MODE = PW_SOURCES["get_mode"]

# ---- the table --------------------------------------------------------------------------

POINTS: tuple[Point, ...] = (
    Point("site_power", "Site power", "W", Kind.GAUGE, "power", "measurement",
          (AGGREGATES,), _power("site"), total=Total("total_site_power"),
          openc2=Property("site_power")),
    Point("solar_power", "Solar power", "W", Kind.GAUGE, "power", "measurement",
          (AGGREGATES,), _power("solar"), total=Total("total_solar_power"),
          openc2=Property("solar_power")),
    Point("battery_power", "Battery power", "W", Kind.GAUGE, "power", "measurement",
          (AGGREGATES,), _power("battery"), total=Total("total_battery_power"),
          openc2=Property("battery_power")),
    Point("load_power", "Load power", "W", Kind.GAUGE, "power", "measurement",
          (AGGREGATES,), _power("load"), total=Total("total_load_power"),
          openc2=Property("load_power")),
    Point("grid_power", "Grid power", "W", Kind.GAUGE, "power", "measurement",
          (AGGREGATES,), _power("grid"), total=Total("total_grid_power"),
          openc2=Property("grid_power")),
    Point("battery_level", "Battery level", "%", Kind.GAUGE, "battery", "measurement",
          (SOE,), _field(SOE, "percentage"), total=Total("total_battery_percent"),
          openc2=Property("battery_percentage", (LEVEL_SCALED,), _value(LEVEL_SCALED),
                          seed="battery_percentage")),  # OpenC2: the Tesla app's scale
    Point("battery_reserve", "Backup reserve", "%", Kind.GAUGE, None, "measurement",
          (RESERVE,), _reserve, icon="mdi:battery-lock",
          openc2=Property("backup_reserve_percent")),
    Point("battery_remaining_energy", "Battery remaining energy", "Wh", Kind.GAUGE,
          "energy_storage", "measurement", (SYSTEM_STATUS,),
          _field(SYSTEM_STATUS, "nominal_energy_remaining"),
          total=Total("total_battery_remaining")),
    Point("battery_full_energy", "Battery full energy", "Wh", Kind.GAUGE,
          "energy_storage", "measurement", (SYSTEM_STATUS,),
          _field(SYSTEM_STATUS, "nominal_full_pack_energy"),
          total=Total("total_battery_capacity")),
    Point("battery_time_remaining", "Battery time remaining", "h", Kind.GAUGE, "duration",
          "measurement", (TIME_REMAINING,), _value(TIME_REMAINING),
          openc2=Property("time_remaining_hours")),
    Point("energy_imported", "energy imported", "Wh", Kind.TOTAL, "energy", "total_increasing",
          (AGGREGATES,), _energy("imported"), label="meter"),
    Point("energy_exported", "energy exported", "Wh", Kind.TOTAL, "energy", "total_increasing",
          (AGGREGATES,), _energy("exported"), label="meter"),
    Point("battery_temperature", "Battery temperature", "°C", Kind.GAUGE, "temperature",
          "measurement", (TEMPS,), _temperatures, label="battery", diagnostic=True),
    Point("grid_status", "Grid status", None, Kind.STATE, "enum", None,
          (GRID_STATUS,), _grid_status, states=GRID_STATES, icon="mdi:transmission-tower",
          total=Total("grid_status", "Grid status (worst)"),
          openc2=Property("grid_status", (GRID_STATUS_RAW,), _as_given(GRID_STATUS_RAW, "grid_status"))),
    Point("operation_mode", "Operation mode", None, Kind.STATE, None, None,
          (MODE,), _text(MODE), states=MODES, icon="mdi:home-battery",
          openc2=Property("operation_mode")),
    Point("alerts", "Active alerts", None, Kind.GAUGE, None, "measurement",
          (ALERTS,), _alerts, diagnostic=True, icon="mdi:alert-circle-outline"),
    Point("gateway_online", "Gateway online", None, Kind.FLAG, "connectivity", None,
          (), lambda frame: frame.online, diagnostic=True,
          total=Total("num_online", "Gateways online", key="gateways_online", count=True,
                      icon="mdi:lan-connect")),
    Point("firmware_version", "Firmware version", None, Kind.TEXT, None, None,
          (VERSION,), _firmware, diagnostic=True, icon="mdi:chip",
          openc2=Property("firmware_version", read=_as_given(VERSION))),
)


POINT_SOURCES = with_core(s for point in POINTS for s in point.sources)


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


# ---- the aggregate of several gateways: the same rows, read from the /api/aggregate body ---

def _total(point: Point, field: str) -> Read:
    if point.kind is Kind.STATE:
        return lambda body: body.get(field) if body.get(field) in point.states else None
    return lambda body: real(body.get(field)) if isinstance(body, dict) else None


def over_all(point: Point) -> Point:
    """The row as it reads over all gateways (its `total`)."""
    total = point.total
    assert total is not None
    summed = replace(point, key=total.key or point.key, read=_total(point, total.field), sources=(),
                     name=total.name or f"Total {point.name.lower()}", icon=total.icon or point.icon,
                     diagnostic=False, total=None, openc2=None)
    if total.count:  # how many gateways: a plain number, whatever the row is per gateway
        return replace(summed, kind=Kind.GAUGE, unit=None, device_class=None, state_class="measurement")
    return summed


AGGREGATE_POINTS: tuple[Point, ...] = tuple(over_all(p) for p in POINTS if p.total is not None)


def slug(text: str) -> str:
    """A topic level or id part from free text: [a-z0-9_-], never empty."""
    return re.sub(r"[^a-z0-9_-]+", "_", text.lower()).strip("_") or "x"
