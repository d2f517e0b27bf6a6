"""Everything that touches pypowerwall: the adapter, its verdicts, sources, cache and health.

Only this package imports the library. It picks no HTTP status: failures come
out as verdicts (`outcome.Kind`) or typed errors (`proxy.errors`). It may import
`proxy.config`, `proxy.errors` and `proxy.stats`, nothing above it.
"""

from proxy.gateway.adapter import Gateway, GatewayInfo, error_for
from proxy.gateway.cache import Entry, WindowCache
from proxy.gateway.library import reserve_answer, reserve_for_backend, user_number
from proxy.gateway.outcome import Kind, Verdict

__all__ = ["Entry", "Gateway", "GatewayInfo", "Kind", "Verdict", "WindowCache", "error_for",
           "reserve_answer", "reserve_for_backend", "user_number"]
