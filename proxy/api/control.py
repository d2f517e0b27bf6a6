"""/control/*: read and change the reserve, mode, grid charging, grid export and backup.

Writes happen only on POST. A POST runs its checks in a fixed order: control
enabled (403), body shape (400/415), token (401, or 429 for a client that keeps
sending wrong ones), value (400), then the write. A GET only ever reads, whatever
its query string says. The status is decided by the outcome, never by searching
the body for "error".

Wrong tokens are slowed per client, and the right token is never refused for
someone else's guesses (or the same client's earlier ones): a lock-out would let
anyone who can reach the proxy switch off the owner's automations.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import parse_qs

from proxy.api.apidoc import (
    ASCII,
    CONTROL_OFF,
    LEVEL,
    MODE,
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
from proxy.api.app import App, Call, Route, json_response
from proxy.api.forwarded import client_address, throttle_key
from proxy.errors import GatewayUnavailable, HTTPError, NotSupported, ProxyError
from proxy.gateway import Kind, app_reserve, error_for, reserve_answer, reserve_for_backend, user_number
from proxy.gateway.sources import LEVEL_SCALED
from proxy.httpd.types import Response
from proxy.site.site import Site, State

log = logging.getLogger("proxy.control")

DISABLED = "Control Commands Disabled - Set PW_CONTROL_SECRET to enable"
TOKEN_INVALID = "Control Command Token Invalid"
TOO_MANY = "Too many bad control tokens from this client; wait before trying again"
INVALID_REQUEST = "Control Command Error: Invalid Request"
FREE_BAD_TOKENS = 3  # wrong tokens a client may send (typos) before it is slowed down
PENALTY_START = 1.0  # seconds; doubles with every further wrong token ...
PENALTY_CAP = 300.0  # ... up to this
FORGET_AFTER = 900.0  # a client quiet this long starts again with a clean record
MAX_TRACKED_CLIENTS = 1024
LOG_INTERVAL = 60.0  # refused tokens are logged once per interval, with a count
FIELDS = ("value", "token", "mode", "level")  # what a control body may carry
# POST /control/<action>
ACTIONS = ("reserve", "reserve_hold", "mode", "grid_charging", "grid_export", "max_backup")
_DIGITS = re.compile(r"[0-9]{1,3}")  # ASCII only: str.isdigit() also accepts "²"
_THROTTLE_LOCK = threading.Lock()  # creating the app's one throttle


class Mode(str, Enum):
    SELF_CONSUMPTION = "self_consumption"
    BACKUP = "backup"
    AUTONOMOUS = "autonomous"


class GridExport(str, Enum):
    BATTERY_OK = "battery_ok"
    PV_ONLY = "pv_only"
    NEVER = "never"


@dataclass(slots=True)
class _Record:
    strikes: int = 0
    last: float = 0.0


class TokenThrottle:
    """Wrong tokens per client; after a few, each further one is answered 429 with a
    Retry-After that doubles. It never refuses a right token: it is asked only after
    the token was found wrong. Bounded: the least recently seen client is forgotten."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 capacity: int = MAX_TRACKED_CLIENTS) -> None:
        self._clock = clock
        self._capacity = capacity
        self._lock = threading.Lock()
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._last_log = -math.inf
        self._suppressed = 0

    def wrong(self, key: str) -> float:
        """Count a wrong token from `key`; the seconds it is asked to wait (0: a plain 401)."""
        with self._lock:
            now = self._clock()
            record = self._records.pop(key, None)
            if record is None or now - record.last > FORGET_AFTER:
                record = _Record()
            record.strikes += 1
            record.last = now
            self._records[key] = record  # the most recently seen at the end
            while len(self._records) > self._capacity:
                self._records.popitem(last=False)
            over = record.strikes - FREE_BAD_TOKENS
            if over <= 0:
                return 0.0
            return min(PENALTY_CAP, PENALTY_START * 2.0 ** min(over - 1, 32))

    def strikes(self, key: str) -> int:
        with self._lock:
            record = self._records.get(key)
            if record is None or self._clock() - record.last > FORGET_AFTER:
                return 0
            return record.strikes

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def log_refused(self, client: str, wait: float) -> None:
        """One warning per interval however many wrong tokens arrive, with a count."""
        with self._lock:
            now = self._clock()
            if now - self._last_log < LOG_INTERVAL:
                self._suppressed += 1
                return
            more = f" (+{self._suppressed} more in the last minute)" if self._suppressed else ""
            self._last_log, self._suppressed = now, 0
        slowed = f"; slowed down for {wait:.0f} s" if wait > 0 else ""
        log.warning("control: refused a bad or missing token from %s%s%s", client, slowed, more)


def _throttle(app: App) -> TokenThrottle:
    with _THROTTLE_LOCK:
        if app.control_guard is None:
            app.control_guard = TokenThrottle()
        throttle: TokenThrottle = app.control_guard
    return throttle


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
                          errors="strict", max_num_fields=10)
        if any(len(v) > 1 for v in fields.values()):
            # "value=5&value=90" or "token=good&token=x": ambiguous, so refused, not guessed.
            raise ValueError("repeated field")
        form = {k: v[0] for k, v in fields.items()}
        for value in form.values():
            value.encode("ascii")
    except (UnicodeError, ValueError):
        raise HTTPError(400, INVALID_REQUEST) from None
    return form


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("repeated key")  # {"value": 5, "value": 90}: refused, not guessed
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json(body: bytes) -> dict[str, str]:
    """{"value": 30, "token": "…"}: strings, integers and booleans, as the form would spell them."""
    if not body.strip():
        return {}
    try:
        data = json.loads(body.decode("utf-8"), object_pairs_hook=_unique,
                          parse_constant=_no_constant)
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
    token = fields.get("token", "")
    auth = call.request.headers.get("Authorization", "")
    if not token and auth[:7].lower() == "bearer ":
        token = auth[7:].strip()
    return bool(token) and same_secret(token, app.config.control_secret.reveal())


def same_secret(given: str, expected: str) -> bool:
    """Constant time in the content and in the length: both sides are hashed first,
    and compare_digest compares the digests (a raw compare_digest reveals the length)."""
    try:
        given_bytes = given.encode("utf-8")
    except UnicodeError:  # a lone surrogate can come from a header decoded as latin-1
        given_bytes = b""
    given_digest = hashlib.sha256(given_bytes).digest()
    expected_digest = hashlib.sha256(expected.encode("utf-8")).digest()
    return hmac.compare_digest(given_digest, expected_digest) and bool(given_bytes)


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
    throttle = _throttle(app)
    wait = throttle.wrong(throttle_key(client))
    throttle.log_refused(client, wait)
    if wait > 0:
        return HTTPError(429, TOO_MANY, [("Retry-After", str(max(1, math.ceil(wait))))])
    return HTTPError(401, message)


def level_value(raw: str, what: str = "Value") -> int:
    """A reserve level as the control routes accept it: an integer from 0 to 100."""
    if not _DIGITS.fullmatch(raw) or int(raw) > 100:
        raise HTTPError(400, f"Control Command {what} Invalid - use an integer from 0 to 100")
    return int(raw)


def mode_value(raw: str, what: str = "Value") -> Mode:
    try:
        return Mode(raw)
    except ValueError:
        names = ", ".join(m.value for m in Mode)
        raise HTTPError(400, f"Control Command {what} Invalid - use one of {names}") from None


def grid_charging_value(raw: str) -> bool:
    value = raw.lower()
    if value not in ("true", "false"):
        raise HTTPError(400, "Control Command Value Invalid - use true or false")
    return value == "true"


def grid_export_value(raw: str) -> GridExport:
    try:
        return GridExport(raw.lower())
    except ValueError:
        names = ", ".join(g.value for g in GridExport)
        raise HTTPError(400, f"Control Command Value Invalid - use one of {names}") from None


def apply(site: Site, what: str, action: Callable[[Any], Any], summary: str, origin: str,
          named: bool = True) -> Any:
    """Run one write through the site's control backend and log it in one audit line (naming
    the gateway when `named`); 502 when it failed. Every surface that writes ends here."""
    result = site.gateway.control(action)
    failed = result is None or (isinstance(result, dict) and "error" in result)
    outcome = "failed" if failed else "accepted"
    where = f" on {site.gateway.name}" if named else ""
    log.info("control: %s %s%s from %s", summary, outcome, where, origin)
    if failed:
        raise HTTPError(502, f"Failed to set {what}")
    return result


def _write(app: App, call: Call, what: str, action: Callable[[Any], Any], summary: str) -> Any:
    """One write for an HTTP caller, counted in /stats."""
    try:
        result = apply(call.site, what, action, summary, client_of(app, call), bool(call.mount))
    except HTTPError:
        app.stats.count_error()
        raise
    app.stats.count_post()
    call.site.stats.count_post()  # the gateway's own /stats counts its writes too
    return result


def _read(call: Call, key: str, fetch: Callable[[Any], Any]) -> Any:
    entry = call.site.gateway.control_read(key, fetch)
    if entry.kind is Kind.NOT_SUPPORTED:
        raise NotSupported(entry.verdict.reason)
    if entry.kind not in (Kind.DATA, Kind.ABSENT):
        raise error_for(entry.verdict, call.site.gateway)
    return entry.verdict.value


def _need_enabled(app: App) -> None:
    if not app.config.control_secret:
        raise HTTPError(403, DISABLED)


# ---- the writes: validated values in, the backend's answer out -----------------
# Every interface that changes the battery (/control/*, OpenC2 `set`) goes through these,
# so validation, the backend call and the audit line are the same whichever asked.

def reserve_action(level: int) -> Callable[[Any], Any]:
    # The answer is on the user's scale: value=30 answers 30, whatever the backend stores.
    return lambda pw: reserve_answer(pw, pw.set_reserve(reserve_for_backend(pw, level)), level)


def mode_action(mode: Mode) -> Callable[[Any], Any]:
    return lambda pw: reserve_answer(pw, pw.set_mode(mode.value), None)


def write_reserve(app: App, call: Call, level: int, summary: str = "") -> Any:
    return _write(app, call, "reserve", reserve_action(level), summary or f"reserve={level}")


def write_mode(app: App, call: Call, mode: Mode) -> Any:
    return _write(app, call, "mode", mode_action(mode), f"mode={mode.value}")


def write_operation(app: App, call: Call, level: int, mode: Mode) -> Any:
    # One set_operation call: one write and one audit line, not two racing commands.
    def action(pw: Any) -> Any:
        result = pw.set_operation(level=reserve_for_backend(pw, level), mode=mode.value)
        return reserve_answer(pw, result, level)

    return _write(app, call, "reserve+mode", action, f"reserve={level} mode={mode.value}")


def write_grid_charging(app: App, call: Call, on: bool) -> Any:
    value = "true" if on else "false"
    return _write(app, call, "grid_charging", lambda pw: pw.set_grid_charging(on), f"grid_charging={value}")


def write_grid_export(app: App, call: Call, rule: GridExport) -> Any:
    return _write(app, call, "grid_export", lambda pw: pw.set_grid_export(rule.value),
                  f"grid_export={rule.value}")


def current_level(site: Site) -> int:
    """The state of charge now, on the Tesla app's scale, as a whole percent (for a hold).

    Read through the window cache; a stale copy or no reading is no ground for a write."""
    reading = site.read(LEVEL_SCALED)
    if reading.state is State.UNAVAILABLE and reading.error is not None:
        raise reading.error
    value = reading.value
    if reading.stale or isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise GatewayUnavailable("no current state of charge to hold")
    return max(0, min(100, round(value)))


# ---- the commands -------------------------------------------------------------

def _command(app: App, call: Call, name: str, getter: Callable[[Any], Any]) -> dict[str, str] | Response:
    """The validated fields of a write, or the current setting (GET, or POST with no value)."""
    if call.request.method == "POST":
        fields = _authorize(app, call)
        if fields.get("value"):
            return fields
    else:
        _need_enabled(app)
    return json_response(200, {name: _read(call, f"control:{name}", getter)})


def control_reserve(app: App, call: Call) -> Response:
    fields = _command(app, call, "reserve", app_reserve)
    if isinstance(fields, Response):
        return fields
    level = level_value(fields["value"])
    if fields.get("mode"):
        return json_response(200, write_operation(app, call, level, mode_value(fields["mode"], "Mode")))
    return json_response(200, write_reserve(app, call, level))


def control_reserve_hold(app: App, call: Call) -> Response:
    """POST /control/reserve_hold: the reserve set to the charge the battery has now, so it
    holds that charge (no discharge below it) until the reserve is set again."""
    _authorize(app, call)
    level = current_level(call.site)
    return json_response(200, write_reserve(app, call, level, f"reserve_hold reserve={level}"))


def control_mode(app: App, call: Call) -> Response:
    fields = _command(app, call, "mode", _get_mode)
    if isinstance(fields, Response):
        return fields
    mode = mode_value(fields["value"])
    if fields.get("level"):
        return json_response(200, write_operation(app, call, level_value(fields["level"], "Level"), mode))
    return json_response(200, write_mode(app, call, mode))


def control_grid_charging(app: App, call: Call) -> Response:
    fields = _command(app, call, "grid_charging", _get_grid_charging)
    if isinstance(fields, Response):
        return fields
    write_grid_charging(app, call, grid_charging_value(fields["value"]))
    return json_response(200, {"grid_charging": "Set Successfully"})


def control_grid_export(app: App, call: Call) -> Response:
    fields = _command(app, call, "grid_export", _get_grid_export)
    if isinstance(fields, Response):
        return fields
    write_grid_export(app, call, grid_export_value(fields["value"]))
    return json_response(200, {"grid_export": "Set Successfully"})


def control_max_backup(app: App, call: Call) -> Response:
    _need_enabled(app)
    if call.site.gateway.info.tedapi_mode != "v1r":
        raise NotSupported("max_backup requires v1r LAN transport")
    if call.request.method != "POST":
        # The reference cleared an expired event on GET ?token=…; a GET never writes here,
        # so that tidy-up moved to POST with the token and no value.
        return _backup_events(app, call, tidy=False)
    fields = _authorize(app, call)
    value = fields.get("value", "").lower()
    if not value:
        return _backup_events(app, call, tidy=True)
    if value == "cancel":
        _write(app, call, "max backup", lambda pw: pw.cancel_max_backup(), "max_backup=cancel")
        return json_response(200, {"max_backup": "Cancelled"})
    if not value.isascii() or not value.isdigit() or len(value) > 6:
        raise HTTPError(400, "Control Command Value Invalid - use seconds or cancel")
    seconds = int(value)
    _write(app, call, "max backup", lambda pw: pw.schedule_max_backup(seconds),
           f"max_backup={seconds}")
    return json_response(200, {"max_backup": f"Scheduled for {seconds} seconds"})


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
    actions = [a for a in ACTIONS if v1r or a != "max_backup"]
    status: dict[str, Any] = {
        "enabled": enabled,
        "ready": enabled and call.site.gateway.control_pw is not None,
        "actions": actions if enabled else [],
        "reserve": None,
        "mode": None,
    }
    if enabled:
        reserve = _maybe(call, "reserve", app_reserve)
        status["reserve"] = user_number(reserve) if isinstance(reserve, (int, float)) else None
        status["mode"] = _maybe(call, "mode", _get_mode)
    return json_response(200, status)


def _maybe(call: Call, name: str, getter: Callable[[Any], Any]) -> Any:
    try:
        return _read(call, f"control:{name}", getter)
    except ProxyError:
        return None


def control_unknown(app: App, call: Call) -> Response:
    if call.request.method == "POST":
        _authorize(app, call)
    raise HTTPError(404, "Invalid Command Action")


def _get_mode(pw: Any) -> Any:
    return pw.get_mode() or "unknown"


def _get_grid_charging(pw: Any) -> Any:
    return bool(pw.get_grid_charging())  # the reference reads a None as false


def _get_grid_export(pw: Any) -> Any:
    return pw.get_grid_export() or "unknown"


# ---- the same writes for MQTT (no HTTP request, no app) ------------------------------

@dataclass(frozen=True, slots=True)
class Command:
    """A write that MQTT offers: parse the value, then the same action and audit line as
    POST /control/<name>."""

    name: str
    parse: Callable[[str], Any]  # HTTPError(400) for a value it cannot use
    action: Callable[[Any], Callable[[Any], Any]]
    summary: Callable[[Any], str]


def _whole(raw: str) -> str:
    """"37.0" as "37": Home Assistant's number entity may send an integral value that way."""
    text = raw.strip()
    return re.sub(r"\.0+$", "", text) if re.fullmatch(r"[0-9]{1,3}\.0+", text) else text


COMMANDS: tuple[Command, ...] = (
    Command("reserve", lambda raw: level_value(_whole(raw)), reserve_action,
            lambda level: f"reserve={level}"),
    Command("mode", lambda raw: mode_value(raw.strip()), mode_action,
            lambda mode: f"mode={mode.value}"),
)


def run_command(site: Site, command: Command, raw: str, origin: str) -> Any:
    """Carry out a command on a site; ProxyError (HTTPError 400/502, gateway errors) when not."""
    value = command.parse(raw)
    return apply(site, command.name, command.action(value), command.summary(value), origin)


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
CONTROL_ROUTES: tuple[Route, ...] = (
    Route("/control/reserve", control_reserve, methods=_BOTH,
          doc=_doc("reserve", {"type": ["number", "null"]}, LEVEL, "backup reserve (%)", mode=MODE)),
    Route("/control/reserve_hold", control_reserve_hold, methods=("POST",),
          doc=Doc("Hold the charge the battery has now", tag="control",
                  write=Write(token_body(), answers=WRITE_ANSWERS,
                              summary="Set the reserve to the current charge (Tesla app scale, "
                                      "whole percent), so the battery holds it"))),
    Route("/control/mode", control_mode, methods=_BOTH,
          doc=_doc("mode", {"type": ["string", "null"]}, MODE, "operation mode", level=LEVEL)),
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
