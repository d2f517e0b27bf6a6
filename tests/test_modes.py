"""Modes and start-up: cloud/FleetAPI (spec'd fakes), HTTPS, starting state, single flight, bounds."""

from __future__ import annotations

import contextlib
import http.client
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from unittest.mock import create_autospec

import pypowerwall
import pytest
from pypowerwall.cloud.pypowerwall_cloud import PyPowerwallCloud
from pypowerwall.fleetapi.pypowerwall_fleetapi import PyPowerwallFleetAPI

from proxy.config import load_config
from proxy.main import Running, start
from proxy.stats import URI_STATS_MAX
from tests.conftest import DEFAULT_ENV, Factory, ProxyHandle


def _fake_powerwall(*, fleetapi: bool) -> Any:
    """A pypowerwall.Powerwall fake with the real method signatures (cloud has no simulator)."""
    pw = create_autospec(pypowerwall.Powerwall, instance=True)
    client_cls = PyPowerwallFleetAPI if fleetapi else PyPowerwallCloud
    pw.client = create_autospec(client_cls, instance=True)
    pw.cloudmode, pw.fleetapi, pw.tedapi, pw.tedapi_mode = True, fleetapi, False, "off"
    pw.client.siteid = 12345
    pw.client.counter = 7
    pw.is_connected.return_value = True
    pw.site_name.return_value = "Cloud Home"
    pw.poll.return_value = {"site": {"instant_power": 100}, "battery": {"instant_power": -50},
                            "load": {"instant_power": 900}, "solar": {"instant_power": 850}}
    if fleetapi:
        pw.client.get_site_info.return_value = {"site_name": "Cloud Home", "id": 12345}
        pw.client.get_live_status.return_value = {"percentage_charged": 74.0}
    else:
        pw.client.get_battery.return_value = {"energy_left": 10000, "percentage_charged": 74.0}
        pw.client.get_site_power.return_value = {"solar_power": 850}
        pw.client.get_site_config.return_value = {"site_name": "Cloud Home"}
    return pw


@pytest.fixture
def cloud_proxy(tmp_path: Any) -> Iterator[tuple[Running, Any]]:
    fake = _fake_powerwall(fleetapi=False)
    running = start(load_config({**DEFAULT_ENV, "PW_AUTH_PATH": str(tmp_path)}),
                    wait_connected=5, client_factory=lambda **kw: fake)
    yield running, fake
    running.stop()


def _get(running: Running, path: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", running.server.port, timeout=10)
    conn.request("GET", path)
    r = conn.getresponse()
    return r.status, r.read()


def test_cloud_mode_routes(cloud_proxy: tuple[Running, Any]) -> None:
    running, fake = cloud_proxy
    status, body = _get(running, "/cloud/battery")
    assert status == 200 and b'"percentage_charged": 74.0' in body
    fake.client.get_battery.assert_called()
    assert _get(running, "/cloud/nope")[1] == b'{"error": "Use /cloud/battery, /cloud/power, /cloud/config"}'
    assert _get(running, "/fleetapi/info") == (404, b'{"error": "FleetAPI not enabled"}')
    assert _get(running, "/tedapi/config") == (404, b'{"error": "TEDAPI not enabled"}')
    status, body = _get(running, "/stats")
    assert status == 200 and b'"mode": "Cloud"' in body and b'"siteid": 12345' in body
    # The web passthrough needs a local gateway: cloud mode answers 404 without calling anything.
    assert _get(running, "/some/page.html")[0] == 404


def test_fleetapi_mode_routes(tmp_path: Any) -> None:
    fake = _fake_powerwall(fleetapi=True)
    running = start(load_config({**DEFAULT_ENV, "PW_AUTH_PATH": str(tmp_path)}),
                    wait_connected=5, client_factory=lambda **kw: fake)
    try:
        status, body = _get(running, "/fleetapi/info")
        assert status == 200 and b'"id": 12345' in body
        assert _get(running, "/fleetapi/status")[0] == 200
        assert _get(running, "/cloud/battery") == (404, b'{"error": "Cloud API not enabled"}')
        assert b'"mode": "FleetAPI"' in _get(running, "/stats")[1]
    finally:
        running.stop()


def test_reference_kwargs_reach_pypowerwall(tmp_path: Any) -> None:
    seen: dict[str, Any] = {}

    def factory(**kwargs: Any) -> Any:
        seen.update(kwargs)
        return _fake_powerwall(fleetapi=False)

    env = {**DEFAULT_ENV, "PW_AUTH_PATH": str(tmp_path), "PW_EMAIL": "me@example.com",
           "PW_TIMEZONE": "Europe/Berlin", "PW_POOL_MAXSIZE": "3", "PW_AUTH_MODE": "token",
           "PW_SITEID": "99", "PW_TEDAPI_API_VERSION": "V2026_06"}
    running = start(load_config(env), wait_connected=5, client_factory=factory)
    running.stop()
    assert seen["email"] == "me@example.com" and seen["timezone"] == "Europe/Berlin"
    assert seen["poolmaxsize"] == 3 and seen["authmode"] == "token" and seen["siteid"] == "99"
    assert seen["tedapi_api_version"] == "V2026_06" and seen["auto_select"] is True
    assert seen["authpath"] == str(tmp_path)


def test_serves_at_once_and_says_starting(tmp_path: Any) -> None:
    # A gateway address nobody answers on: the proxy must still answer, honestly.
    env = {**DEFAULT_ENV, "PW_HOST": "127.0.0.1:9", "PW_PASSWORD": "x", "PW_AUTH_PATH": str(tmp_path),
           "PW_CACHE_FILE": str(tmp_path / ".powerwall")}
    running = start(load_config(env))
    try:
        status, body = _get(running, "/health")
        assert status == 503 and b'"status": "starting"' in body
        status, body = _get(running, "/aggregates")
        assert status == 503 and body.startswith(b'{"error": ')
    finally:
        running.stop()


def test_https_with_generated_certificate(proxy_factory: Factory, tmp_path: Any) -> None:
    p = proxy_factory({"PW_HTTPS": "yes"})
    assert (tmp_path / "proxy-tls-cert.pem").exists()
    assert (tmp_path / "proxy-tls-key.pem").stat().st_mode & 0o077 == 0
    context = ssl._create_unverified_context()
    conn = http.client.HTTPSConnection("127.0.0.1", p.port, timeout=10, context=context)
    deadline = time.monotonic() + 10
    while True:
        conn.request("GET", "/soe")
        r = conn.getresponse()
        body = r.read()
        if r.status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.status == 200 and b"percentage" in body


def test_concurrent_misses_at_expiry_make_one_gateway_request(proxy_factory: Factory,
                                                              simulator: Any) -> None:
    from proxy.simulator import DEFAULT_PASSWORD

    p = proxy_factory({"PW_HOST": simulator.host, "PW_PASSWORD": DEFAULT_PASSWORD,
                       "PW_CACHE_EXPIRE": "2"}, simulate=False)
    assert p.get("/api/meters/aggregates").status == 200
    # Wait for the start of a fresh window, then hit the cold route from 32 threads at once.
    now = time.monotonic()
    time.sleep(2 - now % 2 + 0.05)
    simulator.reset()
    barrier = threading.Barrier(32)
    statuses: list[int] = []

    def hit() -> None:
        barrier.wait()
        statuses.append(p.get("/aggregates").status)

    threads = [threading.Thread(target=hit) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 32
    assert simulator.stats()["paths"].get("/api/meters/aggregates") == 1


def test_uri_stats_are_bounded(proxy: ProxyHandle) -> None:
    for i in range(URI_STATS_MAX + 20):
        proxy.get(f"/styles/clear.css?{i}") if i % 2 else proxy.get("/api/troubleshooting/problems")
        proxy.get(f"/nope-{i}")  # 404s are not counted at all
    for i in range(URI_STATS_MAX + 5):
        proxy.app.stats.count_get(f"/distinct/{i}")
    uri = proxy.get("/stats").json()["uri"]
    assert len(uri) <= URI_STATS_MAX + 1 and uri["other"] >= 5
    assert not any(k.startswith("/nope-") for k in uri)


def test_docker_healthcheck_follows_port_and_scheme(proxy_factory: Factory,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy import healthcheck

    plain = proxy_factory()
    secure = proxy_factory({"PW_HTTPS": "yes"})
    for handle in (plain, secure):  # /health is 200 only once the gateway answered
        deadline = time.monotonic() + 10
        while handle.gateway.status() != "ok" and time.monotonic() < deadline:
            time.sleep(0.1)
    monkeypatch.setenv("PW_PORT", str(plain.port))
    monkeypatch.setenv("PW_HTTPS", "no")
    assert healthcheck.main() == 0
    monkeypatch.setenv("PW_HTTPS", "yes")
    assert healthcheck.main() == 1  # plain HTTP port spoken to over TLS: unhealthy
    monkeypatch.setenv("PW_PORT", str(secure.port))
    assert healthcheck.main() == 0
    secure.sim.set_fault("status", status=429)
    time.sleep(1.1)  # the next cache window, so the poll below reaches the gateway
    with contextlib.suppress(urllib.error.HTTPError):  # one refusal starts a cooldown: degraded
        urllib.request.urlopen(f"https://127.0.0.1:{secure.port}/soe", timeout=10,
                               context=ssl._create_unverified_context())
    assert secure.gateway.status() == "degraded"
    assert healthcheck.main() == 1


def test_docker_healthcheck_follows_a_config_files_port(proxy_factory: Factory, tmp_path: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy import healthcheck

    handle = proxy_factory()
    deadline = time.monotonic() + 10
    while handle.gateway.status() != "ok" and time.monotonic() < deadline:
        time.sleep(0.1)
    path = tmp_path / "gateways.yaml"
    path.write_text(f"server:\n  port: {handle.port}\ngateways:\n  - id: a\n    host: 10.0.0.9\n")
    monkeypatch.setenv("PW_CONFIG", str(path))
    monkeypatch.setenv("PW_PORT", "1")  # the file's server block wins, as in the proxy
    assert healthcheck.main() == 0
    path.write_text("gateways: [")  # a broken file: the proxy would not have started
    assert healthcheck.main() == 1
