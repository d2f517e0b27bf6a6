"""Gentle with every gateway: one request per distinct gateway request per window, at most
PW_GATEWAY_CONCURRENCY at once, whatever asks, under every simulator profile and against a
gateway that is not ours (a slow HTTP/1.0 stub).

Counts are read only after every poller and fetch is done; a window count is the proxy's own
(`cache.window()`), so no assertion depends on timing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.config import ConfigError, load_config
from proxy.simulator import Simulator, profiles
from tests.brokers import wait_for
from tests.conftest import Factory, ProxyHandle
from tests.sim_helpers import quiet
from tests.stub_gateway import StubGateway

# What three kinds of client poll, each in its own thread, at once.
TELEGRAF = ["/aggregates", "/soe", "/strings", "/temps/pw", "/alerts/pw", "/freq", "/pod", "/vitals",
            "/api/system_status/grid_status"]
HOME_ASSISTANT = ["/api/meters/aggregates", "/api/system_status/soe", "/api/system_status/grid_status",
                  "/api/site_info/site_name", "/api/status", "/api/operation", "/api/system_status",
                  "/api/powerwalls", "/api/system_status/grid_faults"]
EVCC = ["/api/meters/aggregates", "/api/system_status/soe", "/api/operation", "/json", "/csv"]
CLIENTS = (TELEGRAF, HOME_ASSISTANT, EVCC, TELEGRAF)
PROFILES = profiles.NAMES  # every gateway personality the simulator has
TEDAPI_POSTS = ("/tedapi/v1", "/tedapi/device/")  # every TEDAPI query is a POST to these


@pytest.fixture
def stub() -> Iterator[StubGateway]:
    with StubGateway(delay=0.15) as gateway:
        yield gateway


def simulated(factory: Factory, sim: Simulator, **env: str) -> ProxyHandle:
    """A proxy on `sim`, connecting the way its profile wants (TEDAPI or the customer login)."""
    given = sim.credentials()
    login = {"PW_GW_PWD": given["gw_pwd"]} if "gw_pwd" in given else {"PW_PASSWORD": given["password"]}
    if sim.profile.bearer:  # TEDAPI only behind the installer's login
        login.update(PW_TEDAPI_AUTH_MODE="bearer", PW_TEDAPI_API_VERSION="V2026_06")
    handle = factory({"PW_HOST": sim.host, "PW_CACHE_EXPIRE": "1", **login, **env}, simulate=False)
    handle.sim = sim
    return handle


def idle(h: ProxyHandle) -> None:
    """Wait until no fetch is under way (a prefetch may outlive the poller that started it)."""
    wait_for(lambda: quiet(h), 30, "fetches to finish")


def poll(h: ProxyHandle, windows: int, health: list[int] | None = None) -> tuple[int, dict[str, list[int]]]:
    """Every client polls its routes, a few times a window, for `windows` cache windows; returns
    the windows spanned (first to last, once all is quiet) and each route's statuses."""
    idle(h)
    first = h.gateway.cache.window()
    statuses: dict[str, list[int]] = {}
    lock = threading.Lock()

    def client(paths: list[str]) -> None:
        while h.gateway.cache.window() < first + windows:
            for path in paths:
                status = h.get(path, timeout=30).status
                with lock:
                    statuses.setdefault(path, []).append(status)
            time.sleep(0.2)

    threads = [threading.Thread(target=client, args=(paths,)) for paths in CLIENTS]
    for t in threads:
        t.start()
    while health is not None and any(t.is_alive() for t in threads):
        health.append(h.get("/health", timeout=30).status)
        time.sleep(0.25)
    for t in threads:
        t.join()
    idle(h)
    return h.gateway.cache.window() - first + 1, statuses


def warm_up(h: ProxyHandle) -> None:
    """Every route once: the library logs in when a request first needs it (after that, its
    requests carry the session cookie, and a request with other credentials is another one)."""
    for path in dict.fromkeys(p for paths in CLIENTS for p in paths):
        h.get(path)
    idle(h)


def over(counts: dict[str, int], spanned: int) -> dict[str, int]:
    """The requests sent more often than once per window."""
    return {what: n for what, n in counts.items() if n > spanned}


@pytest.mark.parametrize("profile", PROFILES)
def test_each_gateway_request_at_most_once_per_window_under_every_profile(
        proxy_factory: Factory, profile: str) -> None:
    with Simulator(port=0, seed=11, profile=profile) as sim:
        h = simulated(proxy_factory, sim)
        warm_up(h)
        sim.set_fault("slow", delay=0.05)  # every path: fetches overlap, the same ones meet
        sim.reset()
        spanned, statuses = poll(h, windows=3)
        stats = sim.stats()
    assert statuses["/api/status"] and stats["total"] > 0, stats
    paths = {p: n for p, n in stats["paths"].items() if not p.startswith(TEDAPI_POSTS)}
    assert not over(paths, spanned), (spanned, stats["paths"])
    assert not over(stats["queries"], spanned), (spanned, stats["queries"])
    assert stats["most_in_flight"] <= 2, stats
    assert h.get("/stats").json()["gateway"]["calls"]["most_in_flight"] <= 2


def test_a_slow_gateway_that_is_not_ours_sees_each_request_once_two_at_a_time(
        proxy_factory: Factory, stub: StubGateway) -> None:
    """A plain HTTP/1.0 stub, 0.15 s an answer: the dozen requests a window take about a second
    in two lanes, well within the 2 s window, so nothing fails and /health stays ok."""
    h = proxy_factory({"PW_HOST": stub.host, "PW_PASSWORD": "anything", "PW_CACHE_EXPIRE": "2",
                       "PW_TIMEOUT": "2"}, simulate=False)
    warm_up(h)
    stub.reset()
    health: list[int] = []
    spanned, statuses = poll(h, windows=3, health=health)
    failed = {path: s for path, s in statuses.items() if set(s) != {200}}
    assert not failed, failed
    assert health and set(health) == {200}, health
    assert not over(stub.counts(), spanned), (spanned, stub.counts())
    assert stub.most_in_flight <= 2, stub.most_in_flight
    gateway = h.get("/stats").json()["gateway"]
    assert gateway["calls"]["limit"] == 2 and gateway["calls"]["most_in_flight"] <= 2, gateway
    metrics = h.get("/metrics").text
    assert 'powerwall_proxy_gateway_calls_in_flight{gateway="default"}' in metrics
    assert 'powerwall_proxy_gateway_calls_waiting{gateway="default"}' in metrics


@pytest.mark.parametrize(("env", "limit"), [({"PW_GATEWAY_CONCURRENCY": "1"}, 1),
                                            ({"PW_POOL_MAXSIZE": "1"}, 1),
                                            ({"PW_GATEWAY_CONCURRENCY": "3"}, 3)])
def test_the_limit_is_set_and_lowered_by_a_small_pool(proxy_factory: Factory, stub: StubGateway,
                                                      env: dict[str, str], limit: int) -> None:
    h = proxy_factory({"PW_HOST": stub.host, "PW_PASSWORD": "anything", "PW_CACHE_EXPIRE": "2",
                       **env}, simulate=False)
    stub.reset()
    poll(h, windows=1)
    assert h.get("/stats").json()["gateway"]["calls"]["limit"] == limit
    assert stub.most_in_flight <= limit


def test_a_portal_in_front_of_every_path_makes_composites_503_saying_why(proxy_factory: Factory) -> None:
    with StubGateway(html=True) as portal:
        h = proxy_factory({"PW_HOST": portal.host, "PW_PASSWORD": "anything"}, simulate=False)
        for path in ("/json", "/freq", "/pod", "/csv"):
            reply = h.get(path)
            assert reply.status == 503 and reply.header("Retry-After"), (path, reply.body)
            assert "web page" in reply.json()["error"], (path, reply.body)


def test_empty_list_and_object_are_answers_in_full_tedapi_mode(proxy_factory: Factory) -> None:
    h = proxy_factory()
    assert h.get("/api/system_status/grid_faults").json() == []
    assert h.get("/api/solar_powerwall").json() == {}


def test_merely_absent_sources_answer_as_the_reference(proxy_factory: Factory) -> None:
    """The sparse firmware answers system_status (and operation) with an empty body: /pod and
    /freq still answer 200 with those fields null, as the reference does."""
    with Simulator(port=0, seed=3, profile="sparse") as sim:
        h = simulated(proxy_factory, sim)
        assert h.get("/api/system_status").json() is None
        for path in ("/pod", "/freq", "/json"):
            assert h.get(path).status == 200, path
        assert h.get("/json").json()["reserve"] is None


def test_a_resource_with_a_longer_period_is_asked_once_in_it(proxy_factory: Factory) -> None:
    key = "poll:/api/system_status"
    with Simulator(port=0, seed=5, profile="pw2-legacy") as sim:
        h = simulated(proxy_factory, sim, PW_CACHE_PERIODS=f"{key}:4")
        cache = h.gateway.cache
        begun = cache.window(key)
        while cache.window(key) == begun:  # start at the beginning of a 4 s window
            time.sleep(0.05)
        long_window, first_base = cache.window(key), cache.window()
        assert h.get("/api/system_status").status == 200
        sim.reset()
        replies = []
        while cache.window(key) == long_window:
            replies.append((cache.window(key), h.get("/api/system_status")))
            time.sleep(0.1)
        bases = cache.window() - first_base
        resources = h.get("/stats").json()["gateway"]["resources"]
        idle(h)  # a fetch the last reply started counts too
        asked = sim.stats()["paths"].get("/api/system_status", 0)
    assert resources[key] == {"period_seconds": 4.0}
    assert resources["site_name"] == {"period_seconds": 1.0}  # read at connect
    within = [reply for window, reply in replies if window == long_window]
    assert bases >= 3 and within, (bases, len(within))  # several 1 s windows went by ...
    assert all(r.status == 200 and r.header("X-Cache") == "HIT" for r in within)
    assert max(int(r.header("Age") or 0) for r in within) >= 2  # ... served from one fetch
    assert asked <= 1, asked  # (one: a reply that met the next 4 s window)


# ---- settings ---------------------------------------------------------------------------------

def test_concurrency_and_periods_settings(tmp_path: Path) -> None:
    plain = load_config({"PW_GATEWAY_CONCURRENCY": "3",
                         "PW_CACHE_PERIODS": " vitals:30 , poll:/api/status:60"})
    (gateway,) = plain.fleet()
    assert gateway.concurrency == 3
    assert gateway.periods == (("poll:/api/status", 60), ("vitals", 30))
    assert plain.reference_view()["PW_CACHE_PERIODS"] == "poll:/api/status:60,vitals:30"
    assert load_config({}).fleet()[0].concurrency == 2 and load_config({}).fleet()[0].periods == ()
    path = tmp_path / "gw.yaml"
    path.write_text("gateways:\n  - id: a\n    host: h\n    concurrency: 1\n    periods: {vitals: 20}\n"
                    "  - id: b\n    host: i\n")
    a, b = load_config({"PW_GATEWAY_CONCURRENCY": "4"}, file=str(path)).fleet()
    assert (a.concurrency, a.periods, b.concurrency, b.periods) == (1, (("vitals", 20),), 4, ())


@pytest.mark.parametrize(("env", "message"), [
    ({"PW_GATEWAY_CONCURRENCY": "0"}, "PW_GATEWAY_CONCURRENCY must be between 1 and 16"),
    ({"PW_GATEWAY_CONCURRENCY": "17"}, "PW_GATEWAY_CONCURRENCY must be between 1 and 16"),
    ({"PW_GATEWAY_CONCURRENCY": "two"}, "PW_GATEWAY_CONCURRENCY must be an integer"),
    ({"PW_CACHE_PERIODS": "vitals"}, "PW_CACHE_PERIODS must be resource:seconds pairs"),
    ({"PW_CACHE_PERIODS": "vitals:0"}, "PW_CACHE_PERIODS (vitals) must be between 1 and 3600"),
    ({"PW_CACHE_PERIODS": "vitals:soon"}, "PW_CACHE_PERIODS (vitals) must be an integer"),
    ({"PW_CACHE_PERIODS": "vi tals:5"}, "PW_CACHE_PERIODS must be resource:seconds pairs"),
])
def test_bad_concurrency_or_periods_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(env)
    assert message in str(err.value)


def test_a_period_for_no_resource_stops_the_start(capsys: pytest.CaptureFixture[str]) -> None:
    from proxy.main import main

    assert main([], environ={"PW_HOST": "127.0.0.1:9", "PW_PASSWORD": "x", "PW_PORT": "0",
                             "PW_BIND_ADDRESS": "127.0.0.1", "PW_CACHE_PERIODS": "vitalz:30"}) == 2
    err = capsys.readouterr().err
    assert "'vitalz'" in err and "PW_CACHE_PERIODS" in err
