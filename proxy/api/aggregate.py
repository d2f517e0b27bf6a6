"""Routes over several gateways: the gateway list and details, and the aggregates.

The arithmetic and the per-gateway frame are in `proxy.site.frames`; this
module only reads them for a request and answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from proxy.api.apidoc import UNAVAILABLE, Answer, Doc, Param, ref
from proxy.api.app import App, json_response
from proxy.api.routing import Call, Route
from proxy.errors import GatewayUnavailable
from proxy.gateway.sources import ALERTS, STRINGS, VITALS, Source
from proxy.httpd.types import Response
from proxy.site.frames import (
    Frame,
    aggregate,
    gateway_detail,
    gateway_row,
    has_data,
    read_frame,
    read_frames,
    read_sites,
)
from proxy.site.site import State

# ---- routes --------------------------------------------------------------------------

def _frames(app: App) -> list[Frame]:
    frames = read_frames(app.sites)
    if not has_data(frames):
        raise GatewayUnavailable("no gateway has data")
    return frames


def _answer(body: Any) -> Response:
    return json_response(200, body, [("Cache-Control", "no-cache")])


def get_aggregate(app: App, call: Call) -> Response:
    return _answer(aggregate(_frames(app), time.time()))


def _part(keys: Sequence[str], section: str) -> Callable[[App, Call], Response]:
    def handler(app: App, call: Call) -> Response:
        body = aggregate(_frames(app), time.time())
        picked = {k: body[k] for k in keys}
        picked["missing"] = body["missing"][section] if section else body["missing"]
        return _answer({**picked, "num_gateways": body["num_gateways"], "timestamp": body["timestamp"]})
    return handler


get_aggregate_power = _part(("total_site_power", "total_battery_power", "total_load_power",
                             "total_solar_power", "total_grid_power", "stale"), "power")
get_aggregate_soe = _part(("total_battery_percent", "stale"), "battery")
get_aggregate_battery = _part(("total_battery_percent", "total_battery_capacity",
                               "total_battery_remaining", "total_battery_power", "stale"), "battery")


def get_aggregate_status(app: App, call: Call) -> Response:
    body = aggregate(_frames(app), time.time())
    keys = ("grid_status", "num_gateways", "num_online", "num_degraded", "stale", "timestamp")
    gateways = {gid: {"status": g["status"], "online": g["online"], "grid_status": g["grid_status"],
                      "error": g["error"]} for gid, g in body["gateways"].items()}
    return _answer({**{k: body[k] for k in keys}, "gateways": gateways})


def _keyed(source: Source, empty: Any) -> Callable[[App, Call], Response]:
    """One source of every gateway, keyed by gateway id (null: that gateway gave nothing)."""
    def handler(app: App, call: Call) -> Response:
        readings = read_sites(app.sites, [source])
        out: dict[str, Any] = {}
        for gid, (reading,) in readings.items():
            if reading is None or reading.state is State.UNAVAILABLE:
                out[gid] = None
            else:
                out[gid] = empty if reading.value is None else reading.value
        return _answer(out)
    return handler


def get_gateways(app: App, call: Call) -> Response:
    return _answer([gateway_row(site) for site in app.sites])


def get_gateway(app: App, call: Call) -> Response:
    site = app.sites.find(call.path[len("/api/gateways/"):])  # 404 "Gateway not found"
    body = gateway_detail(site, read_frame(site), site is app.sites.default())
    return _answer(body)


def _root(path: str, handler: Callable[[App, Call], Response], summary: str, body: str,
          answers: tuple[Answer, ...] = (UNAVAILABLE,), wildcard: Param | None = None) -> Route:
    tag = "gateways" if path.startswith("/api/gateways") else "aggregate"
    doc = Doc(summary, ref(body), tag=tag, answers=answers, wildcard=wildcard)
    return Route(path, handler, doc=doc)


_NONE_HAS_DATA = (Answer(503, "No gateway has any data", retry_after=True),)
_GATEWAY_ID = Param("id", "A gateway id (a-z 0-9 _ -, 1 to 32 characters)",
                    {"type": "string", "pattern": "^[a-z0-9_-]{1,32}$"})

ROUTES: tuple[Route, ...] = (
    _root("/api/gateways", get_gateways, "Every gateway: id, name, type, status, mode", "Gateways",
          answers=()),
    _root("/api/gateways/*", get_gateway, "One gateway: status, site, its numbers", "GatewayDetail",
          answers=(Answer(404, '{"error": "Gateway not found"}'),), wildcard=_GATEWAY_ID),
    _root("/api/aggregate", get_aggregate, "All gateways added up", "Aggregate", _NONE_HAS_DATA),
    _root("/api/aggregate/", get_aggregate, "All gateways added up (as /api/aggregate)", "Aggregate",
          _NONE_HAS_DATA),
    _root("/api/aggregate/power", get_aggregate_power, "Powers summed over gateways (W)",
          "AggregatePower", _NONE_HAS_DATA),
    _root("/api/aggregate/soe", get_aggregate_soe, "State of energy weighted by capacity",
          "AggregateSoe", _NONE_HAS_DATA),
    _root("/api/aggregate/battery", get_aggregate_battery, "Battery level, capacity, remaining, power",
          "AggregateBattery", _NONE_HAS_DATA),
    _root("/api/aggregate/status", get_aggregate_status, "Worst grid status, gateways online",
          "AggregateStatus", _NONE_HAS_DATA),
    _root("/api/aggregate/strings", _keyed(STRINGS, {}), "Solar strings by gateway", "PerGateway",
          answers=()),
    _root("/api/aggregate/alerts", _keyed(ALERTS, []), "Active alerts by gateway", "PerGateway",
          answers=()),
    _root("/api/aggregate/vitals", _keyed(VITALS, {}), "Device vitals by gateway", "PerGateway",
          answers=()),
)
