"""One gateway's numbers per window (`Snapshot`) and the aggregate over gateways.

Each gateway is read through its own window cache (`Site.read`), so an
aggregate costs no gateway request beyond what each gateway's window already
made. The arithmetic is pure (`aggregate`), tested without a network: powers
summed, the state of energy weighted by each gateway's capacity, inverter-only
gateways left out of battery figures, and a gateway without data named and left
out of the sums, never counted as 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy import payloads
from proxy.errors import ProxyError
from proxy.gateway.sources import AGGREGATES, GRID_STATUS, SOE, SYSTEM_STATUS, Source
from proxy.site.site import Reading, Site, Sites, State

# Worst first: the aggregate grid status is the worst any gateway reports.
GRID_ORDER = ("DOWN", "SYNCING", "UP")
POWERS = (("site", "total_site_power"), ("battery", "total_battery_power"),
          ("load", "total_load_power"), ("solar", "total_solar_power"))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One gateway's numbers for the aggregate; None where the gateway gave nothing."""

    id: str
    name: str
    type: str
    status: str
    online: bool
    power: dict[str, float | None] | None = None  # site/battery/load/solar/grid, W
    percent: float | None = None  # the gateway's own state of energy
    full_wh: float | None = None  # nominal full-pack energy
    remaining_wh: float | None = None
    grid_status: str | None = None
    stale: bool = False
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def has_battery(self) -> bool:
        return self.type != "inverter"


# ---- reading: one window-cached read per source per gateway ----------------------------

def read_sites(sites: Sites, sources: Sequence[Source]) -> dict[str, list[Reading | None]]:
    """Every gateway's readings; fetches of all gateways run at once, waits share a deadline.

    A reading is None where the gateway does not support the source (e.g. cloud vitals)."""
    for site in sites:
        site.gateway.prefetch(sources)
    return {site.id: [read_one(site, s) for s in sources] for site in sites}


def read_one(site: Site, source: Source) -> Reading | None:
    try:
        return site.read(source)
    except ProxyError:
        return None


def _value(reading: Reading | None) -> Any:
    return reading.value if reading is not None and reading.state is State.DATA else None


def _stale(readings: Sequence[Reading | None]) -> bool:
    return any(r is not None and r.stale for r in readings)


def _error(readings: Sequence[Reading | None]) -> str | None:
    for r in readings:
        if r is not None and r.error is not None:
            return r.error.message
    return None


SNAPSHOT_SOURCES = (AGGREGATES, SOE, SYSTEM_STATUS, GRID_STATUS)


def snapshot(site: Site, readings: Sequence[Reading | None]) -> Snapshot:
    agg, soe, system, grid = (_value(r) for r in readings)
    status = site.gateway.status()
    values = payloads.power_values(agg, neg_solar=site.shaping.neg_solar,
                                   zero_threshold=site.shaping.zero_threshold) if agg else None
    power = None
    if values is not None and all(values[k] is not None for k in ("grid", "home", "solar", "battery")):
        power = {"site": _number(agg, "site"), "battery": values["battery"], "load": values["home"],
                 "solar": values["solar"], "grid": values["grid"]}
    system = system if isinstance(system, dict) else {}
    return Snapshot(
        id=site.id, name=site.config.name or site.id, type=site.config.type, status=status,
        online=status == "ok", power=power,
        percent=_float(soe.get("percentage")) if isinstance(soe, dict) else None,
        full_wh=_float(system.get("nominal_full_pack_energy")),
        remaining_wh=_float(system.get("nominal_energy_remaining")),
        grid_status=grid if isinstance(grid, str) else None,
        stale=_stale(readings), error=_error(readings),
    )


def _number(agg: Any, section: str) -> float | None:
    value = agg.get(section, {}).get("instant_power") if isinstance(agg, dict) else None
    return _float(value)


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


# ---- arithmetic: pure ------------------------------------------------------------------

def _sum(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(sum(present), 3) if present else None


def aggregate_power(snaps: Sequence[Snapshot]) -> dict[str, Any]:
    with_power = [s for s in snaps if s.power is not None]
    out: dict[str, Any] = {}
    for key, name in POWERS:
        pool = [s for s in with_power if key != "battery" or s.has_battery]
        out[name] = _sum([s.power[key] for s in pool if s.power is not None])
    out["total_grid_power"] = _sum([s.power["grid"] for s in with_power if s.power is not None])
    out["missing"] = [s.id for s in snaps if s.power is None]
    return out


def aggregate_battery(snaps: Sequence[Snapshot]) -> dict[str, Any]:
    """SOE weighted by each gateway's capacity; only gateways with a battery and both numbers."""
    batteries = [s for s in snaps if s.has_battery]
    known = [s for s in batteries if s.full_wh and s.percent is not None]
    capacity = sum(s.full_wh for s in known if s.full_wh)
    percent = (sum(s.percent * s.full_wh for s in known if s.percent is not None and s.full_wh)
               / capacity) if capacity else None
    remaining = [s.remaining_wh for s in batteries if s.full_wh and s.remaining_wh is not None]
    return {
        "total_battery_percent": None if percent is None else round(percent, 2),
        "total_battery_capacity": round(capacity, 1) if known else None,
        "total_battery_remaining": _sum(remaining) if len(remaining) == len(known) else None,
        "missing": [s.id for s in batteries if s not in known],
    }


def worst_grid(snaps: Sequence[Snapshot]) -> str | None:
    statuses = [s.grid_status for s in snaps if s.grid_status in GRID_ORDER]
    return min(statuses, key=GRID_ORDER.index) if statuses else None


def aggregate(snaps: Sequence[Snapshot], now: float) -> dict[str, Any]:
    """The full /api/aggregate object."""
    power, battery = aggregate_power(snaps), aggregate_battery(snaps)
    return {
        **{k: v for k, v in power.items() if k != "missing"},
        **{k: v for k, v in battery.items() if k != "missing"},
        "grid_status": worst_grid(snaps),
        "num_gateways": len(snaps),
        "num_online": sum(s.online for s in snaps),
        "num_degraded": sum(s.status == "degraded" for s in snaps),
        "missing": {"power": power["missing"], "battery": battery["missing"]},
        "stale": any(s.stale for s in snaps),
        "gateways": {s.id: gateway_numbers(s) for s in snaps},
        "timestamp": int(now),
    }


def gateway_numbers(s: Snapshot) -> dict[str, Any]:
    p = s.power or {}
    return {
        "name": s.name, "type": s.type, "status": s.status, "online": s.online, "stale": s.stale,
        "site_power": p.get("site"), "battery_power": p.get("battery") if s.has_battery else None,
        "load_power": p.get("load"), "solar_power": p.get("solar"), "grid_power": p.get("grid"),
        "battery_percent": s.percent if s.has_battery else None,
        "battery_capacity": s.full_wh if s.has_battery else None,
        "battery_remaining": s.remaining_wh if s.has_battery else None,
        "grid_status": s.grid_status, "error": s.error,
    }


# ---- one gateway's summary (the /api/gateways rows) ------------------------------------

def gateway_row(site: Site) -> dict[str, Any]:
    gateway = site.gateway
    health = gateway.health.snapshot()
    status = gateway.status()
    return {
        "id": site.id, "name": site.config.name or site.id, "type": site.config.type,
        "status": status, "mode": gateway.info.mode, "online": status == "ok",
        "last_updated": health.last_success_time,
        "error": None if status == "ok" else (health.last_error or gateway.info.connect_error),
    }


def gateway_detail(site: Site, snap: Snapshot, default: bool) -> dict[str, Any]:
    return {
        **gateway_row(site),
        "site_name": site.gateway.site_name,
        "host": site.config.host or None,
        "default": default,
        "data": gateway_numbers(snap),
        "routes": f"/api/gateways/{site.id}/",
    }
