"""A made-up home, window by window, written straight into a history store.

For the benchmark (a year of one gateway at 5-s windows) and for tests and screenshots that
need days of history without waiting days: solar follows the sun with passing clouds, the
home's load has a morning and an evening peak, the battery covers the difference within its
power and charge, the grid the rest; the lifetime counters integrate the flows, and the grid
goes down now and then. The numbers move like the simulator's, cheaply; they are no
replacement for the simulator where a gateway is what is being tested.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from proxy.history import schema
from proxy.history.recorder import Recorder, Window
from proxy.history.schema import Sample

DAY = 86400


@dataclass
class Home:
    """The state of the made-up home between windows."""

    seed: int = 1
    solar_peak: float = 9000.0  # W
    full_wh: float = 27000.0
    battery_max: float = 11500.0  # W
    soe: float = 0.6  # 0..1
    counters: dict[str, float] = field(default_factory=lambda: {
        "site_imported": 2.0e6, "site_exported": 1.5e6, "solar_exported": 9.0e6,
        "battery_imported": 3.0e6, "battery_exported": 2.8e6, "load_imported": 8.5e6})
    outage_until: float = 0.0
    cloud: float = 1.0
    utc_offset: float = 0.0  # seconds: the sun follows local time

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def step(self, t: float, seconds: float) -> tuple[Sample, ...]:
        """The home's samples for the window at Unix time `t`, `seconds` after the last one."""
        hour = ((t + self.utc_offset) % DAY) / 3600.0
        self.cloud = min(1.0, max(0.2, self.cloud + self.rng.uniform(-0.02, 0.02)))
        solar = max(0.0, math.sin(math.pi * (hour - 6.0) / 13.0)) * self.solar_peak * self.cloud
        load = 450 + 900 * math.exp(-((hour - 7.5) ** 2) / 2) + 1600 * math.exp(-((hour - 19) ** 2) / 3)
        load += self.rng.uniform(-80, 80)
        grid_up = self._grid(t)
        battery = self._battery(load - solar, seconds, grid_up)
        site = load - solar - battery if grid_up else 0.0
        self._count(solar, load, battery, site, seconds)
        return self._samples(solar, load, battery, site, grid_up)

    def _grid(self, t: float) -> bool:
        if t < self.outage_until:
            return False
        if self.rng.random() < 1.0 / (30 * DAY / 5):  # about one outage a month at 5-s windows
            self.outage_until = t + self.rng.uniform(300, 7200)
            return False
        return True

    def _battery(self, need: float, seconds: float, grid_up: bool) -> float:
        power = max(-self.battery_max, min(self.battery_max, need))
        if (power > 0 and self.soe <= (0.0 if not grid_up else 0.2)) or (power < 0 and self.soe >= 1.0):
            power = 0.0
        self.soe = min(1.0, max(0.0, self.soe - power * seconds / 3600.0 / self.full_wh))
        return power

    def _count(self, solar: float, load: float, battery: float, site: float, seconds: float) -> None:
        hours = seconds / 3600.0
        c = self.counters
        c["solar_exported"] += solar * hours
        c["load_imported"] += load * hours
        c["battery_exported" if battery > 0 else "battery_imported"] += abs(battery) * hours
        c["site_imported" if site > 0 else "site_exported"] += abs(site) * hours

    def _samples(self, solar: float, load: float, battery: float, site: float,
                 grid_up: bool) -> tuple[Sample, ...]:
        mean, last = schema.MEAN, schema.LAST
        out = [Sample("site_power", "", round(site, 1), mean), Sample("grid_power", "", round(site, 1), mean),
               Sample("solar_power", "", round(solar, 1), mean),
               Sample("battery_power", "", round(battery, 1), mean),
               Sample("load_power", "", round(load, 1), mean),
               Sample("battery_level", "", round(self.soe * 100, 2), mean),
               Sample("battery_reserve", "", 20.0, mean),
               Sample("grid_status", "", "UP" if grid_up else "DOWN", last),
               Sample("operation_mode", "", "self_consumption", last),
               Sample("gateway_online", "", 1.0, last)]
        for key, value in self.counters.items():
            meter, direction = key.split("_")
            out.append(Sample(f"energy_{direction}", meter, round(value, 1), last))
        return tuple(out)


def windows(home: Home, gw: str, start: int, end: int, step: int) -> Iterator[Window]:
    """The home's windows from `start` to `end`, `step` seconds apart."""
    for t in range(start, end, step):
        yield Window(gw, t, True, home.step(t, step))


def write(recorder: Recorder, home: Home, gw: str, start: int, end: int, step: int) -> int:
    """Record the home's windows as the feed would; how many were written."""
    count = 0
    for window in windows(home, gw, start, end, step):
        recorder.record(window)
        count += 1
    return count
