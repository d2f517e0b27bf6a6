"""The /history page in headless Chromium, against a real proxy recording the simulator.

Screenshots of each style go to artifacts/screenshots/ (git-ignored).
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from proxy.config import load_config
from proxy.history import synthetic
from proxy.history.recorder import Recorder
from proxy.history.store import Store
from proxy.main import start
from tests.brokers import wait_for
from tests.browser import Page, find_chromium
from tests.conftest import CONNECT_WAIT, DEFAULT_ENV, Factory, ProxyHandle
from tests.test_browser import STYLES, assert_clean

CHROMIUM = find_chromium()

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not found; install Debian's "
                       "`chromium` (tests/run.sh does) or set $CHROMIUM"),
]

SHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
HISTORY = {"PW_HISTORY": "yes", "PW_HISTORY_COMMIT_SECONDS": "1", "PW_CACHE_EXPIRE": "1"}
ROWS = "Number(document.getElementById('power').getAttribute('data-rows'))"


def state_is(state: str) -> str:
    """Whether the page says it is in `state` (ready: drawn; off: the history is off)."""
    return f"document.getElementById('history').getAttribute('data-state') === '{state}'"


@pytest.fixture
def page_for(open_page: Callable[..., Page]) -> Callable[..., Page]:
    """Opens `url` in a new tab of the module's Chromium (conftest's `open_page`, closed at
    teardown) and waits until the page says it is in `state` (ready: drawn; off)."""
    def opened(url: str, state: str = "ready", width: int = 800, height: int = 480) -> Page:
        page = open_page(width, height)
        page.goto(url)
        page.wait_for(state_is(state))
        return page
    return opened


def seed(folder: Path, days: int = 2, step: int = 30) -> None:
    """Two days of a made-up home for gateway "default", written before the proxy starts.
    Its counters are far above the simulator's, so the live ones start a new segment."""
    store = Store(folder / "history.sqlite3")
    store.open()
    recorder = Recorder(store, {"default": ZoneInfo("America/Los_Angeles")})
    home = synthetic.Home(seed=3, utc_offset=-8 * 3600)
    home.counters = {key: value + 1e12 for key, value in home.counters.items()}
    now = int(time.time())
    synthetic.write(recorder, home, "default", now - days * 86400, now - 30, step)
    store.stop()


@pytest.fixture
def recording(proxy_factory: Factory, tmp_path: Path) -> ProxyHandle:
    seed(tmp_path / "data")  # the proxy_factory's PW_DATA_DIR
    h = proxy_factory(HISTORY)
    wait_for(lambda: h.get("/api/history?from=-60&step=1").json()["rows"][3:], what="a few windows")
    return h


def requested(page: Page, route: str) -> list[dict[str, str]]:
    """The query of every request the page made to `route`."""
    found = []
    for url in page.requests:
        parts = urllib.parse.urlsplit(url)
        if parts.path.endswith("/" + route):
            found.append(dict(urllib.parse.parse_qsl(parts.query)))
    return found


def test_the_page_draws_what_the_history_routes_answer(recording: ProxyHandle,
                                                       page_for: Callable[..., Page]) -> None:
    h = recording
    page = page_for(h.base + "history")
    asked = requested(page, "api/history")[-1]
    assert asked["gw"] == "default" and asked["points"].split(",")[-1] == "battery_level"
    answer = h.get("/api/history?" + urllib.parse.urlencode(asked)).json()
    assert abs(page.evaluate(ROWS) - len(answer["rows"])) <= 1
    levels = [row[-1] for row in answer["rows"] if row[-1] is not None]
    assert float(page.evaluate("document.getElementById('level').getAttribute('data-last')")) in levels
    lines = page.evaluate("[...document.querySelectorAll('#power path.line')]"
                          ".map(p => [p.getAttribute('data-series'), p.getAttribute('d').length])")
    assert {name for name, length in lines if length > 20} == {"solar_power", "load_power",
                                                               "battery_power", "grid_power"}
    assert page.evaluate("Number(document.getElementById('energy').getAttribute('data-days'))") >= 1
    assert page.evaluate("document.querySelectorAll('#energy rect.bar').length") >= 3
    page.screenshot(SHOTS / "history-day.png")
    assert_clean(page, h.base)


def test_outages_show_in_the_events_and_on_the_charts(recording: ProxyHandle,
                                                      page_for: Callable[..., Page]) -> None:
    h = recording
    h.sim.set_fault("grid_outage")
    wait_for(lambda: h.get("/api/events?kind=grid_down").json()["events"], what="grid_down")
    h.sim.clear_faults()
    wait_for(lambda: h.get("/api/events?kind=grid_up").json()["events"], what="grid_up")
    page = page_for(h.base + "history")
    kinds = page.evaluate("[...document.querySelectorAll('#events tbody tr')].map(r => r.dataset.kind)")
    assert kinds[:2] == ["grid_up", "grid_down"]  # newest first
    assert page.evaluate("document.querySelectorAll('#power rect.outage').length") == 1
    assert "after" in page.evaluate("document.querySelector('#events tbody tr').textContent")
    page.screenshot(SHOTS / "history-outage.png")
    assert_clean(page, h.base)


def test_dragging_across_the_chart_zooms_and_reset_goes_back(recording: ProxyHandle,
                                                             page_for: Callable[..., Page]) -> None:
    h = recording
    page = page_for(h.base + "history?range=week")
    week = requested(page, "api/history")[-1]
    assert int(week["to"]) - int(week["from"]) == 7 * 86400
    page.evaluate("""(() => {
      const svg = document.getElementById('power'), r = svg.getBoundingClientRect();
      const at = (type, x) => svg.dispatchEvent(new PointerEvent(type, {clientX: r.left + x,
                                                 clientY: r.top + 50, bubbles: true}));
      at('pointerdown', r.width - 200); at('pointermove', r.width - 100); at('pointerup', r.width - 30);
    })()""")
    page.wait_for("!document.getElementById('reset').hidden")
    zoomed = wait_for(lambda: (q := requested(page, "api/history")[-1]) != week and q, what="zoomed")
    width = page.evaluate("document.getElementById('power').clientWidth - 60")  # the plot's width
    expected = 7 * 86400 * 170 / width
    assert abs(int(zoomed["to"]) - int(zoomed["from"]) - expected) < 0.05 * expected
    assert int(week["from"]) < int(zoomed["from"]) < int(zoomed["to"]) <= int(week["to"])
    page.wait_for(state_is("ready"))
    page.evaluate("document.getElementById('reset').click()")
    page.wait_for("document.getElementById('reset').hidden")
    back = wait_for(lambda: (q := requested(page, "api/history")[-1]) != zoomed and q, what="reset")
    assert int(back["to"]) - int(back["from"]) == 7 * 86400
    assert_clean(page, h.base)


def test_every_style_renders(recording: ProxyHandle, page_for: Callable[..., Page]) -> None:
    h = recording
    for style in STYLES:
        page = page_for(h.base + f"history?style={style}", width=1000, height=800)
        assert page.evaluate("document.getElementById('pw-style').getAttribute('href')").endswith(
            f"styles/{style}.css")
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background != "rgba(0, 0, 0, 0)", style  # always an opaque page background
        battery = page.evaluate("getComputedStyle(document.getElementById('level')"
                                ".closest('section')).display")
        assert (battery == "none") == (style == "solar"), style  # solar-only: no battery chart
        solar = page.evaluate("getComputedStyle(document.querySelector('#power .line.solar')).stroke")
        assert solar and solar not in ("none", "rgb(0, 0, 0)"), (style, solar)
        page.screenshot(SHOTS / f"history-{style}.png")
        assert_clean(page, h.base)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[ProxyHandle]:
    env = {**DEFAULT_ENV, **HISTORY, "PW_AUTH_PATH": str(tmp_path), "PW_DATA_DIR": str(tmp_path / "d")}
    handle = ProxyHandle(start(load_config(env, simulate=True), simulate=2, wait_connected=CONNECT_WAIT))
    yield handle
    handle.stop()


def test_gw_picks_a_gateway_or_all_of_them(fleet: ProxyHandle, page_for: Callable[..., Page]) -> None:
    wait_for(lambda: fleet.get("/api/history?gw=all&from=-60&step=1").json()["rows"][2:], what="data")
    for gw in ("sim2", "all"):
        page = page_for(fleet.base + f"history?gw={gw}")
        assert {q.get("gw") for q in requested(page, "api/history")} == {gw}
        events_asked = requested(page, "api/events")[-1]
        assert events_asked.get("gw") == (None if gw == "all" else gw)
        assert page.evaluate(ROWS) > 0
        assert page.evaluate("document.getElementById('gateway').textContent") == (
            "all gateways" if gw == "all" else f"gateway {gw}")
        assert_clean(page, fleet.base)


def test_history_off_says_so(proxy_factory: Factory, page_for: Callable[..., Page]) -> None:
    h = proxy_factory()  # PW_HISTORY=no in the tests' defaults
    page = page_for(h.base + "history", state="off")
    assert "PW_HISTORY=no" in page.evaluate("document.getElementById('problem').textContent")
    assert not any("/api/" in url and "history" not in url and "events" not in url
                   for url in page.requests)
