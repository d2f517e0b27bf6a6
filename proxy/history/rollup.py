"""Downsampling, pruning and the size bound: one small step at a time.

`step` does the first thing that is due, over a bounded span (an hour of raw rows, six hours
of minutes, a week of quarters), and returns the new marks; the store calls it repeatedly
within a time budget after each commit interval, releasing its lock in between.

Marks say what each table holds for sure, so reads know which table answers which time:
- `minute`: raw rows before it are rolled into 1-minute rows (`quarter` likewise from minutes);
- `raw_from`, `minute_from`: rows before it may be gone from that table (pruned or dropped
  for size), everything after it is there.
Rows are only ever removed from a table below what the next coarser table already holds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from proxy.history import schema

if TYPE_CHECKING:  # sqlite3 is loaded only where a store is opened (not with PW_HISTORY=no)
    import sqlite3

MINUTE, QUARTER, HOUR, DAY = 60, 900, 3600, 86400
MINUTE_DAYS = 30  # 1-minute means are kept this long ...
QUARTER_DAYS = 730  # ... 15-minute and hourly means this long; events too
SETTLE = 30  # a minute is rolled up once it ended this long ago (late samples are in by then)
ROLL_RAW = 3600  # raw seconds rolled per step
ROLL_MINUTES = 6 * 3600  # minute-table seconds rolled per step
ROLL_QUARTERS = 7 * DAY  # quarter-table seconds rolled per step
PRUNE_SPANS = {"raw": 3600, "minute": 6 * 3600, "quarter": 7 * DAY, "hour": 7 * DAY}
VACUUM_PAGES = 256  # pages handed back to the file system per step
SERIES = "series IN (SELECT id FROM series)"  # lets SQLite use the (series, t) key per series


@dataclass(frozen=True, slots=True)
class Marks:
    minute: int = 0  # raw rolled into `minute` before this time
    quarter: int = 0  # minutes rolled into `quarter` before this time
    hour: int = 0  # quarters rolled into `hour` before this time
    raw_from: int = 0  # raw rows complete from this time on
    minute_from: int = 0  # minute rows complete from this time on
    quarter_from: int = 0
    hour_from: int = 0
    events_from: int = 0


@dataclass(frozen=True, slots=True)
class Plan:
    """What is due now: the time, raw retention and the size bound."""

    now: float
    raw_days: int
    max_bytes: int


def load_marks(conn: sqlite3.Connection) -> Marks:
    row = conn.execute("SELECT value FROM state WHERE key = 'marks'").fetchone()
    if row is None:
        return Marks()
    saved = json.loads(row[0])
    return Marks(**{k: int(v) for k, v in saved.items() if k in Marks.__dataclass_fields__})


def _save(conn: sqlite3.Connection, marks: Marks) -> Marks:
    fields = {name: getattr(marks, name) for name in Marks.__dataclass_fields__}
    conn.execute("INSERT OR REPLACE INTO state VALUES ('marks', ?)", (json.dumps(fields),))
    return marks


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes the data takes in the file (pages in use; free pages are reused first)."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


def _floor(t: float, width: int) -> int:
    return int(t // width) * width


def _oldest(conn: sqlite3.Connection, table: str) -> int | None:
    row = conn.execute(f"SELECT MIN(t) FROM {table} WHERE {SERIES}").fetchone()
    return None if row[0] is None else int(row[0])


# ---- the steps ------------------------------------------------------------------------------

def step(conn: sqlite3.Connection, marks: Marks, plan: Plan) -> Marks | None:
    """Do one due step; the new marks (saved in the open transaction), or None: nothing due."""
    for task in (_rolls, _retention, _prune_events, _bound, _vacuum):
        done = task(conn, marks, plan)
        if done is not None:
            return _save(conn, done)
    return None


def _roll(conn: sqlite3.Connection, source: str, target: str, width: int, start: int,
          end: int) -> None:
    """Bucket rows of [start, end) into `target`: the mean, or the last value (by series)."""
    conn.execute(
        f"INSERT OR REPLACE INTO {target} (series, t, value) "
        f"SELECT series, b, v FROM (SELECT r.series AS series, (r.t / {width}) * {width} AS b, "
        f"CASE WHEN s.agg = {schema.MEAN} THEN AVG(r.value) ELSE r.value END AS v, MAX(r.t) "
        f"FROM {source} r JOIN series s ON s.id = r.series "
        f"WHERE r.{SERIES} AND r.t >= ? AND r.t < ? GROUP BY r.series, b)", (start, end))


@dataclass(frozen=True, slots=True)
class Roll:
    """`source` rows are rolled into `width`-second `target` rows up to `settled`; the Marks
    field `mark` says how far."""

    source: str
    target: str
    width: int
    mark: str
    span: int  # source seconds per step
    settled: Callable[[Marks, Plan], int]


ROLLS = (
    Roll("raw", "minute", MINUTE, "minute", ROLL_RAW, lambda m, p: _floor(p.now - SETTLE, MINUTE)),
    Roll("minute", "quarter", QUARTER, "quarter", ROLL_MINUTES, lambda m, p: _floor(m.minute, QUARTER)),
    Roll("quarter", "hour", HOUR, "hour", ROLL_QUARTERS, lambda m, p: _floor(m.quarter, HOUR)),
)


def _rolls(conn: sqlite3.Connection, marks: Marks, plan: Plan) -> Marks | None:
    for rule in ROLLS:
        settled = rule.settled(marks, plan)
        start = getattr(marks, rule.mark) or _first(conn, rule.source, rule.width)
        if start is not None and start < settled:
            end = min(settled, start + rule.span)
            _roll(conn, rule.source, rule.target, rule.width, start, end)
            return replace(marks, **{rule.mark: end})
    return None


def _first(conn: sqlite3.Connection, table: str, width: int) -> int | None:
    oldest = _oldest(conn, table)
    return None if oldest is None else _floor(oldest, width)


def _delete_before(conn: sqlite3.Connection, table: str, start: int, cutoff: int) -> int | None:
    """Delete one span of `table` below `cutoff`; the new complete-from mark, or None."""
    begin = start or _oldest(conn, table)
    if begin is None or begin >= cutoff:
        return None
    end = min(cutoff, begin + PRUNE_SPANS[table])
    conn.execute(f"DELETE FROM {table} WHERE {SERIES} AND t < ?", (end,))
    return end


@dataclass(frozen=True, slots=True)
class Prune:
    """Rows of `table` below `cutoff` go; `mark` is the Marks field saying where it is complete."""

    table: str
    mark: str
    cutoff: Callable[[Marks, Plan], int]


# Retention: raw for PW_HISTORY_RAW_DAYS, minutes 30 days, quarters two years; never below what
# the next coarser table already holds.
RETENTION = (
    Prune("raw", "raw_from", lambda m, p: min(_floor(p.now - p.raw_days * DAY, MINUTE), m.minute)),
    Prune("minute", "minute_from", lambda m, p: min(_floor(p.now - MINUTE_DAYS * DAY, QUARTER),
                                                    m.quarter)),
    Prune("quarter", "quarter_from", lambda m, p: min(_floor(p.now - QUARTER_DAYS * DAY, QUARTER),
                                                      m.hour)),
    Prune("hour", "hour_from", lambda m, p: _floor(p.now - QUARTER_DAYS * DAY, HOUR)),
)
# Over PW_HISTORY_MAX_MB: the oldest fine-grained rows go first (raw already rolled up, then
# minutes already rolled up, quarters already rolled up, then the oldest hours). Daily energy stays.
OVERSIZE = (
    Prune("raw", "raw_from", lambda m, p: m.minute),
    Prune("minute", "minute_from", lambda m, p: m.quarter),
    Prune("quarter", "quarter_from", lambda m, p: m.hour),
    Prune("hour", "hour_from", lambda m, p: _floor(p.now, HOUR)),
)


def _prune(conn: sqlite3.Connection, marks: Marks, plan: Plan,
           rules: tuple[Prune, ...]) -> Marks | None:
    """The first of `rules` that has rows below its cutoff deletes one span of them."""
    for rule in rules:
        end = _delete_before(conn, rule.table, getattr(marks, rule.mark), rule.cutoff(marks, plan))
        if end is not None:
            return replace(marks, **{rule.mark: end})
    return None


def _retention(conn: sqlite3.Connection, marks: Marks, plan: Plan) -> Marks | None:
    return _prune(conn, marks, plan, RETENTION)


def _prune_events(conn: sqlite3.Connection, marks: Marks, plan: Plan) -> Marks | None:
    cutoff = _floor(plan.now - QUARTER_DAYS * DAY, DAY)
    if marks.events_from >= cutoff:
        return None
    conn.execute("DELETE FROM events WHERE t < ?", (cutoff,))
    return replace(marks, events_from=cutoff)


def _bound(conn: sqlite3.Connection, marks: Marks, plan: Plan) -> Marks | None:
    if used_bytes(conn) <= plan.max_bytes:
        return None
    return _prune(conn, marks, plan, OVERSIZE)


def _vacuum(conn: sqlite3.Connection, marks: Marks, plan: Plan) -> Marks | None:
    """Hand free pages back to the file system once they are a fair share of the bound
    (free pages are reused by new rows anyway, so this only trims a shrunken file)."""
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    if free * size < plan.max_bytes // 8 or free < VACUUM_PAGES:
        return None
    conn.execute(f"PRAGMA incremental_vacuum({VACUUM_PAGES})")
    return marks
