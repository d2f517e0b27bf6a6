"""One gateway's readings of one window (`Frame`), and the aggregate over gateways.

A `Frame` is the one shape every output reads: the live feeds and MQTT through the hub,
`/api/aggregate` and `/api/gateways/{id}` on request, `/metrics` per scrape, OpenC2 per
query. It is built from window-cached readings (`Site.read`), so a frame costs no gateway
request beyond the one per resource per window the cache already allows.

The aggregate arithmetic is pure (`aggregate`), tested without a network: powers summed,
the state of energy weighted by each gateway's capacity, inverter-only gateways left out
of battery figures, and a gateway without data named and left out of the sums, never
counted as 0.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy import payloads
from proxy.errors import ProxyError
from proxy.gateway.sources import AGGREGATES, GRID_STATUS, SOE, SYSTEM_STATUS, Source
from proxy.site.site import Reading, Shaping, Site, Sites, State

# What a frame always holds: the headline numbers (powers, charge, capacity, grid).
CORE_SOURCES = (AGGREGATES, SOE, SYSTEM_STATUS, GRID_STATUS)
_CORE = frozenset(s.key for s in CORE_SOURCES)
# Worst first: the aggregate grid status is the worst any gateway reports.
GRID_ORDER = ("DOWN", "SYNCING", "UP")
POWERS = (("site", "total_site_power"), ("battery", "total_battery_power"),
          ("load", "total_load_power"), ("solar", "total_solar_power"))
_WHOLE = ("grid", "load", "solar", "battery")  # a gateway "has power" when it gave all four


@dataclass(frozen=True, slots=True)
class Frame:
    """One gateway's readings of one window, with its headline numbers worked out once.

    `values` holds what the gateway gave, by source key (a source without data is missing).
    `power`, `percent`, `full_wh`, `remaining_wh` and `grid_status` are derived from them
    when the frame is made; None where the gateway gave nothing, never a made-up 0.
    """

    id: str
    name: str = ""  # as the proxy lists the gateway: its configured name, else its id
    type: str = "powerwall"  # powerwall | inverter
    status: str = "ok"  # starting | ok | degraded
    values: Mapping[str, Any] = field(default_factory=dict)
    shaping: Shaping = Shaping()  # PW_NEG_SOLAR and PW_SITE_ZERO_THRESHOLD for `power`
    marks: Mapping[str, Hashable] = field(default_factory=dict)  # source key -> what it was
    fresh: bool = False  # some value is gateway data of its window, not a last good copy
    stale: bool = False  # a headline number is a last good copy
    at: float | None = None  # monotonic time of the newest gateway data in the frame
    error: str | None = None  # why a headline number is missing
    device_name: str = ""  # for devices (MQTT): configured name, else the site name
    window: int = -1  # the cache window it was read in (-1: caching is off)
    # Derived in __post_init__:
    power: Mapping[str, float | None] | None = field(init=False, default=None)
    percent: float | None = field(init=False, default=None)  # the gateway's own state of energy
    full_wh: float | None = field(init=False, default=None)  # nominal full-pack energy
    remaining_wh: float | None = field(init=False, default=None)
    grid_status: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        system = self.values.get(SYSTEM_STATUS.key)
        system = system if isinstance(system, dict) else {}
        soe, grid = self.values.get(SOE.key), self.values.get(GRID_STATUS.key)
        derived = {
            "power": _powers(self.values.get(AGGREGATES.key), self.shaping),
            "percent": payloads.real(soe.get("percentage")) if isinstance(soe, dict) else None,
            "full_wh": payloads.real(system.get("nominal_full_pack_energy")),
            "remaining_wh": payloads.real(system.get("nominal_energy_remaining")),
            "grid_status": grid if isinstance(grid, str) else None,
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)  # frozen: set once, here
        if not self.name:
            object.__setattr__(self, "name", self.id)

    @property
    def online(self) -> bool:
        return self.status == "ok"

    @property
    def has_battery(self) -> bool:
        return self.type != "inverter"

    @property
    def powered(self) -> Mapping[str, float | None] | None:
        """The powers when the gateway gave every one of them (the aggregate's rule), else None."""
        power = self.power
        return power if power is not None and all(power[k] is not None for k in _WHOLE) else None

    @property
    def label(self) -> str:
        """The name a device shows (MQTT): the device name, else the listed name."""
        return self.device_name or self.name

    def get(self, source: Source) -> Any:
        return self.values.get(source.key)

    def news(self, keys: Iterable[str] = _CORE) -> Hashable:
        """What identifies this frame's data for these sources: a push goes out when it changes."""
        return (self.id, self.status, self.error, tuple(self.marks.get(k) for k in sorted(keys)))


def _powers(agg: Any, shaping: Shaping) -> dict[str, float | None] | None:
    """site as the meter gave it; battery, load and solar after PW_NEG_SOLAR; grid after
    PW_SITE_ZERO_THRESHOLD (as /aggregates shows them)."""
    if not isinstance(agg, dict):
        return None
    shaped = payloads.power_values(agg, neg_solar=shaping.neg_solar, zero_threshold=shaping.zero_threshold)
    site = agg.get("site")
    return {"site": payloads.real(site.get("instant_power")) if isinstance(site, dict) else None,
            "battery": shaped["battery"], "load": shaped["home"], "solar": shaped["solar"],
            "grid": shaped["grid"]}


# ---- reading: one window-cached read per source per gateway ----------------------------

def read_sites(sites: Iterable[Site], sources: Sequence[Source]) -> dict[str, list[Reading | None]]:
    """Every gateway's readings; fetches of all gateways run at once, waits share a deadline.

    A reading is None where the gateway does not support the source (e.g. cloud vitals)."""
    listed = list(sites)
    for site in listed:
        site.gateway.prefetch(sources)
    return {site.id: [read_one(site, s) for s in sources] for site in listed}


def read_one(site: Site, source: Source) -> Reading | None:
    try:
        return site.read(source)
    except ProxyError:
        return None


def with_core(sources: Iterable[Source]) -> tuple[Source, ...]:
    """The core sources first, then the others, each once."""
    found: dict[str, Source] = {s.key: s for s in CORE_SOURCES}
    for source in sources:
        found.setdefault(source.key, source)
    return tuple(found.values())


def read_frames(sites: Sites | Sequence[Site], sources: Iterable[Source] = CORE_SOURCES, *,
                core: bool = True) -> list[Frame]:
    """Each gateway's frame (the core sources, unless `core` is False, and these), read through
    its window cache."""
    wanted = with_core(sources) if core else tuple({s.key: s for s in sources}.values())
    readings = read_sites(sites, wanted)
    return [frame_of(site, wanted, readings[site.id]) for site in sites]


def read_frame(site: Site, sources: Iterable[Source] = CORE_SOURCES) -> Frame:
    return read_frames([site], sources)[0]


def frame_of(site: Site, sources: Sequence[Source], readings: Sequence[Reading | None]) -> Frame:
    """A site's frame from its readings of these sources (None: the mode has no such source)."""
    found: dict[str, Any] = {}
    marks: dict[str, Hashable] = {}
    for source, reading in zip(sources, readings, strict=True):
        marks[source.key] = _mark(reading)
        if reading is not None and reading.state is State.DATA and reading.value is not None:
            found[source.key] = reading.value
    data = [r for r in readings if r is not None and r.state is State.DATA]
    core = [r for s, r in zip(sources, readings, strict=True) if s.key in _CORE and r is not None]
    times = [r.at for r in data if r.at is not None]
    return Frame(
        id=site.id, name=site.config.name or site.id, type=site.config.type,
        status=site.gateway.status(), values=found, shaping=site.shaping, marks=marks,
        fresh=any(not r.stale for r in data), stale=any(r.stale for r in core),
        at=max(times) if times else None,
        error=next((r.error.message for r in core if r.error is not None), None),
        device_name=display_name(site), window=site.window(),
    )


def _mark(reading: Reading | None) -> Hashable:
    """What identifies a reading's data: its time for data, its state otherwise."""
    if reading is None:
        return None
    if reading.state is State.DATA:
        return (reading.at, reading.stale)
    return str(reading.state.value)


def display_name(site: Site) -> str:
    """The configured name, else the site name the gateway reports, else "Powerwall <id>"."""
    site_name = site.gateway.site_name
    if site.config.name:
        return site.config.name
    if isinstance(site_name, str) and site_name.strip():
        return site_name.strip()
    return "Powerwall" if site.id == "default" else f"Powerwall {site.id}"


# ---- arithmetic: pure ------------------------------------------------------------------

def _sum(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(sum(present), 3) if present else None


def aggregate_power(frames: Sequence[Frame]) -> dict[str, Any]:
    powered = [(f, p) for f in frames if (p := f.powered) is not None]
    out: dict[str, Any] = {}
    for key, name in POWERS:
        out[name] = _sum([p[key] for f, p in powered if key != "battery" or f.has_battery])
    out["total_grid_power"] = _sum([p["grid"] for _, p in powered])
    out["missing"] = [f.id for f in frames if f.powered is None]
    return out


def aggregate_battery(frames: Sequence[Frame]) -> dict[str, Any]:
    """SOE weighted by each gateway's capacity; only gateways with a battery and both numbers."""
    batteries = [f for f in frames if f.has_battery]
    known = [f for f in batteries if f.full_wh and f.percent is not None]
    capacity = sum(f.full_wh for f in known if f.full_wh)
    percent = (sum(f.percent * f.full_wh for f in known if f.percent is not None and f.full_wh)
               / capacity) if capacity else None
    remaining = [f.remaining_wh for f in batteries if f.full_wh and f.remaining_wh is not None]
    return {
        "total_battery_percent": None if percent is None else round(percent, 2),
        "total_battery_capacity": round(capacity, 1) if known else None,
        "total_battery_remaining": _sum(remaining) if len(remaining) == len(known) else None,
        "missing": [f.id for f in batteries if f not in known],
    }


def worst_grid(frames: Sequence[Frame]) -> str | None:
    statuses = [f.grid_status for f in frames if f.grid_status in GRID_ORDER]
    return min(statuses, key=GRID_ORDER.index) if statuses else None


def has_data(frames: Sequence[Frame]) -> bool:
    """Whether any gateway gave a headline number."""
    return any(f.powered is not None or f.percent is not None or f.grid_status is not None
               for f in frames)


def aggregate(frames: Sequence[Frame], now: float) -> dict[str, Any]:
    """The full /api/aggregate object."""
    power, battery = aggregate_power(frames), aggregate_battery(frames)
    return {
        **{k: v for k, v in power.items() if k != "missing"},
        **{k: v for k, v in battery.items() if k != "missing"},
        "grid_status": worst_grid(frames),
        "num_gateways": len(frames),
        "num_online": sum(f.online for f in frames),
        "num_degraded": sum(f.status == "degraded" for f in frames),
        "missing": {"power": power["missing"], "battery": battery["missing"]},
        "stale": any(f.stale for f in frames),
        "gateways": {f.id: gateway_numbers(f) for f in frames},
        "timestamp": int(now),
    }


def gateway_numbers(f: Frame) -> dict[str, Any]:
    p = f.powered or {}
    battery = f.has_battery
    return {
        "name": f.name, "type": f.type, "status": f.status, "online": f.online, "stale": f.stale,
        "site_power": p.get("site"), "battery_power": p.get("battery") if battery else None,
        "load_power": p.get("load"), "solar_power": p.get("solar"), "grid_power": p.get("grid"),
        "battery_percent": f.percent if battery else None,
        "battery_capacity": f.full_wh if battery else None,
        "battery_remaining": f.remaining_wh if battery else None,
        "grid_status": f.grid_status, "error": f.error,
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


def gateway_detail(site: Site, frame: Frame, default: bool) -> dict[str, Any]:
    return {
        **gateway_row(site),
        "site_name": site.gateway.site_name,
        "host": site.config.host or None,
        "default": default,
        "data": gateway_numbers(frame),
        "routes": f"/api/gateways/{site.id}/",
    }
