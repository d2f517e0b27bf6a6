"""Per-device readings derived from one snapshot.

Both APIs describe the same hardware, so the way site totals are split across
Powerwalls and PV strings lives here once; the local API and TEDAPI builders only
format what these functions return.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .layout import PV_STRING_NAMES, Layout
from .model import Snapshot

PV_STRING_VOLTS = 380.0  # typical string voltage under sun
INVERTER_EFFICIENCY = 0.97


@dataclass(frozen=True)
class PvString:
    name: str
    connected: bool
    producing: bool
    voltage: float
    current: float

    @property
    def power(self) -> float:
        return self.voltage * self.current


@dataclass(frozen=True)
class UnitReading:
    """One Powerwall at one moment."""

    power_w: float
    remaining_wh: int
    full_pack_wh: int
    temperature_c: float
    fan_rpm: float
    fan_duty: float


def iso_time(wall_time: float) -> str:
    """Gateway-style timestamp with the local UTC offset."""
    return datetime.fromtimestamp(wall_time).astimezone().isoformat(timespec="microseconds")


def iso_seconds(wall_time: float) -> str:
    """Whole-second timestamp with offset, as the TEDAPI system clock reports it."""
    return datetime.fromtimestamp(wall_time).astimezone().isoformat(timespec="seconds")


def _split_int(total: int, weights: list[int]) -> list[int]:
    """Split `total` proportionally to `weights`, the parts summing exactly to it."""
    whole = sum(weights)
    parts = [round(total * weight / whole) for weight in weights[:-1]]
    return [*parts, total - sum(parts)]


def units(snapshot: Snapshot, layout: Layout) -> list[UnitReading]:
    """Battery power, stored energy, temperature and fans for each Powerwall."""
    if not layout.units:
        return []  # solar only
    weights = [unit.full_pack_wh for unit in layout.units]
    energies = _split_int(snapshot.remaining_wh, weights)
    share = snapshot.flows.battery / len(layout.units)
    powers = [round(share, 1)] * (len(layout.units) - 1)
    powers.append(round(snapshot.flows.battery - sum(powers), 1))
    readings = []
    for index, unit in enumerate(layout.units):
        # Inverters warm up with throughput, and fans follow the heat.
        load_factor = abs(powers[index]) / unit.max_power_w
        temperature = round(snapshot.ambient_c + 2.0 * index + 8.0 * load_factor, 1)
        duty = round(5.1 + 14.0 * load_factor, 1)
        readings.append(UnitReading(powers[index], energies[index], unit.full_pack_wh,
                                    temperature, round(900.0 + 26.0 * duty), duty))
    return readings


def _strings(names: tuple[str, ...], connected: tuple[str, ...], dc_power: float,
             total_connected: int) -> list[PvString]:
    producing = dc_power > 0.0
    voltage = PV_STRING_VOLTS if producing else 0.0
    current = round(dc_power / total_connected / PV_STRING_VOLTS, 2) if producing else 0.0
    return [PvString(name, name in connected, producing and name in connected,
                     voltage if name in connected else 0.0,
                     current if name in connected else 0.0) for name in names]


def pw3_strings(snapshot: Snapshot, layout: Layout) -> list[list[PvString]]:
    """PV inputs A-F of each Powerwall 3; the site's solar is shared over connected ones."""
    total = sum(len(unit.pv_strings) for unit in layout.units)
    dc_power = snapshot.flows.solar / INVERTER_EFFICIENCY
    return [_strings(PV_STRING_NAMES, unit.pv_strings, dc_power, total)
            for unit in layout.units]


def pvac_strings(snapshot: Snapshot, layout: Layout) -> list[PvString]:
    """Strings A-D of the Powerwall+ solar inverter (empty without one)."""
    if layout.pvac is None:
        return []
    connected = layout.pvac.pv_strings
    dc_power = snapshot.flows.solar / INVERTER_EFFICIENCY
    return _strings(PV_STRING_NAMES[:4], connected, dc_power, len(connected))


def all_strings(snapshot: Snapshot, layout: Layout) -> list[PvString]:
    """Every PV string of the site, in the order the local API lists them."""
    if layout.pvac is not None:
        return pvac_strings(snapshot, layout)
    return [string for group in pw3_strings(snapshot, layout) for string in group]


def pvac_fan_rpm(snapshot: Snapshot) -> tuple[int, int]:
    """Powerwall+ solar inverter fan (actual, target) in RPM; it runs with PV output."""
    target = round(min(3000.0, snapshot.flows.solar * 0.4)) if snapshot.flows.solar else 0
    actual = max(0, target - 12) if target else 0
    return actual, target
