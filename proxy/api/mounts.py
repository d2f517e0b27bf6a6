"""Every route group of the HTTP surface and where it is mounted: the one list.

Adding a group is adding its module (a tuple of `Route` rows) and one line here. A group
mounted at "/" serves the default gateway (or the whole proxy); `both` also mounts it under
`/api/gateways/{id}/`, where the id binds the gateway it serves. A group with its own error
body (OpenC2) names its renderer. Unmatched paths are not a group: the app falls back to the
files under web/ and then the gateway's own web UI.
"""

from __future__ import annotations

from proxy.api import aggregate, control, history, live, metrics, openapi, openc2, reference, status
from proxy.api.openc2 import Budgets
from proxy.api.routing import Mount, both
from proxy.history.service import History
from proxy.reports import Reports

GATEWAY = "/api/gateways/{id}/"  # one gateway's copy of the per-gateway groups


def mounts(budgets: Budgets | None = None, reports: Reports | None = None,
           kept: History | None = None) -> tuple[Mount, ...]:
    """The groups in lookup order (an exact path of an earlier group wins over a later one).

    `budgets` are OpenC2's read and write budgets, built in main (a fresh pair by default);
    groups with state of their own report it in `reports`; `kept` is the history the history
    routes read (none: they answer 404)."""
    return (
        *both(reference.ROUTES, GATEWAY),  # the reference proxy's routes
        *both(status.ROUTES, GATEWAY),  # /stats, /health, /help
        *both(control.ROUTES, GATEWAY),  # /control/*
        Mount("/", aggregate.ROUTES),  # /api/gateways, /api/aggregate/*
        Mount("/", live.ROUTES),  # /events, /ws/*
        Mount("/", metrics.ROUTES),  # /metrics
        Mount("/", openapi.ROUTES),  # /openapi.json, /docs
        Mount("/", history.routes(kept)),  # /api/history*, /api/events
        Mount("/", openc2.routes(budgets or Budgets(), reports), errors=openc2.render_error),  # OpenC2
    )
