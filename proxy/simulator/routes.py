"""The gateway's route table: local JSON API, TEDAPI and the tiny web UI.

Each route is one row (methods, access rule, handler); handlers are short functions
of (site, request) that return a Response. Access rules are enforced by the
gateway core before a handler runs.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import legacy_vitals, local_api, profiles, tedapi_bearer, tedapi_data, tedapi_wire, web
from .devices import iso_time
from .layout import Layout
from .messages import Request, Response, gateway_error, json_response, not_found
from .model import Snapshot
from .profiles import Profile
from .site import Site

# Access rules: none, a local-API login, TEDAPI's HTTP Basic, an installer's bearer token.
PUBLIC, SESSION, TEDAPI, BEARER = "public", "session", "tedapi", "bearer"
GET, POST = frozenset({"GET"}), frozenset({"POST"})
GET_POST = GET | POST
ANY_METHOD = frozenset({"GET", "POST", "PUT", "DELETE"})
DEVICE_PREFIX, DEVICE_SUFFIX = "/tedapi/device/", "/v1"
LOGIN_PATH = "/api/login/Basic"
INSTALLER = "Provider_Engineer"  # the role of an installer's login (the gateway password)
PROTOBUF = "application/octet-stream"

Handler = Callable[[Site, Request], Response]


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]
    access: str  # PUBLIC, SESSION, TEDAPI or BEARER
    handler: Handler


def _snapshot_json(build: Callable[[Snapshot, Layout], Any]) -> Handler:
    def handler(site: Site, request: Request) -> Response:
        return json_response(build(site.model.snapshot(), site.layout))
    return handler


def _constant_json(payload: Any) -> Handler:
    def handler(site: Site, request: Request) -> Response:
        return json_response(payload)
    return handler


def _asset(path: str) -> Handler:
    content_type, body = web.ASSETS[path]

    def handler(site: Site, request: Request) -> Response:
        return Response(200, body, content_type)
    return handler


def _gone(site: Site, request: Request) -> Response:
    # Removed from the firmware (vitals since 23.44, registration later): plain 404.
    return not_found()


# --- special answers of a gateway profile -----------------------------------------

def _forbidden(site: Site, request: Request) -> Response:
    return gateway_error(403, f"Unable to {request.method} to resource",
                         "User does not have adequate access rights")


def _empty(site: Site, request: Request) -> Response:
    return Response(200, b"", "application/json")


def _portal(site: Site, request: Request) -> Response:
    return Response(200, web.PORTAL_HTML, "text/html; charset=utf-8")


def get_vitals(site: Site, request: Request) -> Response:
    """GET /api/devices/vitals on firmware before 23.44: protobuf device vitals."""
    return Response(200, legacy_vitals.vitals_body(site.model.snapshot(), site.layout), PROTOBUF)


# --- login -------------------------------------------------------------------------

def _login_fields(request: Request) -> dict[str, str]:
    """Login body fields; pypowerwall sends a form, other clients send JSON."""
    content_type = request.header("content-type") or ""
    if "json" in content_type or request.body.lstrip().startswith(b"{"):
        try:
            data = json.loads(request.body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) \
            else {}
    form = urllib.parse.parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in form.items()}


def _role(site: Site, fields: dict[str, str]) -> str | None:
    username, password = fields.get("username", "customer"), fields.get("password", "")
    if username == "customer" and site.customer_password_ok(password):
        return "Home_Owner"
    if username == "installer" and site.installer_password_ok(password):
        return INSTALLER
    return None


def login_refused() -> Response:
    """The gateway's answer to a wrong password."""
    return gateway_error(401, "bad credentials", "Login Error")


def post_login_basic(site: Site, request: Request) -> Response:
    fields = _login_fields(request)
    role = _role(site, fields)
    if role is None:
        return login_refused()
    token = site.sessions.issue()
    site.sessions.grant(token, role)
    record = {"email": fields.get("email", ""), "firstname": "Tesla", "lastname": "Energy",
              "roles": [role], "token": token, "provider": "Basic",
              "loginTime": iso_time(site.model.snapshot().wall_time)}
    user_record = base64.urlsafe_b64encode(json.dumps(
        {k: v for k, v in record.items() if k != "token"}).encode()).decode().rstrip("=")
    cookies = (("Set-Cookie", f"AuthCookie={token}; Path=/; HttpOnly; Secure; SameSite=Strict"),
               ("Set-Cookie", f"UserRecord={user_record}; Path=/; Secure; SameSite=Strict"))
    return json_response(record, headers=cookies)


def session_token(request: Request) -> str | None:
    """The session a local-API request presents: AuthCookie, else a Bearer token."""
    return request.cookies().get("AuthCookie") or request.bearer_token()


def get_logout(site: Site, request: Request) -> Response:
    token = session_token(request)
    if token:
        site.sessions.revoke(token)
    return Response(204, b"", "")


# --- operation ---------------------------------------------------------------------

def _operation_update(body: bytes) -> tuple[float | None, str | None]:
    """(reserve, mode) from a POST /api/operation body; ValueError if malformed."""
    try:
        data = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError("body must be JSON") from exc
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    reserve, mode = data.get("backup_reserve_percent"), data.get("real_mode")
    if reserve is not None and (isinstance(reserve, bool) or not isinstance(reserve, (int, float))):
        raise ValueError("backup_reserve_percent must be a number")
    if mode is not None and not isinstance(mode, str):
        raise ValueError("real_mode must be a string")
    return (None if reserve is None else float(reserve)), mode


def operation(site: Site, request: Request) -> Response:
    if request.method == "POST":
        try:
            reserve, mode = _operation_update(request.body)
            site.model.set_operation(reserve, mode)
        except ValueError as exc:
            return gateway_error(400, "Bad Request", str(exc))
    settings = site.model.settings
    if request.method == "POST":
        return json_response({"real_mode": settings.mode,
                              "backup_reserve_percent": settings.reserve_percent})
    return json_response(local_api.operation(site.model.snapshot()))


# --- TEDAPI ------------------------------------------------------------------------

def get_root(site: Site, request: Request) -> Response:
    # Powerwall 2 gateways serve their web portal on "/"; a Powerwall 3 has none,
    # which is exactly how pypowerwall tells the two apart.
    if site.layout.model == "pw3":
        return not_found()
    return Response(200, web.INDEX_HTML, "text/html; charset=utf-8")


def get_tedapi_din(site: Site, request: Request) -> Response:
    return Response(200, site.layout.din.encode("ascii"), "text/plain; charset=utf-8")


def _unit_index(layout: Layout, din: str) -> int:
    return next((i for i, unit in enumerate(layout.units) if unit.din == din), 0)


def _query_document(site: Site, snapshot: Snapshot, request: tedapi_wire.TedapiRequest,
                    unit_index: int | None) -> dict[str, Any] | None:
    layout = site.layout
    if request.query_name == "DeviceControllerQuery":
        wanted = request.variables.get("msaSignals")
        return tedapi_data.device_controller(snapshot, layout, request.full_controller,
                                             wanted if isinstance(wanted, list) else None)
    if request.query_name != "ComponentsQuery":
        return None
    if layout.model != "pw3":
        return _no_pw3()
    index = _unit_index(layout, request.recipient) if unit_index is None else unit_index
    return tedapi_data.components(snapshot, layout, index, request.variables)


def _no_pw3() -> dict[str, Any]:
    """The components query on a site without a Powerwall 3."""
    return {"pw3Can": None, "components": {g: [] for g in ("pws", "pch", "bms", "hvp", "baggr")}}


def _tedapi_answer(site: Site, body: bytes, unit_index: int | None) -> Response:
    try:
        request = tedapi_wire.parse_request(body)
    except ValueError as exc:
        return gateway_error(400, "Bad Request", str(exc))
    snapshot, layout = site.model.snapshot(), site.layout
    if request.kind == tedapi_wire.CONFIG:
        if request.file != "config.json":
            return not_found()
        text = json.dumps(tedapi_data.config_json(snapshot, layout))
        return Response(200, tedapi_wire.config_response(layout.din, request.tail, request.file,
                                                         text), PROTOBUF)
    if request.kind == tedapi_wire.FIRMWARE:
        return Response(200, tedapi_wire.firmware_response(layout, request.tail), PROTOBUF)
    document = _query_document(site, snapshot, request, unit_index)
    if document is None:
        return gateway_error(400, "Bad Request", "unsupported query")
    sender = layout.din if unit_index is None else layout.units[unit_index].din
    return Response(200, tedapi_wire.query_response(sender, request.tail, document), PROTOBUF)


def post_tedapi_v1(site: Site, request: Request) -> Response:
    return _tedapi_answer(site, request.body, None)


def _signed_document(site: Site, name: str) -> dict[str, Any] | None:
    """The answer to a V2026_06 signed query, by operation name; None: not one we run."""
    snapshot, layout = site.model.snapshot(), site.layout
    if name == "DeviceControllerQuery":
        return tedapi_data.device_controller(snapshot, layout, True)
    if name == "PW3Query":
        return tedapi_data.components(snapshot, layout, 0, {}) if layout.model == "pw3" else _no_pw3()
    return None


def post_tedapi_bearer(site: Site, request: Request) -> Response:
    """POST /tedapi/v1 behind the bearer login: an AuthEnvelope in, an AuthEnvelope out."""
    try:
        asked = tedapi_bearer.parse(tedapi_bearer.unwrap(request.body))
    except ValueError as exc:
        return gateway_error(400, "Bad Request", str(exc))
    if asked.kind == tedapi_bearer.LEGACY:
        legacy = _tedapi_answer(site, asked.legacy, None)
        if legacy.status != 200:
            return legacy
        body = tedapi_bearer.bare(legacy.body)
    elif asked.kind == tedapi_bearer.SYSTEM_INFO:
        body = tedapi_bearer.system_info_answer(site.layout)
    else:
        body = tedapi_bearer.query_answer(site.layout.din, _signed_document(site, asked.name))
    return Response(200, tedapi_bearer.wrap(body), PROTOBUF)


def post_tedapi_device(site: Site, request: Request) -> Response:
    """POST /tedapi/device/<din>/v1: a query routed to one Powerwall 3."""
    din = request.path[len(DEVICE_PREFIX):-len(DEVICE_SUFFIX)]
    unit = site.layout.unit_by_din(din)
    if site.layout.model != "pw3" or unit is None:
        return not_found()  # older gateways have no per-device route
    return _tedapi_answer(site, request.body, site.layout.units.index(unit))


# --- the table ---------------------------------------------------------------------

def _local(build: Callable[[Snapshot, Layout], Any]) -> Route:
    return Route(GET, SESSION, _snapshot_json(build))


def _fixed(payload: Any) -> Route:
    return Route(GET, SESSION, _constant_json(payload))


ROUTES: dict[str, Route] = {
    LOGIN_PATH: Route(POST, PUBLIC, post_login_basic),
    "/api/logout": Route(GET_POST, PUBLIC, get_logout),
    "/api/status": Route(GET, PUBLIC, _snapshot_json(local_api.status)),
    "/api/auth/toggle/supported": Route(GET, PUBLIC,
                                        _constant_json({"toggle_auth_supported": True})),
    "/api/devices/vitals": Route(GET, PUBLIC, _gone),
    "/api/customer/registration": Route(GET, PUBLIC, _gone),
    "/api/meters/aggregates": _local(local_api.meters_aggregates),
    "/api/system_status/soe": _local(lambda s, lay: local_api.soe(s)),
    "/api/system_status/grid_status": _local(lambda s, lay: local_api.grid_status(s)),
    "/api/system_status": _local(local_api.system_status),
    "/api/system_status/grid_faults": _fixed([]),
    "/api/site_info": _local(lambda s, lay: local_api.site_info(lay)),
    "/api/site_info/site_name": _local(lambda s, lay: local_api.site_name()),
    "/api/site_info/grid_codes": _local(lambda s, lay: local_api.grid_codes()),
    "/api/operation": Route(GET_POST, SESSION, operation),
    "/api/solar_powerwall": _local(local_api.solar_powerwall),
    "/api/powerwalls": _local(local_api.powerwalls),
    "/api/sitemaster": _local(lambda s, lay: local_api.sitemaster()),
    "/api/meters": _local(lambda s, lay: local_api.meters(lay)),
    "/api/meters/site": _local(lambda s, lay: local_api.meters_site(lay)),
    "/api/meters/solar": _fixed([]),
    "/api/meters/readings": _local(local_api.meters_readings),
    "/api/system/update/status": _local(local_api.system_update_status),
    "/api/solars": _local(lambda s, lay: local_api.solars(lay)),
    "/api/solars/brands": _local(lambda s, lay: local_api.solars_brands()),
    "/api/customer": _fixed({"registered": True}),
    "/api/installer": _local(lambda s, lay: local_api.installer()),
    "/api/networks": _local(lambda s, lay: local_api.networks()),
    "/api/system/networks": _local(lambda s, lay: local_api.networks()),
    "/api/synchrometer/ct_voltage_references": _local(
        lambda s, lay: local_api.ct_voltage_references()),
    "/api/troubleshooting/problems": _fixed({"problems": []}),
    "/": Route(GET, PUBLIC, get_root),
    "/index.html": Route(GET, PUBLIC, _asset("/index.html")),
    "/about.html": Route(GET, PUBLIC, _asset("/about.html")),
    "/static/app.js": Route(GET, PUBLIC, _asset("/static/app.js")),
    "/static/app.css": Route(GET, PUBLIC, _asset("/static/app.css")),
    "/tedapi/din": Route(GET, TEDAPI, get_tedapi_din),
    "/tedapi/v1": Route(POST, TEDAPI, post_tedapi_v1),
}

DEVICE_ROUTE = Route(POST, TEDAPI, post_tedapi_device)
# A bearer-only gateway (profile.bearer): TEDAPI behind an installer's login.
BEARER_ROUTES: dict[str, Route] = {
    "/tedapi/din": Route(GET, BEARER, get_tedapi_din),
    "/tedapi/v1": Route(POST, BEARER, post_tedapi_bearer),
}

# A profile's special answers (profiles.py), in place of the normal route.
ANSWERS: dict[str, Route] = {
    profiles.MISSING: Route(ANY_METHOD, PUBLIC, _gone),
    profiles.FORBIDDEN: Route(ANY_METHOD, PUBLIC, _forbidden),
    profiles.EMPTY: Route(ANY_METHOD, PUBLIC, _empty),
    profiles.PORTAL: Route(ANY_METHOD, PUBLIC, _portal),
    profiles.VITALS: Route(GET, SESSION, get_vitals),
}


def find(path: str, profile: Profile = profiles.DEFAULT) -> Route | None:
    """The route serving `path` (query already stripped) on a `profile` gateway, if any."""
    answer = profile.answer(path)
    if answer is not None:
        return ANSWERS[answer]
    if profile.bearer and path.startswith("/tedapi/"):
        return BEARER_ROUTES.get(path)
    route = ROUTES.get(path)
    if route is None and path.startswith(DEVICE_PREFIX) and path.endswith(DEVICE_SUFFIX) \
            and len(path) > len(DEVICE_PREFIX) + len(DEVICE_SUFFIX):
        return DEVICE_ROUTE
    return route
