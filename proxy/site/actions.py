"""One table of control actions: every write any front door makes, one frozen row each.

An `Action` names a write once: how its value is parsed and validated from text, the library
call that writes it, the audit line it leaves, how its current setting is read, and which
front doors offer it beyond `/control/<name>` (OpenC2 `set` with its `x-esm:` setting, MQTT
commands). `/control/*`, OpenC2 and MQTT only adapt their input to a row and call
`Writes.run`, so validation, the gateway call and the audit line are the same whichever
asked. Writes reach the gateway through `Gateway.control` (one at a time per gateway, its
later reads fresh); current settings through `Gateway.control_read` (window cached).

Every write leaves an `Audit` record, told to whoever subscribed (the history store takes
who changed the mode or reserve from its `origin`) and logged in one line without secrets.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar

from proxy import payloads
from proxy.errors import BadValue, GatewayUnavailable, NotSupported, WriteFailed
from proxy.gateway import Kind, app_reserve, error_for, reserve_answer, reserve_for_backend
from proxy.gateway.sources import LEVEL_SCALED
from proxy.reports import Reports
from proxy.site.site import Site, State

log = logging.getLogger("proxy.control")

V = TypeVar("V")
Call = Callable[[Any], Any]  # a library call on the control backend (a pypowerwall object)
_DIGITS = re.compile(r"[0-9]{1,3}")  # ASCII only: str.isdigit() also accepts "²"
_SECONDS = re.compile(r"[0-9]{1,6}")
MAX_LISTENERS = 16


class Origin(str, Enum):
    """The front door a write came through."""

    HTTP = "http"
    OPENC2 = "openc2"
    MQTT = "mqtt"


class Mode(str, Enum):
    SELF_CONSUMPTION = "self_consumption"
    BACKUP = "backup"
    AUTONOMOUS = "autonomous"


class GridExport(str, Enum):
    BATTERY_OK = "battery_ok"
    PV_ONLY = "pv_only"
    NEVER = "never"


# ---- parsing: text in, a valid value out (BadValue says what is allowed) ------------------

def level(raw: str, what: str = "Value") -> int:
    """A reserve level: an integer from 0 to 100."""
    if not _DIGITS.fullmatch(raw) or int(raw) > 100:
        raise BadValue(f"Control Command {what} Invalid - use an integer from 0 to 100")
    return int(raw)


def mode(raw: str, what: str = "Value") -> Mode:
    try:
        return Mode(raw)
    except ValueError:
        names = ", ".join(m.value for m in Mode)
        raise BadValue(f"Control Command {what} Invalid - use one of {names}") from None


def grid_charging(raw: str) -> bool:
    value = raw.lower()
    if value not in ("true", "false"):
        raise BadValue("Control Command Value Invalid - use true or false")
    return value == "true"


def grid_export(raw: str) -> GridExport:
    try:
        return GridExport(raw.lower())
    except ValueError:
        names = ", ".join(g.value for g in GridExport)
        raise BadValue(f"Control Command Value Invalid - use one of {names}") from None


def backup_seconds(raw: str) -> int | None:
    """Seconds of a manual backup, or None for "cancel"."""
    value = raw.lower()
    if value == "cancel":
        return None
    if not _SECONDS.fullmatch(value):
        raise BadValue("Control Command Value Invalid - use seconds or cancel")
    return int(value)


# ---- the library calls ------------------------------------------------------------------------

def _reserve_call(target: int) -> Call:
    # The answer is on the user's scale: value=30 answers 30, whatever the backend stores.
    return lambda pw: reserve_answer(pw, pw.set_reserve(reserve_for_backend(pw, target)), target)


def _mode_call(chosen: Mode) -> Call:
    return lambda pw: reserve_answer(pw, pw.set_mode(chosen.value), None)


def _operation_call(value: tuple[int, Mode]) -> Call:
    # One set_operation call: one write and one audit line, not two racing commands.
    target, chosen = value
    return lambda pw: reserve_answer(
        pw, pw.set_operation(level=reserve_for_backend(pw, target), mode=chosen.value), target)


def _backup_call(seconds: int | None) -> Call:
    if seconds is None:
        return lambda pw: pw.cancel_max_backup()
    return lambda pw: pw.schedule_max_backup(seconds)


def _operation(raw: str) -> tuple[int, Mode]:
    """"30 backup": the reserve and the mode written together (what /control/* composes)."""
    text_level, _, text_mode = raw.partition(" ")
    return level(text_level, "Level"), mode(text_mode, "Mode")


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _said(name: str) -> Callable[[Any], str]:
    """The audit summary "name=value" (true/false for booleans, as a form would say them)."""
    def summary(value: Any) -> str:
        shown = ("true" if value else "false") if isinstance(value, bool) else _plain(value)
        return f"{name}={shown}"
    return summary


# ---- the table --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Action(Generic[V]):
    """One write."""

    name: str  # /control/<name>; MQTT's control/<name>/set
    what: str  # what a failed write names: "Failed to set <what>"
    parse: Callable[[str], V]  # the value as text -> a valid value (BadValue otherwise)
    call: Callable[[V], Call]  # the library call that writes it
    audit: Callable[[V], str]  # the audit line's summary, e.g. "reserve=30"
    read: Call | None = None  # how its current setting is read (GET /control/<name>)
    openc2: str = ""  # OpenC2 `set` target x-esm:<openc2>, "" when not offered there
    reports: str = ""  # the key OpenC2's answer carries the written value under
    mqtt: bool = False  # offered as an MQTT command
    changes: tuple[str, ...] = ()  # the settings it changes, as the history's events name them

    def shown(self, value: V) -> Any:
        """The written value as a JSON answer carries it."""
        return _plain(value)


RESERVE: Action[int] = Action(
    "reserve", "reserve", level, _reserve_call, _said("reserve"), read=app_reserve,
    openc2="backup_reserve", reports="backup_reserve_percent", mqtt=True, changes=("reserve",))
MODE: Action[Mode] = Action(
    "mode", "mode", mode, _mode_call, _said("mode"), read=lambda pw: pw.get_mode() or "unknown",
    openc2="operation_mode", reports="operation_mode", mqtt=True, changes=("mode",))
OPERATION: Action[tuple[int, Mode]] = Action(
    "operation", "reserve+mode", _operation, _operation_call,
    lambda value: f"reserve={value[0]} mode={value[1].value}", changes=("reserve", "mode"))
HOLD: Action[int] = Action(
    "reserve_hold", "reserve", level, _reserve_call, lambda target: f"reserve_hold reserve={target}",
    changes=("reserve",))
GRID_CHARGING: Action[bool] = Action(
    "grid_charging", "grid_charging", grid_charging, lambda on: lambda pw: pw.set_grid_charging(on),
    _said("grid_charging"),
    read=lambda pw: bool(pw.get_grid_charging()),  # the reference reads a None as false
    openc2="grid_charging", reports="grid_charging")
GRID_EXPORT: Action[GridExport] = Action(
    "grid_export", "grid_export", grid_export,
    lambda rule: lambda pw: pw.set_grid_export(rule.value), _said("grid_export"),
    read=lambda pw: pw.get_grid_export() or "unknown", openc2="grid_export", reports="grid_export")
MAX_BACKUP: Action[int | None] = Action(
    "max_backup", "max backup", backup_seconds, _backup_call,
    lambda seconds: f"max_backup={'cancel' if seconds is None else seconds}")

ACTIONS: tuple[Action[Any], ...] = (RESERVE, MODE, OPERATION, HOLD, GRID_CHARGING, GRID_EXPORT,
                                    MAX_BACKUP)


def for_openc2(target: str) -> Action[Any] | None:
    """The action an OpenC2 `set` target (x-esm:<setting>, without its prefix) names."""
    return next((a for a in ACTIONS if a.openc2 and a.openc2 == target), None)


def for_mqtt(name: str) -> Action[Any] | None:
    return next((a for a in ACTIONS if a.mqtt and a.name == name), None)


# ---- running them -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Audit:
    """One write, as the audit line tells it: who, where, what, and how it went."""

    gateway: str
    action: str
    summary: str  # e.g. "reserve=30"
    accepted: bool
    origin: Origin  # the front door: http, openc2 or mqtt
    client: str  # the client's address (HTTP, OpenC2), or the front door's name (MQTT)
    at: float  # epoch seconds


Listener = Callable[[Audit], None]


class Writes:
    """Runs the table's actions on a site: one write, one audit line, one record for the
    listeners. Built in main and given to every front door."""

    def __init__(self, reports: Reports | None = None, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._counts: Counter[tuple[str, bool]] = Counter()  # (origin, accepted)
        if reports is not None:
            reports.register("writes", self.stats)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Hear of every write (called on the writer's thread: return quickly)."""
        with self._lock:
            if len(self._listeners) >= MAX_LISTENERS:
                raise RuntimeError(f"more than {MAX_LISTENERS} audit listeners")
            self._listeners.append(listener)
        return lambda: self._drop(listener)

    def _drop(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def run(self, site: Site, action: Action[V], value: V, origin: Origin, *, client: str = "",
            name_gateway: bool = True) -> Any:
        """Write, log one audit line (naming the gateway when `name_gateway`), tell the
        listeners; WriteFailed when the gateway said the write failed."""
        result = site.gateway.control(action.call(value))
        failed = result is None or (isinstance(result, dict) and "error" in result)
        record = Audit(site.id, action.name, action.audit(value), not failed, origin,
                       client or origin.value, self._clock())
        where = f" on {site.gateway.name}" if name_gateway else ""
        log.info("control: %s %s%s from %s", record.summary, "failed" if failed else "accepted",
                 where, record.client)
        self._tell(record)
        if failed:
            raise WriteFailed(f"Failed to set {action.what}")
        return result

    def _tell(self, record: Audit) -> None:
        with self._lock:
            self._counts[(record.origin.value, record.accepted)] += 1
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(record)
            except Exception:  # a listener's bug must not undo a write that was made
                log.exception("control: an audit listener failed")

    def stats(self) -> dict[str, Any]:
        """Writes by front door, for /stats."""
        with self._lock:
            counts = dict(self._counts)
        return {origin.value: {"accepted": counts.get((origin.value, True), 0),
                               "failed": counts.get((origin.value, False), 0)} for origin in Origin}


def read_setting(site: Site, action: Action[Any]) -> Any:
    """The action's current setting, read through the control backend (window cached)."""
    assert action.read is not None
    entry = site.gateway.control_read(f"control:{action.name}", action.read)
    if entry.kind is Kind.NOT_SUPPORTED:
        raise NotSupported(entry.verdict.reason)
    if entry.kind not in (Kind.DATA, Kind.ABSENT):
        raise error_for(entry.verdict, site.gateway)
    return entry.verdict.value


def current_level(site: Site) -> int:
    """The state of charge now, on the Tesla app's scale, as a whole percent (for a hold).

    Read through the window cache; a stale copy or no reading is no ground for a write."""
    reading = site.read(LEVEL_SCALED)
    if reading.state is State.UNAVAILABLE and reading.error is not None:
        raise reading.error
    value = payloads.number(reading.value)
    if reading.stale or value is None:
        raise GatewayUnavailable("no current state of charge to hold")
    return max(0, min(100, round(value)))
