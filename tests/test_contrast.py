"""Every page in every style, as people see it: text contrast measured in headless Chromium
(WCAG AA, tests/contrast.py), the backdrop a transparent style gives itself in a plain tab
but not in a frame, and a screenshot of each for a human to look at
(artifacts/screenshots/page-*.png, git-ignored)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser import BROWSER_TESTS, SHOTS, Chromium, Page
from tests.contrast import failures, texts

pytestmark = BROWSER_TESTS
STYLES = ("clear", "black", "white", "grafana", "grafana-dark", "dakboard", "solar")
TRANSPARENT = ("clear", "solar")  # the styles that follow prefers-color-scheme in a plain tab
FLOW_FRESH = "document.getElementById('flow').getAttribute('data-state') === 'fresh'"
# page -> (path with its query, what says the page has drawn its data)
PAGES = {
    "flow": ("?stream=off&interval=3600", FLOW_FRESH),
    "console": ("console?interval=3600",
                "document.querySelectorAll('#cache-table tbody td.num').length > 0 && "
                "document.getElementById('counters').children.length > 0"),
    "docs": ("docs", "document.body.getAttribute('data-ready') === '1'"),
    "help": ("help", "document.querySelectorAll('.facts th').length > 20"),
}
CASES = [(page, style, "light") for page in PAGES for style in STYLES]
CASES += [(page, style, "dark") for page in PAGES for style in TRANSPARENT]
BANNERS = {  # what flow.js sets for each banner, forced here so every banner is measured
    "loading": ("loading", "unknown", "CONNECTING…"),
    "stale": ("stale", "up", "DATA STALE"),
    "unavailable": ("unavailable", "unknown", "GATEWAY UNAVAILABLE"),
    "outage": ("fresh", "down", "GRID OUTAGE"),
}
BACKGROUND = "getComputedStyle(document.body).backgroundColor"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One proxy for the module: the pages only read it. A long window keeps it calm."""
    from proxy.config import load_config
    from proxy.main import start
    from tests.conftest import CONNECT_WAIT, DEFAULT_ENV, ProxyHandle

    tmp = tmp_path_factory.mktemp("contrast")
    env = {**DEFAULT_ENV, "PW_CACHE_EXPIRE": "30", "PW_CACHE_TTL": "60", "PW_AUTH_PATH": str(tmp),
           "PW_CONTROL_SECRET": "contrast"}
    handle = ProxyHandle(start(load_config(env, simulate=True), wait_connected=CONNECT_WAIT))
    handle.get("/aggregates")  # something in the cache for the console to list
    yield handle
    handle.stop()


def open_page(chromium: Chromium, scheme: str, width: int = 1000, height: int = 700) -> Page:
    """A plain tab (no backdrop colour of the test's own) with the reader's colour scheme."""
    page = chromium.new_page(width, height)
    page.send("Emulation.setEmulatedMedia",
              {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
    return page


def show(site: Any, page: Page, name: str, style: str) -> None:
    path, ready = PAGES[name]
    page.goto(site.base + path + ("&" if "?" in path else "?") + f"style={style}")
    page.wait_for(ready, timeout=20)
    page.wait_for("document.fonts.status === 'loaded' && [...document.styleSheets]"
                  ".every(s => { try { return s.cssRules !== null; } catch (e) { return false; } })")


def assert_readable(page: Page, what: str) -> None:
    measured = texts(page)
    assert len(measured) >= 5, f"{what}: hardly any text measured: {measured}"
    bad = failures(measured)
    assert not bad, f"{what}: text below WCAG AA:\n" + "\n".join(map(str, bad))


@pytest.mark.parametrize(("name", "style", "scheme"), CASES)
def test_text_meets_wcag_aa(chromium: Chromium, site: Any, name: str, style: str, scheme: str) -> None:
    page = open_page(chromium, scheme)
    try:
        show(site, page, name, style)
        assert_readable(page, f"{name} {style} {scheme}")
        page.screenshot(SHOTS / f"page-{name}-{style}-{scheme}.png", full_page=True)
        assert not page.console_errors, page.console_errors
    finally:
        page.close()


@pytest.mark.parametrize("style", STYLES)
def test_flow_banners_and_small_frames_are_readable(chromium: Chromium, site: Any, style: str) -> None:
    page = open_page(chromium, "light", 300, 300)  # the smallest size the page is made for
    try:
        show(site, page, "flow", style)
        assert_readable(page, f"flow {style} 300x300")
        for banner, (state, grid, text) in BANNERS.items():
            page.evaluate(f"""(() => {{ const svg = document.getElementById('flow');
              svg.setAttribute('data-state', {state!r}); svg.setAttribute('data-grid', {grid!r});
              document.getElementById('banner-text').textContent = {text!r}; }})()""")
            shown = [t for t in texts(page) if t.where == "<text banner-text>"]
            assert [t.text for t in shown] == [text], (banner, shown)
            assert shown[0].ratio >= shown[0].needed, f"{style} {banner} banner: {shown[0]}"
            page.screenshot(SHOTS / f"page-flow-banner-{banner}-{style}.png")
    finally:
        page.close()


@pytest.mark.parametrize(("scheme", "backdrop"), [("light", "rgb(255, 255, 255)"),
                                                  ("dark", "rgb(20, 22, 26)")])
def test_clear_in_a_tab_has_a_backdrop_by_colour_scheme(chromium: Chromium, site: Any, scheme: str,
                                                        backdrop: str) -> None:
    page = open_page(chromium, scheme)
    try:
        for style in TRANSPARENT:
            show(site, page, "flow", style)
            assert page.evaluate("document.documentElement.getAttribute('data-backdrop')") == "own"
            page.wait_for(f"{BACKGROUND} === {backdrop!r}")
        # ?backdrop=none: transparent anyway (a browser source in a video mixer, say)
        page.goto(site.base + "?style=clear&stream=off&backdrop=none")
        page.wait_for(FLOW_FRESH)
        assert page.evaluate(BACKGROUND) == "rgba(0, 0, 0, 0)"
        assert page.evaluate("document.getElementById('pw-backdrop')") is None
    finally:
        page.close()


def test_clear_in_a_frame_stays_transparent(chromium: Chromium, site: Any) -> None:
    page = open_page(chromium, "dark", 1600, 1000)
    try:
        page.goto(site.base + "example.html")
        frames = "[...document.querySelectorAll('iframe')]"
        page.wait_for(f"{frames}.length >= 5 && {frames}.every(f => f.contentDocument && "
                      "f.contentDocument.getElementById('flow') && f.contentDocument"
                      ".getElementById('flow').getAttribute('data-state') === 'fresh')", timeout=30)
        seen = page.evaluate(f"""{frames}.map(f => {{ const d = f.contentDocument;
            return [new URL(f.src).searchParams.get('style'),
                    getComputedStyle(d.body).backgroundColor,
                    d.documentElement.getAttribute('data-backdrop')]; }})""")
        for style, background, backdrop in seen:
            assert backdrop == "none", style
            if style in TRANSPARENT:
                assert background == "rgba(0, 0, 0, 0)", (style, background)
            else:
                assert background != "rgba(0, 0, 0, 0)", (style, background)
        assert {s for s, _, _ in seen} >= set(TRANSPARENT)
        assert_readable(page, "example.html")  # the page's own text; the frames are theirs
        page.screenshot(SHOTS / "page-example.png")
    finally:
        page.close()
