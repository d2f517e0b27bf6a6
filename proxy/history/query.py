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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from proxy.history import schema
from proxy.history.rollup import DAY, MINUTE, MINUTE_DAYS, QUARTER, Marks

MAX_ROWS = 10_000
MAX_RANGE = 10 * 366 * DAY
NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
              43200, DAY, 2 * DAY, 7 * DAY, 30 * DAY, 365 * DAY)
_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")

Value = float | str | None
Buckets = dict[int, Value]  # bucket start -> value


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


def time_range(start: str, end: str, now: float, zone: ZoneInfo,
               default_span: float) -> tuple[float, float]:
    """[from, to) as Unix seconds; to defaults to now, from to `default_span` before it."""
    stop = parse_time(end, "to", now, zone) if end.strip() else now
    begin = parse_time(start, "from", now, zone) if start.strip() else stop - default_span
    if not (math.isfinite(begin) and math.isfinite(stop)) or begin >= stop:
        raise QueryError("from must be before to")
    if stop - begin > MAX_RANGE:
        raise QueryError("from and to may be at most ten years apart")
    return begin, stop


# ---- steps ------------------------------------------------------------------------------

def smallest_step(begin: float, end: float) -> int:
    return max(1, math.ceil((end - begin) / MAX_ROWS))


def choose_step(begin: float, end: float, now: float, period: int, raw_days: int) -> int:
    """The step of an answer without one: no finer than what the tables still hold for
    `begin`, and coarse enough for at most MAX_ROWS rows."""
    if begin >= now - raw_days * DAY:
        floor = max(1, period)
    elif begin >= now - MINUTE_DAYS * DAY:
        floor = MINUTE
    else:
        floor = QUARTER
    need = smallest_step(begin, end)
    nice = next((s for s in NICE_STEPS if s >= need), need)
    return max(floor, nice)


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


def read_series(conn: sqlite3.Connection, marks: Marks, series: int, agg: int, step: int,
                begin: int, end: int, period: int) -> Buckets:
    """One series bucketed by `step`: bucket start -> mean (weighted by what each row stands
    for) or last value."""
    parts, args = [], []
    for span in spans(marks, step, begin, end, period):
        parts.append(f"SELECT t, value, {span.weight} AS w FROM {span.table} "
                     "WHERE series = ? AND t >= ? AND t < ?")
        args += [series, span.start, span.end]
    if not parts:
        return {}
    union = " UNION ALL ".join(parts)
    value = "SUM(value * w) / SUM(w)" if agg == schema.MEAN else "value"
    rows = conn.execute(f"SELECT (t / {step}) * {step} AS b, {value}, MAX(t) FROM ({union}) "
                        "GROUP BY b", args)
    return {int(b): v for b, v, _ in rows}


def latest(conn: sqlite3.Connection, series: int) -> Value:
    """The newest value of a series in any table."""
    row = conn.execute(
        "SELECT value FROM (SELECT t, value FROM raw WHERE series = ? UNION ALL "
        "SELECT t, value FROM minute WHERE series = ? UNION ALL "
        "SELECT t, value FROM quarter WHERE series = ?) ORDER BY t DESC LIMIT 1",
        (series, series, series)).fetchone()
    return None if row is None else row[0]


# ---- several gateways as one ------------------------------------------------------------

GRID_ORDER = ("DOWN", "SYNCING", "UP")  # worst first, as /api/aggregate


def combine_sum(per_gateway: Sequence[Buckets]) -> Buckets:
    out: dict[int, float] = {}
    for buckets in per_gateway:
        for b, v in buckets.items():
            if isinstance(v, (int, float)):
                out[b] = out.get(b, 0.0) + float(v)
    return {b: round(v, 3) for b, v in out.items()}


def combine_weighted(per_gateway: Sequence[Buckets], weights: Sequence[float]) -> Buckets:
    """A percentage weighted by each gateway's capacity (gateways without one left out)."""
    total: dict[int, float] = {}
    weight: dict[int, float] = {}
    for buckets, w in zip(per_gateway, weights, strict=True):
        if w <= 0:
            continue
        for b, v in buckets.items():
            if isinstance(v, (int, float)):
                total[b] = total.get(b, 0.0) + float(v) * w
                weight[b] = weight.get(b, 0.0) + w
    return {b: round(total[b] / weight[b], 2) for b in total}


def combine_worst(per_gateway: Sequence[Buckets]) -> Buckets:
    out: dict[int, Value] = {}
    for buckets in per_gateway:
        for b, v in buckets.items():
            if v in GRID_ORDER and (out.get(b) not in GRID_ORDER
                                    or GRID_ORDER.index(str(v)) < GRID_ORDER.index(str(out[b]))):
                out[b] = v
    return out


def table(columns: Sequence[str], data: Mapping[str, Buckets]) -> list[list[Value]]:
    """Rows [time, value per column] for every bucket where any column has a value."""
    times = sorted({b for col in columns for b in data.get(col, {})})
    return [[t, *(data.get(col, {}).get(t) for col in columns)] for t in times]
