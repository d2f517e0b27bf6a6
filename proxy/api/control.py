"""/control/*: read and change the reserve, mode, grid charging, grid export and backup.

Writes happen only on POST. A POST runs its checks in a fixed order: control
enabled (403), body shape (400/415), token (401, or 429 for a client that keeps
sending wrong ones), value (400), then the write. A GET only ever reads, whatever
its query string says. The status is decided by the outcome, never by searching
the body for "error".

Wrong tokens are slowed per client (`proxy.api.tokens`). Every write is a row of the
actions table (`proxy.site.actions`): this module only adapts a form to it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs

from proxy.api.apidoc import (
    ASCII,
    CONTROL_OFF,
    FIELDS,
    FORM_FIELDS,
    NAME,
    NOT_IN_MODE,
    OBJECT,
    UNAVAILABLE,
    WRITE_ANSWERS,
    Answer,
    Doc,
    Param,
    Schema,
    Write,
    control_body,
    keyed,
    ref,
    token_body,
)
from proxy.api.apidoc import LEVEL as LEVEL_SCHEMA
from proxy.api.apidoc import MODE as MODE_SCHEMA
from proxy.api.app import App, json_response
from proxy.api.forwarded import client_address, throttle_key
from proxy.api.routing import Call, Route
from proxy.api.tokens import bearer_token, same_secret
from proxy.errors import HTTPError, NotSupported, ProxyError, WriteFailed
from proxy.gateway import user_number
from proxy.httpd.types import Response
from proxy.payloads import number, strict_json
from proxy.site import actions
from proxy.site.actions import (
    GRID_CHARGING,
    GRID_EXPORT,
    HOLD,
    MAX_BACKUP,
    MODE,
    OPERATION,
    RESERVE,
    Action,
    GridExport,
    Origin,
    current_level,
    read_setting,
)
from proxy.site.site import Site

log = logging.getLogger("proxy.control")

DISABLED = "Control Commands Disabled - Set PW_CONTROL_SECRET to enable"
TOKEN_INVALID = "Control Command Token Invalid"
TOO_MANY = "Too many bad control tokens from this client; wait before trying again"
INVALID_REQUEST = "Control Command Error: Invalid Request"
V = TypeVar("V")


def client_of(app: App, call: Call) -> str:
    """The client: the socket peer, or the address a trusted reverse proxy forwarded."""
    request = call.request
    return client_address(request.client, request.headers, app.config.trusted_proxies)


# ---- the body -----------------------------------------------------------------

def _fields(call: Call) -> dict[str, str]:
    """The body's fields as ASCII strings: a form (as the reference) or a JSON object."""
    kind = call.request.headers.get("Content-Type", "application/x-www-form-urlencoded")
    media = kind.split(";")[0].strip().lower()
    if media == "application/x-www-form-urlencoded":
        return _form(call.request.body)
    if media == "application/json":
        return _json(call.request.body)
    raise HTTPError(415, "Control Command Error: body must be application/x-www-form-urlencoded "
                         "or application/json")


def _form(body: bytes) -> dict[str, str]:
    try:
        text = body.decode("ascii")
        fields = parse_qs(text, keep_blank_values=True, strict_parsing=bool(text),
                          errors="strict", max_num_fields=FORM_FIELDS)
        if any(len(v) > 1 for v in fields.values()):
            # "value=5&value=90" or "token=good&token=x": ambiguous, so refused, not guessed.
            raise ValueError("repeated field")
        form = {k: v[0] for k, v in fields.items()}
        for value in form.values():
            value.encode("ascii")
    except (UnicodeError, ValueError):
        raise HTTPError(400, INVALID_REQUEST) from None
    return form


def _json(body: bytes) -> dict[str, str]:
    """{"value": 30, "token": "…"}: strings, integers and booleans, as the form would spell them."""
    if not body.strip():
        return {}
    try:
        data = strict_json(body)
    except (UnicodeError, ValueError, RecursionError):
        raise HTTPError(400, "Control Command Error: body is not valid JSON") from None
    if not isinstance(data, dict):
        raise HTTPError(400, "Control Command Error: body must be a JSON object")
    fields: dict[str, str] = {}
    for key in FIELDS:
        if key not in data:
            continue
        value = data[key]
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int):
            text = str(value)
        elif isinstance(value, str) and value.isascii():
            text = value
        else:
            raise HTTPError(400, f"Control Command Error: {key} must be an ASCII string, "
                                 "an integer or a boolean")
        fields[key] = text
    return fields


# ---- the token ----------------------------------------------------------------

def _token_ok(app: App, call: Call, fields: dict[str, str]) -> bool:
    token = fields.get("token", "") or bearer_token(call.request.headers)
    return bool(token) and same_secret(token, app.config.control_secret.reveal())


def _authorize(app: App, call: Call) -> dict[str, str]:
    """The body's fields once the token is right; otherwise 401, or 429 for a client
    that keeps sending wrong tokens. The right token always passes."""
    _need_enabled(app)
    fields = _fields(call)
    if _token_ok(app, call, fields):
        return fields
    raise refused_token(app, call, TOKEN_INVALID)


def refused_token(app: App, call: Call, message: str) -> HTTPError:
    """Count a wrong or missing token from this client (shared by every interface that takes
    one) and the error to answer: 401, or 429 with Retry-After for a client that keeps trying."""
    client = client_of(app, call)
    throttle = app.throttle
    wait = throttle.wrong(throttle_key(client))
    throttle.log_refused(client, wait)
    if wait > 0:
        return HTTPError(429, TOO_MANY, [("Retry-After", str(max(1, math.ceil(wait))))])
    return HTTPError(401, message)


def write(app: App, site: Site, action: Action[V], value: V, origin: Origin, client: str, *,
          name_gateway: bool) -> Any:
    """One write for a client of the proxy (HTTP or OpenC2), counted in /stats."""
    try:
        result = app.writes.run(site, action, value, origin, client=client, name_gateway=name_gateway)
    except WriteFailed:
        app.stats.count_error()
        raise
    app.stats.count_post()
    site.stats.count_post()  # the gateway's own /stats counts its writes too
    return result


def _write(app: App, call: Call, action: Action[V], value: V) -> Any:
    return write(app, call.site, action, value, Origin.HTTP, client_of(app, call),
                 name_gateway=bool(call.mount))


def _need_enabled(app: App) -> None:
    if not app.config.control_secret:
        raise HTTPError(403, DISABLED)


# ---- the commands: each adapts a form to a row of the actions table ----------

def _command(app: App, call: Call, action: Action[Any]) -> dict[str, str] | Response:
    """The authorized fields of a write, or the current setting (GET, or POST with no value)."""
    if call.request.method == "POST":
        fields = _authorize(app, call)
        if fields.get("value"):
            return fields
    else:
        _need_enabled(app)
    return json_response(200, {action.name: read_setting(call.site, action)})


def _alone_or_with(action: Action[V], other: str,
                   both: Callable[[V, str], tuple[int, actions.Mode]]) -> Callable[[App, Call], Response]:
    """The reserve or the mode; with the `other` field as well, both in one write (OPERATION)."""
    def handler(app: App, call: Call) -> Response:
        fields = _command(app, call, action)
        if isinstance(fields, Response):
            return fields
        value = action.parse(fields["value"])
        if fields.get(other):
            return json_response(200, _write(app, call, OPERATION, both(value, fields[other])))
        return json_response(200, _write(app, call, action, value))
    handler.__name__ = f"control_{action.name}"
    return handler


control_reserve = _alone_or_with(RESERVE, "mode", lambda target, text: (target, actions.mode(text, "Mode")))
control_mode = _alone_or_with(MODE, "level", lambda chosen, text: (actions.level(text, "Level"), chosen))


def control_reserve_hold(app: App, call: Call) -> Response:
    """POST /control/reserve_hold: the reserve set to the charge the battery has now, so it
    holds that charge (no discharge below it) until the reserve is set again."""
    _authorize(app, call)
    return json_response(200, _write(app, call, HOLD, current_level(call.site)))


def _set_successfully(action: Action[Any]) -> Callable[[App, Call], Response]:
    """GET reads the setting; POST writes it and answers {"<name>": "Set Successfully"}."""
    def handler(app: App, call: Call) -> Response:
        fields = _command(app, call, action)
        if isinstance(fields, Response):
            return fields
        _write(app, call, action, action.parse(fields["value"]))
        return json_response(200, {action.name: "Set Successfully"})
    handler.__name__ = f"control_{action.name}"
    return handler


control_grid_charging = _set_successfully(GRID_CHARGING)
control_grid_export = _set_successfully(GRID_EXPORT)


def control_max_backup(app: App, call: Call) -> Response:
    _need_enabled(app)
    if call.site.gateway.info.tedapi_mode != "v1r":
        raise NotSupported("max_backup requires v1r LAN transport")
    if call.request.method != "POST":
        # The reference cleared an expired event on GET ?token=…; a GET never writes here,
        # so that tidy-up moved to POST with the token and no value.
        return _backup_events(app, call, tidy=False)
    fields = _authorize(app, call)
    if not fields.get("value"):
        return _backup_events(app, call, tidy=True)
    seconds = MAX_BACKUP.parse(fields["value"])
    _write(app, call, MAX_BACKUP, seconds)
    answer = "Cancelled" if seconds is None else f"Scheduled for {seconds} seconds"
    return json_response(200, {"max_backup": answer})


def _backup_events(app: App, call: Call, *, tidy: bool) -> Response:
    """The backup events; with `tidy` (an authorized POST) an expired manual event is cancelled."""
    events = call.site.gateway.control(lambda pw: pw.get_backup_events())
    if not isinstance(events, dict):
        raise HTTPError(502, "Failed to get backup events")
    manual = events.get("manual_backup")
    if tidy and isinstance(manual, dict) and not manual.get("active"):
        call.site.gateway.control(lambda pw: pw.cancel_max_backup())
        log.info("control: expired max_backup event cleared for %s", client_of(app, call))
        events = {**events, "manual_backup": None}
    return json_response(200, events)


def control_status(app: App, call: Call) -> Response:
    """GET /control/status: is control on, and the current reserve and mode.

    No token: it shows nothing that GET /control/reserve and /control/mode do not
    already show without one. A value the gateway cannot give right now is null.
    """
    enabled = bool(app.config.control_secret)
    v1r = call.site.gateway.info.tedapi_mode == "v1r"
    actions = [a for a in routed() if v1r or a != "max_backup"]
    status: dict[str, Any] = {
        "enabled": enabled,
        "ready": enabled and call.site.gateway.control_pw is not None,
        "actions": actions if enabled else [],
        "reserve": None,
        "mode": None,
    }
    if enabled:
        reserve = number(_maybe(call, RESERVE))
        status["reserve"] = None if reserve is None else user_number(reserve)
        status["mode"] = _maybe(call, MODE)
    return json_response(200, status)


def routed() -> list[str]:
    """The actions a POST /control/<action> writes, in the table's order (as /control/status
    lists them)."""
    return [r.path.removeprefix("/control/") for r in ROUTES if "POST" in r.methods and "*" not in r.path]


def _maybe(call: Call, action: Action[Any]) -> Any:
    try:
        return read_setting(call.site, action)
    except ProxyError:
        return None


def control_unknown(app: App, call: Call) -> Response:
    if call.request.method == "POST":
        _authorize(app, call)
    raise HTTPError(404, "Invalid Command Action")


_BOTH = ("GET", "POST")
_READ_ANSWERS = (CONTROL_OFF, NOT_IN_MODE, UNAVAILABLE)


def _doc(action: str, reads: Schema, value: Schema, what: str, **more: Schema) -> Doc:
    """GET reads the setting (no token); POST with the token writes `value`."""
    return Doc(f"Read the {what}", keyed(action, reads), tag="control", answers=_READ_ANSWERS,
               write=Write(control_body(value, **more), answers=WRITE_ANSWERS,
                           summary=f"Set the {what} (an empty value reads it)"))


GRID_CHARGING_VALUE: Schema = {"anyOf": [{"type": "boolean"},
                                          {"type": "string", "enum": ["true", "false"]}]}
GRID_EXPORT_VALUE: Schema = {"type": "string", "enum": [g.value for g in GridExport]}
_SECONDS: Schema = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 999999},
                              {"type": "string", "pattern": "^([0-9]{1,6}|cancel)$"}]}
ROUTES: tuple[Route, ...] = (
    Route("/control/reserve", control_reserve, methods=_BOTH,
          doc=_doc("reserve", {"type": ["number", "null"]}, LEVEL_SCHEMA, "backup reserve (%)",
                   mode=MODE_SCHEMA)),
    Route("/control/reserve_hold", control_reserve_hold, methods=("POST",),
          doc=Doc("Hold the charge the battery has now", tag="control",
                  write=Write(token_body(), answers=WRITE_ANSWERS,
                              summary="Set the reserve to the current charge (Tesla app scale, "
                                      "whole percent), so the battery holds it"))),
    Route("/control/mode", control_mode, methods=_BOTH,
          doc=_doc("mode", {"type": ["string", "null"]}, MODE_SCHEMA, "operation mode", level=LEVEL_SCHEMA)),
    Route("/control/grid_charging", control_grid_charging, methods=_BOTH,
          doc=_doc("grid_charging", {"type": "boolean"}, GRID_CHARGING_VALUE, "grid charging")),
    Route("/control/grid_export", control_grid_export, methods=_BOTH,
          doc=_doc("grid_export", {"type": ["string", "null"]}, GRID_EXPORT_VALUE, "grid export rule")),
    Route("/control/max_backup", control_max_backup, methods=_BOTH,
          doc=Doc("Backup events (v1r LAN transport only)", OBJECT, tag="control",
                  answers=_READ_ANSWERS,
                  write=Write(control_body(_SECONDS), answers=WRITE_ANSWERS,
                              summary="Schedule a manual backup for some seconds, or cancel it"))),
    Route("/control/status", control_status,
          doc=Doc("Is control on; current reserve and mode (no token)", ref("ControlStatus"),
                  tag="control", answers=(UNAVAILABLE,))),
    Route("/control/*", control_unknown, methods=_BOTH,
          doc=Doc("Unknown control action: 404 (a POST checks the token first)", tag="control",
                  wildcard=Param("action", "Any other action", NAME, ("unknown",)),
                  answers=(Answer(404, '{"error": "Invalid Command Action"}'), *_READ_ANSWERS),
                  write=Write(control_body(ASCII), answers=WRITE_ANSWERS,
                              summary="Unknown control action: 404 once the token is right"))),
)
