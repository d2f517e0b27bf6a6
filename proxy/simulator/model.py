"""The simulated home: solar, load, battery and grid, moving with time.

One `HomeModel` owns the state (its own lock) and hands out immutable `Snapshot`s.
Time is cut into ticks (1 s by default) and a snapshot is computed once per tick,
so the local API and TEDAPI answer with identical numbers within the same tick.
Instantaneous flows are a pure function of (seed, time, state); only the battery's
stored energy and the energy counters integrate from tick to tick.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from . import noise
from .layout import Layout

MODES = ("self_consumption", "backup", "autonomous")
GRID_CONNECTED = "SystemGridConnected"
GRID_ISLANDED = "SystemIslandedActive"
DEFAULT_RESERVE = 24.0  # raw gateway scale; the Tesla app shows 20 %
MAX_STEPS_PER_ADVANCE = 600  # caps the work after a long idle gap
CHARGE_EFFICIENCY = 0.95
GATEWAY_BOOT_AGE_S = 3 * 24 * 3600.0  # the gateway had been up this long when we start
BACKUP_GRID_CHARGE_W = 1500.0

# Noise channels: independent streams from the same seed.
_CLOUD, _LOAD_SLOW, _LOAD_FAST, _FREQ, _VOLT_1, _VOLT_2, _REACTIVE, _AMBIENT = range(1, 9)
_INITIAL = 100


@dataclass(frozen=True)
class Settings:
    """What the owner can change through /api/operation."""

    reserve_percent: float = DEFAULT_RESERVE
    mode: str = "self_consumption"


@dataclass(frozen=True)
class Energy:
    """Lifetime energy counters in Wh, named like the aggregates fields."""

    site_imported: float
    site_exported: float
    battery_imported: float  # charged
    battery_exported: float  # discharged
    solar_exported: float  # produced
    load_imported: float  # consumed


@dataclass(frozen=True)
class Flows:
    """Instantaneous real power in W (battery > 0 discharging, site > 0 importing)."""

    solar: float
    load: float
    battery: float
    site: float


@dataclass(frozen=True)
class Snapshot:
    """Everything both APIs need to describe one moment of the home."""

    tick: int
    wall_time: float
    uptime_s: float  # gateway uptime (it booted before the simulator started)
    flows: Flows
    remaining_wh: int
    full_pack_wh: int
    settings: Settings
    islanded: bool
    frequency: float
    v_l1n: float
    v_l2n: float
    reactive_var: float
    ambient_c: float
    energy: Energy

    @property
    def soe_percent(self) -> float:
        # A solar-only site stores nothing: 0 %, as its gateway reports.
        return self.remaining_wh / self.full_pack_wh * 100.0 if self.full_pack_wh else 0.0

    @property
    def grid_status(self) -> str:
        return GRID_ISLANDED if self.islanded else GRID_CONNECTED


def _bump(hour: float, centre: float, width: float) -> float:
    return math.exp(-(((hour - centre) / width) ** 2) / 2.0)


def local_hour(wall_time: float) -> float:
    """Hour of day (0-24, fractional) in the machine's local time."""
    parts = time.localtime(wall_time)
    return parts.tm_hour + parts.tm_min / 60.0 + parts.tm_sec / 3600.0


def solar_power(peak_w: float, hour: float, seed: int, t: float) -> float:
    """PV output: a daylight arch scaled by slowly drifting cloud cover."""
    if not 6.0 < hour < 19.5:
        return 0.0
    arch = math.pow(math.sin(math.pi * (hour - 6.0) / 13.5), 1.2)
    clouds = 0.85 + 0.15 * noise.smooth(seed, _CLOUD, t, 90.0)
    return peak_w * arch * clouds


def load_power(hour: float, seed: int, t: float) -> float:
    """House load: base plus morning/midday/evening peaks, with slow and fast noise."""
    profile = (450.0 + 900.0 * _bump(hour, 7.5, 1.2) + 300.0 * _bump(hour, 13.0, 3.0)
               + 1600.0 * _bump(hour, 19.0, 2.2))
    wobble = 0.12 * noise.smooth(seed, _LOAD_SLOW, t, 30.0)
    jitter = 0.05 * noise.smooth(seed, _LOAD_FAST, t, 3.0)
    return profile * (1.0 + wobble + jitter)


def _battery_on_grid(solar: float, load: float, soe: float, max_w: float,
                     settings: Settings) -> float:
    """Battery power while grid-tied: balance the house, respecting reserve and mode."""
    if settings.mode == "backup":
        if soe >= 100.0:
            return 0.0
        return -min(max_w, max(0.0, solar - load) + BACKUP_GRID_CHARGE_W)
    wanted = load - solar
    if wanted > 0.0:
        return min(wanted, max_w) if soe > settings.reserve_percent else 0.0
    return max(wanted, -max_w) if soe < 100.0 else 0.0


def _islanded_flows(solar: float, load: float, soe: float, max_w: float) -> Flows:
    """The battery alone forms the home's grid: surplus solar it cannot take is
    curtailed, and load it cannot carry is shed."""
    if solar >= load:
        charge = min(solar - load, max_w) if soe < 100.0 else 0.0
        return Flows(load + charge, load, -charge, 0.0)
    discharge = min(load - solar, max_w) if soe > 0.0 else 0.0
    return Flows(solar, solar + discharge, discharge, 0.0)


def balance(solar: float, load: float, soe: float, max_w: float, settings: Settings,
            islanded: bool) -> Flows:
    """Split the house's needs between battery and grid (grid is the rest)."""
    if islanded:
        return _islanded_flows(solar, load, soe, max_w)
    battery = _battery_on_grid(solar, load, soe, max_w, settings)
    return Flows(solar, load, battery, load - solar - battery)


def _rounded(flows: Flows, islanded: bool) -> Flows:
    # One decimal like a meter, and site recomputed so the four always add up.
    solar, load, battery = round(flows.solar, 1), round(flows.load, 1), round(flows.battery, 1)
    if islanded:
        return Flows(solar, load, round(load - solar, 1), 0.0)
    return Flows(solar, load, battery, round(load - solar - battery, 1))


def _integrate(energy: Energy, flows: Flows, hours: float) -> Energy:
    return Energy(
        site_imported=energy.site_imported + max(flows.site, 0.0) * hours,
        site_exported=energy.site_exported + max(-flows.site, 0.0) * hours,
        battery_imported=energy.battery_imported + max(-flows.battery, 0.0) * hours,
        battery_exported=energy.battery_exported + max(flows.battery, 0.0) * hours,
        solar_exported=energy.solar_exported + max(flows.solar, 0.0) * hours,
        load_imported=energy.load_imported + max(flows.load, 0.0) * hours,
    )


def _initial_energy(seed: int) -> Energy:
    def draw(index: int, low: float, high: float) -> float:
        return low + (high - low) * noise.uniform(seed, _INITIAL, index)

    return Energy(draw(1, 4.0e6, 7.0e6), draw(2, 1.0e6, 3.0e6), draw(3, 5.0e6, 8.0e6),
                  draw(4, 4.5e6, 7.5e6), draw(5, 9.0e6, 1.4e7), draw(6, 1.1e7, 1.6e7))


class HomeModel:
    """Thread-safe simulated home; `snapshot()` is the only way numbers leave it."""

    def __init__(self, layout: Layout, seed: int, *, tick_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 outage: Callable[[], bool] = lambda: False) -> None:
        self.layout = layout
        self.seed = seed
        self._tick_seconds = tick_seconds
        self._clock = clock
        self._outage = outage
        self._lock = threading.Lock()
        self._start = clock()
        self._wall_start = wall_clock()
        self._settings = Settings()
        self._version = 0  # bumps on every settings change to refresh the cached snapshot
        self._tick = 0
        self._remaining = layout.full_pack_wh * (0.45 + 0.4 * noise.uniform(seed, _INITIAL, 0))
        self._energy = _initial_energy(seed)
        self._cache: tuple[tuple[int, int, bool], Snapshot] | None = None

    @property
    def settings(self) -> Settings:
        with self._lock:
            return self._settings

    def set_operation(self, reserve_percent: float | None = None,
                      mode: str | None = None) -> Settings:
        """Change reserve (raw gateway %) and/or mode; later snapshots reflect it."""
        if mode is not None and mode not in MODES:
            raise ValueError(f"real_mode must be one of {', '.join(MODES)}")
        if reserve_percent is not None and not 0.0 <= reserve_percent <= 100.0:
            raise ValueError("backup_reserve_percent must be between 0 and 100")
        with self._lock:
            current = self._settings
            self._settings = replace(
                current,
                reserve_percent=current.reserve_percent if reserve_percent is None
                else float(reserve_percent),
                mode=current.mode if mode is None else mode)
            self._version += 1
            return self._settings

    def snapshot(self) -> Snapshot:
        """The home at the current tick (the same object for every caller in a tick)."""
        islanded = self._outage()
        with self._lock:
            tick = int((self._clock() - self._start) / self._tick_seconds)
            self._advance(tick, islanded)
            key = (tick, self._version, islanded)
            if self._cache is None or self._cache[0] != key:
                self._cache = (key, self._make_snapshot(tick, islanded))
            return self._cache[1]

    def _soe(self) -> float:
        full = self.layout.full_pack_wh
        return self._remaining / full * 100.0 if full else 0.0

    def _flows_at(self, tick: int, islanded: bool) -> Flows:
        t = tick * self._tick_seconds
        hour = local_hour(self._wall_start + t)
        solar = solar_power(self.layout.solar_peak_w, hour, self.seed, t)
        load = load_power(hour, self.seed, t)
        flows = balance(solar, load, self._soe(), self.layout.max_power_w, self._settings,
                        islanded)
        return _rounded(flows, islanded)

    def _advance(self, target: int, islanded: bool) -> None:
        """Integrate stored energy and counters from the last tick up to `target`.

        Past ticks are replayed with the current settings and grid state: the model
        only advances when someone looks, and settings rarely change between looks.
        """
        gap = target - self._tick
        if gap <= 0:
            return
        stride = max(1, math.ceil(gap / MAX_STEPS_PER_ADVANCE))
        while self._tick < target:
            step = min(stride, target - self._tick)
            flows = self._flows_at(self._tick, islanded)
            hours = step * self._tick_seconds / 3600.0
            self._store(flows.battery, hours)
            self._energy = _integrate(self._energy, flows, hours)
            self._tick += step

    def _store(self, battery_w: float, hours: float) -> None:
        # Charging loses a little to conversion; discharging is counted at the meter.
        delta = -battery_w * hours * (CHARGE_EFFICIENCY if battery_w < 0 else 1.0)
        full = self.layout.full_pack_wh
        self._remaining = min(float(full), max(0.0, self._remaining + delta))

    def _make_snapshot(self, tick: int, islanded: bool) -> Snapshot:
        t = tick * self._tick_seconds
        seed = self.seed
        # An islanded home runs on the inverters' own grid, which wobbles more.
        freq_spread = 0.05 if islanded else 0.015
        return Snapshot(
            tick=tick,
            wall_time=self._wall_start + t,
            uptime_s=GATEWAY_BOOT_AGE_S + t,
            flows=self._flows_at(tick, islanded),
            remaining_wh=round(self._remaining),
            full_pack_wh=self.layout.full_pack_wh,
            settings=self._settings,
            islanded=islanded,
            frequency=round(60.0 + freq_spread * noise.smooth(seed, _FREQ, t, 7.0), 3),
            v_l1n=round(121.0 + 1.2 * noise.smooth(seed, _VOLT_1, t, 11.0), 2),
            v_l2n=round(120.6 + 1.2 * noise.smooth(seed, _VOLT_2, t, 13.0), 2),
            reactive_var=round(-180.0 + 60.0 * noise.smooth(seed, _REACTIVE, t, 17.0), 1),
            ambient_c=round(27.0 + 3.0 * noise.smooth(seed, _AMBIENT, t, 300.0), 1),
            energy=self._energy,
        )
