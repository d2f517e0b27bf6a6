"""Nothing a gateway does can stall the proxy: drip-fed, slow, oversized, 401-forever.

Each check goes through real sockets with the simulator misbehaving. The bounds
asserted are the contract (PW_TIMEOUT + 1 s for a poller, about a second for
/health), given as client timeouts with slack for a loaded test machine; speed
itself is the benchmark's business.
"""

from __future__ import annotations

import logging
import threading
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from proxy.simulator import Simulator
from tests.conftest import Factory, ProxyHandle, Reply, local_mode

TIMEOUT = 2  # PW_TIMEOUT in these tests
SLACK = 3.0  # a loaded CI machine; a stalled proxy misses this by tens of seconds
POLLER_BOUND = TIMEOUT + 1 + SLACK
QUICK_BOUND = 1 + SLACK
ENV = {"PW_TIMEOUT": str(TIMEOUT), "PW_CACHE_EXPIRE": "1", "PW_CACHE_TTL": "0"}
ROUTES = ["/aggregates", "/soe", "/api/system_status/grid_status", "/api/status", "/csv",
          "/api/site_info", "/api/operation", "/api/meters/site", "/api/system_status",
          "/api/sitemaster", "/version", "/pw/level", "/pod", "/json", "/freq", "/api/powerwalls"]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(port=0, seed=5) as simulator:
        yield simulator


def local(proxy_factory: Factory, sim: Simulator, **extra: str) -> ProxyHandle:
    return local_mode(proxy_factory, sim, {**ENV, **extra})


def next_window(h: ProxyHandle) -> None:
    """Wait for a new cache window: what was fetched before a fault is not served after it."""
    window = h.gateway.cache.window()
    while h.gateway.cache.window() == window:
        threading.Event().wait(0.05)


def poll_together(h: ProxyHandle, paths: list[str], bound: float) -> list[Reply]:
    """Every path at once, each on its own connection; a poller past `bound` fails the test."""
    with ThreadPoolExecutor(len(paths)) as pool:
        return list(pool.map(lambda p: h.get(p, timeout=bound), paths))


def test_drip_fed_body_is_abandoned_at_the_deadline(proxy_factory: Factory, sim: Simulator) -> None:
    h = local(proxy_factory, sim)
    assert h.get("/aggregates").status == 200
    # ~1.5 KB at 16 bytes per half second: about 45 s for one answer, were it read whole.
    sim.set_fault("drip", paths=["/api/meters/aggregates"], chunk=16, delay=0.5)
    next_window(h)
    replies = poll_together(h, ["/aggregates"] * 8 + ["/soe", "/api/status"], POLLER_BOUND)
    for reply in replies[:8]:
        assert reply.status == 503 and reply.header("Retry-After"), reply.body
    assert [r.status for r in replies[8:]] == [200, 200]  # other resources are not held up
    assert h.get("/health", timeout=QUICK_BOUND).status in (200, 503)
    asked = sim.stats()["paths"].get("/api/meters/aggregates", 0)
    assert asked <= 3, asked  # one fetch in flight, not one per poller


def test_slow_gateway_answers_every_poller_without_queueing(proxy_factory: Factory,
                                                             sim: Simulator) -> None:
    h = local(proxy_factory, sim, PW_TIMEOUT="5", PW_CACHE_EXPIRE="10")
    for path in ROUTES:
        h.get(path)
    sim.set_fault("slow", delay=0.75)  # every answer takes 0.75 s, each within PW_TIMEOUT
    next_window(h)
    # 13 pollers of 13 routes (about a dozen distinct gateway requests): two at a time (the
    # gateway's limit), about 5 s; each poller's wait starts when its request is sent.
    replies = poll_together(h, ROUTES[:13], 5 + 1 + SLACK)
    failed = [(p, r.status, r.body[:80]) for p, r in zip(ROUTES, replies, strict=False) if r.status != 200]
    assert not failed, failed


def test_stalled_gateway_leaves_health_and_stats_answering(proxy_factory: Factory,
                                                           sim: Simulator) -> None:
    h = local(proxy_factory, sim)
    h.get("/aggregates")
    sim.set_fault("slow", delay=60)
    next_window(h)
    results: list[Reply] = []
    pollers = [threading.Thread(target=lambda p=p: results.append(h.get(p, timeout=POLLER_BOUND)))
               for p in ROUTES * 2]  # 32 pollers: more than the 24 workers
    for t in pollers:
        t.start()
    try:
        threading.Event().wait(0.5)
        for _ in range(3):
            health = h.get("/health", timeout=QUICK_BOUND)
            assert health.status in (200, 503) and "status" in health.json()
            assert h.get("/stats", timeout=QUICK_BOUND).status == 200
            assert h.get("/console", timeout=QUICK_BOUND).status == 200
    finally:
        for t in pollers:
            t.join(POLLER_BOUND + 5)
        sim.clear_faults()
    assert len(results) == len(ROUTES) * 2
    assert all(r.status == 503 and r.header("Retry-After") for r in results), \
        {(r.status, r.body[:60]) for r in results}
    assert h.get("/health").json()["status"] == "degraded"


def test_refused_login_backs_off_and_says_so(proxy_factory: Factory, sim: Simulator,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="proxy")
    h = local(proxy_factory, sim)
    assert h.get("/aggregates").status == 200
    sim.set_fault("login_401")
    sim.set_fault("expire_session")  # the gateway forgets us: we must log in again, and may not
    logins = lambda: sim.stats()["paths"].get("/api/login/Basic", 0)  # noqa: E731
    before = logins()
    for _ in range(12):  # several cache periods of telegraf polling
        replies = poll_together(h, ["/aggregates", "/soe", "/api/status"], POLLER_BOUND)
        assert all(r.status == 503 for r in replies if r.status != 200)
        threading.Event().wait(0.3)
    assert logins() - before <= 2, logins() - before  # not one per period, let alone per poll
    health = h.get("/health")
    gateway = health.json()["gateway"]
    assert health.status == 503 and gateway["login_backoff_remaining_seconds"] > 50
    assert gateway["login_backoff_steps"] == 1
    refused = h.get("/aggregates")
    assert refused.status == 503 and int(refused.header("Retry-After") or 0) > 50
    lines = [r for r in caplog.records
             if r.name.startswith("proxy") and "login" in r.getMessage().lower()]
    assert len(lines) == 1, [r.getMessage() for r in lines]  # logged once per step


def test_oversized_answer_is_cut_off_and_memory_stays_flat(proxy_factory: Factory,
                                                           sim: Simulator) -> None:
    h = local(proxy_factory, sim)
    h.get("/aggregates")
    sim.set_fault("oversize", paths=["/api/meters/aggregates"], size=50_000_000)
    next_window(h)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        reply = h.get("/aggregates", timeout=POLLER_BOUND)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert reply.status == 503 and "too large" in reply.json()["error"], reply.body
    assert peak < 16_000_000, peak  # the 4 MB limit and its copies, not 50 MB
    health = h.get("/health").json()
    assert health["gateway"]["cooldown_remaining_seconds"] == 0  # an answer, not an outage
    assert h.get("/soe").status == 200




def test_login_accepted_again_ends_the_backoff(proxy_factory: Factory, sim: Simulator) -> None:
    from proxy.gateway.health import AuthBackoff

    auth = AuthBackoff(start=1.0, cap=2.0)  # seconds instead of minutes
    h = local_mode(proxy_factory, sim, ENV, gateway_options={"auth": auth})
    assert h.get("/aggregates").status == 200
    sim.set_fault("login_401")
    sim.set_fault("expire_session")
    next_window(h)
    poll_together(h, ["/aggregates", "/soe"], POLLER_BOUND)
    assert h.get("/health").json()["gateway"]["login_backoff_steps"] >= 1
    sim.clear_faults()  # the owner fixed the password
    for _ in range(40):
        threading.Event().wait(0.25)
        if h.get("/aggregates").status == 200 and h.get("/health").status == 200:
            break
    health = h.get("/health").json()
    assert health["status"] == "ok" and health["gateway"]["login_backoff_steps"] == 0, health["gateway"]


def test_powerwall_queries_shared_by_many_resources_are_asked_once(proxy_factory: Factory) -> None:
    """TEDAPI: vitals, temps, alerts, strings, fans and power all read each Powerwall's device
    query; asked side by side in one window they still cost one query per Powerwall."""
    h = proxy_factory({"PW_CACHE_EXPIRE": "5"})
    routes = ["/vitals", "/temps/pw", "/alerts/pw", "/strings", "/fans/pw", "/pod", "/freq",
              "/aggregates", "/json", "/pw/battery_blocks", "/pw/power"]
    next_window(h)
    h.sim.reset()
    window = h.gateway.cache.window()
    replies = poll_together(h, routes, POLLER_BOUND)
    assert [r.status for r in replies] == [200] * len(routes)
    if h.gateway.cache.window() != window:
        pytest.skip("the polls straddled a cache window on this busy machine")
    device = {p: n for p, n in h.sim.stats()["paths"].items() if p.startswith("/tedapi/device/")}
    assert len(device) == 2 and set(device.values()) == {1}, device  # two Powerwalls, once each
