"""The history file: one SQLite connection, one lock, writes buffered in an open transaction.

Samples, energy, counters, events and state are written into a transaction that stays open
and is committed every PW_HISTORY_COMMIT_SECONDS (and at a clean stop): the SD card sees one
write burst per interval, and every read (same connection) already includes what is not yet
committed. WAL mode with synchronous=NORMAL: a kill -9 loses at most the open transaction,
and the file always opens and passes `PRAGMA integrity_check`. A failing commit (full disk)
is rolled back, reported, and tried again with the next interval; the proxy keeps serving.

Downsampling, pruning and the size bound (`proxy.history.rollup`) run in the same thread as
the commits, in small steps, releasing the lock between steps.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.history import rollup, schema
from proxy.history.loop import Loop
from proxy.history.schema import Sample

log = logging.getLogger("proxy.history")

FILE_NAME = "history.sqlite3"
MAX_SERIES = 4096  # series the store keeps ids for; samples of further series are dropped
MAINTAIN_BUDGET = 0.25  # seconds of downsampling and pruning per commit interval, at most
STOP_WAIT = 10.0


class StoreError(Exception):
    """The store cannot be used; the message says why (for the log and /health)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """How much is kept, and how often it is committed."""

    raw_days: int = 2
    max_bytes: int = 512 * 1024 * 1024
    commit_seconds: float = 30.0


class Store:
    """The history file; every method is safe from any thread."""

    def __init__(self, path: str | Path, limits: Limits = Limits(), *,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self.limits = limits
        self._clock = clock
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._series: dict[tuple[str, str, str], int] = {}
        self._marks = rollup.Marks()
        self._error: str | None = None
        self._dropped = 0
        self._commits = 0
        self._last_commit: float | None = None
        self._migrated_from: int | None = None
        self._writer = Loop("history-writer", self._tick)

    # ---- lifecycle ----------------------------------------------------------------------

    def open(self) -> None:
        """Open (create, migrate) the file; StoreError says why it cannot be used."""
        with self._lock:
            if self._conn is not None:
                return
            try:
                conn = self._connect()
            except StoreError as exc:
                self._error = str(exc)
                raise
            self._conn = conn
            self._error = None
            self._marks = rollup.load_marks(conn)
            conn.execute("BEGIN")

    def _connect(self) -> sqlite3.Connection:
        folder = os.path.dirname(self.path) or "."
        try:
            os.makedirs(folder, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=2.0)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open {self.path}: {_folder_problem(folder) or _why(exc)}") from None
        try:
            found = schema.prepare(conn, self.path)  # first: auto_vacuum needs an empty file
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("BEGIN IMMEDIATE")  # can we write here at all (read-only folder, locked)?
            conn.execute("COMMIT")
        except schema.SchemaError as exc:
            conn.close()
            raise StoreError(str(exc)) from None
        except sqlite3.Error as exc:
            conn.close()
            problem = _folder_problem(folder) or _why(exc)
            raise StoreError(f"cannot write {self.path}: {problem}") from None
        if 0 < found < schema.VERSION:
            self._migrated_from = found
            log.info("history: %s migrated from schema %d to %d", self.path, found, schema.VERSION)
        return conn

    def start(self) -> None:
        """Commit (and maintain) every interval in a background thread; retry opening if the
        file could not be opened yet (a folder made writable later is picked up)."""
        self._writer.start()

    def _tick(self) -> float:
        if self._writer.stopped():
            return 0.0
        if not self.available():
            try:
                self.open()
            except StoreError:
                return self.limits.commit_seconds
            log.info("history: %s is usable again", self.path)
        self.maintain(MAINTAIN_BUDGET)
        self.commit()
        return self.limits.commit_seconds

    def stop(self) -> None:
        """Commit what is buffered and close the file (a clean stop loses nothing)."""
        self._writer.stop(STOP_WAIT)
        with self._lock:
            if self._conn is None:
                return
            self.commit()
            with suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def available(self) -> bool:
        return self._conn is not None

    # ---- the open transaction -------------------------------------------------------------

    def commit(self) -> bool:
        """Commit the open transaction and begin the next; False (and reported) on failure."""
        with self._lock:
            conn = self._conn
            if conn is None:
                return False
            try:
                if conn.in_transaction:
                    conn.execute("COMMIT")
                ok = True
            except sqlite3.Error as exc:
                self._failed("commit", exc)
                ok = False
            if ok:
                self._error = None
                self._commits += 1
                self._last_commit = self._clock()
            try:
                conn.execute("BEGIN")
            except sqlite3.Error as exc:
                self._failed("begin", exc)
            return ok

    def _failed(self, what: str, exc: sqlite3.Error) -> None:
        """Roll back what the failed interval wrote; ids and marks are read again from the file."""
        conn = self._conn
        assert conn is not None
        message = f"cannot {what} {self.path}: {_why(exc)}"
        if message != self._error:
            log.error("history: %s (the proxy keeps serving; retrying)", message)
        self._error = message
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        self._series.clear()
        with suppress(sqlite3.Error):
            self._marks = rollup.load_marks(conn)

    @contextmanager
    def _using(self, what: str) -> Iterator[sqlite3.Connection | None]:
        """The connection under the lock (None when the store is unusable); errors reported."""
        with self._lock:
            conn = self._conn
            if conn is None:
                yield None
                return
            try:
                yield conn
            except sqlite3.Error as exc:
                self._failed(what, exc)
                if not conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute("BEGIN")

    # ---- writes ---------------------------------------------------------------------------

    def add_samples(self, gw: str, t: int, samples: Iterable[Sample]) -> None:
        with self._using("write") as conn:
            if conn is None:
                return
            rows = []
            for sample in samples:
                series = self._series_id(conn, gw, sample)
                if series is not None:
                    rows.append((series, t, sample.value))
            conn.executemany("INSERT OR REPLACE INTO raw (series, t, value) VALUES (?, ?, ?)", rows)

    def _series_id(self, conn: sqlite3.Connection, gw: str, sample: Sample) -> int | None:
        key = (gw, sample.point, sample.label)
        found = self._series.get(key)
        if found is not None:
            return found
        if len(self._series) >= MAX_SERIES:
            self._dropped += 1
            return None
        conn.execute("INSERT OR IGNORE INTO series (gw, point, label, agg) VALUES (?, ?, ?, ?)",
                     (*key, sample.agg))
        row = conn.execute("SELECT id FROM series WHERE gw = ? AND point = ? AND label = ?",
                           key).fetchone()
        self._series[key] = int(row[0])
        return int(row[0])

    def add_energy(self, gw: str, amounts: Iterable[tuple[str, str, float, float]]) -> None:
        """Add Wh to local days' totals: (day, meter, imported, exported) each."""
        with self._using("write") as conn:
            if conn is not None:
                conn.executemany(
                    "INSERT INTO energy (gw, day, meter, imported, exported) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (gw, day, meter) DO UPDATE SET imported = imported + "
                    "excluded.imported, exported = exported + excluded.exported",
                    [(gw, *amount) for amount in amounts])

    def save_counters(self, gw: str, readings: Iterable[tuple[str, str, float, float]]) -> None:
        """The newest counter readings: (meter, direction, value, time) each."""
        with self._using("write") as conn:
            if conn is not None:
                conn.executemany("INSERT OR REPLACE INTO counters VALUES (?, ?, ?, ?, ?)",
                                 [(gw, *reading) for reading in readings])

    def counters(self, gw: str) -> dict[tuple[str, str], tuple[float, float]]:
        """(meter, direction) -> (value, time) of the last counter readings of a gateway."""
        found: dict[tuple[str, str], tuple[float, float]] = {}
        with self._using("read") as conn:
            if conn is not None:
                rows = conn.execute("SELECT meter, direction, value, t FROM counters WHERE gw = ?",
                                    (gw,))
                found = {(m, d): (float(v), float(t)) for m, d, v, t in rows}
        return found

    def add_event(self, t: float, gw: str, kind: str, detail: dict[str, Any]) -> None:
        with self._using("write") as conn:
            if conn is not None:
                conn.execute("INSERT INTO events (t, gw, kind, detail) VALUES (?, ?, ?, ?)",
                             (t, gw, kind, json.dumps(detail)))

    def get_state(self, key: str) -> Any:
        row = None
        with self._using("read") as conn:
            if conn is not None:
                row = conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_state(self, key: str, value: Any) -> None:
        with self._using("write") as conn:
            if conn is not None:
                conn.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (key, json.dumps(value)))

    # ---- downsampling, pruning, the size bound ---------------------------------------------

    def maintain(self, budget: float) -> bool:
        """Run small maintenance steps for up to `budget` seconds; True if more is due."""
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            with self._using("maintain") as conn:
                if conn is None:
                    return False
                plan = rollup.Plan(self._clock(), self.limits.raw_days, self.limits.max_bytes)
                marks = rollup.step(conn, self._marks, plan)
                if marks is None:
                    return False
                self._marks = marks
        return True

    # ---- reads ----------------------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[tuple[sqlite3.Connection, rollup.Marks] | None]:
        """The connection and roll-up marks for a read, under the lock (None: unusable)."""
        with self._using("read") as conn:
            yield None if conn is None else (conn, self._marks)

    def series_ids(self, gw: str) -> dict[tuple[str, str], tuple[int, int]]:
        """(point, label) -> (series id, agg) of one gateway."""
        found: dict[tuple[str, str], tuple[int, int]] = {}
        with self._using("read") as conn:
            if conn is not None:
                rows = conn.execute("SELECT point, label, id, agg FROM series WHERE gw = ?", (gw,))
                found = {(p, lbl): (int(i), int(a)) for p, lbl, i, a in rows}
        return found

    def file_bytes(self) -> int | None:
        """The file and its write-ahead log on disk."""
        try:
            size = os.path.getsize(self.path)
        except OSError:
            return None
        with suppress(OSError):
            size += os.path.getsize(self.path + "-wal")
        return size

    def backup(self, target: str) -> None:
        """A consistent copy of what is committed, through SQLite's backup API (commits first)."""
        self.commit()
        source = sqlite3.connect(self.path, timeout=5.0)
        dest = sqlite3.connect(target)
        try:
            source.backup(dest)  # one step: a consistent snapshot, writers carry on (WAL)
        finally:
            dest.close()
            source.close()

    def describe(self) -> dict[str, Any]:
        """For /health and /stats: usable or not and why, sizes, commits, marks."""
        with self._lock:
            available = self._conn is not None
            error = self._error
            view: dict[str, Any] = {
                "status": "ok" if available and error is None else "error",
                "error": error,
                "path": self.path,
                "schema": schema.VERSION,
                "commit_seconds": self.limits.commit_seconds,
                "commits": self._commits,
                "last_commit_age_seconds": None if self._last_commit is None
                else round(self._clock() - self._last_commit, 1),
                "series": len(self._series),
                "samples_dropped": self._dropped,
                "rolled_up_to": {"minute": self._marks.minute, "quarter": self._marks.quarter,
                                 "hour": self._marks.hour},
            }
        view["file_bytes"] = self.file_bytes()
        view["max_bytes"] = self.limits.max_bytes
        if self._migrated_from is not None:
            view["migrated_from_schema"] = self._migrated_from
        return view


def _folder_problem(folder: str) -> str | None:
    """Why nothing can be written in `folder` (SQLite only says "unable to open"), or None."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as exc:
        return f"{folder}: {_why(exc)}"


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def open_store(folder: str, limits: Limits, clock: Callable[[], float] = time.time) -> Store:
    """A store for `folder`/history.sqlite3, opened if it can be (else reported and retried)."""
    store = Store(os.path.join(folder, FILE_NAME), limits, clock=clock)
    try:
        store.open()
    except StoreError as exc:
        log.error("history: %s; the proxy keeps serving without it", exc)
    return store
