"""The history routes: samples, daily energy, events and a backup of the store.

    GET /api/history?gw=ID&points=a,b&from=&to=&step=&format=csv
    GET /api/history/energy?gw=ID&period=day|month&from=&to=
    GET /api/events?gw=&kind=&from=&to=
    GET /api/history/backup

`gw` is a gateway id, `all` (added up as /api/aggregate does) or left out (the default
gateway; for events: every gateway). Bad input is a 400 that says what would work; a store
that is off is a 404, one that cannot be read right now a 503. The reading itself is in
`proxy.history.answers`; the `/history` page (web/history.html) reads these routes.
"""

from __future__ import annotations

import datetime
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO
from zoneinfo import ZoneInfo

from proxy.api.apidoc import Answer, Doc, Param, Schema
from proxy.api.app import CORS, App, json_response
from proxy.api.routing import Call, Route
from proxy.errors import HTTPError
from proxy.history import answers, events, query
from proxy.history.energy import day_of
from proxy.history.query import QueryError
from proxy.history.rollup import QUARTER_DAYS
from proxy.history.service import History
from proxy.httpd.types import Response

if TYPE_CHECKING:  # the store (and sqlite3) is loaded only when the history is on
    from proxy.history.store import Store

DEFAULT_POINTS = ("solar_power", "load_power", "battery_power", "grid_power", "battery_level")
DAY = 86400
CSV = "text/csv; charset=utf-8"
SQLITE = "application/vnd.sqlite3"
ALL = "all"
OFF = "History is off (PW_HISTORY=no, or no gateway has history: true)"
EVENTS_KEPT = (QUARTER_DAYS + 1) * DAY

Handler = Callable[[App, Call], Response]


# ---- what a request asks for --------------------------------------------------------------

def _store(history: History) -> Store:
    store = history.store
    if not history.settings.enabled or store is None:
        raise HTTPError(404, OFF)
    if not store.available():
        raise _unavailable(store)
    return store


def _unavailable(store: Store) -> HTTPError:
    return HTTPError(503, f"History unavailable: {store.describe()['error']}",
                     [("Retry-After", str(max(1, int(store.limits.commit_seconds))))])


def _gateways(history: History, call: Call, default_all: bool = False) -> tuple[str, list[answers.Gateway]]:
    """(what ?gw= said, the gateways it means)."""
    recorded = history.recorded()
    wanted = call.param("gw").strip()
    if wanted == ALL or (not wanted and default_all):
        return ALL, [_gateway(site) for site in recorded]
    gw = wanted or history.sites.default().id
    site = history.sites.find(gw)  # UnknownGateway: 404 "Gateway not found"
    if site not in recorded:
        raise HTTPError(404, f"No history for gateway {gw} (history: false)")
    return gw, [_gateway(site)]


def _gateway(site: Any) -> answers.Gateway:
    period = int(site.gateway.cache.period) or 5
    return answers.Gateway(site.id, period, site.config.type != "inverter")


def _range(history: History, call: Call, default_span: float, now: float,
           longest: float = query.MAX_RANGE) -> tuple[float, float]:
    zone = history.settings.zone
    assert zone is not None
    return query.time_range(call.param("from"), call.param("to"), now, zone, default_span, longest)


def _choice(call: Call, name: str, allowed: tuple[str, ...]) -> str:
    """A parameter that names one of a few things; the first is the default."""
    value = call.param(name) or allowed[0]
    if value not in allowed:
        raise HTTPError(400, f"{name} must be {' or '.join(allowed)}")
    return value


def _bad(exc: ValueError) -> HTTPError:
    return HTTPError(400, str(exc))


# ---- GET /api/history ---------------------------------------------------------------------

def _step(history: History, call: Call, begin: float, end: float, now: float,
          gateways: list[answers.Gateway]) -> int:
    if call.param("step").strip():
        return query.check_step(call.param("step"), begin, end)
    period = max((g.period for g in gateways), default=5)
    return query.choose_step(begin, end, now, period, history.settings.raw_days)


def get_history(history: History) -> Handler:
    def handler(app: App, call: Call) -> Response:
        store = _store(history)
        fmt = _choice(call, "format", ("json", "csv"))
        gw, gateways = _gateways(history, call)
        now = time.time()
        try:
            begin, end = _range(history, call, DAY, now)
            step = _step(history, call, begin, end, now, gateways)
            wanted = [p.strip() for p in (call.param("points") or ",".join(DEFAULT_POINTS)).split(",")]
            cols = answers.columns(store, gateways, [p for p in wanted if p])
        except QueryError as exc:
            raise _bad(exc) from None
        names = ["time", *(c.name for c in cols)]
        bounds = (math.floor(begin), math.ceil(end), step)
        try:
            rows = answers.history(store, gateways, cols, *bounds)
        except answers.Unavailable:
            raise _unavailable(store) from None
        if fmt == "csv":
            return Response(200, [("Content-Type", CSV), CORS, ("Cache-Control", "no-cache")],
                            _csv(names, rows))
        return json_response(200, {"gw": gw, "step": step, "from": bounds[0], "to": bounds[1],
                                   "columns": names, "rows": rows}, [("Cache-Control", "no-cache")])
    return handler


def _csv(names: list[str], rows: list[list[Any]]) -> bytes:
    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "1" if value else "0"
        return str(value)
    lines = [",".join(names), *(",".join(cell(v) for v in row) for row in rows)]
    return ("\n".join(lines) + "\n").encode()


# ---- GET /api/history/energy --------------------------------------------------------------

def get_energy(history: History) -> Handler:
    def handler(app: App, call: Call) -> Response:
        store = _store(history)
        period = _choice(call, "period", ("day", "month"))
        gw, gateways = _gateways(history, call)
        site = history.sites.get(gateways[0].id) if gateways else history.sites.default()
        assert site is not None
        zone = ZoneInfo(site.config.timezone)
        now = time.time()
        try:
            begin, end = _range(history, call, 31 * DAY if period == "day" else 366 * DAY, now)
        except QueryError as exc:
            raise _bad(exc) from None
        first, last = day_of(begin, zone), day_of(max(begin, end - 0.001), zone)
        if period == "month":
            first = first.replace(day=1)
        try:
            rows = answers.energy(store, [g.id for g in gateways], first, last, period == "month")
        except answers.Unavailable:
            raise _unavailable(store) from None
        return json_response(200, {"gw": gw, "period": period, "unit": "kWh", "timezone": str(zone),
                                   "columns": ["date", *answers.ENERGY_COLUMNS], "rows": rows},
                             [("Cache-Control", "no-cache")])
    return handler


# ---- GET /api/events ----------------------------------------------------------------------

def get_events(history: History) -> Handler:
    def handler(app: App, call: Call) -> Response:
        store = _store(history)
        gw, gateways = _gateways(history, call, default_all=True)
        try:
            kinds = events.kinds_matching(call.param("kind")) if call.param("kind").strip() else None
            # Without from: everything kept.
            begin, end = _range(history, call, EVENTS_KEPT, time.time(), math.inf)
        except (QueryError, ValueError) as exc:
            raise _bad(exc) from None
        try:
            found = answers.events(store, None if gw == ALL else [g.id for g in gateways], kinds,
                                   begin, end)
        except answers.Unavailable:
            raise _unavailable(store) from None
        return json_response(200, {"events": found}, [("Cache-Control", "no-cache")])
    return handler


# ---- GET /api/history/backup --------------------------------------------------------------

def get_backup(history: History) -> Handler:
    busy = threading.Lock()  # one copy at a time: each is the size of the store

    def handler(app: App, call: Call) -> Response:
        store = _store(history)
        if not busy.acquire(blocking=False):
            raise HTTPError(503, "A backup is being made; try again in a minute",
                            [("Retry-After", "60")])
        try:
            copy = _copy(store)
        finally:
            busy.release()
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        return Response(200, [("Content-Type", SQLITE), CORS, ("Cache-Control", "no-store"),
                              ("Content-Disposition", f'attachment; filename="history-{stamp}.sqlite3"')],
                        file=copy)
    return handler


def _copy(store: Store) -> BinaryIO:
    """A consistent copy of the store in a temporary file, open for the server to send in
    chunks; its name is gone at once, so the copy disappears when the file is closed."""
    folder = tempfile.mkdtemp(prefix="pwproxy-backup-")
    target = os.path.join(folder, "history.sqlite3")
    try:
        store.backup(target)
        return open(target, "rb")  # noqa: SIM115 (the server closes it once sent)
    except OSError as exc:
        raise HTTPError(503, f"Backup failed: {exc.strerror or exc}", [("Retry-After", "60")]) from None
    finally:
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)


# ---- the table ----------------------------------------------------------------------------

_NUM_OR_NULL: Schema = {"type": ["number", "null"]}
_TIME_NOTE = ("ISO 8601 (without an offset: local time in PW_TIMEZONE), negative seconds "
              "before now (-3600), or Unix seconds")
_GW = Param("gw", "A gateway id, or `all` for every gateway added up (default: the default "
            "gateway)", {"type": "string", "pattern": "^[a-z0-9_-]{1,32}$"}, ("all",))
_TIME: Schema = {"type": "string", "pattern": "^(-?[0-9]{1,12}(\\.[0-9]{1,6})?|[0-9]{4}-[0-9]{2}-[0-9]{2}"
                 "([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?)$"}
_FROM = Param("from", f"Start: {_TIME_NOTE}", _TIME, ("-3600",))
_TO = Param("to", f"End (default: now): {_TIME_NOTE}", _TIME, ("-60",))
_OFF = Answer(404, "Unknown gateway, a gateway without history, or the history is off")
_UNAVAILABLE = Answer(503, "The store cannot be used right now (read-only folder, full disk, "
                           "a file of a newer version): the error says why", retry_after=True)
_ANSWERS = (Answer(400, "A bad parameter: the error says what would work"), _OFF, _UNAVAILABLE)
_CELL: Schema = {"type": ["number", "string", "boolean", "null"]}

HISTORY_BODY: Schema = {
    "type": "object", "required": ["gw", "step", "from", "to", "columns", "rows"],
    "properties": {
        "gw": {"type": "string"}, "step": {"type": "integer", "minimum": 1},
        "from": {"type": "integer"}, "to": {"type": "integer"},
        "columns": {"type": "array", "items": {"type": "string"}},
        "rows": {"type": "array", "items": {"type": "array", "items": _CELL}}},
    "description": "One row per bucket of `step` seconds with data: [Unix seconds, a value per "
                   "point]; means for measurements, the last value for states and counters"}
ENERGY_BODY: Schema = {
    "type": "object", "required": ["gw", "period", "unit", "columns", "rows"],
    "properties": {
        "gw": {"type": "string"}, "period": {"type": "string", "enum": ["day", "month"]},
        "unit": {"type": "string", "const": "kWh"}, "timezone": {"type": "string"},
        "columns": {"type": "array", "items": {"type": "string"}},
        "rows": {"type": "array", "items": {"type": "array",
                                            "items": {"type": ["string", "number", "null"]}}}},
    "description": "kWh imported and exported per meter and local day (or month)"}
EVENTS_BODY: Schema = {
    "type": "object", "required": ["events"],
    "properties": {"events": {"type": "array", "items": {
        "type": "object", "required": ["time", "gw", "kind", "detail"],
        "properties": {"time": {"type": "number"}, "gw": {"type": "string"},
                       "kind": {"type": "string", "enum": list(events.KINDS)},
                       "detail": {"type": "object"}}}}}}


def _off(app: App, call: Call) -> Response:
    raise HTTPError(404, OFF)


HISTORY_DOC = Doc(
    "Recorded measurements of a gateway (or all added up)", HISTORY_BODY, tag="history",
    answers=(*_ANSWERS, Answer(200, "With format=csv: the same columns as CSV", {"type": "string"},
                               media=CSV)),
    description="Without step, the step is the finest resolution the store keeps for `from` "
                "(each window, a minute, a quarter) that keeps the answer within 10,000 rows, else "
                "a coarser one aggregated on read; a step that would exceed 10,000 rows is a 400 "
                "naming the smallest that fits.",
    query=(_GW, Param("points", "Comma-separated points (default: powers and battery level); a "
                      "labelled point alone means each of its labels, or name one: "
                      "energy_imported/site", {"type": "string"}, ("site_power,battery_level",)),
           _FROM, _TO, Param("step", "Seconds per row", {"type": "string", "pattern": "^[0-9]{1,9}$"},
                             ("60",)),
           Param("format", "json (default) or csv", {"type": "string", "enum": ["json", "csv"]})))
ENERGY_DOC = Doc(
    "Daily (or monthly) energy per meter from the lifetime counters", ENERGY_BODY, tag="history",
    answers=_ANSWERS,
    description="Days are cut at local midnight in the gateway's time zone; a counter that goes "
                "down starts a new segment, so nothing is counted twice.",
    query=(_GW, Param("period", "day (default) or month", {"type": "string", "enum": ["day", "month"]}),
           _FROM, _TO))
EVENTS_DOC = Doc(
    "What happened: grid, firmware, alerts, settings, reachability", EVENTS_BODY, tag="history",
    answers=_ANSWERS,
    description=f"Kinds: {', '.join(f'`{k}`' for k in events.KINDS)}. Oldest first; at most the "
                f"newest {answers.MAX_EVENTS}.",
    query=(Param("gw", "A gateway id (default: every gateway)", _GW.schema),
           Param("kind", "Comma-separated kinds, or groups: grid, alert, gateway, firmware, mode, "
                 "reserve", {"type": "string"}, ("grid",)),
           Param("from", f"Start (default: everything kept): {_TIME_NOTE}", _TIME), _TO))
BACKUP_DOC = Doc(
    "A consistent copy of the history file (SQLite)", {"type": "string", "format": "binary"}, SQLITE,
    tag="history",
    answers=(_OFF, Answer(503, "The store cannot be used, or a backup is being made",
                          retry_after=True)),
    description="Made with SQLite's backup API from what is committed (a commit is made first); "
                "open it with any SQLite tool.")


def routes(history: History | None) -> tuple[Route, ...]:
    """The history routes, reading `history` (None: they answer 404, as with PW_HISTORY=no)."""
    if history is None:
        return tuple(Route(path, _off, doc=doc) for path, doc in (
            ("/api/history", HISTORY_DOC), ("/api/history/energy", ENERGY_DOC),
            ("/api/events", EVENTS_DOC), ("/api/history/backup", BACKUP_DOC)))
    return (
        Route("/api/history", get_history(history), doc=HISTORY_DOC),
        Route("/api/history/energy", get_energy(history), doc=ENERGY_DOC),
        Route("/api/events", get_events(history), doc=EVENTS_DOC),
        Route("/api/history/backup", get_backup(history), doc=BACKUP_DOC),
    )
