"""GET /metrics: every measurement per gateway with units in names, the proxy's own counters,
promtool clean, a real Prometheus server scraping it, and no extra gateway requests."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.api.metrics import UNITS, metric_name
from proxy.config import load_config
from proxy.main import start
from proxy.site.points import POINTS, Kind
from tests.brokers import PROMETHEUS, PROMTOOL, Prometheus, wait_for
from tests.conftest import CONNECT_WAIT, DEFAULT_ENV, Factory, ProxyHandle, settled
from tests.expected import EDGE, requests_per_window, same_window

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """{(sample name, sorted labels): value} of a text exposition."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _sample(point_key: str, gateway: str, label: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    point = next(p for p in POINTS if p.key == point_key)
    name = metric_name(point) + ("_total" if point.kind is Kind.TOTAL else "")
    labels = {"gateway": gateway}
    if point.label:
        labels[point.label] = label
    return name, tuple(sorted(labels.items()))


def test_metrics_equal_the_api_in_base_units(proxy: ProxyHandle) -> None:
    reply = proxy.get("/metrics")
    assert reply.status == 200
    assert reply.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    got, api = same_window(proxy, "default", lambda: samples(proxy.get("/metrics").text))
    checked = 0
    for (key, label), value in api.items():
        point = next(p for p in POINTS if p.key == key)
        if point.kind is Kind.STATE:
            for state in (*point.states, value):
                labels = (("gateway", "default"), ("state", state))
                assert got[(metric_name(point), labels)] == (1.0 if state == value else 0.0), key
        elif point.kind is Kind.TEXT:
            labels = (("gateway", "default"), ("version", value))
            assert got[(metric_name(point) + "_info", labels)] == 1.0
        else:
            factor = UNITS[point.unit][1]
            expected = float(value) * factor
            assert got[_sample(key, "default", label)] == pytest.approx(expected), (key, label)
        checked += 1
    assert checked >= len(POINTS)
    names = {name for name, _ in got}
    for name in ("powerwall_battery_power_watts", "powerwall_battery_level_ratio",
                 "powerwall_energy_imported_joules_total", "powerwall_battery_time_remaining_seconds",
                 "powerwall_battery_temperature_celsius", "powerwall_proxy_requests_total",
                 "powerwall_proxy_gateway_requests_total", "powerwall_proxy_gateway_failures_total",
                 "powerwall_proxy_gateway_cooldown_seconds", "powerwall_proxy_cache_hits_total",
                 "powerwall_proxy_cache_misses_total", "powerwall_proxy_stale_answers_total",
                 "powerwall_proxy_stream_listeners"):
        assert name in names, name
    assert got[("powerwall_proxy_stream_listeners", ())] == 0


def test_openmetrics_when_asked(proxy: ProxyHandle) -> None:
    reply = proxy.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert reply.status == 200
    assert (reply.header("Content-Type") or "").startswith("application/openmetrics-text")
    assert reply.text.endswith("# EOF\n")


def test_own_counters_count(proxy_factory: Factory) -> None:
    # A 5 s window, so a loaded machine still reads everything below within one of them.
    h = proxy_factory({"PW_CACHE_TTL": "30", "PW_CACHE_EXPIRE": "5"})
    for _ in range(3):
        assert h.get("/soe").status == 200
    assert h.get("/nope/../x").status == 404
    assert h.get("/api/gateways/default/soe").status == 200
    assert h.request("POST", "/metrics").status == 405
    h.get("/metrics")  # reads every measurement: a second scrape finds them in the window
    got = samples(h.get("/metrics").text)

    def requests(route: str, status: str) -> float:
        return got.get(("powerwall_proxy_requests_total", (("route", route), ("status", status))), 0)

    assert requests("/soe", "200") == 3
    assert requests("unmatched", "404") == 1
    assert requests("/api/gateways/{id}/soe", "200") == 1
    assert requests("/metrics", "405") == 1
    gw = (("gateway", "default"),)
    assert got[("powerwall_proxy_cache_hits_total", gw)] >= 3
    assert got[("powerwall_proxy_gateway_requests_total", gw)] >= 1
    assert got[("powerwall_proxy_gateway_failures_total", gw)] == 0
    # An outage: the last good copy is served stale, and counted.
    h.sim.set_fault("down")
    stale = wait_for(lambda: h.get("/soe").header("X-Cache") == "STALE", what="a stale answer")
    assert stale
    got = samples(h.get("/metrics").text)
    assert got[("powerwall_proxy_stale_answers_total", gw)] >= 1
    assert got[("powerwall_proxy_gateway_failures_total", gw)] >= 1
    assert got[("powerwall_gateway_online", gw)] == 0.0
    assert got[("powerwall_proxy_data_age_seconds", gw)] >= 0  # the copy's age, for alerting


def test_a_gateway_without_data_exports_no_numbers(proxy_factory: Factory) -> None:
    h = proxy_factory({"PW_CACHE_TTL": "0"})
    h.sim.set_fault("down")
    wait_for(lambda: h.get("/soe").status == 503, what="the outage")
    got = samples(h.get("/metrics").text)
    assert not [k for k in got if k[0] == "powerwall_battery_level_ratio"]  # absent, not 0
    assert got[("powerwall_gateway_online", (("gateway", "default"),))] == 0.0


def test_metrics_is_proxy_wide_and_bad_input_is_json(proxy: ProxyHandle) -> None:
    reply = proxy.get("/api/gateways/default/metrics")
    assert reply.status == 404 and "error" in reply.json()
    reply = proxy.request("POST", "/metrics", body="x")
    assert reply.status == 405 and "error" in reply.json()
    assert proxy.request("HEAD", "/metrics").status == 200


def test_scrapes_add_no_gateway_requests(proxy_factory: Factory) -> None:
    h = proxy_factory({"PW_CACHE_EXPIRE": "1"})
    one = requests_per_window(h, scrapes=1)
    many = requests_per_window(h, scrapes=30)
    assert one > 0
    assert many <= one * EDGE, (one, many)  # 30 scrapes a window ask no more than one


@pytest.fixture
def fleet_proxy(tmp_path: Any) -> Any:
    env = {**DEFAULT_ENV, "PW_AUTH_PATH": str(tmp_path), "PW_CACHE_EXPIRE": "2"}
    running = start(load_config(env, simulate=True), simulate=3, wait_connected=CONNECT_WAIT)
    try:
        yield settled(ProxyHandle(running))
    finally:
        running.stop()


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not found; install Debian's prometheus")
def test_promtool_finds_nothing_to_complain_about(fleet_proxy: ProxyHandle) -> None:
    h = fleet_proxy
    wait_for(lambda: len([k for k in samples(h.get("/metrics").text)
                          if k[0] == "powerwall_battery_level_ratio"]) == 3, what="three gateways")
    h.get("/soe")
    body = h.get("/metrics").body
    assert PROMTOOL is not None
    checked = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=60)
    assert checked.returncode == 0, checked
    assert checked.stdout == b"" and checked.stderr == b"", (checked.stdout, checked.stderr)
    got = samples(body.decode())
    gateways = {dict(labels)["gateway"] for name, labels in got if name == "powerwall_battery_power_watts"}
    assert gateways == {s.id for s in h.app.sites}


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not found; install Debian's prometheus")
def test_a_real_prometheus_scrapes_the_proxy(proxy: ProxyHandle) -> None:
    server = Prometheus(f"127.0.0.1:{proxy.port}")
    try:
        up = wait_for(lambda: server.query('up{job="powerwall"} == 1'), timeout=60,
                      what="Prometheus to scrape the proxy")
        assert up[0]["metric"]["job"] == "powerwall"
        level = wait_for(lambda: server.query('powerwall_battery_level_ratio{gateway="default"}'),
                         timeout=30, what="the battery level in Prometheus")
        value = float(level[0]["value"][1])
        assert 0 < value <= 1
        soe = proxy.get("/soe").json()["percentage"] / 100
        assert value == pytest.approx(soe, abs=0.05)  # the simulated battery moves slowly
        energy = wait_for(lambda: server.query(
            'powerwall_energy_imported_joules_total{gateway="default",meter="load"}'),
            what="a counter in Prometheus")
        assert float(energy[0]["value"][1]) > 0
    finally:
        server.close()


def test_stream_listener_gauge_counts_listeners(proxy: ProxyHandle) -> None:
    import http.client

    conns = [http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=20) for _ in range(2)]
    responses = []  # a stream's response holds its socket: kept, or the stream closes
    try:
        for conn, path in zip(conns, ("/events", "/events?gw=default"), strict=True):
            conn.request("GET", path)
            responses.append(conn.getresponse())
            assert responses[-1].status == 200
        listening = wait_for(lambda: samples(proxy.get("/metrics").text)[
            ("powerwall_proxy_stream_listeners", ())] == 2, what="two listeners counted")
        assert listening
    finally:
        for response in responses:
            response.close()
        for conn in conns:
            conn.close()
    wait_for(lambda: samples(proxy.get("/metrics").text)[("powerwall_proxy_stream_listeners", ())] == 0,
             what="the listeners to leave")
