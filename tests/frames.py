"""Frames built from plain numbers, for the pure tests of what is built from frames."""

from __future__ import annotations

from typing import Any

from proxy.gateway.sources import AGGREGATES, GRID_STATUS, SOE, SYSTEM_STATUS
from proxy.site.frames import Frame


def numbers_frame(gid: str, *, power: dict[str, float] | None = None, percent: float | None = None,
                  full: float | None = None, remaining: float | None = None, grid: str | None = "UP",
                  kind: str = "powerwall", status: str = "ok") -> Frame:
    """A gateway's frame with these headline numbers (None: the gateway gave none).

    `power` is {"site", "battery", "load", "solar"} in W, as the gateway's meters read them."""
    values: dict[str, Any] = {}
    if power is not None:
        values[AGGREGATES.key] = {meter: {"instant_power": power[meter]}
                                  for meter in ("site", "battery", "load", "solar")}
    if percent is not None:
        values[SOE.key] = {"percentage": percent}
    system = {k: v for k, v in (("nominal_full_pack_energy", full),
                                ("nominal_energy_remaining", remaining)) if v is not None}
    if system:
        values[SYSTEM_STATUS.key] = system
    if grid is not None:
        values[GRID_STATUS.key] = grid
    return Frame(gid, gid, kind, status, values)
