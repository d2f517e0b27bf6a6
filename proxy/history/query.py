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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from proxy.history import schema
from proxy.history.rollup import DAY, HOUR, MINUTE, MINUTE_DAYS, QUARTER, Marks

if TYPE_CHECKING:  # sqlite3 is loaded only where a store is opened (not with PW_HISTORY=no)
    import sqlite3

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


# The sample tables, coarse to fine: (table, seconds a row stands for, the Marks field from
# which it is complete, the Marks field up to which it was rolled up; raw: not rolled, "").
LEVELS = (("hour", HOUR, "hour_from", "hour"), ("quarter", QUARTER, "quarter_from", "quarter"),
          ("minute", MINUTE, "minute_from", "minute"), ("raw", 0, "raw_from", ""))


def spans(marks: Marks, step: int, begin: int, end: int, period: int) -> list[Span]:
    """The tables to read for [begin, end) at `step`, oldest first, never overlapping: the
    coarsest table as fine as the step (the base) where it is complete, coarser ones before
    that (where it was pruned), finer ones after it (what is not rolled up into it yet)."""
    widths = [width or max(1, period) for _, width, _, _ in LEVELS]
    base = next(i for i, width in enumerate(widths) if width <= step or i == len(LEVELS) - 1)
    uppers: list[float] = [getattr(marks, LEVELS[i + 1][2]) for i in range(base)]
    uppers += [getattr(marks, rolled) if rolled else math.inf for _, _, _, rolled in LEVELS[base:]]
    out, low = [], begin
    for (table, _, _, _), width, upper in zip(LEVELS, widths, uppers, strict=True):
        high = int(max(low, min(end, upper)))
        if high > low:
            out.append(Span(table, low, high, width))
        low = high
    return out


def bucketed(marks: Marks, series: int, agg: int, step: int, begin: int, end: int,
             period: int) -> tuple[str, list[Any]]:
    """SQL for one series bucketed by `step`: rows (b, v), b the bucket start, v the mean
    (weighted by what each row stands for) or the last value; and its arguments. Rows of a
    table whose rows are whole buckets already (an hour's row at a one-hour step) are taken as
    they are: no aggregation, no sorting."""
    direct, grouped, args, more = [], [], [], []
    for span in spans(marks, step, begin, end, period):
        where = f"FROM {span.table} WHERE series = ? AND t >= ? AND t < ?"
        if span.table != "raw" and span.weight % step == 0:
            direct.append(f"SELECT t AS b, value AS v {where}")
            args += [series, span.start, span.end]
        else:
            grouped.append(f"SELECT t, value, {span.weight} AS w {where}")
            more += [series, span.start, span.end]
    arms = list(direct)
    if grouped:
        # The last value of a bucket: SQLite takes a bare column from the row that gave MAX().
        value = "SUM(value * w) / SUM(w)" if agg == schema.MEAN else "value"
        arms.append(f"SELECT b, v FROM (SELECT (t / {step}) * {step} AS b, {value} AS v, "
                    f"MAX(t) AS last FROM ({' UNION ALL '.join(grouped)}) GROUP BY b)")
        args += more
    if not arms:
        return NOTHING, []
    return " UNION ALL ".join(arms), args


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


def arrays(sql: str) -> str:
    """SQL giving one column as two JSON arrays, bucket starts and values, in bucket order
    (SQLite builds them: a column of a year is one row to Python, not 8,760)."""
    return (f"SELECT json_group_array(b), json_group_array({_ROUNDED}) "
            f"FROM (SELECT b, v FROM ({sql}) WHERE b IS NOT NULL ORDER BY b)")


def side_by_side(columns: Sequence[tuple[list[int], list[Value]]]) -> list[list[Value]]:
    """Rows [b, v0, v1, …] from each column's (bucket starts, values): zipped when every column
    has the same buckets (one gateway read at once: the usual case), else merged by bucket (a
    bucket twice in one column, where two tables meet, keeps the later value)."""
    if not columns:
        return []
    first = columns[0][0]
    if all(b == first for b, _ in columns) and len(set(first)) == len(first):
        return [list(row) for row in zip(first, *(values for _, values in columns), strict=True)]
    table: dict[int, list[Value]] = {}
    for i, (buckets, values) in enumerate(columns):
        for b, v in zip(buckets, values, strict=True):
            table.setdefault(b, [None] * len(columns))[i] = v
    return [[b, *table[b]] for b in sorted(table)]
