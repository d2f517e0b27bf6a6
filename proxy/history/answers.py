"""What the history routes answer: tables of samples, daily energy and events from the store.

One gateway is read as it is; `gw=all` adds gateways up as /api/aggregate does: powers and
energy summed, the battery level weighted by each gateway's capacity (its newest full-pack
energy), inverter-only gateways left out of battery figures, the grid status the worst any
gateway had. Reads run under the store's lock and include what is not committed yet.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proxy.history import query
from proxy.history.energy import DIRECTIONS
from proxy.history.query import QueryError, Value
from proxy.history.rollup import Marks
from proxy.site.points import METERS, POINTS, Kind

if TYPE_CHECKING:  # sqlite3 is loaded only where a store is opened (not with PW_HISTORY=no)
    import sqlite3

    from proxy.history.store import Store

KINDS = {p.key: p.kind for p in POINTS}
LABELLED = {p.key for p in POINTS if p.label}
BATTERY_ONLY = {"battery_power", "battery_level", "battery_remaining_energy", "battery_full_energy"}
# gw=all: how each point is combined over gateways
SUMMED = {"site_power", "solar_power", "battery_power", "load_power", "grid_power",
          "battery_remaining_energy", "battery_full_energy", "energy_imported", "energy_exported"}
COMBINED = SUMMED | {"battery_level", "grid_status"}
MAX_EVENTS = 5000


class Unavailable(Exception):
    """The store cannot be read right now (its error says why)."""


@dataclass(frozen=True, slots=True)
class Gateway:
    """A gateway as a read sees it."""

    id: str
    period: int  # its cache window, s
    battery: bool  # False: inverter-only, left out of battery figures in sums


@dataclass(frozen=True, slots=True)
class Column:
    name: str  # "site_power", "energy_imported/site"
    point: str
    label: str


def columns(store: Store, gateways: Sequence[Gateway], wanted: Sequence[str]) -> list[Column]:
    """The columns for ?points=: a labelled point alone stands for each label it has."""
    several = len(gateways) > 1
    labels: dict[str, set[str]] = {}
    for gw in gateways:
        for point, label in store.series_ids(gw.id):
            if label:
                labels.setdefault(point, set()).add(label)
    out: list[Column] = []
    for name in wanted:
        point, _, label = name.partition("/")
        if point not in KINDS:
            raise QueryError(f"unknown point {point!r}: use any of {', '.join(KINDS)}")
        if several and point not in COMBINED:
            raise QueryError(f"{point} cannot be added up over gateways: use gw=<id> for it, or "
                             f"one of {', '.join(sorted(COMBINED))}")
        if point in LABELLED and not label:
            out += [Column(f"{point}/{lbl}", point, lbl) for lbl in sorted(labels.get(point, ()))]
        else:
            out.append(Column(name, point, label))
    return list({c.name: c for c in out}.values())


Ids = dict[str, dict[tuple[str, str], tuple[int, int]]]  # gateway -> (point, label) -> (id, agg)


def _columns(conn: sqlite3.Connection, marks: Marks, ids: Ids, gateways: Sequence[Gateway],
             cols: Sequence[Column], begin: int, end: int, step: int) -> list[tuple[str, list[Any]]]:
    """SQL (b, v) of each column: per gateway bucketed, combined over gateways."""
    columns = []
    for col in cols:
        parts = []
        for gw in gateways:
            found = ids[gw.id].get((col.point, col.label))
            if found is None or (len(gateways) > 1 and col.point in BATTERY_ONLY and not gw.battery):
                continue
            sql, args = query.bucketed(marks, found[0], found[1], step, begin, end, gw.period)
            weight = _capacity(conn, ids[gw.id]) if col.point == "battery_level" else 1.0
            parts.append(query.Part(sql, args, weight))
        how = {"battery_level": query.WEIGHTED, "grid_status": query.WORST}.get(col.point, query.SUM)
        columns.append(query.combined(parts, how) if parts else (query.NOTHING, []))
    return columns


def history(store: Store, gateways: Sequence[Gateway], cols: Sequence[Column], begin: int,
            end: int, step: int) -> list[list[Value]]:
    """Rows [time, one value per column], one per bucket with data."""
    ids = {gw.id: store.series_ids(gw.id) for gw in gateways}
    with store.reading() as reading:
        if reading is None:
            raise Unavailable()
        conn, marks = reading
        found = []
        for sql, args in _columns(conn, marks, ids, gateways, cols, begin, end, step):
            buckets, values = conn.execute(query.arrays(sql), args).fetchone()
            found.append((json.loads(buckets), json.loads(values)))
    rows = query.side_by_side(found)
    flags = [i + 1 for i, c in enumerate(cols) if KINDS[c.point] is Kind.FLAG]
    for row in rows if flags else ():
        for i in flags:
            row[i] = None if row[i] is None else bool(row[i])
    return rows


def _capacity(conn: sqlite3.Connection, ids: dict[tuple[str, str], tuple[int, int]]) -> float:
    """A gateway's newest full-pack energy: its weight in the battery level of several."""
    found = ids.get(("battery_full_energy", ""))
    value = None if found is None else query.latest(conn, found[0])
    return float(value) if isinstance(value, (int, float)) else 0.0


# ---- daily energy -------------------------------------------------------------------------

ENERGY_COLUMNS = tuple(f"{meter}_{direction}" for meter in METERS for direction in DIRECTIONS)


def energy(store: Store, gateways: Sequence[str], first: datetime.date, last: datetime.date,
           by_month: bool) -> list[list[Any]]:
    """Rows [day or month, kWh per meter and direction], summed over `gateways`."""
    marks = ",".join("?" * len(gateways))
    period = "substr(day, 1, 7)" if by_month else "day"
    with store.reading() as reading:
        if reading is None:
            raise Unavailable()
        conn, _ = reading
        rows = conn.execute(
            f"SELECT {period} AS p, meter, SUM(imported), SUM(exported) FROM energy "
            f"WHERE gw IN ({marks}) AND day >= ? AND day <= ? GROUP BY p, meter ORDER BY p",
            (*gateways, first.isoformat(), last.isoformat())).fetchall()
    table: dict[str, dict[str, float]] = {}
    for key, meter, imported, exported in rows:
        cells = table.setdefault(key, {})
        cells[f"{meter}_imported"] = imported
        cells[f"{meter}_exported"] = exported
    return [[key, *(_kwh(cells.get(col)) for col in ENERGY_COLUMNS)] for key, cells in table.items()]


def _kwh(wh: float | None) -> float | None:
    return None if wh is None else round(wh / 1000.0, 3)


# ---- events -------------------------------------------------------------------------------

def events(store: Store, gateways: Sequence[str] | None, kinds: Sequence[str] | None,
           begin: float, end: float) -> list[dict[str, Any]]:
    """Events in [begin, end), oldest first; the newest MAX_EVENTS when there are more."""
    where: list[str] = ["t >= ?", "t < ?"]
    args: list[Any] = [begin, end]
    for column, values in (("gw", gateways), ("kind", kinds)):
        if values is not None:
            where.append(f"{column} IN ({','.join('?' * len(values))})")
            args += list(values)
    with store.reading() as reading:
        if reading is None:
            raise Unavailable()
        conn, _ = reading
        rows = conn.execute(f"SELECT t, gw, kind, detail FROM events WHERE {' AND '.join(where)} "
                            f"ORDER BY t DESC, id DESC LIMIT {MAX_EVENTS}", args).fetchall()
    return [{"time": round(t, 3), "gw": gw, "kind": kind, "detail": _detail(detail)}
            for t, gw, kind, detail in reversed(rows)]


def _detail(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
