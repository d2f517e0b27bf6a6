"""POST /control/*: change the reserve, mode, grid charging, grid export and backup.

Checks run in a fixed order: control enabled (403), client not throttled (429),
body shape (400/415), token (401), value (400), then the write. The status is
decided by the outcome, never by searching the body for "error".
"""

from __future__ import annotations

import hmac
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from enum import Enum
from typing import Any
from urllib.parse import parse_qs

from proxy.app import App, Call, Route, json_response
from proxy.errors import HTTPError, NotSupported
from proxy.gateway import Kind, error_for, reserve_for_backend
from proxy.http_types import Response

log = logging.getLogger("proxy.control")

DISABLED = "Control Commands Disabled - Set PW_CONTROL_SECRET to enable"
TOKEN_INVALID = "Control Command Token Invalid"
BAD_TOKEN_LIMIT = 5  # bad tokens per client per window before we answer 429
BAD_TOKEN_WINDOW = 60.0
MAX_TRACKED_CLIENTS = 1024
_DIGITS = re.compile(r"[0-9]{1,3}")  # ASCII only: str.isdigit() also accepts "²"


class Mode(str, Enum):
    SELF_CONSUMPTION = "self_consumption"
    BACKUP = "backup"
    AUTONOMOUS = "autonomous"


class GridExport(str, Enum):
    BATTERY_OK = "battery_ok"
    PV_ONLY = "pv_only"
    NEVER = "never"


class TokenGuard:
    """Slows down clients that keep sending bad tokens; logs once per window, not per attempt."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._last_log = -BAD_TOKEN_WINDOW
        self._suppressed = 0

    def blocked_for(self, client: str) -> float:
        """Seconds this client must wait before it may try again (0: go ahead)."""
        with self._lock:
            recent = self._recent(client)
            if len(recent) < BAD_TOKEN_LIMIT:
                return 0.0
            return max(1.0, recent[0] + BAD_TOKEN_WINDOW - self._clock())

    def failed(self, client: str) -> None:
        with self._lock:
            recent = self._recent(client)
            recent.append(self._clock())
            self._failures[client] = recent
            self._failures.move_to_end(client)
            while len(self._failures) > MAX_TRACKED_CLIENTS:
                self._failures.popitem(last=False)
            self._log_throttled(client)

    def _recent(self, client: str) -> list[float]:
        horizon = self._clock() - BAD_TOKEN_WINDOW
        return [t for t in self._failures.get(client, []) if t > horizon]

    def _log_throttled(self, client: str) -> None:
        now = self._clock()
        if now - self._last_log >= BAD_TOKEN_WINDOW:
            more = f" (+{self._suppressed} more in the last minute)" if self._suppressed else ""
            log.warning("control: refused a bad or missing token from %s%s", client, more)
            self._last_log, self._suppressed = now, 0
        else:
            self._suppressed += 1


def _guard(app: App) -> TokenGuard:
    if app.control_guard is None:
        app.control_guard = TokenGuard()
    guard: TokenGuard = app.control_guard
    return guard


def _form(call: Call) -> dict[str, str]:
    """The form body as ASCII strings; anything else is a 400/415."""
    request = call.request
    kind = request.headers.get("Content-Type", "application/x-www-form-urlencoded")
    if kind.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise HTTPError(415, "Control Command Error: body must be application/x-www-form-urlencoded")
    try:
        text = request.body.decode("ascii")
        fields = parse_qs(text, keep_blank_values=True, strict_parsing=bool(text),
                          errors="strict", max_num_fields=10)
        if any(len(v) > 1 for v in fields.values()):
            # "value=5&value=90" or "token=good&token=x": ambiguous, so refused, not guessed.
            raise ValueError("repeated field")
        form = {k: v[0] for k, v in fields.items()}
        for value in form.values():
            value.encode("ascii")
    except (UnicodeError, ValueError):
        raise HTTPError(400, "Control Command Error: Invalid Request") from None
    return form


def _token_ok(app: App, call: Call, form: dict[str, str]) -> bool:
    token = form.get("token", "")
    auth = call.request.headers.get("Authorization", "")
    if not token and auth.lower().startswith("bearer "):
        token = auth[7:].strip()
    expected = app.config.control_secret.reveal().encode()
    try:
        given = token.encode("ascii")
    except UnicodeError:
        given = b""
    # Compare bytes in constant time; str compare_digest raises on non-ASCII.
    return bool(given) and hmac.compare_digest(given, expected)


def _authorize(app: App, call: Call) -> dict[str, str]:
    if not app.config.control_secret:
        raise HTTPError(403, DISABLED)
    client = call.request.client or "unknown"
    guard = _guard(app)
    wait = guard.blocked_for(client)
    if wait > 0:
        raise HTTPError(429, "Too many bad control tokens; try again later",
                        [("Retry-After", str(int(wait + 0.999)))])
    form = _form(call)
    if not _token_ok(app, call, form):
        guard.failed(client)
        raise HTTPError(401, TOKEN_INVALID)
    return form


def _level(raw: str, what: str) -> int:
    if not _DIGITS.fullmatch(raw) or int(raw) > 100:
        raise HTTPError(400, f"Control Command {what} Invalid - use an integer from 0 to 100")
    return int(raw)


def _mode(raw: str, what: str) -> Mode:
    try:
        return Mode(raw)
    except ValueError:
        names = ", ".join(m.value for m in Mode)
        raise HTTPError(400, f"Control Command {what} Invalid - use one of {names}") from None


def _write(app: App, call: Call, what: str, action: Callable[[Any], Any], summary: str) -> Response:
    result = app.gateway.control(action)
    failed = result is None or (isinstance(result, dict) and "error" in result)
    outcome = "failed" if failed else "accepted"
    log.info("control: %s %s from %s", summary, outcome, call.request.client or "unknown")
    if failed:
        app.stats.count_error()
        raise HTTPError(502, f"Failed to set {what}")
    app.stats.count_post()
    return json_response(200, result)


def _read(app: App, key: str, fetch: Callable[[Any], Any]) -> Any:
    entry = app.gateway.control_read(key, fetch)
    if entry.kind is Kind.NOT_SUPPORTED:
        raise NotSupported(entry.verdict.reason)
    if entry.kind not in (Kind.DATA, Kind.ABSENT):
        raise error_for(entry.verdict, app.gateway)
    return entry.verdict.value


def _need_enabled(app: App) -> None:
    if not app.config.control_secret:
        raise HTTPError(403, DISABLED)


# ---- the five commands ------------------------------------------------------

def _command(app: App, call: Call, name: str, getter: Callable[[Any], Any]) -> dict[str, str] | Response:
    """The validated form of a write, or the current setting (GET, or POST with no value)."""
    if call.request.method == "POST":
        form = _authorize(app, call)
        if form.get("value"):
            return form
    else:
        _need_enabled(app)
    return json_response(200, {name: _read(app, f"control:{name}", getter)})


def control_reserve(app: App, call: Call) -> Response:
    form = _command(app, call, "reserve", _get_reserve)
    if isinstance(form, Response):
        return form
    level = _level(form["value"], "Value")
    if form.get("mode"):
        return _write_operation(app, call, level, _mode(form["mode"], "Mode"))
    return _write(app, call, "reserve", lambda pw: pw.set_reserve(reserve_for_backend(pw, level)),
                  f"reserve={level}")


def control_mode(app: App, call: Call) -> Response:
    form = _command(app, call, "mode", _get_mode)
    if isinstance(form, Response):
        return form
    mode = _mode(form["value"], "Value")
    if form.get("level"):
        return _write_operation(app, call, _level(form["level"], "Level"), mode)
    return _write(app, call, "mode", lambda pw: pw.set_mode(mode.value), f"mode={mode.value}")


def _write_operation(app: App, call: Call, level: int, mode: Mode) -> Response:
    # One set_operation call: one write and one audit line, not two racing commands.
    return _write(app, call, "reserve+mode",
                  lambda pw: pw.set_operation(level=reserve_for_backend(pw, level), mode=mode.value),
                  f"reserve={level} mode={mode.value}")


def control_grid_charging(app: App, call: Call) -> Response:
    form = _command(app, call, "grid_charging", _get_grid_charging)
    if isinstance(form, Response):
        return form
    value = form["value"].lower()
    if value not in ("true", "false"):
        raise HTTPError(400, "Control Command Value Invalid - use true or false")
    on = value == "true"
    _write(app, call, "grid_charging", lambda pw: pw.set_grid_charging(on), f"grid_charging={value}")
    return json_response(200, {"grid_charging": "Set Successfully"})


def control_grid_export(app: App, call: Call) -> Response:
    form = _command(app, call, "grid_export", _get_grid_export)
    if isinstance(form, Response):
        return form
    value = form["value"].lower()
    try:
        rule = GridExport(value)
    except ValueError:
        names = ", ".join(g.value for g in GridExport)
        raise HTTPError(400, f"Control Command Value Invalid - use one of {names}") from None
    _write(app, call, "grid_export", lambda pw: pw.set_grid_export(rule.value), f"grid_export={value}")
    return json_response(200, {"grid_export": "Set Successfully"})


def control_max_backup(app: App, call: Call) -> Response:
    _need_enabled(app)
    if app.gateway.info.tedapi_mode != "v1r":
        raise NotSupported("max_backup requires v1r LAN transport")
    if call.request.method != "POST":
        return _backup_events(app, cancel_expired=_token_ok(app, call, {"token": call.param("token")}))
    form = _authorize(app, call)
    value = form.get("value", "").lower()
    if not value:
        return _backup_events(app, cancel_expired=False)
    if value == "cancel":
        _write(app, call, "max backup", lambda pw: pw.cancel_max_backup(), "max_backup=cancel")
        return json_response(200, {"max_backup": "Cancelled"})
    if not value.isascii() or not value.isdigit() or len(value) > 6:
        raise HTTPError(400, "Control Command Value Invalid - use seconds or cancel")
    seconds = int(value)
    _write(app, call, "max backup", lambda pw: pw.schedule_max_backup(seconds),
           f"max_backup={seconds}")
    return json_response(200, {"max_backup": f"Scheduled for {seconds} seconds"})


def _backup_events(app: App, *, cancel_expired: bool) -> Response:
    events = app.gateway.control(lambda pw: pw.get_backup_events())
    if not isinstance(events, dict):
        raise HTTPError(502, "Failed to get backup events")
    manual = events.get("manual_backup")
    if cancel_expired and isinstance(manual, dict) and not manual.get("active"):
        app.gateway.control(lambda pw: pw.cancel_max_backup())
        events = {**events, "manual_backup": None}
    return json_response(200, events)


def control_unknown(app: App, call: Call) -> Response:
    if call.request.method == "POST":
        _authorize(app, call)
    raise HTTPError(404, "Invalid Command Action")


def _get_reserve(pw: Any) -> Any:
    return pw.get_reserve()


def _get_mode(pw: Any) -> Any:
    return pw.get_mode() or "unknown"


def _get_grid_charging(pw: Any) -> Any:
    return bool(pw.get_grid_charging())  # the reference reads a None as false


def _get_grid_export(pw: Any) -> Any:
    return pw.get_grid_export() or "unknown"


_BOTH = ("GET", "POST")
CONTROL_ROUTES: tuple[Route, ...] = (
    Route("/control/reserve", control_reserve, methods=_BOTH),
    Route("/control/mode", control_mode, methods=_BOTH),
    Route("/control/grid_charging", control_grid_charging, methods=_BOTH),
    Route("/control/grid_export", control_grid_export, methods=_BOTH),
    Route("/control/max_backup", control_max_backup, methods=_BOTH),
    Route("/control/*", control_unknown, methods=_BOTH),
)
