"""Events: what happened to a gateway, found by pure functions from consecutive observations.

`watch(state, observation, origin)` compares one window's observation of a gateway with what
was known before and returns the new state and the events it found:

- `grid_down` / `grid_up`: the grid status turned DOWN, and UP again (`duration_seconds` of
  the outage); SYNCING in between belongs to the outage;
- `alert_raised` / `alert_cleared`: an alert present (or gone) in two readings in a row, so a
  flicker is no event; alerts that only mirror the grid state are left to the grid events;
- `mode_changed` / `reserve_changed`: `old`, `new` and `by` (http, openc2, mqtt when a
  control write of this proxy asked for it, else `gateway`);
- `gateway_unreachable` / `gateway_back`: no fresh data for 60 s, and data again.

`firmware_changed` comes from the firmware watch (`proxy.history.firmware`). The first
observation is a baseline: what is true when the proxy starts with no memory (standing
alerts, the current mode) is no event; a state kept in the store carries over a restart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from proxy.payloads import real

UNREACHABLE_AFTER = 60.0  # seconds without fresh data before gateway_unreachable

# kind -> what it means (HELP.md and the OpenAPI document say the same)
KINDS: dict[str, str] = {
    "grid_down": "The grid went down (the site runs on its batteries and solar)",
    "grid_up": "The grid is back; detail.duration_seconds is how long it was down",
    "firmware_changed": "The gateway runs another firmware version (detail.old, detail.new)",
    "alert_raised": "An alert became active and held for two readings (detail.alert)",
    "alert_cleared": "An active alert went away for two readings (detail.alert)",
    "mode_changed": "The operation mode changed (detail.old, detail.new, detail.by)",
    "reserve_changed": "The backup reserve changed, in % (detail.old, detail.new, detail.by)",
    "gateway_unreachable": "No fresh data from the gateway for 60 s (detail.since, detail.error)",
    "gateway_back": "Data from the gateway again (detail.duration_seconds unreachable)",
}
# ?kind= may name a group: every kind that starts with it
GROUPS: dict[str, tuple[str, ...]] = {
    "grid": ("grid_down", "grid_up"),
    "alert": ("alert_raised", "alert_cleared"),
    "gateway": ("gateway_unreachable", "gateway_back"),
    "firmware": ("firmware_changed",),
    "mode": ("mode_changed",),
    "reserve": ("reserve_changed",),
}

# Alerts that say what the grid status already says: the grid events tell these.
GRID_ALERTS = frozenset({
    "SystemConnectedToGrid", "SystemIslandedActive", "SystemIslandedReady",
    "SystemTransitionToGrid", "SystemTransitionToIsland", "SystemMicroGridFaulted",
    "SystemWaitForUser", "GridFaulted", "ScheduledIslandContactorOpen",
})
BY_GATEWAY = "gateway"
RESERVE_EPSILON = 0.05  # % difference that counts as a change (the gateway stores tenths)


@dataclass(frozen=True, slots=True)
class Event:
    time: float  # Unix seconds
    gw: str
    kind: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"time": round(self.time, 3), "gw": self.gw, "kind": self.kind,
                "detail": dict(self.detail)}


@dataclass(frozen=True, slots=True)
class Observation:
    """One window of one gateway, as the events see it. None: not read (or no value)."""

    t: float
    fresh: bool  # gateway data of this window (not a stale copy, not an outage)
    error: str | None = None
    grid: str | None = None  # UP | DOWN | SYNCING
    mode: str | None = None
    reserve: float | None = None
    alerts: tuple[str, ...] | None = None  # read at most once a minute


@dataclass(frozen=True, slots=True)
class State:
    """What one gateway's watch knows; saved in the store so it survives a restart."""

    grid_down_since: float | None = None
    mode: str | None = None
    reserve: float | None = None
    alerts_known: bool = False
    alerts: frozenset[str] = frozenset()  # raised (active) alerts
    last_alerts: frozenset[str] = frozenset()  # the previous reading
    unreachable_since: float | None = None
    unreachable_told: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"grid_down_since": self.grid_down_since, "mode": self.mode, "reserve": self.reserve,
                "alerts_known": self.alerts_known, "alerts": sorted(self.alerts),
                "last_alerts": sorted(self.last_alerts),
                "unreachable_since": self.unreachable_since, "unreachable_told": self.unreachable_told}

    @classmethod
    def from_json(cls, data: Any) -> State:
        if not isinstance(data, dict):
            return cls()
        try:
            return cls(grid_down_since=real(data.get("grid_down_since")),
                       mode=data.get("mode") if isinstance(data.get("mode"), str) else None,
                       reserve=real(data.get("reserve")),
                       alerts_known=bool(data.get("alerts_known")),
                       alerts=frozenset(str(a) for a in data.get("alerts") or ()),
                       last_alerts=frozenset(str(a) for a in data.get("last_alerts") or ()),
                       unreachable_since=real(data.get("unreachable_since")),
                       unreachable_told=bool(data.get("unreachable_told")))
        except (TypeError, ValueError):
            return cls()


Origin = Callable[[str], str | None]  # setting ("mode", "reserve") -> who changed it lately


def watch(state: State, obs: Observation, gw: str,
          origin: Origin = lambda setting: None) -> tuple[State, list[Event]]:
    """The new state and the events one observation brings."""
    found: list[Event] = []
    state = _reachability(state, obs, gw, found)
    if obs.fresh:
        state = _grid(state, obs, gw, found)
        state = _settings(state, obs, gw, origin, found)
        state = _alerts(state, obs, gw, found)
    return state, found


def _reachability(state: State, obs: Observation, gw: str, found: list[Event]) -> State:
    if obs.fresh:
        if state.unreachable_told and state.unreachable_since is not None:
            found.append(Event(obs.t, gw, "gateway_back",
                               {"duration_seconds": round(obs.t - state.unreachable_since)}))
        if state.unreachable_since is None and not state.unreachable_told:
            return state  # the usual case: nothing to change
        return replace(state, unreachable_since=None, unreachable_told=False)
    since = state.unreachable_since if state.unreachable_since is not None else obs.t
    if not state.unreachable_told and obs.t - since >= UNREACHABLE_AFTER:
        found.append(Event(obs.t, gw, "gateway_unreachable",
                           {"since": round(since, 3), "error": obs.error}))
        return replace(state, unreachable_since=since, unreachable_told=True)
    return replace(state, unreachable_since=since)


def _grid(state: State, obs: Observation, gw: str, found: list[Event]) -> State:
    if obs.grid == "DOWN" and state.grid_down_since is None:
        found.append(Event(obs.t, gw, "grid_down", {}))
        return replace(state, grid_down_since=obs.t)
    if obs.grid == "UP" and state.grid_down_since is not None:
        found.append(Event(obs.t, gw, "grid_up",
                           {"duration_seconds": round(obs.t - state.grid_down_since)}))
        return replace(state, grid_down_since=None)
    return state


def _settings(state: State, obs: Observation, gw: str, origin: Origin, found: list[Event]) -> State:
    if obs.mode is not None and obs.mode != state.mode:
        if state.mode is not None:
            found.append(Event(obs.t, gw, "mode_changed", {
                "old": state.mode, "new": obs.mode, "by": origin("mode") or BY_GATEWAY}))
        state = replace(state, mode=obs.mode)
    if obs.reserve is not None and (state.reserve is None
                                    or abs(obs.reserve - state.reserve) >= RESERVE_EPSILON):
        if state.reserve is not None:
            found.append(Event(obs.t, gw, "reserve_changed", {
                "old": state.reserve, "new": obs.reserve, "by": origin("reserve") or BY_GATEWAY}))
        state = replace(state, reserve=obs.reserve)
    return state


def _alerts(state: State, obs: Observation, gw: str, found: list[Event]) -> State:
    if obs.alerts is None:
        return state
    now = frozenset(obs.alerts) - GRID_ALERTS
    if not state.alerts_known:  # no memory: what stands now is the baseline
        return replace(state, alerts_known=True, alerts=now, last_alerts=now)
    raised = sorted((now & state.last_alerts) - state.alerts)
    cleared = sorted(state.alerts - now - state.last_alerts)
    found.extend(Event(obs.t, gw, "alert_raised", {"alert": a}) for a in raised)
    found.extend(Event(obs.t, gw, "alert_cleared", {"alert": a}) for a in cleared)
    return replace(state, alerts=(state.alerts | set(raised)) - set(cleared), last_alerts=now)


def kinds_matching(wanted: str) -> tuple[str, ...]:
    """The kinds a ?kind= value names: comma-separated kinds or groups; ValueError otherwise."""
    out: list[str] = []
    for item in (part.strip() for part in wanted.split(",")):
        if item in KINDS:
            out.append(item)
        elif item in GROUPS:
            out.extend(GROUPS[item])
        else:
            names = ", ".join([*GROUPS, *KINDS])
            raise ValueError(f"unknown event kind {item!r}: use one of {names}")
    return tuple(dict.fromkeys(out))
