"""Per-path request counters, so a proxy's shielding of the gateway can be measured.

Besides the count per path: per TEDAPI query (every TEDAPI read is a POST to one
path; `query_key` names what it asked), and how many requests were being
answered at once (now, and the most since the last reset).
"""

from __future__ import annotations

import threading
import zlib
from typing import Any

MAX_PATHS = 500  # keys come from clients, so the map is capped
OTHER = "other"


class RequestCounter:
    """Counts gateway requests by path (query stripped); thread-safe and bounded."""

    def __init__(self, max_paths: int = MAX_PATHS) -> None:
        self._max_paths = max_paths
        self._lock = threading.Lock()
        self._total = 0
        self._paths: dict[str, int] = {}
        self._queries: dict[str, int] = {}
        self._in_flight = 0
        self._most = 0

    def count(self, path: str) -> None:
        with self._lock:
            self._total += 1
            if path not in self._paths and len(self._paths) >= self._max_paths:
                path = OTHER
            self._paths[path] = self._paths.get(path, 0) + 1

    def reset(self) -> None:
        with self._lock:
            self._total = 0
            self._paths = {}
            self._queries = {}
            self._most = self._in_flight

    def snapshot(self) -> dict[str, Any]:
        """{"total": N, "paths": {path: n}, "queries": {query: n}, "in_flight": n,
        "most_in_flight": n} as served by GET /sim/stats."""
        with self._lock:
            return {"total": self._total, "paths": dict(self._paths),
                    "queries": dict(self._queries), "in_flight": self._in_flight,
                    "most_in_flight": self._most}

    def count_query(self, key: str) -> None:
        """One TEDAPI query, by what it asked (see `query_key`)."""
        with self._lock:
            if key not in self._queries and len(self._queries) >= self._max_paths:
                key = OTHER
            self._queries[key] = self._queries.get(key, 0) + 1

    def arrived(self) -> None:
        """A request is being answered (from its request line until its answer is written)."""
        with self._lock:
            self._in_flight += 1
            self._most = max(self._most, self._in_flight)

    def answered(self) -> None:
        with self._lock:
            self._in_flight -= 1


def query_key(kind: str, name: str, query: str, recipient: str, gateway_din: str) -> str:
    """A TEDAPI message as counted: its kind and query (or file) name, a digest of the query
    text (one name can carry different documents) and a recipient other than the gateway."""
    what = name
    if query:
        what += f"#{zlib.crc32(query.encode()) & 0xFFFF:04x}"
    key = f"{kind}:{what}" if what else kind
    if recipient and recipient != gateway_din:
        key += f" @{recipient}"
    return key
