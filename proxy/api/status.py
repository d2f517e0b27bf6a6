"""/stats, /health and /help: the proxy describing itself, never calling the gateway.

Each part reports itself in the registry (`proxy.reports`); these pages add what the
reference proxy had and the gateways' own state, and show every report."""

from __future__ import annotations

import datetime
import resource
import time
from typing import Any

from proxy import __version__
from proxy.api import help_page
from proxy.api.apidoc import HTML, Answer, Doc, ref
from proxy.api.app import App, json_response
from proxy.api.routing import Call, Route
from proxy.api.web import style_tags
from proxy.gateway import Gateway, Kind
from proxy.httpd.types import Response
from proxy.reports import HEALTH, STATS
from proxy.site.site import Site


def library_version() -> str:
    try:
        from importlib.metadata import version

        return version("pypowerwall")
    except Exception:
        return "unknown"


def build_label() -> str:
    """The reference's `pypowerwall` field: "<library version> Proxy <build>"."""
    return f"{library_version()} Proxy {__version__}"


def _uptime(since: float) -> str:
    return str(datetime.timedelta(seconds=int(time.time() - since)))


def _connection_health(gateway: Gateway) -> dict[str, Any]:
    c = gateway.health.snapshot()
    age = None if c.last_success_time is None else round(time.time() - c.last_success_time, 1)
    return {
        "consecutive_failures": c.consecutive_failures,
        "total_failures": c.total_failures,
        "total_successes": c.total_successes,
        "is_degraded": gateway.status() == "degraded",
        "last_success_time": c.last_success_time,
        "last_success_age_seconds": age,
        "last_error": c.last_error,
    }


# How bad a connection state is, for the one word that speaks for several gateways.
_SEVERITY = ("ok", "starting", "cooling_down", "unreachable", "refused")


def connection_word(sites: list[Site]) -> str:
    """The worst connection state among the gateways ("ok" only when all are)."""
    return max((s.gateway.connection().state for s in sites), key=_SEVERITY.index)


def _cache_view(gateway: Gateway) -> dict[str, Any]:
    entries = {}
    cache = gateway.cache
    for key, entry in cache.snapshot().items():
        entries[str(key)] = {
            "age_seconds": round(cache.age(entry.at), 1),
            "is_expired": entry.window != cache.window(key),
            "ok": entry.kind in (Kind.DATA, Kind.ABSENT),
            "outcome": entry.kind.value,
            "last_good_age_seconds": round(cache.age(entry.good_at), 1) if entry.good is not None else None,
        }
    return {"cache_size": len(entries), "endpoints": entries}


def _gateway_view(app: App, site: Site) -> dict[str, Any]:
    gateway = site.gateway
    info = gateway.info
    condition = gateway.connection()
    return {
        "id": site.id,
        "status": gateway.status(),
        "connection": condition.state,
        "connection_error": condition.message,
        "connected": gateway.connected,
        "host": site.config.host or None,
        "simulated": gateway.simulated,
        "cooldown_remaining_seconds": round(gateway.cooldown.remaining(), 1),
        "cooldown_strikes": gateway.cooldown.strikes(),
        "login_backoff_remaining_seconds": round(gateway.auth.remaining(), 1),
        "login_backoff_steps": gateway.auth.steps(),
        "fetches_in_flight": gateway.cache.in_flight(),
        "calls": gateway.lanes.view(),
        "resources": _resources(gateway),
        "connect_attempts": info.connect_attempts,
        "connect_error": info.connect_error,
        "control": bool(gateway.control_pw) and app.config.control_secret.reveal() != "",
    }


def _resources(gateway: Gateway) -> dict[str, dict[str, float]]:
    """Every resource read so far (or given a period), by the name PW_CACHE_PERIODS takes."""
    cache = gateway.cache
    keys = {str(k) for k in cache.snapshot()} | {name for name, _ in gateway.config.periods}
    return {key: {"period_seconds": cache.period_of(key)} for key in sorted(keys)}


def _fleet(app: App, call: Call) -> bool:
    """Whether this page speaks for the whole proxy (the root, with several gateways)."""
    return not call.mount and len(app.sites) > 1


def overall_status(app: App) -> str:
    """ok only while every gateway is ok; degraded as soon as one is."""
    statuses = [site.gateway.status() for site in app.sites]
    if all(s == "ok" for s in statuses):
        return "ok"
    return "degraded" if "degraded" in statuses else "starting"


def stats_body(app: App, call: Call) -> dict[str, Any]:
    site = call.site
    c = (site.stats if call.mount else app.stats).snapshot()
    gateway, info = site.gateway, site.gateway.info
    body: dict[str, Any] = {
        "pypowerwall": build_label(),
        "mode": info.mode,
        "gets": c.gets, "posts": c.posts, "errors": c.errors, "timeout": c.timeout,
        "starting": c.starting, "uri": c.uri,
        "ts": int(time.time()), "start": c.start, "clear": c.clear,
        "uptime": _uptime(c.start),
        "mem": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "site_name": gateway.site_name,
        "cloudmode": info.cloudmode, "fleetapi": info.fleetapi, "tedapi": info.tedapi,
        "pw3": info.pw3, "tedapi_mode": info.tedapi_mode,
        "tedapi_api_version": info.tedapi_api_version,
        "tedapi_auth_mode": info.tedapi_auth_mode,
        "siteid": info.siteid, "counter": info.counter,
        "cf": site.config.cache_file,
        "config": app.config.reference_view(site.config),
    }
    if app.config.health_check:
        body["connection_health"] = _connection_health(gateway)
    body["fallback_mode"] = gateway.fallback_view()
    body["mem_cache"] = {"entries": len(gateway.cache.snapshot())}
    body["authmode"] = site.config.auth_mode
    body["gateway"] = _gateway_view(app, site)
    if _fleet(app, call):
        body["gateways"] = {s.id: _gateway_stats(app, s) for s in app.sites}
    body.update(app.reports.collect(STATS))  # server, hub, streams, mqtt, ...: each part's own
    return body


def _gateway_stats(app: App, site: Site) -> dict[str, Any]:
    c = site.stats.snapshot()
    return {"gets": c.gets, "errors": c.errors, "timeout": c.timeout, "starting": c.starting,
            "uri": c.uri, **_gateway_view(app, site)}


def health_body(app: App, call: Call) -> dict[str, Any]:
    config, site = app.config, call.site
    gateway = site.gateway
    c = (site.stats if call.mount else app.stats).snapshot()
    fleet = _fleet(app, call)
    body: dict[str, Any] = {
        "status": overall_status(app) if fleet else gateway.status(),
        # The connection in one word: ok, starting, unreachable, refused or cooling_down.
        "connection": connection_word(list(app.sites) if fleet else [site]),
        "pypowerwall": build_label(),
        "mode": gateway.info.mode,
        "tedapi_mode": gateway.info.tedapi_mode,
        "pypowerwall_cache_expire": site.config.cache_expire,
        "degradation_cache_ttl_seconds": config.cache_ttl,
        "graceful_degradation": config.graceful_degradation,
        "fail_fast_mode": config.fail_fast,
        "health_check_enabled": config.health_check,
        "startup_time": datetime.datetime.fromtimestamp(app.started).isoformat(),
        "current_time": datetime.datetime.now().isoformat(),
        "transports": gateway.transports(),
        "proxy_stats": {"total_gets": c.gets, "total_posts": c.posts,
                        "total_errors": c.errors, "total_timeouts": c.timeout,
                        "total_starting": c.starting},
    }
    if config.health_check:
        body["connection_health"] = _connection_health(gateway)
    body["fallback_mode"] = gateway.fallback_view()
    body["cached_data"] = _cache_view(gateway)
    body["endpoint_statistics"] = gateway.endpoints.view()
    body["gateway"] = _gateway_view(app, site)
    if fleet:
        body["gateways"] = {s.id: _gateway_health(s) for s in app.sites}
    body.update(app.reports.collect(HEALTH))
    return body


def _gateway_health(site: Site) -> dict[str, Any]:
    gateway = site.gateway
    health = gateway.health.snapshot()
    condition, status = gateway.connection(), gateway.status()  # one reading for both fields
    return {"status": status, "connection": condition.state,
            "connection_error": condition.message,
            "mode": gateway.info.mode, "online": status == "ok",
            "consecutive_failures": health.consecutive_failures, "last_error": health.last_error,
            "cooldown_remaining_seconds": round(gateway.cooldown.remaining(), 1),
            "login_backoff_remaining_seconds": round(gateway.auth.remaining(), 1)}


def get_stats(app: App, call: Call) -> Response:
    return json_response(200, stats_body(app, call))


def get_stats_clear(app: App, call: Call) -> Response:
    targets = [call.site.stats] if call.mount else [app.stats, *(s.stats for s in app.sites)]
    for stats in targets:
        stats.clear()
    return json_response(200, stats_body(app, call))


def get_health(app: App, call: Call) -> Response:
    body = health_body(app, call)
    # 200 only when healthy, so a Docker HEALTHCHECK (curl -f) tells the truth.
    status = 200 if body["status"] == "ok" else 503
    headers = [("Cache-Control", "no-cache")]
    if status == 503:
        sites = list(app.sites) if _fleet(app, call) else [call.site]
        wait = max(max(s.gateway.cooldown.remaining(), s.gateway.auth.remaining()) for s in sites)
        headers.append(("Retry-After", str(max(1, int(wait + 0.999)))))
    return json_response(status, body, headers)


def get_health_reset(app: App, call: Call) -> Response:
    sites = [call.site] if call.mount else list(app.sites)
    endpoints = sum(len(s.gateway.endpoints.view()) for s in sites)
    removed = 0
    for site in sites:
        removed += site.gateway.reset_health()
        site.renders.clear()
    return json_response(200, {
        "status": "reset_complete", "health_counters_reset": True, "cache_cleared": True,
        "cache_entries_removed": removed, "endpoint_stats_cleared": endpoints,
    })


def get_help(app: App, call: Call) -> Response:
    body = stats_body(app, call)
    if help_page.prefers_json(call.request.headers.get("Accept", "")):
        return json_response(200, body, [("Cache-Control", "no-cache, no-store")])
    page = help_page.page(body, style_tags(app.config), app.config.base_url)
    return Response(200, [("Content-Type", "text/html; charset=utf-8"),
                          ("Cache-Control", "no-cache, no-store")], page)


ROUTES: tuple[Route, ...] = (
    Route("/stats", get_stats, doc=Doc("Counters, mode, configuration", ref("Stats"), tag="status")),
    Route("/stats/clear", get_stats_clear,
          doc=Doc("Reset the counters, then answer as /stats", ref("Stats"), tag="status")),
    Route("/health", get_health,
          doc=Doc("Health: 200 only when ok", ref("Health"), tag="status",
                  answers=(Answer(503, "Not ok (starting or degraded): the same body",
                                  ref("Health"), retry_after=True),))),
    Route("/health/reset", get_health_reset,
          doc=Doc("Clear health counters, cooldown and cached data", ref("HealthReset"), tag="status")),
    Route("/help", get_help,
          doc=Doc("The /stats counters as a self-refreshing HTML page", {"type": "string"}, HTML,
                  tag="status",
                  answers=(Answer(200, "The /stats body, when Accept prefers application/json",
                                  ref("Stats")),))),
)
