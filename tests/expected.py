"""What the HTTP API says each measurement is, so MQTT states and /metrics samples can be
checked against the API, within one cache window."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.conftest import ProxyHandle

Key = tuple[str, str]  # (point key, label value or "")


def api_values(h: ProxyHandle, gateway: str) -> dict[Key, Any]:
    """Every point of one gateway as the API shows it (reads the window cache like anyone)."""
    mount = "" if gateway == h.app.sites.default().id else f"/api/gateways/{gateway}"

    def get(path: str) -> Any:
        reply = h.get(mount + path)
        assert reply.status == 200, (path, reply.status, reply.body[:200])
        return reply.json()

    agg = get("/aggregates")
    system = get("/api/system_status")
    detail = h.get(f"/api/gateways/{gateway}").json()
    out: dict[Key, Any] = {}
    for meter in ("site", "solar", "battery", "load"):
        out[(f"{meter}_power", "")] = agg[meter]["instant_power"]
        out[("energy_imported", meter)] = agg[meter]["energy_imported"]
        out[("energy_exported", meter)] = agg[meter]["energy_exported"]
    out[("grid_power", "")] = get("/json")["grid"]
    out[("battery_level", "")] = get("/soe")["percentage"]
    out[("battery_reserve", "")] = get("/pw/get_reserve")["reserve"]
    out[("battery_remaining_energy", "")] = system["nominal_energy_remaining"]
    out[("battery_full_energy", "")] = system["nominal_full_pack_energy"]
    out[("battery_time_remaining", "")] = get("/pw/get_time_remaining")["time_remaining"]
    for name, temp in get("/temps").items():
        out[("battery_temperature", name)] = temp
    out[("grid_status", "")] = detail["data"]["grid_status"]
    out[("operation_mode", "")] = get("/pw/get_mode")["mode"]
    out[("alerts", "")] = len(get("/alerts"))
    out[("gateway_online", "")] = detail["online"]
    out[("firmware_version", "")] = get("/version")["version"].split()[0]
    return out


def same_window(h: ProxyHandle, gateway: str, read: Callable[[], Any], tries: int = 15) -> tuple[Any, Any]:
    """(read(), api_values()) taken within one cache window of the gateway."""
    site = h.app.sites.get(gateway)
    assert site is not None
    for _ in range(tries):
        window = site.window()
        ours = read()
        theirs = api_values(h, gateway)
        if site.window() == window:
            return ours, theirs
    raise AssertionError("never got both readings within one cache window")


def requests_per_window(h: ProxyHandle, scrapes: int, windows: int = 4) -> float:
    """Gateway requests the simulator counted per cache window over a few whole windows,
    with up to `scrapes` /metrics scrapes at the start of each window (fewer when the machine
    is so busy that they do not fit in it: a scrape never straddles a window on purpose)."""
    def scrape(window: int) -> None:
        for _ in range(scrapes):
            if h.gateway.cache.window() != window:
                break
            assert h.get("/metrics").status == 200

    return sum(requests_by_path(h, windows, scrape).values())


def requests_by_path(h: ProxyHandle, windows: int,
                     each: Callable[[int], None] | None = None) -> dict[str, float]:
    """Gateway requests per path per cache window over whole windows, `each` run at the start
    of each window (given its number)."""
    cache = h.gateway.cache

    def next_boundary() -> int:
        window = cache.window()
        while cache.window() == window:
            time.sleep(0.002)
        return cache.window()

    first = next_boundary()
    before = dict(h.sim.stats()["paths"])
    window = first
    while window - first < windows:
        if each is not None:
            each(window)
        window = next_boundary()
    after = h.sim.stats()["paths"]
    return {p: (n - before.get(p, 0)) / windows for p, n in after.items() if n - before.get(p, 0)}


# Over four windows, a fetch begun just before the last boundary may land in the count:
# at most one window's worth more than one poller's.
EDGE = 1.25
