"""The proxy in front of gateways that are not our default simulator.

Every gateway personality (`proxy.simulator.profiles`) gets the same checks: the
telegraf poll of every data route, the fault and recovery cycle with /health, the
one-request-per-window shield, and bad input. A personality that lacks a resource
changes that resource's answer only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.config import load_config
from proxy.main import start
from proxy.simulator import Simulator
from proxy.simulator.profiles import NAMES
from tests.conftest import CONNECT_WAIT, DEFAULT_ENV, ProxyHandle, Reply, settled

# The Powerwall-Dashboard telegraf set, then every other data route of the reference.
TELEGRAF = ["/aggregates", "/soe", "/strings", "/temps/pw", "/freq", "/pod", "/fans/pw", "/alerts/pw"]
DATA_ROUTES = [*TELEGRAF, "/api/meters/aggregates", "/api/system_status/soe",
               "/api/system_status/grid_status", "/csv", "/csv/v2", "/vitals", "/temps", "/alerts",
               "/json", "/version", "/fans", "/api/status", "/api/system_status",
               "/api/site_info/site_name", "/api/operation", "/api/system_status/grid_faults",
               "/api/site_info", "/api/sitemaster", "/api/meters/site", "/api/meters/solar",
               "/api/powerwalls", "/api/solar_powerwall", "/api/meters/readings", "/pw/level",
               "/pw/power", "/pw/site_name", "/pw/get_reserve", "/pw/get_mode", "/pw/status",
               "/pw/system_status", "/pw/alerts", "/pw/version", "/pw/din"]

# A captive portal answers these gateway paths with a web page: the routes built only from
# them have no data to give (a web page is never served as data), so they answer 503 and say why.
PORTAL_ONLY = {"/pod", "/api/system_status", "/api/site_info/site_name", "/api/operation", "/csv/v2",
               "/pw/site_name", "/pw/get_reserve", "/pw/get_mode", "/pw/system_status"}

# Keys a route answers whatever the gateway gave (null where it gave nothing).
FIXED_KEYS = {
    "/json": {"grid", "home", "solar", "battery", "soe", "grid_status", "reserve",
              "time_remaining_hours", "full_pack_energy", "energy_remaining", "strings"},
    "/version": {"version", "vint"},
    "/api/system_status/soe": {"percentage"},
    "/pw/level": {"level"},
}

# A solar-only site has no state of charge: the library's level is None, and these routes
# answer null as the reference does when the level is unknown.
NO_BATTERY = {"/api/system_status/soe"}

PERIOD = 1


@pytest.fixture(scope="module", params=NAMES)
def variant(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyHandle]:
    """A simulator with this personality and a local-mode proxy in front of it."""
    sim = Simulator(port=0, profile=request.param).start()
    credentials = {("PW_GW_PWD" if k == "gw_pwd" else "PW_PASSWORD"): v
                   for k, v in sim.credentials().items()}
    if sim.profile.bearer:  # a solar-only gateway: TEDAPI only through the bearer login
        credentials.update(PW_TEDAPI_AUTH_MODE="bearer", PW_TEDAPI_API_VERSION="V2026_06")
    auth = tmp_path_factory.mktemp(request.param)
    env = {**DEFAULT_ENV, "PW_HOST": sim.host, **credentials, "PW_AUTH_PATH": str(auth),
           "PW_CACHE_FILE": str(Path(auth) / ".powerwall"), "PW_CACHE_EXPIRE": str(PERIOD),
           "PW_CACHE_TTL": "0", "PW_CONTROL_SECRET": "variance-secret"}
    handle = ProxyHandle(start(load_config(env), wait_connected=CONNECT_WAIT))
    handle.sim = sim
    try:
        assert handle.gateway.connected, handle.gateway.info.connect_error
        yield settled(handle)
    finally:
        handle.stop()
        sim.stop()


def profile(h: ProxyHandle) -> str:
    return str(h.sim.profile.name)


def poll_all(h: ProxyHandle) -> dict[str, Reply]:
    return {path: h.get(path) for path in DATA_ROUTES}


def test_no_data_route_answers_503_while_the_gateway_is_up(variant: ProxyHandle) -> None:
    h = variant
    replies = poll_all(h)
    for path, reply in replies.items():
        assert reply.header("Content-Type") is not None
        if profile(h) == "portal" and path in PORTAL_ONLY:
            assert reply.status == 503, (path, reply.status)
            error = reply.json()["error"]
            assert "web page" in error or "could not read" in error, (path, reply.body)
            continue
        # 404 is "this mode has no such resource" (as the reference); never 503 or 500.
        assert reply.status in (200, 404), (profile(h), path, reply.status, reply.body[:200])
        if path in TELEGRAF or path.startswith(("/csv", "/json", "/version", "/api/system_status/soe")):
            assert reply.status == 200, (profile(h), path, reply.status, reply.body[:200])
        if profile(h) == "solar-only" and path in NO_BATTERY:
            assert reply.status == 200 and reply.json() is None, (path, reply.body[:200])
            continue
        if reply.status == 200 and path in FIXED_KEYS:
            assert FIXED_KEYS[path] <= set(reply.json()), (profile(h), path, reply.body[:200])
        if reply.status == 404:
            assert "error" in reply.json(), (path, reply.body)
    assert replies["/csv"].text.count(",") == 4 and "," in replies["/csv/v2"].text or \
        profile(h) == "portal"


def test_a_gateway_that_answers_is_healthy(variant: ProxyHandle) -> None:
    h = variant
    poll_all(h)
    poll_all(h)
    health = h.get("/health")
    body = health.json()
    assert (health.status, body["status"]) == (200, "ok"), (profile(h), body.get("gateway"))
    assert body["gateway"]["cooldown_remaining_seconds"] == 0
    assert body["connection_health"]["consecutive_failures"] == 0
    for key in ("status", "pypowerwall", "mode", "connection_health", "cached_data",
                "endpoint_statistics", "proxy_stats", "transports", "fallback_mode"):
        assert key in body, key


def test_one_request_per_resource_per_window(variant: ProxyHandle) -> None:
    h = variant
    h.get("/aggregates")
    window = h.gateway.cache.window()
    while h.gateway.cache.window() == window:  # start at the top of a fresh window
        threading.Event().wait(0.05)
    before = h.sim.stats()["paths"].get("/api/meters/aggregates", 0)
    replies: list[int] = []
    threads = [threading.Thread(target=lambda: replies.append(h.get("/aggregates").status))
               for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    after = h.sim.stats()["paths"].get("/api/meters/aggregates", 0)
    assert replies == [200] * 16
    assert after - before <= 2, (profile(h), after - before)  # one window, at most the next


def test_outage_turns_health_at_once_and_recovers(variant: ProxyHandle) -> None:
    h = variant
    assert h.get("/aggregates").status == 200
    h.sim.set_fault("down")
    try:
        reply = _first(h, "/aggregates", lambda r: r.status == 503, 4 * PERIOD + 2 * 2 + 2)
        assert reply.header("Retry-After") is not None and "error" in reply.json()
        health = h.get("/health")  # the first window in which clients get 503
        assert (health.status, health.json()["status"]) == (503, "degraded")
    finally:
        h.sim.clear_faults()
    _first(h, "/aggregates", lambda r: r.status == 200, 4 * PERIOD + 2 * 2 + 2)
    assert h.get("/health").status == 200


def _first(h: ProxyHandle, path: str, want: Any, seconds: float) -> Reply:
    deadline = threading.Event()
    timer = threading.Timer(seconds, deadline.set)
    timer.start()
    try:
        while not deadline.is_set():
            reply = h.get(path)
            if want(reply):
                return reply
            deadline.wait(0.2)
    finally:
        timer.cancel()
    raise AssertionError(f"{path} never answered as wanted within {seconds} s")


@pytest.mark.parametrize(("method", "target", "status"), [
    ("GET", "/../etc/passwd", 404),
    ("GET", "/%2e%2e/%2e%2e/etc/passwd", 404),
    ("DELETE", "/aggregates", 405),
    ("GET", "/api/devices/../../x", 404),
    ("POST", "/control/reserve", 401),
    ("GET", "/pw/not_a_method", 404),
])
def test_bad_input_is_refused_the_same_way(variant: ProxyHandle, method: str, target: str,
                                           status: int) -> None:
    h = variant
    before = h.sim.stats()["total"]
    reply = h.request(method, target, body="value=30" if method == "POST" else None,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status == status, (profile(h), target, reply.status, reply.body[:200])
    assert "error" in reply.json() and b"Traceback" not in reply.body
    assert h.sim.stats()["total"] - before <= 2  # bad input is never forwarded
