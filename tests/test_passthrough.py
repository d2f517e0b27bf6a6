"""The gateway web passthrough, shielded: counted at the simulator, through real sockets.

The simulator counts every request it receives per path; these tests assert how
many of the proxy's page requests reached it (single flight, cache of answers
and 404s, the gateway's cooldown after 429/503, the cap on distinct paths).
"""

from __future__ import annotations

import http.client
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from proxy.api.app import App
from proxy.api.mounts import mounts
from proxy.api.passthrough import FETCHES_PER_PERIOD, TOO_MANY, Passthrough
from proxy.api.web import WebFiles, style_tags
from proxy.httpd.server import HTTPServer
from tests.conftest import Factory, ProxyHandle, Reply

LONG = {"PW_CACHE_EXPIRE": "60"}  # one period spans the whole test


def page_requests(h: ProxyHandle, path: str) -> int:
    return int(h.sim.stats()["paths"].get(path, 0))


def web_requests(h: ProxyHandle) -> int:
    """Gateway requests for anything but its APIs (a data read may still be settling)."""
    paths: dict[str, int] = h.sim.stats()["paths"]
    return sum(n for p, n in paths.items() if not p.startswith(("/api/", "/tedapi/")))


def assert_json_503(reply: Reply) -> None:
    assert reply.status == 503, (reply.status, reply.body[:200])
    assert reply.header("Content-Type") == "application/json"
    assert reply.json()["error"]
    assert int(reply.header("Retry-After") or 0) >= 1


def together(h: ProxyHandle, path: str, n: int) -> list[Reply]:
    """n clients ask for `path` at the same moment, each on its own connection."""
    start = threading.Barrier(n)

    def one(_: int) -> Reply:
        start.wait()
        return h.get(path)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def wait_for(what: str, check: Callable[[], Any], attempts: int = 200) -> Any:
    """Poll `check` (20 ms apart) until it returns something truthy."""
    stop = threading.Event()
    for _ in range(attempts):
        value = check()
        if value:
            return value
        stop.wait(0.02)
    pytest.fail(f"gave up waiting for {what}")


@pytest.mark.parametrize("path", ["/about.html", "/static/app.css", "/static/app.js"])
def test_many_browsers_one_gateway_request(proxy_factory: Factory, path: str) -> None:
    h = proxy_factory(LONG)
    h.sim.reset()
    replies = together(h, path, 50)
    assert page_requests(h, path) == 1
    assert web_requests(h) == 1
    ok = [r for r in replies if r.status == 200]
    assert ok, [r.status for r in replies]
    assert len({r.body for r in ok}) == 1
    for r in replies:
        if r.status != 200:  # only a slow gateway could leave an asker without the answer
            assert_json_503(r)
    # Later browsers are served the kept copy.
    again = h.get(path)
    assert again.status == 200 and again.body == ok[0].body
    assert again.header("X-Cache") == "HIT" and again.header("Age") is not None
    assert page_requests(h, path) == 1


def test_a_404_is_kept_too(proxy_factory: Factory) -> None:
    h = proxy_factory(LONG)
    h.sim.reset()
    replies = together(h, "/no/such/page.html", 20)
    replies += [h.get("/no/such/page.html") for _ in range(5)]
    for r in replies:
        assert r.status in (404, 503), r.status
        assert r.header("Content-Type") == "application/json"
    assert sum(r.status == 404 for r in replies) >= 6
    assert page_requests(h, "/no/such/page.html") == 1
    # Another query string is another gateway resource.
    assert h.get("/no/such/page.html?v=2").status == 404
    assert page_requests(h, "/no/such/page.html") == 2


@pytest.mark.parametrize("status", [429, 503])
def test_refusal_starts_the_gateway_cooldown(proxy_factory: Factory, status: int) -> None:
    h = proxy_factory()  # PW_CACHE_EXPIRE=1: kept copies expire during the test
    h.sim.reset()
    first = h.get("/about.html")
    assert first.status == 200 and page_requests(h, "/about.html") == 1
    h.sim.set_fault("status", paths=["/about.html", "/static/app.js"], status=status, retry_after=120)

    # Once the kept copy has expired, the next asker meets the refusal and gets the last copy.
    stale = wait_for("the proxy to ask the gateway again",
                     lambda: (r := h.get("/about.html")).header("X-Cache") != "HIT" and r)
    assert stale.status == 200 and stale.header("X-Cache") == "STALE"
    assert stale.body == first.body
    assert page_requests(h, "/about.html") == 2
    refused = h.sim.stats()["total"]

    health = h.get("/health")
    assert health.status == 503
    assert health.json()["gateway"]["cooldown_remaining_seconds"] > 60  # its Retry-After counts

    # The cooldown is the gateway's: pages, never-seen pages and data all leave it alone.
    for _ in range(3):
        again = h.get("/about.html")
        assert again.status == 200 and again.header("X-Cache") == "STALE"
        never = h.get("/static/app.js")
        assert_json_503(never)
        assert int(never.header("Retry-After") or 0) > 60
        assert h.get("/soe").status in (200, 503)
    assert h.sim.stats()["total"] == refused
    assert page_requests(h, "/static/app.js") == 0


def test_distinct_paths_capped_per_period(proxy_factory: Factory) -> None:
    h = proxy_factory(LONG)
    h.sim.reset()
    paths = [f"/scan/{uuid.uuid4().hex}.html" for _ in range(200)]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(h.get, paths))
    fetched = [p for p, r in zip(paths, replies, strict=True) if r.status == 404]
    refused = [r for r in replies if r.status != 404]
    assert len(fetched) == FETCHES_PER_PERIOD
    assert web_requests(h) == FETCHES_PER_PERIOD
    for r in refused:
        assert_json_503(r)
        assert r.json()["error"] == TOO_MANY
    # Past the cap: kept answers still come back, new paths cost the gateway nothing.
    assert h.get(fetched[0]).status == 404
    assert_json_503(h.get("/about.html"))
    assert web_requests(h) == FETCHES_PER_PERIOD
    # Data routes have their own budget.
    assert h.get("/soe").status == 200


def test_style_injected_once_and_kept(proxy_factory: Factory) -> None:
    h = proxy_factory({**LONG, "PW_STYLE": "grafana-dark"})
    h.sim.reset()
    tag = b'<link rel="stylesheet" id="pw-style" href="/styles/grafana-dark.css">'
    for state in ("MISS", "HIT", "HIT"):
        page = h.get("/about.html?lang=en")
        assert page.status == 200 and page.header("X-Cache") == state
        assert page.header("Content-Type", ).startswith("text/html")
        assert page.body.count(tag) == 1
        assert page.body.index(tag) < page.body.index(b"</head>")
        assert page.header("Cache-Control") == "no-cache, no-store"
        assert int(page.header("Content-Length") or -1) == len(page.body)
    css = h.get("/static/app.css")
    assert css.status == 200 and css.header("Content-Type") == "text/css"
    assert b"pw-style" not in css.body
    assert page_requests(h, "/about.html") == 1 and page_requests(h, "/static/app.css") == 1


@pytest.fixture
def small_pages(proxy_factory: Factory) -> Iterator[tuple[ProxyHandle, int]]:
    """The proxy's gateway behind a second app whose passthrough takes at most 64-byte bodies."""
    h = proxy_factory(LONG)
    running = h.running
    passthrough = Passthrough(running.gateway, tags=style_tags(running.config), max_body=64)
    app = App(running.config, h.app.sites, web=WebFiles(running.config), passthrough=passthrough,
              mounts=mounts())
    server = HTTPServer(app, "127.0.0.1", 0, workers=4).start()
    try:
        yield h, server.port
    finally:
        server.stop()


def test_page_over_the_limit_is_a_502_and_asked_once(small_pages: tuple[ProxyHandle, int]) -> None:
    h, port = small_pages
    h.sim.reset()
    for _ in range(3):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", "/about.html")
            raw = conn.getresponse()
            r = Reply(raw.status, raw.headers, raw.read())
        finally:
            conn.close()
        assert r.status == 502
        assert r.header("Content-Type") == "application/json"
        assert r.json() == {"error": "gateway page too large"}
    assert page_requests(h, "/about.html") == 1


def test_unreachable_page_serves_the_last_copy(proxy_factory: Factory) -> None:
    h = proxy_factory()  # PW_CACHE_EXPIRE=1
    first = h.get("/about.html")
    assert first.status == 200
    h.sim.set_fault("down", paths=["/about.html", "/static/app.js"])
    stale = wait_for("the proxy to ask the gateway again",
                     lambda: (r := h.get("/about.html")).header("X-Cache") != "HIT" and r)
    assert stale.status == 200 and stale.header("X-Cache") == "STALE"
    assert stale.body == first.body
    never = h.get("/static/app.js")
    assert_json_503(never)
    assert "unreachable" in never.json()["error"]
    assert h.get("/health").json()["gateway"]["cooldown_remaining_seconds"] == 0  # not a refusal
