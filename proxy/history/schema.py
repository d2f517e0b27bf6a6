"""The history file's layout: version 1 as first created, then one migration per version.

The version lives in the file (`PRAGMA user_version`), next to an application id that marks
the file as ours. A fresh file is created as version 1 and then migrated like any old one,
so every migration runs on every new file too. A file from a newer proxy is never touched.

Tables:
- `series`: one row per (gateway, point, label), with how it is downsampled (`agg`).
- `raw`, `minute`, `quarter`, `hour`: (series, time, value) at window, 1-minute, 15-minute
  and 1-hour resolution; `time` is Unix seconds (the bucket start for the last three).
- `energy`: Wh imported and exported per gateway, meter and local day, kept forever.
- `counters`: the last lifetime-counter reading per gateway, meter and direction, so a
  restart continues where the last run stopped.
- `events`: what happened (`detail` is a JSON object).
- `state`: small JSON values that must survive a restart (event watches, roll-up marks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # sqlite3 is loaded only where a store is opened (not with PW_HISTORY=no)
    import sqlite3


class Sample(NamedTuple):
    """One value of one point (and label) of a gateway."""

    point: str
    label: str
    value: float | str
    agg: int  # MEAN or LAST


APPLICATION_ID = 0x50574853  # "PWHS": a history store of this proxy
VERSION = 3

MEAN, LAST = 1, 0  # how a series is downsampled: the mean, or the last value of a bucket

_SAMPLES = "(series INTEGER NOT NULL, t INTEGER NOT NULL, value, PRIMARY KEY (series, t)) WITHOUT ROWID"
SAMPLE_TABLES = ("raw", "minute", "quarter")  # as version 1 made them; `hour` came with 3

CREATE_V1 = (
    "CREATE TABLE series (id INTEGER PRIMARY KEY, gw TEXT NOT NULL, point TEXT NOT NULL, "
    "label TEXT NOT NULL DEFAULT '', agg INTEGER NOT NULL, UNIQUE (gw, point, label))",
    *(f"CREATE TABLE {table} {_SAMPLES}" for table in SAMPLE_TABLES),
    "CREATE TABLE energy (gw TEXT NOT NULL, day TEXT NOT NULL, meter TEXT NOT NULL, "
    "imported REAL NOT NULL DEFAULT 0, exported REAL NOT NULL DEFAULT 0, "
    "PRIMARY KEY (gw, day, meter)) WITHOUT ROWID",
    "CREATE TABLE counters (gw TEXT NOT NULL, meter TEXT NOT NULL, direction TEXT NOT NULL, "
    "value REAL NOT NULL, t REAL NOT NULL, PRIMARY KEY (gw, meter, direction)) WITHOUT ROWID",
    "CREATE TABLE events (id INTEGER PRIMARY KEY, t REAL NOT NULL, gw TEXT NOT NULL, "
    "kind TEXT NOT NULL, detail TEXT NOT NULL)",
    "CREATE INDEX events_time ON events (t)",
    "CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
)

# MIGRATIONS[n] takes a version-n file to version n + 1.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("CREATE INDEX events_gateway ON events (gw, t)",),  # /api/events?gw= without a scan
    # Hourly means (rolled up from the quarters, kept as long): a year at an hour per row reads
    # 8,760 rows per point instead of aggregating 35,040 on every read.
    2: (f"CREATE TABLE hour {_SAMPLES}",),
}


class SchemaError(Exception):
    """The file is not one this proxy can use; the message says why and what to do."""


def prepare(conn: sqlite3.Connection, path: str) -> int:
    """Create or migrate the file in place; returns the version found (0: new).

    Raises SchemaError for a file of a newer version or of another program."""
    found = _version(conn)
    app = conn.execute("PRAGMA application_id").fetchone()[0]
    if found == 0 and app == 0:
        if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise SchemaError(f"{path} is an SQLite file of another program; move it away or "
                              "point PW_DATA_DIR elsewhere")
        _create(conn)
    elif app != APPLICATION_ID:
        raise SchemaError(f"{path} is an SQLite file of another program; move it away or point "
                          "PW_DATA_DIR elsewhere")
    elif found > VERSION:
        raise SchemaError(f"{path} was written by a newer version of the proxy (history schema "
                          f"{found}; this version reads up to {VERSION}); it is left untouched: "
                          "run the newer version, or move the file away to start a new history")
    _migrate(conn)
    return found


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _create(conn: sqlite3.Connection) -> None:
    # auto_vacuum must be set before the first table exists; it cannot be changed later
    # without rewriting the whole file.
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("BEGIN")
    for statement in CREATE_V1:
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("COMMIT")


def _migrate(conn: sqlite3.Connection) -> None:
    """Each step in its own transaction, so a crash mid-way leaves a consistent older version."""
    version = _version(conn)
    while version < VERSION:
        conn.execute("BEGIN")
        for statement in MIGRATIONS[version]:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version + 1}")
        conn.execute("COMMIT")
        version += 1
