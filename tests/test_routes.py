"""End to end: simulator <- real pypowerwall <- proxy <- HTTP client, for every route family."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from proxy.api.reference import ALLOWLIST
from proxy.gateway.sources import PW_SOURCES as PW_CALLS
from tests.conftest import Factory, ProxyHandle
from tests.table import root_paths

# Routes of the reference's GET table (§1.3) that are data routes answering 200 with --simulate.
DATA_ROUTES = [
    "/aggregates", "/api/meters/aggregates", "/soe", "/api/system_status/soe",
    "/api/system_status/grid_status", "/csv", "/csv/v2", "/vitals", "/strings", "/temps",
    "/temps/pw", "/alerts", "/alerts/pw", "/freq", "/pod", "/json", "/version",
    "/api/troubleshooting/problems", "/fans", "/fans/pw",
    "/tedapi/config", "/tedapi/status", "/tedapi/components", "/tedapi/battery", "/tedapi/controller",
]


def _wait_ok(proxy: ProxyHandle, path: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        r = proxy.get(path)
        if r.status == 200 or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


def test_route_table_has_every_reference_get_route() -> None:
    paths = root_paths()
    reference = set(DATA_ROUTES) | set(ALLOWLIST) | {f"/pw/{n}" for n in PW_CALLS} | {
        "/stats", "/stats/clear", "/health", "/health/reset", "/help", "/api/customer/registration",
        "/cloud/battery", "/cloud/power", "/cloud/config", "/fleetapi/info", "/fleetapi/status",
        "/control/reserve", "/control/mode", "/control/grid_charging", "/control/grid_export",
        "/control/max_backup"}
    assert len(reference) == 89
    assert reference <= paths


@pytest.mark.parametrize("path", DATA_ROUTES)
def test_data_routes_answer_200_with_data(proxy: ProxyHandle, path: str) -> None:
    r = _wait_ok(proxy, path)
    assert r.status == 200, (path, r.status, r.body[:200])
    assert r.header("Access-Control-Allow-Origin") == "*"
    if path.startswith("/csv"):
        assert r.header("Content-Type") == "text/plain; charset=utf-8"
        assert r.text.endswith("\n") and "," in r.text
    else:
        assert r.header("Content-Type") == "application/json"
        assert r.json() not in (None, "null")
    if path != "/api/troubleshooting/problems":  # a constant: no gateway data, no Age
        assert r.header("Age") is not None
    assert int(r.header("Content-Length") or -1) == len(r.body)


def test_aggregates_shape_and_query_string_routing(proxy: ProxyHandle) -> None:
    r = _wait_ok(proxy, "/aggregates")
    body = r.json()
    assert list(body) == ["site", "battery", "load", "solar"]
    assert "instant_power" in body["site"]
    # The reference routed "/aggregates?x=1" to the gateway web UI; we match the path only.
    site = proxy.app.sites.default()
    for _ in range(15):  # both within one cache window (a loaded machine may straddle two)
        window = site.window()
        body, q = proxy.get("/aggregates").json(), proxy.get("/aggregates?x=1")
        if site.window() == window:
            break
    assert q.status == 200 and q.json() == body  # same window, same bytes


def test_soe_raw_and_api_soe_scaled(proxy: ProxyHandle) -> None:
    raw = _wait_ok(proxy, "/soe").json()["percentage"]
    scaled = _wait_ok(proxy, "/api/system_status/soe").json()["percentage"]
    assert scaled == pytest.approx(raw / 0.95 - 5 / 0.95, abs=1.0)


def test_csv_headers_variant(proxy: ProxyHandle) -> None:
    plain = _wait_ok(proxy, "/csv").text
    headed = _wait_ok(proxy, "/csv?headers").text
    assert headed.startswith("Grid,Home,Solar,Battery,BatteryLevel\n")
    assert len(plain.strip().split(",")) == 5
    v2 = _wait_ok(proxy, "/csv/v2?headers").text.splitlines()
    assert v2[0] == "Grid,Home,Solar,Battery,BatteryLevel,GridStatus,Reserve"
    assert v2[1].split(",")[5] == "1"


def test_json_keys_in_reference_order(proxy: ProxyHandle) -> None:
    body = _wait_ok(proxy, "/json").json()
    assert list(body) == ["grid", "home", "solar", "battery", "soe", "grid_status", "reserve",
                          "time_remaining_hours", "full_pack_energy", "energy_remaining", "strings"]
    assert body["grid_status"] == 1


@pytest.mark.parametrize("name", sorted(PW_CALLS))
def test_pw_routes(proxy: ProxyHandle, name: str) -> None:
    r = _wait_ok(proxy, f"/pw/{name}")
    assert r.status == 200, (name, r.body[:200])
    assert r.json() is not None


def test_pw_unknown_and_base_url(proxy_factory: Factory) -> None:
    p = proxy_factory({"PROXY_BASE_URL": "/pw-proxy"})
    assert _wait_ok(p, "/pw-proxy/pw/level").json()["level"] > 0
    assert _wait_ok(p, "/pw-proxy/aggregates?x=1").status == 200
    unknown = p.get("/pw-proxy/pw/nope")
    assert unknown.status == 404 and unknown.json() == {"error": "Invalid Request"}


def test_allowlisted_api_paths(proxy: ProxyHandle) -> None:
    ok = 0
    for path in ALLOWLIST:
        r = proxy.get(path + "?cachebust=1")
        assert r.status in (200, 404), (path, r.status, r.body[:200])
        assert r.header("Content-Type") == "application/json"
        if r.status == 404:  # a path pypowerwall cannot build in this mode says why
            assert r.json()["error"]
        ok += r.status == 200
    assert ok >= 8  # the library emulates the common ones in TEDAPI mode


def test_unknown_and_blocked_api_paths_are_404_json(proxy: ProxyHandle) -> None:
    before = proxy.sim.stats()["total"]
    for path in ("/api/config", "/api/config?x=1", "/api/../api/config", "/api/customer/registration?x"):
        r = proxy.get(path)
        assert r.status == 404, path
        assert "error" in r.json()
    assert proxy.sim.stats()["total"] == before  # nothing forwarded


def test_mode_routes_not_enabled(proxy: ProxyHandle) -> None:
    assert proxy.get("/cloud/battery").json() == {"error": "Cloud API not enabled"}
    assert proxy.get("/cloud/battery").status == 404
    assert proxy.get("/fleetapi/info").json() == {"error": "FleetAPI not enabled"}
    r = proxy.get("/tedapi/nope")
    assert r.status == 404 and r.json()["error"].startswith("Use /tedapi/config")
    assert proxy.get("/control/max_backup").json() == {"error": "max_backup requires v1r LAN transport"}


def test_methods_head_options(proxy: ProxyHandle) -> None:
    r = proxy.request("POST", "/aggregates", body="x")
    assert r.status == 405 and "GET" in (r.header("Allow") or "")
    assert r.json()["error"] == "Method Not Allowed"
    get = _wait_ok(proxy, "/soe")
    head = proxy.request("HEAD", "/soe")
    assert head.status == 200 and head.body == b""
    assert head.header("Content-Length") == get.header("Content-Length")
    opt = proxy.request("OPTIONS", "/control/reserve")
    assert opt.status == 204 and "POST" in (opt.header("Access-Control-Allow-Methods") or "")


def test_one_gateway_fetch_feeds_many_readers(proxy_factory: Factory) -> None:
    from concurrent.futures import ThreadPoolExecutor

    p = proxy_factory({"PW_CACHE_EXPIRE": "30"})
    site = p.app.sites.default()
    for _ in range(2):  # a run that straddled a window's end (one fetch, rightly) runs again
        _wait_ok(p, "/aggregates")
        window = site.window()
        p.sim.reset()
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda _: p.get("/aggregates").status, range(64)))
        if site.window() == window:
            break
    assert results == [200] * 64
    assert p.sim.stats()["total"] == 0  # all served from the window cache


def test_stats_and_health(proxy: ProxyHandle) -> None:
    _wait_ok(proxy, "/aggregates")
    stats = proxy.get("/stats").json()
    for key in ("pypowerwall", "mode", "gets", "posts", "errors", "timeout", "uri", "ts", "start",
                "clear", "uptime", "mem", "site_name", "cloudmode", "fleetapi", "tedapi", "pw3",
                "tedapi_mode", "tedapi_api_version", "siteid", "counter", "cf", "config",
                "connection_health", "fallback_mode", "mem_cache", "authmode"):
        assert key in stats, key
    assert "simulated" in stats["mode"]
    assert stats["config"]["PW_CONTROL_SECRET"] == "********"
    assert "s3cret-token" not in proxy.get("/stats").text
    assert "s3cret-token" not in proxy.get("/help").text
    health = proxy.get("/health")
    assert health.status == 200 and health.json()["status"] == "ok"
    cleared = proxy.get("/stats/clear").json()
    assert cleared["gets"] == 0


def test_help_escapes_recorded_paths(proxy: ProxyHandle) -> None:
    proxy.get("/<script>alert(1)</script>")
    proxy.get("/api/status?%3Cimg%20src=x%20onerror=alert(2)%3E")
    page = proxy.get("/help").text
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert proxy.get("/help").header("Content-Type", ) == "text/html; charset=utf-8"


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_help_is_a_page_for_people_and_json_when_asked(proxy: ProxyHandle) -> None:
    _wait_ok(proxy, "/aggregates")
    for accept in (BROWSER_ACCEPT, "*/*", "application/json;q=0.5, text/html"):
        page = proxy.get("/help", headers={"Accept": accept})
        assert page.status == 200 and page.header("Content-Type") == "text/html; charset=utf-8"
    text = page.text
    for repr_only in ("{'", "': ", "True", "False", "None"):  # no Python reprs
        assert repr_only not in text, repr_only
    # nested objects are tables of their own; every /stats key has its row
    assert '<th scope="row">connection_health</th><td><table class="facts">' in text
    stats = proxy.get("/stats").json()
    for key in stats.keys() - {"uri", "config"}:
        assert f'<th scope="row">{key}</th>' in text, key
    assert '<th scope="row">PW_CONTROL_SECRET</th><td>********</td>' in text
    assert "<td>/aggregates</td>" in text  # a row per recorded path
    assert 'href="/console.css"' in text and 'id="pw-style" href="/styles/clear.css"' in text

    for accept in ("application/json", "application/json, text/html;q=0.9", "application/*"):
        reply = proxy.get("/help", headers={"Accept": accept})
        assert reply.status == 200 and reply.header("Content-Type") == "application/json", accept
        body = reply.json()
        assert body.keys() == stats.keys() and body["config"] == stats["config"]


def test_control_round_trip(proxy: ProxyHandle) -> None:
    token = "s3cret-token"
    r = proxy.post("/control/reserve", f"value=42&token={token}")
    assert r.status == 200, r.body
    assert proxy.get("/control/reserve").json()["reserve"] == pytest.approx(42, abs=0.5)
    assert _wait_ok(proxy, "/pod").json()["backup_reserve_percent"] == pytest.approx(42, abs=0.5)
    r = proxy.post("/control/mode", "value=backup", headers={"Authorization": f"Bearer {token}"})
    assert r.status == 200, r.body
    assert proxy.get("/control/mode").json() == {"mode": "backup"}
    r = proxy.post("/control/mode", f"value=self_consumption&level=20&token={token}")
    assert r.status == 200
    assert proxy.get("/control/mode").json() == {"mode": "self_consumption"}
    assert proxy.get("/control/reserve").json()["reserve"] == pytest.approx(20, abs=0.5)


@pytest.mark.parametrize(("form", "status"), [
    ("value=50&token=wrong", 401),
    ("value=50", 401),
    ("value=101&token=s3cret-token", 400),
    ("value=%C2%B2&token=s3cret-token", 400),
    ("value=-1&token=s3cret-token", 400),
    ("value=5&mode=garbage&token=s3cret-token", 400),
])
def test_control_refusals(proxy: ProxyHandle, form: str, status: int) -> None:
    before = proxy.get("/control/reserve").json()
    r = proxy.post("/control/reserve", form)
    assert r.status == status, r.body
    assert isinstance(r.json(), dict)
    assert proxy.get("/control/reserve").json() == before


def test_control_disabled_without_secret(proxy_factory: Factory) -> None:
    p = proxy_factory()
    r = p.post("/control/reserve", "value=50&token=x")
    assert r.status == 403
    assert r.json() == {"error": "Control Commands Disabled - Set PW_CONTROL_SECRET to enable"}


def test_local_mode_end_to_end(proxy_factory: Factory, simulator: Any) -> None:
    from proxy.simulator import DEFAULT_PASSWORD

    p = proxy_factory({"PW_HOST": simulator.host, "PW_PASSWORD": DEFAULT_PASSWORD,
                       "PW_CONTROL_SECRET": "tok"}, simulate=False)
    assert p.get("/stats").json()["mode"] == "Local"
    agg = _wait_ok(p, "/aggregates")
    assert agg.status == 200 and "site" in agg.json()
    status = _wait_ok(p, "/api/status").json()
    assert "din" in status and "version" in status
    assert _wait_ok(p, "/soe").json()["percentage"] > 0
    assert p.post("/control/reserve", "value=33&token=tok").status == 200
    assert json.loads(p.get("/control/reserve").body)["reserve"] == pytest.approx(33, abs=0.5)
    # Firmware >= 23.44 has no vitals in local mode (404): the gateway answered that it has
    # none, so the route answers what the reference does for nothing, and health stays ok.
    vitals = p.get("/vitals")
    assert (vitals.status, vitals.body) == (200, b"null")
    assert p.get("/health").json()["status"] == "ok"


def test_gateway_web_passthrough_injects_style_and_no_cookies(proxy_factory: Factory) -> None:
    p = proxy_factory({"PW_STYLE": "grafana"})
    page = p.get("/about.html?lang=en")
    assert page.status == 200
    assert page.header("Content-Type", ).startswith("text/html")
    assert b'<link rel="stylesheet" id="pw-style" href="/styles/grafana.css">' in page.body
    assert page.body.index(b'id="pw-style"') < page.body.index(b"</head>")
    assert b"Simulated gateway" in page.body
    assert page.header("Set-Cookie") is None
    assert int(page.header("Content-Length") or -1) == len(page.body)
    css = p.get("/static/app.css")
    assert css.status == 200 and css.header("Content-Type") == "text/css"
    assert b"pw-style" not in css.body  # only HTML is touched
    missing = p.get("/no/such/page.html")
    assert missing.status == 404  # the gateway's own status, not a forced 200
