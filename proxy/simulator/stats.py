"""Per-path request counters, so a proxy's shielding of the gateway can be measured."""

from __future__ import annotations

import threading
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

    def snapshot(self) -> dict[str, Any]:
        """{"total": N, "paths": {path: n}} as served by GET /sim/stats."""
        with self._lock:
            return {"total": self._total, "paths": dict(self._paths)}
