"""Reading the history: times, steps, which table answers which span, and sums over gateways.

Times come as ISO 8601 (without an offset: local time in PW_TIMEZONE), as negative seconds
relative to now, or as Unix seconds. A read is cut into buckets of `step` seconds; each
bucket holds the mean of the samples in it (the last value for states, counters, text), read
from the coarsest table that still has the resolution asked for, and from finer or coarser
tables where that one has nothing yet or nothing any more (`spans`). Without a step, the
step is the smallest that keeps the answer within MAX_ROWS rows.
"""

from __future__ import annotations

import datetime
import math
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from proxy.history import schema
from proxy.history.rollup import DAY, MINUTE, MINUTE_DAYS, QUARTER, Marks

MAX_ROWS = 10_000
NOTHING = "SELECT NULL AS b, NULL AS v WHERE 0"  # a column without data
MAX_RANGE = 10 * 366 * DAY
NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
              43200, DAY, 2 * DAY, 7 * DAY, 30 * DAY, 365 * DAY)
_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")

Value = float | str | None


class QueryError(ValueError):
    """A query the history cannot answer as asked; the message says what would work."""


# ---- times ------------------------------------------------------------------------------

def parse_time(raw: str, name: str, now: float, zone: ZoneInfo) -> float:
    """ISO 8601 (no offset: `zone`), -seconds relative to now, or Unix seconds."""
    text = raw.strip()
    if _NUMBER.fullmatch(text):
        value = float(text)
        return now + value if value < 0 else value
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise QueryError(f"{name} must be ISO 8601 (2026-03-14T08:00), seconds before now "
                         f"(-3600) or Unix seconds (got {raw!r})") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.timestamp()


def time_range(start: str, end: str, now: float, zone: ZoneInfo, default_span: float,
               longest: float = MAX_RANGE) -> tuple[float, float]:
    """[from, to) as Unix seconds; to defaults to now, from to `default_span` before it; at
    most `longest` apart."""
    stop = parse_time(end, "to", now, zone) if end.strip() else now
    begin = parse_time(start, "from", now, zone) if start.strip() else stop - default_span
    if not (math.isfinite(begin) and math.isfinite(stop)) or begin >= stop:
        raise QueryError("from must be before to")
    if stop - begin > longest:
        raise QueryError("from and to may be at most ten years apart")
    return begin, stop


# ---- steps ------------------------------------------------------------------------------

def smallest_step(begin: float, end: float) -> int:
    return max(1, math.ceil((end - begin) / MAX_ROWS))


def choose_step(begin: float, end: float, now: float, period: int, raw_days: int) -> int:
    """The step of an answer without one: the finest resolution the store keeps for `begin`
    (each window, 1 minute, 15 minutes) that gives at most MAX_ROWS rows, else the smallest
    coarser step that does (aggregated on read)."""
    need = smallest_step(begin, end)
    kept = [max(1, period), MINUTE, QUARTER]
    if begin < now - raw_days * DAY:
        kept = kept[1:]
    if begin < now - MINUTE_DAYS * DAY:
        kept = kept[1:]
    steps = [*kept, *(s for s in NICE_STEPS if s > QUARTER)]
    return next((s for s in steps if s >= need), need)


def check_step(raw: str, begin: float, end: float) -> int:
    """An explicit ?step=: whole seconds, and few enough rows."""
    if not re.fullmatch(r"[0-9]{1,9}", raw.strip()) or int(raw) < 1:
        raise QueryError(f"step must be a whole number of seconds, at least 1 (got {raw!r})")
    step = int(raw)
    if math.ceil((end - begin) / step) > MAX_ROWS:
        raise QueryError(f"step={step} gives more than {MAX_ROWS} rows for this range: the "
                         f"smallest step that fits is {smallest_step(begin, end)}")
    return step


# ---- which table answers which span -------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Span:
    table: str
    start: int
    end: int
    weight: int  # seconds one row of the table stands for


def spans(marks: Marks, step: int, begin: int, end: int, period: int) -> list[Span]:
    """The tables to read for [begin, end) at `step`: oldest first, never overlapping."""
    if step < MINUTE:
        edges = (marks.minute_from, marks.raw_from)
    elif step < QUARTER:
        edges = (marks.minute_from, marks.minute)
    else:
        edges = (marks.quarter, marks.minute)
    cuts = [begin, max(begin, min(end, edges[0])), max(begin, min(end, edges[1])), end]
    cuts[2] = max(cuts[1], cuts[2])
    tables = (("quarter", QUARTER), ("minute", MINUTE), ("raw", max(1, period)))
    return [Span(table, cuts[i], cuts[i + 1], weight)
            for i, (table, weight) in enumerate(tables) if cuts[i + 1] > cuts[i]]


def bucketed(marks: Marks, series: int, agg: int, step: int, begin: int, end: int,
             period: int) -> tuple[str, list[Any]]:
    """SQL for one series bucketed by `step`: rows (b, v), b the bucket start, v the mean
    (weighted by what each row stands for) or the last value; and its arguments."""
    parts, args = [], []
    for span in spans(marks, step, begin, end, period):
        parts.append(f"SELECT t, value, {span.weight} AS w FROM {span.table} "
                     "WHERE series = ? AND t >= ? AND t < ?")
        args += [series, span.start, span.end]
    if not parts:
        return NOTHING, []
    value = "SUM(value * w) / SUM(w)" if agg == schema.MEAN else "value"
    return (f"SELECT (t / {step}) * {step} AS b, {value} AS v, MAX(t) AS last "
            f"FROM ({' UNION ALL '.join(parts)}) GROUP BY b"), args


def latest(conn: sqlite3.Connection, series: int) -> Value:
    """The newest value of a series in any table."""
    row = conn.execute(
        "SELECT value FROM (SELECT t, value FROM raw WHERE series = ? UNION ALL "
        "SELECT t, value FROM minute WHERE series = ? UNION ALL "
        "SELECT t, value FROM quarter WHERE series = ?) ORDER BY t DESC LIMIT 1",
        (series, series, series)).fetchone()
    return None if row is None else row[0]


# ---- several gateways as one, and the table ------------------------------------------------

GRID_ORDER = ("DOWN", "SYNCING", "UP")  # worst first, as /api/aggregate
SUM, WEIGHTED, WORST = "sum", "weighted", "worst"
_RANK = "CASE v " + " ".join(f"WHEN '{s}' THEN {i}" for i, s in enumerate(GRID_ORDER)) + " END"
_WORST = "CASE MIN(r) " + " ".join(f"WHEN {i} THEN '{s}'" for i, s in enumerate(GRID_ORDER)) + " END"


@dataclass(frozen=True, slots=True)
class Part:
    """One gateway's series in a column, with its weight when the column is weighted."""

    sql: str
    args: list[Any]
    weight: float = 1.0


def combined(parts: Sequence[Part], how: str) -> tuple[str, list[Any]]:
    """SQL (b, v) of one column: a single gateway as it is, several summed, weighted by
    capacity (left out: those without one), or the worst grid status."""
    if len(parts) == 1:
        return f"SELECT b, v FROM ({parts[0].sql})", parts[0].args
    if how == WORST:
        arms = [f"SELECT b, {_RANK} AS r FROM ({p.sql})" for p in parts]
        value = _WORST
    elif how == WEIGHTED:
        parts = [p for p in parts if p.weight > 0]
        arms = [f"SELECT b, v * {p.weight!r} AS v, {p.weight!r} AS w FROM ({p.sql}) WHERE v IS NOT NULL"
                for p in parts]
        value = "SUM(v) / SUM(w)"
    else:
        arms = [f"SELECT b, v FROM ({p.sql}) WHERE v IS NOT NULL" for p in parts]
        value = "SUM(v)"
    if not arms:
        return NOTHING, []
    return (f"SELECT b, {value} AS v FROM ({' UNION ALL '.join(arms)}) GROUP BY b",
            [a for p in parts for a in p.args])


_ROUNDED = "CASE WHEN typeof(v) = 'real' THEN round(v, 3) ELSE v END"


def pivot(columns: Sequence[tuple[str, list[Any]]]) -> tuple[str, list[Any]]:
    """SQL of the table: one row per bucket with data, (b, c0, c1, …), numbers to 3 decimals."""
    count = len(columns)
    arms, args = [], []
    for i, (sql, more) in enumerate(columns):
        cells = ", ".join((_ROUNDED if j == i else "NULL") + f" AS c{j}" for j in range(count))
        arms.append(f"SELECT b, {cells} FROM ({sql}) WHERE b IS NOT NULL")
        args += more
    picked = ", ".join(f"MAX(c{j}) AS c{j}" for j in range(count))
    return f"SELECT b, {picked} FROM ({' UNION ALL '.join(arms)}) GROUP BY b ORDER BY b", args


def as_json(table_sql: str, count: int, flags: Sequence[int] = ()) -> str:
    """SQL that encodes the table as one JSON array of rows (SQLite does the per-row work);
    the `flags` columns as true/false."""
    def cell(j: int) -> str:
        if j in flags:
            return f"CASE WHEN c{j} IS NULL THEN NULL WHEN c{j} THEN json('true') ELSE json('false') END"
        return f"c{j}"
    cells = ", ".join(["b", *(cell(j) for j in range(count))])
    return f"SELECT json_group_array(json_array({cells})) FROM ({table_sql})"
