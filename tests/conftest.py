"""Shared fixtures: a real simulator, a real proxy, real sockets on port 0."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from proxy.config import load_config
from proxy.main import Running, start
from tests.browser import CHROMIUM, Chromium, Page

CONNECT_WAIT = 20.0


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class ProxyHandle:
    """A running proxy (and its simulator) plus a tiny HTTP client for it."""

    def __init__(self, running: Running) -> None:
        self.running = running
        self.port = running.server.port
        self.url = f"http://127.0.0.1:{self.port}/"
        self.base = self.url + running.config.base_url.lstrip("/")
        self.sim = running.simulator
        self.app = running.app
        self.gateway = running.gateway

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30.0) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return Reply(r.status, r.headers, r.read())
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, form: str, headers: dict[str, str] | None = None) -> Reply:
        h = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        return self.request("POST", path, body=form, headers=h)

    def stop(self) -> None:
        self.running.stop()


def settled(handle: ProxyHandle) -> ProxyHandle:
    """Let the connect threads finish their follow-up call (the site name), so that gateway
    request counts taken from now on are the test's own."""
    names = {f"{gateway.id}-connect" for gateway in handle.running.gateways}  # the adapter's names
    for thread in threading.enumerate():
        if thread.name in names and thread.is_alive():
            thread.join(5)
    return handle


DEFAULT_ENV = {
    "PW_BIND_ADDRESS": "127.0.0.1",
    "PW_PORT": "0",
    "PW_CACHE_EXPIRE": "1",
    "PW_CACHE_TTL": "4",
    "PW_TIMEOUT": "2",
    # The history store and the firmware watch read the gateway by themselves; tests that
    # count gateway requests must not see them unless they ask (tests/test_history*.py do).
    "PW_HISTORY": "no",
    "PW_FIRMWARE_CHECK_INTERVAL": "0",
}

Factory = Callable[..., ProxyHandle]


@pytest.fixture
def proxy_factory(tmp_path: Any) -> Iterator[Factory]:
    """factory(env=None, simulate=True, connected=True, gateway_options=None, **load_config
    overrides) -> ProxyHandle, stopped at teardown.

    With simulate=True the proxy starts its own simulator (full TEDAPI mode).
    With simulate=False, pass PW_HOST etc. in env (e.g. pointing at a `simulator`).
    With connected=False it returns at once, connected or not.
    `gateway_options` are further arguments of each `Gateway` (e.g. a shorter cooldown).
    """
    handles: list[ProxyHandle] = []

    def factory(env: dict[str, str] | None = None, simulate: bool = True, connected: bool = True,
                gateway_options: dict[str, Any] | None = None, **overrides: Any) -> ProxyHandle:
        merged = {**DEFAULT_ENV, "PW_AUTH_PATH": str(tmp_path), "PW_DATA_DIR": str(tmp_path / "data"),
                  "PW_CACHE_FILE": str(tmp_path / ".powerwall"), **(env or {})}
        config = load_config(merged, simulate=simulate, **overrides)
        handle = ProxyHandle(start(config, wait_connected=CONNECT_WAIT if connected else 0.0,
                                   gateway_options=gateway_options))
        handles.append(handle)
        if not connected:  # a gateway that may never let us in: the test watches it try
            return handle
        assert handle.gateway.connected, f"gateway never connected: {handle.gateway.info.connect_error}"
        return settled(handle)

    yield factory
    for handle in handles:
        handle.stop()


def local_mode(factory: Factory, sim: Any, env: dict[str, str], **options: Any) -> ProxyHandle:
    """A proxy in local mode (the customer login against the simulator's /api/*); `options`
    go to the factory."""
    from proxy.simulator import DEFAULT_PASSWORD

    handle = factory({**env, "PW_HOST": sim.host, "PW_PASSWORD": DEFAULT_PASSWORD}, simulate=False,
                     **options)
    handle.sim = sim
    return handle


@pytest.fixture
def simulator() -> Iterator[Any]:
    """A bare gateway simulator (pw3 model) for tests that configure the proxy themselves."""
    from proxy.simulator import Simulator

    with Simulator(port=0, seed=7) as sim:
        yield sim


@pytest.fixture
def proxy(proxy_factory: Factory) -> ProxyHandle:
    """The proxy with --simulate defaults and control enabled (secret "s3cret-token")."""
    return proxy_factory({"PW_CONTROL_SECRET": "s3cret-token"})


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    """One headless Chromium for a module of browser tests (marked with BROWSER_TESTS, so
    they are skipped when there is none)."""
    assert CHROMIUM is not None
    browser = Chromium(CHROMIUM)
    yield browser
    browser.close()


@pytest.fixture
def open_page(chromium: Chromium) -> Iterator[Callable[..., Page]]:
    """Opens tabs of the module's Chromium (closed at teardown)."""
    pages: list[Page] = []

    def opener(width: int = 800, height: int = 480) -> Page:
        page = chromium.new_page(width, height)
        # A dark slate behind the page, the kind of backdrop (Dakboard photo, MagicMirror,
        # Grafana) the transparent styles are made for; it shows in frames and with
        # ?backdrop=none (a plain tab otherwise gets the style's own backdrop).
        page.send("Emulation.setDefaultBackgroundColorOverride",
                  {"color": {"r": 58, "g": 70, "b": 84, "a": 1}})
        pages.append(page)
        return page

    yield opener
    for page in pages:
        page.close()
