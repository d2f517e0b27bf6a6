"""The web UI in headless Chromium, against the real proxy and its gateway simulator.

Screenshots go to artifacts/screenshots/ (git-ignored) for a human to look at.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import BROWSER_TESTS, SHOTS, Page

pytestmark = BROWSER_TESTS
SIZES = ((300, 300), (800, 480), (1920, 1080))
STYLES = {  # style -> computed background of <body> in a plain tab (light colour scheme)
    "clear": "rgb(255, 255, 255)",  # transparent in a frame; in a tab its own backdrop
    "black": "rgb(0, 0, 0)",
    "white": "rgb(255, 255, 255)",
    "grafana": "rgb(22, 23, 25)",
    "grafana-dark": "rgb(17, 18, 23)",
    "dakboard": "rgb(0, 0, 0)",
    "solar": "rgb(255, 255, 255)",
}
FAST = "?interval=0.5"
POLL = FAST + "&stream=off"  # the polling the page falls back to, on its own
SOURCE = "document.getElementById('flow').getAttribute('data-source')"

READ_FLOW = """(() => {
  const svg = document.getElementById('flow');
  const text = id => document.getElementById(id).textContent.trim();
  return {state: svg.getAttribute('data-state'), grid: svg.getAttribute('data-grid'),
          updated: Number(svg.getAttribute('data-updated') || 0),
          solar: text('solar-value'), home: text('home-value'), grid_value: text('grid-value'),
          battery: text('battery-value'), soc: text('soc-value'), reserve: text('reserve-value'),
          grid_status: text('grid-status'), battery_status: text('battery-status'),
          banner: text('banner-text'), detail: text('detail')};
})()"""
STATE = "document.getElementById('flow').getAttribute('data-state')"
GRID = "document.getElementById('flow').getAttribute('data-grid')"
FRAMES = "[...document.querySelectorAll('iframe')]"
FRAMES_FRESH = (f"{FRAMES}.length >= 4 && {FRAMES}.every(f => f.contentDocument && "
                "f.contentDocument.getElementById('flow') && f.contentDocument"
                ".getElementById('flow').getAttribute('data-state') === 'fresh')")
NO_SCROLLBARS = """(() => { const e = document.documentElement;
  return e.scrollWidth <= e.clientWidth && e.scrollHeight <= e.clientHeight; })()"""


def prefix(proxy: Any) -> str:
    """PROXY_BASE_URL as a path ("/" or "/pw-proxy/")."""
    return str(proxy.base[len(proxy.url) - 1:])


def get_json(proxy: Any, route: str) -> Any:
    reply = proxy.get(prefix(proxy) + route)
    assert reply.status == 200, (route, reply.status, reply.body[:200])
    return reply.json()


def wait_state(page: Page, state: str, timeout: float = 20) -> None:
    page.wait_for(f"{STATE} === {state!r}", timeout=timeout)


def read_flow(page: Page) -> dict[str, Any]:
    value: dict[str, Any] = page.evaluate(READ_FLOW)
    return value


def kw(text: str) -> float:
    match = re.fullmatch(r"(\d+\.\d) kW", text)
    assert match, f"not a kW value: {text!r}"
    return float(match.group(1))


def percent(text: str) -> int:
    match = re.fullmatch(r"(?:reserve )?(\d+)%", text)
    assert match, f"not a percentage: {text!r}"
    return int(match.group(1))


def shoot(page: Page, name: str) -> None:
    time.sleep(0.5)  # let the flows fade in and the dots move
    page.screenshot(SHOTS / f"{name}.png")


def assert_inside_proxy(page: Page, base: str) -> None:
    outside = [url for url in page.requests if not url.startswith(base)]
    assert page.requests, "the page made no requests at all"
    assert not outside, f"requests outside the proxy base {base}: {outside}"


def assert_clean(page: Page, base: str) -> None:
    assert not page.console_errors, page.console_errors
    assert_inside_proxy(page, base)


def next_updates(page: Page, count: int, timeout: float = 15) -> None:
    """Wait until the page has finished `count` more polls."""
    for _ in range(count):
        before = read_flow(page)["updated"]
        page.wait_for(f"Number(document.getElementById('flow').getAttribute('data-updated'))"
                      f" > {before}", timeout=timeout)


# --------------------------------------------------------------------------- values


def test_page_shows_the_simulators_values(proxy_factory: Any, open_page: Any) -> None:
    # A long cache window, so the page and this test read the very same cached values.
    proxy = proxy_factory({"PW_CACHE_EXPIRE": "30", "PW_CACHE_TTL": "60"})
    page = open_page(800, 480)
    page.goto(proxy.base + POLL)
    wait_state(page, "fresh")
    assert page.evaluate(SOURCE) == "poll"
    for _attempt in range(3):
        agg = get_json(proxy, "aggregates")
        app_soe = get_json(proxy, "api/system_status/soe")["percentage"]
        next_updates(page, 2)  # the second poll started after the reads above
        shown = read_flow(page)
        if (get_json(proxy, "aggregates") == agg
                and get_json(proxy, "api/system_status/soe")["percentage"] == app_soe):
            break
    else:
        pytest.fail("the simulator's values never held still for one cache window")

    for meter, field in (("solar", "solar"), ("load", "home"), ("site", "grid_value"),
                         ("battery", "battery")):
        watts = agg[meter]["instant_power"]
        assert abs(kw(shown[field]) - abs(watts) / 1000) <= 0.051, (meter, watts, shown[field])
    site, battery = agg["site"]["instant_power"], agg["battery"]["instant_power"]
    if abs(site) >= 10:
        assert shown["grid_status"] == ("importing" if site > 0 else "exporting")
    if abs(battery) >= 10:
        assert shown["battery_status"] == ("discharging" if battery > 0 else "charging")

    # The page shows the state of charge on the Tesla-app scale, i.e. what
    # api/system_status/soe answers; that is /soe (raw) rescaled by the proxy.
    raw_soe = get_json(proxy, "soe")["percentage"]
    assert abs(app_soe - (raw_soe / 0.95 - 5 / 0.95)) < 0.01
    assert abs(percent(shown["soc"]) - min(100, max(0, app_soe))) <= 0.5
    raw_reserve = get_json(proxy, "api/operation")["backup_reserve_percent"]
    assert abs(percent(shown["reserve"]) - max(0, raw_reserve / 0.95 - 5 / 0.95)) <= 0.5

    assert shown["grid"] == "up"
    assert shown["banner"] == ""
    assert page.evaluate(NO_SCROLLBARS)
    shoot(page, "flow-values")
    assert_clean(page, proxy.base)


def test_page_follows_the_stream(proxy_factory: Any, open_page: Any) -> None:
    # One window of a minute: the pushed snapshot is what the detail route answers now.
    proxy = proxy_factory({"PW_CACHE_EXPIRE": "60", "PW_CACHE_TTL": "120"})
    page = open_page(800, 480)
    page.goto(proxy.base + FAST)
    wait_state(page, "fresh")
    page.wait_for(f"{SOURCE} === 'stream'", timeout=10)
    data = get_json(proxy, "api/gateways/default")["data"]
    shown = read_flow(page)
    for field, key in (("solar", "solar_power"), ("home", "load_power"), ("grid_value", "site_power"),
                       ("battery", "battery_power")):
        assert abs(kw(shown[field]) - abs(data[key]) / 1000) <= 0.051, (field, data[key], shown[field])
    app_soe = data["battery_percent"] / 0.95 - 5 / 0.95
    assert abs(percent(shown["soc"]) - min(100, max(0, app_soe))) <= 0.5
    raw_reserve = get_json(proxy, "api/operation")["backup_reserve_percent"]
    page.wait_for("document.getElementById('reserve-value').textContent.trim() !== 'reserve —'")
    assert abs(percent(read_flow(page)["reserve"]) - max(0, raw_reserve / 0.95 - 5 / 0.95)) <= 0.5
    assert any("/events?gw=default" in url for url in page.requests)
    assert not any("/aggregates" in url for url in page.requests), "no polling while streaming"
    assert proxy.running.topics.stats()["topics"]["gateway:default"]["listeners"] == 1
    shoot(page, "flow-stream")
    assert_clean(page, proxy.base)


def test_page_polls_when_streams_are_refused(proxy_factory: Any, open_page: Any) -> None:
    proxy = proxy_factory({"PW_MAX_STREAMS": "0"})
    page = open_page(800, 480)
    page.goto(proxy.base + FAST)
    wait_state(page, "fresh")
    assert page.evaluate(SOURCE) == "poll"
    next_updates(page, 2)
    assert any("/aggregates" in url for url in page.requests)
    assert_inside_proxy(page, proxy.base)


def test_flows_move_with_the_power(proxy_factory: Any, open_page: Any) -> None:
    proxy = proxy_factory()
    page = open_page(800, 480)
    page.goto(proxy.base + FAST)
    wait_state(page, "fresh")
    offsets = "document.getElementById('flow-home').style.strokeDashoffset"
    first = page.evaluate(offsets)
    page.wait_for(f"{offsets} !== {first!r}", timeout=5)
    assert page.evaluate("document.getElementById('flow-home').classList.contains('active')")
    assert_clean(page, proxy.base)


# --------------------------------------------------------------------------- states


def test_grid_outage_is_unmistakable(proxy_factory: Any, open_page: Any) -> None:
    proxy = proxy_factory()
    page = open_page(800, 480)
    page.goto(proxy.base + FAST)
    wait_state(page, "fresh")
    assert page.evaluate(GRID) == "up"

    proxy.sim.set_fault("grid_outage")
    page.wait_for(f"{GRID} === 'down'", timeout=20)
    shown = read_flow(page)
    assert shown["banner"].startswith("GRID OUTAGE")
    assert shown["grid_status"] == "OFF-GRID"
    assert page.evaluate("getComputedStyle(document.querySelector('.grid-cut')).display") != "none"
    shoot(page, "state-outage")

    proxy.sim.clear_faults()
    page.wait_for(f"{GRID} === 'up'", timeout=20)
    assert read_flow(page)["banner"] == ""
    assert_clean(page, proxy.base)


def test_stale_data_is_marked_and_greyed(proxy_factory: Any, open_page: Any) -> None:
    # A long last-good window: the proxy serves X-Cache: STALE for a minute.
    proxy = proxy_factory({"PW_CACHE_EXPIRE": "1", "PW_CACHE_TTL": "60"})
    page = open_page(800, 480)
    page.goto(proxy.base + FAST)
    wait_state(page, "fresh")

    proxy.sim.set_fault("down")
    wait_state(page, "stale", timeout=30)
    shown = read_flow(page)
    assert shown["banner"] == "DATA STALE"
    assert "s old" in shown["detail"]
    kw(shown["home"])  # last good values stay visible (greyed), never zeros or blanks
    opacity = page.evaluate("getComputedStyle(document.getElementById('home-value')).opacity")
    assert float(opacity) < 1
    shoot(page, "state-stale")
    assert_inside_proxy(page, proxy.base)


def test_gateway_down_shows_unavailable(proxy_factory: Any, open_page: Any) -> None:
    proxy = proxy_factory()
    page = open_page(800, 480)
    page.goto(proxy.base + FAST)
    wait_state(page, "fresh")

    proxy.sim.set_fault("down")
    wait_state(page, "unavailable", timeout=45)
    shown = read_flow(page)
    assert shown["banner"] == "GATEWAY UNAVAILABLE"
    for field in ("solar", "home", "grid_value", "battery", "soc"):
        assert shown[field] == "—", (field, shown[field])
    assert shown["reserve"] == "reserve —"
    assert page.evaluate("document.querySelectorAll('.flow.active').length") == 0
    shoot(page, "state-unavailable")
    assert_inside_proxy(page, proxy.base)

    proxy.sim.clear_faults()
    wait_state(page, "fresh", timeout=60)
    kw(read_flow(page)["home"])


def test_proxy_gone_shows_unreachable(proxy_factory: Any, open_page: Any) -> None:
    proxy = proxy_factory()
    page = open_page(300, 300)
    page.goto(proxy.base + FAST)
    wait_state(page, "fresh")
    proxy.stop()
    wait_state(page, "unavailable", timeout=20)
    shown = read_flow(page)
    assert shown["banner"] == "PROXY UNREACHABLE"
    assert shown["home"] == "—"


# --------------------------------------------------------------------------- styles


@pytest.mark.parametrize("style", list(STYLES))
def test_each_style_renders(proxy_factory: Any, open_page: Any, style: str) -> None:
    proxy = proxy_factory()
    for width, height in SIZES:
        page = open_page(width, height)
        page.goto(proxy.base + f"?style={style}&interval=1")
        wait_state(page, "fresh")
        page.wait_for("document.fonts.status === 'loaded'")
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == STYLES[style]
        assert page.evaluate("document.getElementById('pw-style').getAttribute('href')") == (
            f"{prefix(proxy)}styles/{style}.css")
        battery = page.evaluate("getComputedStyle(document.getElementById('node-battery')).display")
        assert (battery == "none") == (style == "solar")
        assert page.evaluate(NO_SCROLLBARS), f"scrollbars at {width}x{height}"
        shoot(page, f"style-{style}-{width}x{height}")
        assert_clean(page, proxy.base)


def test_pw_style_is_the_default_and_query_overrides(proxy_factory: Any, open_page: Any) -> None:
    proxy = proxy_factory({"PW_STYLE": "grafana"})
    page = open_page(400, 300)
    background = "getComputedStyle(document.body).backgroundColor"
    page.goto(proxy.base + FAST)
    wait_state(page, "fresh")
    assert page.evaluate(background) == STYLES["grafana"]
    page.goto(proxy.base + "?style=white")
    page.wait_for(f"{background} === {STYLES['white']!r}")
    page.goto(proxy.base + "?style=nonsense")
    page.wait_for(f"{background} === {STYLES['grafana']!r}")
    page.goto(proxy.base + "?style=solar")
    page.wait_for("getComputedStyle(document.getElementById('flow-battery')).display === 'none'")
    assert_clean(page, proxy.base)


# --------------------------------------------------------------------------- base URL, caching


def test_base_url_prefixes_every_request(proxy_factory: Any, open_page: Any) -> None:
    proxy = proxy_factory({"PROXY_BASE_URL": "/pw-proxy/"})
    assert proxy.base.endswith("/pw-proxy/")
    page = open_page(800, 480)
    page.goto(proxy.base + FAST)
    wait_state(page, "fresh")
    next_updates(page, 1)
    assert any(url.startswith(proxy.base + "events?gw=default") for url in page.requests)
    assert_clean(page, proxy.base)

    polling = open_page(800, 480)
    polling.goto(proxy.base + POLL)
    wait_state(polling, "fresh")
    next_updates(polling, 1)
    assert any(url.startswith(proxy.base + "aggregates") for url in polling.requests)
    assert_clean(polling, proxy.base)

    console = open_page(1024, 768)
    console.goto(proxy.base + "console")
    console.wait_for("document.getElementById('counters').children.length > 0")
    hrefs = console.evaluate("[...document.querySelectorAll('#route-list a')].map(a => a.href)")
    assert hrefs and all(h.startswith(proxy.base) for h in hrefs)
    assert_clean(console, proxy.base)

    example = open_page(1600, 1000)
    example.goto(proxy.base + "example.html")
    example.wait_for(FRAMES_FRESH, timeout=30)
    assert_clean(example, proxy.base)


def test_browser_cache_applies_to_assets(proxy_factory: Any, open_page: Any) -> None:
    proxy = proxy_factory({"PW_BROWSER_CACHE": "3600"})
    page = open_page(800, 480)
    page.goto(proxy.base + FAST)
    wait_state(page, "fresh")
    for asset in ("flow.js", "common.js", "flow.css", "styles/clear.css"):
        headers = page.responses[proxy.base + asset]["headers"]
        assert "max-age=3600" in headers.get("cache-control", ""), (asset, headers)
    page_headers = page.responses[proxy.base + FAST]["headers"]
    assert "max-age" not in page_headers.get("cache-control", "")
    assert_clean(page, proxy.base)


# --------------------------------------------------------------------------- other pages


def test_console_is_readable(proxy_factory: Any, open_page: Any) -> None:
    proxy = proxy_factory()
    get_json(proxy, "aggregates")  # something in the cache to show
    for width, height in ((1280, 800), (800, 480)):
        page = open_page(width, height)
        page.goto(proxy.base + "console?interval=1")
        page.wait_for("['ok','degraded','starting'].includes("
                      "document.getElementById('status').textContent)")
        page.wait_for("document.querySelectorAll('#cache-table tbody td.num').length > 0")
        counters = page.evaluate("document.getElementById('counters').innerText")
        for label in ("GETs", "POSTs", "Errors", "Timeouts"):
            assert label in counters
        facts = page.evaluate("document.getElementById('gateway-facts').innerText")
        assert "Mode" in facts and "Cooldown" in facts
        links = page.evaluate("[...document.querySelectorAll('#route-list a')]"
                              ".map(a => a.getAttribute('href'))")
        for route in ("aggregates", "soe", "vitals", "csv", "health", "stats", "pw/level"):
            assert prefix(proxy) + route in links
        shoot(page, f"console-{width}x{height}")
        assert_clean(page, proxy.base)


COUNTERS = ("[...document.querySelectorAll('#counters .counter')]"
            ".map(c => [c.innerText, c.querySelector('b').className])")


def test_console_colours_only_real_problems(proxy_factory: Any, open_page: Any) -> None:
    proxy = proxy_factory({"PW_CACHE_TTL": "1"})
    assert proxy.request("POST", "/aggregates").status == 405  # one error in the counters
    proxy.sim.set_fault("down")
    deadline = time.monotonic() + 30
    while proxy.get("/vitals").status != 503:  # one answer the gateway failed: a timeout
        assert time.monotonic() < deadline, "the gateway never failed"
        time.sleep(0.2)  # the machine is shared: no busy loop while the cache window runs out
    proxy.sim.clear_faults()
    deadline = time.monotonic() + 30
    while proxy.get("/health").status != 200:  # healthy again after its next real answer
        assert time.monotonic() < deadline, "the gateway never came back"
        proxy.get("/aggregates")
        time.sleep(0.2)
    page = open_page(1280, 800)
    page.goto(proxy.base + "console?interval=1")
    page.wait_for("document.getElementById('status').textContent === 'ok'")
    page.wait_for("document.querySelector('#cache-table td.muted') !== null")  # of an earlier window
    counters = dict(page.evaluate(COUNTERS))
    errors = next(k for k in counters if k.endswith("Errors"))
    timeouts = next(k for k in counters if k.endswith("Timeouts"))
    assert int(errors.split()[0]) >= 1 and int(timeouts.split()[0]) >= 1, counters
    assert set(counters.values()) == {""}, f"coloured on a healthy gateway: {counters}"
    coloured = page.evaluate("[...document.querySelectorAll('.warn, .bad')]"
                             ".map(e => e.parentElement.innerText)")
    assert not coloured, coloured
    assert "earlier window" in page.evaluate("document.getElementById('cache-table').innerText")
    assert page.evaluate("document.getElementById('problem').hidden")
    shoot(page, "console-healthy-with-errors")

    proxy.sim.set_fault("down")  # now they are news: the gateway is failing
    page.wait_for("document.getElementById('status').textContent === 'degraded'", timeout=30)
    page.wait_for(f"{COUNTERS}.some(c => c[0].endsWith('Errors') && c[1] === 'warn')")
    problem = page.evaluate("[document.getElementById('problem').innerText, "
                            "document.getElementById('problem').getAttribute('data-level')]")
    assert problem[0].startswith(("Gateway degraded", "Gateway unreachable")), problem
    assert problem[1] == "problem", problem
    shoot(page, "console-degraded")
    assert_inside_proxy(page, proxy.base)


def test_example_embeds_the_animation(proxy_factory: Any, open_page: Any) -> None:
    proxy = proxy_factory()
    page = open_page(1600, 1000)
    page.goto(proxy.base + "example.html")
    page.wait_for(FRAMES_FRESH, timeout=30)
    no_scroll = page.evaluate(f"""{FRAMES}.every(f => {{
        const e = f.contentDocument.documentElement;
        return e.scrollWidth <= e.clientWidth && e.scrollHeight <= e.clientHeight; }})""")
    assert no_scroll
    shoot(page, "example")
    assert_clean(page, proxy.base)


def test_gateway_pages_get_the_style(proxy_factory: Any, open_page: Any) -> None:
    """A gateway HTML page as the passthrough relays it, styled by PW_STYLE.

    The simulator's only HTML pages (/ and /index.html) are shadowed by web/, so the
    page is built with the passthrough's own injection (proxy.web) and written into
    a document at the proxy's origin; its CSS and JS then really come through the
    passthrough and the gateway's own stylesheet must not win over ours.
    """
    from proxy.api.web import inject, style_tags
    from proxy.simulator.web import INDEX_HTML

    proxy = proxy_factory({"PW_STYLE": "black"})
    html = inject(INDEX_HTML, style_tags(proxy.running.config)).decode()
    page = open_page(800, 480)
    page.goto(proxy.base + "styles/black.css")  # any same-origin HTML document will do
    page.evaluate(f"document.open(); document.write({json.dumps(html)}); document.close()")
    page.wait_for("document.getElementById('status') && [...document.styleSheets]"
                  ".filter(s => s.cssRules.length).length >= 2")
    page.wait_for("document.getElementById('status').textContent.startsWith('Battery')")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == STYLES["black"]
    assert page.evaluate("getComputedStyle(document.body).color") == "rgb(255, 255, 255)"
    shoot(page, "passthrough-black")
    # The gateway page has no <link rel=icon>, so Chromium asks for /favicon.ico,
    # which the simulated gateway does not have: its 404 is not ours.
    errors = [e for e in page.console_errors if "/favicon.ico" not in e]
    assert not errors, errors
    assert_inside_proxy(page, proxy.base)


# --------------------------------------------------------------------------- several gateways


@pytest.fixture
def fleet_proxy(tmp_path: Path) -> Iterator[Any]:
    from proxy.config import load_config
    from proxy.main import start
    from tests.conftest import CONNECT_WAIT, DEFAULT_ENV, ProxyHandle

    env = {**DEFAULT_ENV, "PW_CACHE_EXPIRE": "30", "PW_CACHE_TTL": "60", "PW_AUTH_PATH": str(tmp_path)}
    handle = ProxyHandle(start(load_config(env), simulate=3, wait_connected=CONNECT_WAIT))
    yield handle
    handle.stop()


def _shown_matches(shown: dict[str, Any], load: float, solar: float) -> bool:
    return (abs(kw(shown["home"]) - abs(load) / 1000) <= 0.051
            and abs(kw(shown["solar"]) - abs(solar) / 1000) <= 0.051)


def test_flow_page_shows_one_gateway_or_all(fleet_proxy: Any, open_page: Any) -> None:
    proxy = fleet_proxy
    page = open_page(800, 480)
    page.goto(proxy.base + POLL + "&gw=sim2")
    wait_state(page, "fresh")
    next_updates(page, 1)
    agg = get_json(proxy, "api/gateways/sim2/aggregates")
    assert _shown_matches(read_flow(page), agg["load"]["instant_power"], agg["solar"]["instant_power"])
    assert any("/api/gateways/sim2/aggregates" in url for url in page.requests)
    assert_clean(page, proxy.base)

    page = open_page(800, 480)
    page.goto(proxy.base + POLL + "&gw=all")
    wait_state(page, "fresh")
    next_updates(page, 1)
    total = get_json(proxy, "api/aggregate")
    shown = read_flow(page)
    assert _shown_matches(shown, total["total_load_power"], total["total_solar_power"])
    app_soe = total["total_battery_percent"] / 0.95 - 5 / 0.95
    assert abs(percent(shown["soc"]) - min(100, max(0, app_soe))) <= 0.5
    assert shown["grid"] == "up"
    shoot(page, "flow-all-gateways")
    assert_clean(page, proxy.base)


def test_console_lists_every_gateway(fleet_proxy: Any, open_page: Any) -> None:
    proxy = fleet_proxy
    page = open_page(1280, 800)
    page.goto(proxy.base + "console?interval=1")
    page.wait_for("document.querySelectorAll('#gateway-table tbody tr').length === 4")
    rows = page.evaluate("[...document.querySelectorAll('#gateway-table tbody tr')]"
                         ".map(r => r.innerText)")
    for gid in ("sim1", "sim2", "sim3"):
        assert any(row.startswith(gid) and "ok" in row for row in rows), rows
    links = page.evaluate("[...document.querySelectorAll('#gateway-table a')]"
                          ".map(a => a.getAttribute('href'))")
    assert "/?gw=sim2" in links and "/?gw=all" in links and "/api/gateways/sim3/health" in links
    page.wait_for("document.getElementById('live').getAttribute('data-source') === 'stream'")
    page.wait_for("document.getElementById('live-facts').textContent.includes('3 of 3')")
    shoot(page, "console-gateways")
    assert_clean(page, proxy.base)


# --------------------------------------------------------------------------- API docs


def test_docs_page_lists_the_document_offline(proxy_factory: Any, open_page: Any) -> None:
    proxy = proxy_factory({"PROXY_BASE_URL": "/pw-proxy/"})
    spec = get_json(proxy, "openapi.json")
    root_ops = [(path, method) for path, item in spec["paths"].items() for method in item
                if method not in ("parameters", "description")]
    shown = [op for op in root_ops if not op[0].startswith("/api/gateways/{id}/")
             and op[1] in ("get", "post")]  # HEAD, OPTIONS and the per-gateway copies: on request
    page = open_page(1280, 900)
    page.goto(proxy.base + "docs")
    page.wait_for("document.body.getAttribute('data-ready') === '1'")
    listed = page.evaluate("[...document.querySelectorAll('details.op')]"
                           ".map(d => [d.dataset.path, d.dataset.method, !d.hidden])")
    assert sorted((p, m) for p, m, _ in listed) == sorted(root_ops)
    assert sorted((p, m) for p, m, visible in listed if visible) == sorted(shown)
    text = page.evaluate("document.getElementById('operations').textContent")
    for words in ("/aggregates", "/api/aggregate", "/api/gateways/{id}", "/control/reserve",
                  "/csv", "headers", "Retry-After", "503", "also per gateway"):
        assert words in text, words
    schemas = page.evaluate("[...document.querySelectorAll('#schema-list details')].map(d => d.id)")
    assert {"schema-Aggregate", "schema-Error", "schema-Health", "schema-Stats"} <= set(schemas)
    assert "controlSecret" in page.evaluate("document.getElementById('schemes').innerText")
    assert "openc2Token" in page.evaluate("document.getElementById('schemes').innerText")
    # An operation opens to its parameters, responses and body; a shape link opens the shape.
    page.evaluate("document.querySelector('details.op[data-path=\"/control/reserve\"]"
                  "[data-method=\"post\"]').open = true")
    post = page.evaluate("document.querySelector('details.op[data-path=\"/control/reserve\"]"
                         "[data-method=\"post\"]').innerText")  # shown: it is open
    assert "application/x-www-form-urlencoded" in post and "429" in post and "auth: controlSecret" in post
    page.evaluate("document.querySelector('details.op[data-path=\"/aggregates\"]').open = true")
    shoot(page, "docs-1280x900")
    page.evaluate("(() => { const f = document.getElementById('filter'); f.value = 'aggregate';"
                  " f.dispatchEvent(new Event('input')); })()")
    visible = page.evaluate("[...document.querySelectorAll('details.op:not([hidden])')]"
                            ".map(d => d.dataset.path)")
    assert visible and all("aggregate" in path for path in visible)
    page.evaluate("document.getElementById('mounted').click()")
    page.evaluate("document.getElementById('implicit').click()")
    visible = page.evaluate("[...document.querySelectorAll('details.op:not([hidden])')]"
                            ".map(d => d.dataset.path + ' ' + d.dataset.method)")
    assert {"/api/gateways/{id}/aggregates get", "/aggregates head", "/aggregates options"} <= set(visible)
    assert page.evaluate("document.getElementById('raw').getAttribute('href')") == "/pw-proxy/openapi.json"
    assert any(url == proxy.base + "openapi.json" for url in page.requests)
    assert_clean(page, proxy.base)


def test_console_says_what_is_wrong_with_the_connection(proxy_factory: Any, open_page: Any) -> None:
    from tests.brokers import free_port

    host = f"127.0.0.1:{free_port()}"
    proxy = proxy_factory({"PW_HOST": host, "PW_PASSWORD": "pw"}, simulate=False, connected=False)
    page = open_page(1024, 768)
    page.goto(proxy.base + "console?interval=1")
    why = f"cannot reach the gateway at {host} (connection refused)"
    page.wait_for("document.getElementById('problem').textContent.includes(" + json.dumps(why) + ")")
    problem = page.evaluate("document.getElementById('problem').textContent")
    assert problem.startswith(f"Gateway unreachable: {why}; ")
    facts = page.evaluate("document.getElementById('gateway-facts').innerText")
    assert f"unreachable: {why}" in facts
    shoot(page, "console-unreachable")
