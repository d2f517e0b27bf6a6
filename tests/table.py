"""The route table as the proxy serves it: every group of proxy.api.mounts."""

from __future__ import annotations

from proxy.api.mounts import mounts
from proxy.api.routing import Route

MOUNTS = mounts()


def root_routes() -> list[tuple[str, Route]]:
    """Every (path, row) served at the root (not under /api/gateways/{id}/), in table order."""
    return [(path, route) for mount in MOUNTS if not mount.templated for path, route in mount.rows()]


def root_paths() -> set[str]:
    return {path for path, _ in root_routes()}
