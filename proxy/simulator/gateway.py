"""The gateway core: faults, access rules and dispatch; plus the /sim/* control API.

`Gateway.handle` turns a Request into a Response (or None: drop the connection
without an answer). It never touches sockets, so it can be driven directly.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from . import faults as fk
from . import routes, tedapi_wire
from .devices import iso_time
from .faults import Fault, FaultBoard
from .messages import (
    Delivery,
    Request,
    Response,
    gateway_error,
    json_response,
    not_found,
    status_error,
)
from .profiles import DEFAULT, Profile
from .site import Site
from .stats import RequestCounter, query_key

CONTROL_PREFIX = "/sim/"


def is_control(path: str) -> bool:
    """Simulator control paths: never counted, never faulted."""
    return path.startswith(CONTROL_PREFIX) or path == "/sim"


def garble(response: Response) -> Response:
    """A malformed answer: the body cut in half (and not even text for text bodies)."""
    cut = response.body[: len(response.body) // 2]
    if response.content_type.startswith("text/plain"):
        cut = b"\xff\xfe" + cut  # invalid UTF-8, so a DIN read cannot silently succeed
    return replace(response, body=cut)


def _app_scale(percent: float) -> float:
    """Gateway percent to the Tesla app's scale (the app hides the bottom 5 %)."""
    return max(0.0, percent / 0.95 - 5 / 0.95)


def _fault_status(fault: Fault) -> Response:
    headers = () if fault.retry_after is None else (("Retry-After", str(fault.retry_after)),)
    return status_error(fault.status, headers)


def _delivery(response: Response, active: list[Fault]) -> Response:
    """An `oversize` and/or `drip` way of writing a successful answer."""
    oversize = max((f.size for f in active if f.kind == fk.OVERSIZE), default=0)
    drip = next((f for f in active if f.kind == fk.DRIP), None)
    if not oversize and drip is None:
        return response
    delivery = Delivery(padding=max(0, oversize - len(response.body)),
                        chunk=0 if drip is None else drip.chunk,
                        delay=0.0 if drip is None else drip.delay)
    return replace(response, delivery=delivery)


class Gateway:
    """Routes, guarded by the active faults and access rules, counting every request."""

    def __init__(self, site: Site, faults: FaultBoard, counter: RequestCounter,
                 stopping: threading.Event, profile: Profile = DEFAULT) -> None:
        self.site = site
        self.faults = faults
        self.counter = counter
        self.profile = profile
        self._stopping = stopping

    def pause(self, seconds: float) -> bool:
        """Wait `seconds` (a `drip` between writes); True if the simulator is stopping."""
        return self._stopping.wait(seconds)

    def count(self, path: str) -> None:
        """Record a gateway request once its request line has been read."""
        if not is_control(path):
            self.counter.count(path)

    def _count_query(self, request: Request) -> None:
        """A TEDAPI POST, counted by what it asks (they all share one path)."""
        if request.method != "POST" or not request.path.startswith("/tedapi/") or not request.body:
            return
        try:
            message = tedapi_wire.parse_request(request.body)
        except Exception:  # not a TEDAPI message: answered 400, counted by path only
            return
        name = message.query_name or message.file or ""
        key = query_key(message.kind, name, message.query or "", str(message.recipient or ""),
                        self.site.layout.din)
        self.counter.count_query(f"{request.path} {key}")

    def handle(self, request: Request) -> Response | None:
        if is_control(request.path):
            return self._control(request)
        self._count_query(request)
        active = self.faults.for_path(request.path)
        kinds = {fault.kind for fault in active}
        if fk.DOWN in kinds:
            return None
        delay = max((f.delay for f in active if f.kind == fk.SLOW), default=0.0)
        if delay and self._stopping.wait(delay):
            return None  # shutting down: give up rather than hold stop() up
        status = next((f for f in active if f.kind == fk.STATUS), None)
        if status is not None:
            return _fault_status(status)
        if fk.LOGIN_401 in kinds and request.path == routes.LOGIN_PATH:
            return routes.login_refused()
        response = self._dispatch(request, active)
        if response.status != 200:
            return response
        if fk.MALFORMED in kinds:
            response = garble(response)
        return _delivery(response, active)

    def _dispatch(self, request: Request, active: list[Fault]) -> Response:
        route = routes.find(request.path, self.profile)
        if route is None:
            return not_found()
        if request.method not in route.methods:
            allow = ", ".join(sorted(route.methods))
            return gateway_error(405, "Method Not Allowed", f"use {allow}",
                                 (("Allow", allow),))
        denied = self._access_denied(route, request, active)
        return denied if denied is not None else route.handler(self.site, request)

    def _access_denied(self, route: routes.Route, request: Request,
                       active: list[Fault]) -> Response | None:
        needs_login = route.access in (routes.SESSION, routes.BEARER)
        if needs_login and any(f.kind == fk.DATA_401 for f in active):
            return gateway_error(401, "Authorization Required", "User is not logged in")
        if route.access == routes.SESSION and not self._session_ok(request, active):
            return gateway_error(401, "Authorization Required", "User is not logged in")
        if route.access == routes.BEARER and not self._session_ok(request, active, routes.INSTALLER):
            return gateway_error(401, "Authorization Required", "Installer login required")
        if route.access == routes.TEDAPI and not self.site.tedapi_auth_ok(
                request.header("authorization")):
            verb = request.method
            return gateway_error(403, f"Unable to {verb} to resource",
                                 "User does not have adequate access rights")
        return None

    def _session_ok(self, request: Request, active: list[Fault], role: str = "") -> bool:
        token = request.bearer_token() if role else routes.session_token(request)
        issued = self.site.sessions.issued_at(token) if token else None
        if token is None or issued is None or (role and self.site.sessions.role(token) != role):
            return False
        # expire_session: sessions that existed when the fault began are dropped on
        # their next request here; logging in again gives a session that works.
        if any(f.kind == fk.EXPIRE_SESSION and issued <= f.started for f in active):
            self.site.sessions.revoke(token)
            return False
        return True

    # --- /sim/* ------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The home's numbers right now (GET /sim/state)."""
        snap = self.site.model.snapshot()
        flows, energy = snap.flows, snap.energy
        return {
            "tick": snap.tick, "time": iso_time(snap.wall_time),
            "model": self.site.layout.model, "seed": self.site.model.seed,
            "solar_w": flows.solar, "load_w": flows.load, "battery_w": flows.battery,
            "site_w": flows.site, "grid_w": flows.site,
            "soe": snap.soe_percent, "energy_remaining_wh": snap.remaining_wh,
            "full_pack_wh": snap.full_pack_wh,
            "soe_app": _app_scale(snap.soe_percent),
            "reserve": snap.settings.reserve_percent,
            "reserve_app": _app_scale(snap.settings.reserve_percent), "mode": snap.settings.mode,
            "grid_status": snap.grid_status, "islanded": snap.islanded,
            "frequency": snap.frequency, "voltage": round(snap.v_l1n + snap.v_l2n, 2),
            "energy": {"site_imported": energy.site_imported,
                       "site_exported": energy.site_exported,
                       "battery_imported": energy.battery_imported,
                       "battery_exported": energy.battery_exported,
                       "solar_exported": energy.solar_exported,
                       "load_imported": energy.load_imported},
        }

    def add_fault(self, spec: dict[str, Any]) -> dict[str, Any]:
        active = self.faults.add(spec)
        if spec.get("kind") == fk.EXPIRE_SESSION and spec.get("paths") is None:
            # Like a gateway restart: every session is gone at once, so clients are
            # refused until they log in again even if the fault window is short.
            self.site.sessions.clear()
        return {"faults": active}

    def reset(self) -> dict[str, Any]:
        self.faults.clear()
        self.counter.reset()
        return {"faults": [], "stats": self.counter.snapshot()}

    def set_firmware(self, spec: dict[str, Any]) -> dict[str, Any]:
        """{"version": "25.18.1"} (or with its short git hash): the gateway runs that release."""
        version = spec.get("version")
        if set(spec) != {"version"} or not isinstance(version, str) \
                or not re.fullmatch(r"[0-9A-Za-z._+-]{1,32}( [0-9a-f]{8})?", version.strip()):
            raise ValueError('body must be {"version": "<release>"}, e.g. {"version": "25.18.1"}')
        layout = self.site.hardware.update(version)
        return {"version": layout.firmware, "git_hash": layout.git_hash}

    def _post_json(self, request: Request, action: Callable[[dict[str, Any]], dict[str, Any]]) -> Response:
        try:
            spec = json.loads(request.body or b"null")
            if not isinstance(spec, dict):
                raise ValueError("body must be a JSON object")
            return json_response(action(spec))
        except (ValueError, UnicodeDecodeError) as exc:
            return json_response({"error": str(exc)}, 400)

    def _faults(self) -> dict[str, Any]:
        return {"faults": self.faults.describe()}

    def _clear(self) -> dict[str, Any]:
        self.faults.clear()
        return {"faults": []}

    def _control(self, request: Request) -> Response:
        readers: dict[str, Callable[[], dict[str, Any]]] = {
            "/sim/stats": self.counter.snapshot, "/sim/state": self.state,
            "/sim/fault": self._faults, "/sim/faults": self._faults}
        writers: dict[str, Callable[[], dict[str, Any]]] = {
            "/sim/clear": self._clear, "/sim/reset": self.reset}
        if request.method == "GET" and request.path in readers:
            return json_response(readers[request.path]())
        if request.method == "POST" and request.path == "/sim/fault":
            return self._post_json(request, self.add_fault)
        if request.method == "POST" and request.path == "/sim/firmware":
            return self._post_json(request, self.set_firmware)
        if request.method == "POST" and request.path in writers:
            return json_response(writers[request.path]())
        if request.path in readers or request.path in writers or request.path == "/sim/firmware":
            return json_response({"error": f"method {request.method} not allowed"}, 405)
        return json_response({"error": "unknown simulator endpoint"}, 404)
