"""What the history does with one gateway's window: samples, daily energy, events.

The feed (`proxy.history.feed`) hands over a `Window` per gateway per cache window; the
recorder writes its samples, turns the lifetime energy counters into energy per local day,
runs the event watch and passes each event to the store and to every outlet (webhooks, live
streams, MQTT). It works without a store too (events are still found and sent), and knows
nothing of how windows are read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from proxy.history import energy, schema
from proxy.history.events import Event, Observation, State, watch
from proxy.history.schema import Sample
from proxy.site.actions import ACTIONS

if TYPE_CHECKING:  # the store (and sqlite3) is loaded only where one is opened
    from proxy.history.store import Store

log = logging.getLogger("proxy.history")

Outlet = Callable[[Event], None]
Origin = Callable[[str, str], str | None]  # (gateway, setting) -> who changed it lately, or None
COUNTERS = {"energy_imported": "imported", "energy_exported": "exported"}
FIRMWARE_POINT = "firmware_version"


@dataclass(frozen=True, slots=True)
class Window:
    """One gateway's fresh readings of one window."""

    gw: str
    t: int  # Unix seconds
    fresh: bool  # the gateway gave data this window (else only the proxy's own view)
    samples: tuple[Sample, ...]
    alerts: tuple[str, ...] | None = None  # None: not read this window
    error: str | None = None

    def value(self, point: str) -> float | str | None:
        return next((s.value for s in self.samples if s.point == point and not s.label), None)


def observation(window: Window) -> Observation:
    grid, mode, reserve = (window.value(p) for p in ("grid_status", "operation_mode", "battery_reserve"))
    return Observation(
        t=window.t, fresh=window.fresh, error=window.error,
        grid=grid if isinstance(grid, str) else None, mode=mode if isinstance(mode, str) else None,
        reserve=float(reserve) if isinstance(reserve, (int, float)) else None, alerts=window.alerts)


# The settings the events watch that each write changes, by the actions table's names.
CHANGES = {action.name: action.changes for action in ACTIONS if action.changes}
ORIGIN_FRESH = 60.0  # a change seen this long after a write of this proxy is that write's


class Origins:
    """Who wrote each gateway's settings lately (the actions' audit records): a change the
    events see soon after is told as that front door's (http, openc2, mqtt), once."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._latest: dict[tuple[str, str], tuple[str, float]] = {}  # (gw, setting) -> (origin, at)

    def heard(self, gw: str, action: str, origin: str, accepted: bool) -> None:
        if not accepted:
            return
        with self._lock:
            for setting in CHANGES.get(action, ()):
                self._latest[(gw, setting)] = (origin, self._clock())

    def __call__(self, gw: str, setting: str) -> str | None:
        with self._lock:
            found = self._latest.pop((gw, setting), None)
        if found is None or self._clock() - found[1] > ORIGIN_FRESH:
            return None
        return found[0]


class Recorder:
    """Samples, energy and events of every gateway; one lock, no I/O but the store's."""

    def __init__(self, store: Store | None, zones: Mapping[str, ZoneInfo], *,
                 outlets: Sequence[Outlet] = (), origin: Origin = lambda gw, setting: None) -> None:
        self.store = store
        self.zones = dict(zones)
        self.outlets = list(outlets)
        self.origin = origin
        self._lock = threading.Lock()
        self._states: dict[str, State] = {}
        self._counters: dict[tuple[str, str, str], energy.Reading] = {}
        self._loaded: set[str] = set()
        self.events = 0

    def _usable(self) -> Store | None:
        return self.store if self.store is not None and self.store.available() else None

    def record(self, window: Window) -> list[Event]:
        """Write one window and return the events it brought (already sent to the outlets)."""
        with self._lock:
            self._load(window.gw)
            store = self._usable()
            if store is not None and window.samples:
                store.add_samples(window.gw, window.t, window.samples)
            self._energy(window)
            before = self._states.get(window.gw, State())
            state, found = watch(before, observation(window), window.gw,
                                 lambda setting: self.origin(window.gw, setting))
            self._states[window.gw] = state
            if store is not None and state != before:
                store.set_state(f"watch:{window.gw}", state.as_json())
        self.publish(found)
        return found

    def _load(self, gw: str) -> None:
        """What the store remembers of a gateway (its watch, its last counter readings)."""
        if gw in self._loaded:
            return
        store = self._usable()
        if store is None:
            return
        self._loaded.add(gw)
        self._states[gw] = State.from_json(store.get_state(f"watch:{gw}"))
        for (meter, direction), (value, t) in store.counters(gw).items():
            self._counters[(gw, meter, direction)] = energy.Reading(value, t)

    def _energy(self, window: Window) -> None:
        """The counters' gains, per local day and meter, and the counters' newest readings."""
        zone = self.zones.get(window.gw)
        if zone is None:
            return
        gains: dict[tuple[str, str], list[float]] = {}
        newest: list[tuple[str, str, float, float]] = []
        for sample in window.samples:
            direction = COUNTERS.get(sample.point)
            if direction is None or not isinstance(sample.value, (int, float)):
                continue
            key = (window.gw, sample.label, direction)
            last = self._counters.get(key)
            now = energy.Reading(float(sample.value), float(window.t))
            for day, wh in energy.gain(last, now, zone):
                cell = gains.setdefault((day.isoformat(), sample.label), [0.0, 0.0])
                cell[0 if direction == "imported" else 1] += wh
            if last is None or now.t > last.t:
                self._counters[key] = now
                newest.append((sample.label, direction, now.value, now.t))
        store = self._usable()
        if store is not None:
            store.add_energy(window.gw, [(day, meter, i, e) for (day, meter), (i, e) in gains.items()])
            store.save_counters(window.gw, newest)

    def firmware_seen(self, gw: str, old: str | None, new: str, t: float) -> None:
        """From the firmware watch: the version as a sample, and an event when it changed."""
        found: list[Event] = []
        with self._lock:
            store = self._usable()
            if store is not None:
                store.add_samples(gw, int(t), [Sample(FIRMWARE_POINT, "", new, schema.LAST)])
                store.set_state(f"firmware:{gw}", new)
            if old is not None and old != new:
                found.append(Event(t, gw, "firmware_changed", {"old": old, "new": new}))
        self.publish(found)

    def publish(self, found: Sequence[Event]) -> None:
        """Keep each event and tell every outlet; an outlet's failure stays its own."""
        for event in found:
            self.events += 1
            store = self._usable()
            if store is not None:
                store.add_event(event.time, event.gw, event.kind, dict(event.detail))
            for outlet in self.outlets:
                try:
                    outlet(event)
                except Exception:
                    log.exception("history: an event outlet failed")

    def known_firmware(self, gateways: Sequence[str]) -> dict[str, str]:
        """The versions the store remembers from the last run."""
        store = self._usable()
        if store is None:
            return {}
        found = {gw: store.get_state(f"firmware:{gw}") for gw in gateways}
        return {gw: v for gw, v in found.items() if isinstance(v, str)}
