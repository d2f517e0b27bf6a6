"""One registry of reports: every part of the proxy describes itself here, and `/stats`,
`/health` and `/metrics` read the registry instead of knowing the parts.

A part registers a `describe()` (a JSON-able dict of its own state) under its name when it is
built (the hub, the live topics, the MQTT publisher, the control writes, the token throttle,
the gateways; `main` registers the HTTP server's). A name is registered once: a second part
under the same name is refused, so two parts can never shadow each other's report. `collect`
copies the list under the lock and calls the parts outside it, so a slow part never holds
up registration, and a part that fails is reported as such instead of failing the page.

`pages` says where a report shows: at the top level of `/stats` (the default), of `/health`,
or nowhere by itself (read by name, e.g. by `/metrics`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("proxy.reports")

Describe = Callable[[], dict[str, Any]]
STATS = "stats"
HEALTH = "health"
MAX_REPORTS = 64  # parts of the proxy, not anything a client can add


class DuplicateReport(ValueError):
    """A second part tried to report under a name already taken."""


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    describe: Describe
    pages: frozenset[str]


class Reports:
    """Named reports, in the order they were registered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def register(self, name: str, describe: Describe, *, pages: Iterable[str] = (STATS,)) -> None:
        with self._lock:
            if name in self._entries:
                raise DuplicateReport(f"a report named {name!r} is registered already")
            if len(self._entries) >= MAX_REPORTS:
                raise ValueError(f"more than {MAX_REPORTS} reports")
            self._entries[name] = _Entry(name, describe, frozenset(pages))

    def unregister(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def get(self, name: str) -> dict[str, Any] | None:
        """One part's report now; None when no part has that name."""
        with self._lock:
            entry = self._entries.get(name)
        return None if entry is None else _describe(entry)

    def collect(self, page: str = STATS) -> dict[str, dict[str, Any]]:
        """Every report shown on a page, by name (the parts are called outside the lock)."""
        with self._lock:
            entries = [e for e in self._entries.values() if page in e.pages]
        return {entry.name: _describe(entry) for entry in entries}


def _describe(entry: _Entry) -> dict[str, Any]:
    try:
        return entry.describe()
    except Exception as exc:  # one part's bug must not take /stats or /health down
        log.exception("report %s failed", entry.name)
        return {"error": f"report failed ({type(exc).__name__})"}
