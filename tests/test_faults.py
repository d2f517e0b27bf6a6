"""Gateway faults end to end: simulator fault -> real pypowerwall -> proxy -> HTTP clients.

For every fault kind the simulator can inject, four things are checked while
clients keep polling:

* what clients see: the last good bytes marked `X-Cache: STALE` for at most
  PW_CACHE_TTL seconds, then 503 with Retry-After and a JSON error; never a
  new or made-up value, never a stack trace;
* what the gateway sees: a bounded number of requests per cache period (or
  none at all during a cooldown), counted by the simulator;
* /health: its status and HTTP code;
* recovery without a restart once the fault clears.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from proxy.gateway.health import Cooldown
from proxy.simulator import Simulator
from tests.conftest import Factory, ProxyHandle, Reply, local_mode
from tests.sim_helpers import quiet

PERIOD = 1.0  # PW_CACHE_EXPIRE
TTL = 3  # PW_CACHE_TTL
TIMEOUT = 1  # PW_TIMEOUT
ENV = {"PW_CACHE_EXPIRE": str(int(PERIOD)), "PW_CACHE_TTL": str(TTL), "PW_TIMEOUT": str(TIMEOUT)}

# Routes rendered from exactly one gateway reading that no other watched route
# shares, so a stale answer must repeat the last good bytes exactly.
SINGLE = ["/aggregates", "/soe", "/api/system_status/grid_status", "/temps/pw"]
LOCAL_SINGLE = ["/aggregates", "/soe", "/api/system_status/grid_status", "/api/status"]
# Routes mixing several readings: checked for honesty (no 5xx but 503, no zeros) only.
MIXED = ["/csv", "/csv/v2?headers", "/json", "/pod", "/freq"]

# One library call per cache period reaches a failing gateway (the others fail
# fast until the next period); in TEDAPI mode one call is two requests (config
# and status) when the first fails.
MAX_REQUESTS_PER_PERIOD = 2
# Answers that are not data fail only their own resource: each resource is still
# asked once per window (the routes polled here read at most this many).
MAX_REQUESTS_PER_RESOURCE_WINDOW = 16
FIRST_WINDOW_BURST = 8


# ---- helpers ------------------------------------------------------------------------------


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def get_when(h: ProxyHandle, path: str, ok: Callable[[Reply], bool], timeout: float,
             what: str = "") -> Reply:
    """GET `path` until the reply satisfies `ok`; returns that reply."""
    def attempt() -> Reply | None:
        reply = h.get(path)
        return reply if ok(reply) else None
    result: Reply = wait_for(what or f"{path} to answer as expected", attempt, timeout)
    return result


def fresh(reply: Reply) -> bool:
    return reply.status == 200 and reply.header("X-Cache") == "HIT" and reply.header("Age") in ("0", "1")


def warm(h: ProxyHandle, paths: list[str]) -> dict[str, bytes]:
    """Fresh answers for every path; returns the last body seen per path."""
    last: dict[str, bytes] = {}
    for path in paths:
        reply = get_when(h, path, fresh, 10, f"fresh {path}")
        last[path] = reply.body
    return last


def health(h: ProxyHandle) -> tuple[int, dict[str, Any], Reply]:
    reply = h.get("/health")
    body = reply.json()
    # 200 exactly when the status says ok, so a Docker HEALTHCHECK tells the truth.
    assert (reply.status == 200) == (body["status"] == "ok"), (reply.status, body["status"])
    if reply.status == 503:
        assert int(reply.header("Retry-After") or "0") >= 1
    return reply.status, body, reply


def assert_json_error(reply: Reply, status: int) -> str:
    assert reply.status == status, (reply.status, reply.body[:200])
    assert reply.header("Content-Type") == "application/json"
    body = reply.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in reply.text and 'File "' not in reply.text
    return str(body["error"])


def retry_after(reply: Reply) -> int:
    value = reply.header("Retry-After")
    assert value is not None and value.isdigit() and int(value) >= 1, value
    return int(value)


@dataclass
class Seen:
    sent: float  # monotonic time the request was sent
    path: str
    reply: Reply


@dataclass
class Pollers:
    """Clients polling routes from several threads, recording every answer."""

    h: ProxyHandle
    paths: list[str]
    threads: int = 4
    pause: float = 0.03
    seen: list[Seen] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Pollers:
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, args=(i,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=20)
        assert not self.errors, self.errors

    def _run(self, offset: int) -> None:
        i = offset
        while not self._stop.is_set():
            path = self.paths[i % len(self.paths)]
            i += 1
            sent = time.monotonic()
            try:
                reply = self.h.get(path, timeout=15)
            except BaseException as exc:  # a hung or refused connection is a finding
                self.errors.append(exc)
                return
            with self._lock:
                self.seen.append(Seen(sent, path, reply))
            self._stop.wait(self.pause)

    def saw(self, path: str, status: int) -> bool:
        return any(s.reply.status == status for s in self.replies(path))

    def replies(self, path: str | None = None, since: float = 0.0) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if (path is None or s.path == path) and s.sent >= since]


def assert_honest(seen: Seen, last_good: dict[str, bytes], ttl: int = TTL) -> None:
    """A reply during an outage: the last good bytes marked stale, or a 503 JSON error."""
    r = seen.reply
    if r.status == 503:
        assert_json_error(r, 503)
        retry_after(r)
        return
    assert r.status == 200, (seen.path, r.status, r.body[:200])
    assert r.header("X-Cache") in ("HIT", "STALE"), seen.path
    age = int(r.header("Age") or "-1")
    assert 0 <= age <= ttl, (seen.path, age)
    if r.header("X-Cache") == "STALE":
        assert r.header("Warning") == '110 - "Response is Stale"'
    if seen.path in last_good:
        assert r.body == last_good[seen.path], f"{seen.path}: a value the gateway never sent"
    if seen.path.startswith("/csv"):
        line = r.text.strip().splitlines()[-1].split(",")
        assert float(line[4]) > 0, f"{seen.path}: battery level made up as 0: {r.text!r}"


def proxy_log_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log records from the proxy that carry a traceback or report an unexpected error."""
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records
            if r.name.startswith("proxy") and (r.exc_info or "unexpected" in r.getMessage())]


def library_cooldown_active(h: ProxyHandle) -> bool:
    """pypowerwall's own 5-minute 'leave it alone' timer (set on 429/503) is running."""
    pw = h.gateway.pw
    objs = [pw, getattr(pw, "client", None), getattr(pw, "tedapi", None)]
    return any(getattr(o, "pwcooldown", 0) > time.perf_counter() for o in objs if o)



@pytest.fixture
def sim_proxy(proxy_factory: Factory) -> ProxyHandle:
    """--simulate (TEDAPI full mode) with short periods."""
    return proxy_factory(ENV)


@pytest.fixture
def bare_sim() -> Iterator[Simulator]:
    with Simulator(port=0, seed=11) as sim:
        yield sim


def local_proxy(proxy_factory: Factory, sim: Simulator, **extra: str) -> ProxyHandle:
    return local_mode(proxy_factory, sim, {**ENV, **extra})


# ---- outages: down, slow, 500, malformed ----------------------------------------------------


def outage_scenario(h: ProxyHandle, single: list[str], kind: str, params: dict[str, Any],
                    caplog: pytest.LogCaptureFixture, call_time: float = 0.0) -> None:
    """Fault on, clients poll: stale then 503; health degraded; gateway calm; then recovery.

    `call_time` is how long one failing library call takes (a slow gateway holds it
    up to its timeouts), which delays every step by that much.
    """
    caplog.set_level(logging.WARNING)
    last_good = warm(h, single)
    h.sim.reset()
    fault_at = time.monotonic()
    h.sim.set_fault(kind, **params)
    with Pollers(h, single + MIXED) as polls:
        # Within PW_CACHE_TTL (+ one period and one failing call) every route is a 503 ...
        ttl = h.running.config.cache_ttl
        limit = ttl + 2 * PERIOD + 2 * call_time + 2
        for path in single:
            wait_for(f"{path} to answer 503", functools.partial(polls.saw, path, 503), limit)
        status, body, reply = health(h)
        if kind == "malformed":
            # The gateway answers, only with garbage: each route fails on its own, but the
            # gateway is alive, so /health stays ok and nothing fails fast.
            assert status == 200 and body["connection_health"]["total_failures"] == 0, body
        else:
            # ... and /health says degraded from the first failed answer.
            assert body["status"] == "degraded"
            assert body["connection_health"]["consecutive_failures"] >= 1
            assert body["gateway"]["cooldown_remaining_seconds"] == 0  # not a busy gateway
        gateway_requests = h.sim.stats()["total"]
        elapsed = time.monotonic() - fault_at
    seen = polls.replies()
    assert len(seen) > 20
    for s in seen:
        assert_honest(s, last_good, ttl)
    # Stale first: the last good copy bridged the start of the outage.
    first = min(polls.replies(single[0]), key=lambda s: s.sent)
    assert first.reply.status == 200 and first.reply.header("X-Cache") in ("HIT", "STALE")
    assert any(s.reply.header("X-Cache") == "STALE" for s in seen)
    # No stale answer outlived PW_CACHE_TTL: once a route said 503, it never went back.
    for path in single:
        statuses = [s.reply.status for s in sorted(polls.replies(path), key=lambda s: s.sent)]
        first_503 = statuses.index(503)
        assert set(statuses[first_503:]) == {503}, (path, statuses)
    # The gateway was not stormed: a bounded number of requests per period, whatever
    # the number of clients and routes.
    periods = math.ceil(elapsed / PERIOD) + 1
    # Garbage: at most one request per resource per window, as when healthy.
    # A failing gateway: in the first window the resources polled ask side by side before
    # the first failure is known; after that one call per window finds out.
    if kind == "malformed":
        bound = MAX_REQUESTS_PER_RESOURCE_WINDOW * periods
    else:
        bound = MAX_REQUESTS_PER_PERIOD * periods + FIRST_WINDOW_BURST
    assert gateway_requests <= bound, (gateway_requests, periods, len(seen))
    assert gateway_requests < len(seen) / 3

    # Recovery, without a restart: fresh data within two cache periods of the fault
    # clearing (plus a call that was already waiting on the gateway).
    h.sim.clear_faults()
    reply = get_when(h, single[0], fresh, 2 * PERIOD + call_time + 1.5, "fresh data after the fault")
    assert reply.body != last_good[single[0]]  # new data, not the old copy relabelled
    wait_for("/health ok", lambda: health(h)[0] == 200, PERIOD + 1)
    for path in single:
        get_when(h, path, fresh, 2 * PERIOD + 1)
    assert not proxy_log_errors(caplog)


@pytest.mark.parametrize(("kind", "params", "call_time"), [
    ("down", {}, 0.0),
    ("slow", {"delay": 2.5}, 2.0 * TIMEOUT),  # two TEDAPI requests, each given up after PW_TIMEOUT
    ("status", {"status": 500}, 0.0),
    ("malformed", {}, 0.0),
], ids=["down", "slow", "500", "malformed"])
def test_outage_tedapi(proxy_factory: Factory, caplog: pytest.LogCaptureFixture, kind: str,
                       params: dict[str, Any], call_time: float) -> None:
    # A slow gateway holds a call up for two timeouts; give the stale copy room to show.
    env = {**ENV, "PW_CACHE_TTL": "4"} if kind == "slow" else ENV
    outage_scenario(proxy_factory(env), SINGLE, kind, params, caplog, call_time)


@pytest.mark.parametrize(("kind", "params"), [
    ("down", {}),
    ("malformed", {}),
    ("status", {"status": 500}),
], ids=["down", "malformed", "500"])
def test_outage_local(proxy_factory: Factory, bare_sim: Simulator, caplog: pytest.LogCaptureFixture,
                      kind: str, params: dict[str, Any]) -> None:
    h = local_proxy(proxy_factory, bare_sim)
    outage_scenario(h, LOCAL_SINGLE, kind, params, caplog)


def test_csv_never_fills_an_unavailable_value_with_zero(sim_proxy: ProxyHandle) -> None:
    """/csv's battery level comes from a second reading; in an outage it must not become 0.00."""
    h = sim_proxy
    warm(h, ["/csv", "/csv/v2"])
    # Only /aggregates keeps being polled, so the level's last good copy ages past
    # PW_CACHE_TTL while the aggregates' copy stays young.
    end = time.monotonic() + TTL + 1.5
    while time.monotonic() < end:
        assert h.get("/aggregates").status == 200
        time.sleep(0.1)
    h.sim.set_fault("down")
    time.sleep(PERIOD)  # a new cache window: every value comes from the (failing) gateway
    for path in ("/csv", "/csv/v2"):
        reply = h.get(path)
        if reply.status == 200:  # only with every value it shows still a real one
            fields = reply.text.strip().split(",")
            assert float(fields[4]) > 0, f"{path}: {reply.text!r}"
            if path == "/csv/v2":
                assert fields[5] == "1", f"{path}: grid status made up: {reply.text!r}"
        else:
            assert_json_error(reply, 503)
            retry_after(reply)


def test_garbled_answers_are_not_empty_data(sim_proxy: ProxyHandle) -> None:
    """pypowerwall reads a garbled answer as {} ("no temperatures", "no alerts"): not data.

    The gateway did answer, so it is alive: health is not touched."""
    h = sim_proxy
    paths = ["/temps/pw", "/alerts/pw", "/fans/pw", "/strings"]
    last_good = warm(h, paths)
    h.sim.set_fault("malformed")
    for path in paths:
        time.sleep(PERIOD)  # each one the first reading of a new cache window
        reply = h.get(path)
        if reply.status == 200:
            assert reply.header("X-Cache") == "STALE" and reply.body == last_good[path], (path, reply.body)
        else:
            assert_json_error(reply, 503)
    status, body, _ = health(h)
    assert status == 200 and body["connection_health"]["total_failures"] == 0, body


def test_tedapi_aggregates_never_show_made_up_energy(sim_proxy: ProxyHandle) -> None:
    """TEDAPI mode: the energy counters come from the local API; losing them is an outage.

    pypowerwall fills them with 0 when the local API fails, and then skips it for
    5 minutes; neither may reach a client.
    """
    h = sim_proxy
    warm(h, ["/aggregates"])

    def energy(reply: Reply) -> list[float]:
        body = reply.json()
        return [body["site"]["energy_imported"], body["battery"]["energy_imported"],
                body["load"]["energy_imported"], body["solar"]["energy_exported"]]

    for kind in ("down", "malformed"):
        h.sim.set_fault(kind, paths=["/api/*"])  # TEDAPI itself keeps answering
        end = time.monotonic() + 2.5 * PERIOD
        while time.monotonic() < end:
            reply = h.get("/aggregates")
            if reply.status == 200:
                assert all(e > 0 for e in energy(reply)), (kind, reply.header("X-Cache"), energy(reply))
            else:
                assert_json_error(reply, 503)
            other = h.get("/soe")  # fresh, stale, or (its copy too old) an honest 503
            if other.status != 200:
                assert_json_error(other, 503)
            time.sleep(0.1)
        h.sim.clear_faults()
        reply = get_when(h, "/aggregates", fresh, 2 * PERIOD + 1, f"fresh aggregates after {kind}")
        assert all(e > 0 for e in energy(reply)), (kind, energy(reply))


# ---- busy: 429 and 503 ------------------------------------------------------------------------


def test_cooldown_schedule_defaults() -> None:
    """5 s, doubling per refusal, at least Retry-After, capped at 300 s; reset by an answer."""
    now = [1000.0]
    c = Cooldown(clock=lambda: now[0])
    assert [c.trip(None) for _ in range(8)] == [5, 10, 20, 40, 80, 160, 300, 300]
    assert c.remaining() == 300 and c.strikes() == 8
    now[0] += 100
    assert c.remaining() == 200
    c.reset()
    assert c.remaining() == 0 and c.strikes() == 0
    assert c.trip(7) == 7  # the gateway's Retry-After wins when longer
    assert c.trip(3) == 10  # ... and our own backoff when that is longer
    assert c.trip(86400) == 300  # capped, whatever the gateway asks
    c.reset()
    assert c.trip(None) == 5


def busy_start(h: ProxyHandle, single: list[str], fault: dict[str, Any]) -> tuple[dict[str, bytes], Reply]:
    """Warm up, make the gateway refuse, and poll once so the proxy meets the refusal."""
    last_good = warm(h, single)
    # A fetch still on its way (a loaded machine is slow) would get through after the fault is
    # set and become the last good copy: refuse only once the gateway has nothing in flight.
    wait_for("no gateway call in flight", lambda: quiet(h), 10)
    h.sim.reset()
    h.sim.set_fault("status", **fault)
    first = get_when(h, single[0], lambda r: h.sim.stats()["total"] > 0, 3, "the proxy to meet the refusal")
    return last_good, first


def assert_busy_health(h: ProxyHandle, expected: float) -> float:
    status, body, reply = health(h)
    assert status == 503 and body["status"] == "degraded"
    remaining = body["gateway"]["cooldown_remaining_seconds"]
    assert expected - 1.5 <= remaining <= expected, (remaining, expected)
    assert abs(retry_after(reply) - remaining) <= 1.5
    return float(remaining)


@pytest.mark.parametrize("status", [429, 503])
def test_busy_gateway_is_left_alone_then_recovers(sim_proxy: ProxyHandle, caplog: pytest.LogCaptureFixture,
                                                 status: int) -> None:
    """Default cooldown (5 s): nothing reaches the gateway, then fresh data within it."""
    caplog.set_level(logging.WARNING)
    h = sim_proxy
    last_good, first = busy_start(h, SINGLE, {"status": status})
    assert first.status == 200 and first.header("X-Cache") in ("HIT", "STALE")
    assert first.body == last_good[SINGLE[0]]
    assert_busy_health(h, 5.0)
    # pypowerwall armed its own 5-minute cooldown: the proxy must not inherit it.
    assert library_cooldown_active(h)
    refused = h.sim.stats()["total"]
    assert 1 <= refused <= 2
    with Pollers(h, SINGLE + MIXED) as polls:
        time.sleep(2.5)
        # A client is told to come back when the cooldown ends.
        remaining = h.gateway.cooldown.remaining()
        reply = h.get("/vitals")
        if reply.status == 503:
            assert abs(retry_after(reply) - remaining) <= 1.5
        assert h.sim.stats()["total"] == refused  # nothing during the cooldown
    for s in polls.replies():
        assert_honest(s, last_good)
    # The gateway is back: fresh data within the cooldown (plus a period).
    h.sim.clear_faults()
    remaining = h.gateway.cooldown.remaining()
    assert remaining > 0
    wait_for("fresh data after the cooldown", lambda: fresh(h.get(SINGLE[0])), remaining + 2 * PERIOD + 1)
    wait_for("/health ok", lambda: health(h)[0] == 200, PERIOD + 1)
    assert h.gateway.cooldown.strikes() == 0  # the next refusal starts short again
    assert not proxy_log_errors(caplog)


def test_busy_retry_after_is_honoured_and_capped(sim_proxy: ProxyHandle) -> None:
    h = sim_proxy
    busy_start(h, SINGLE, {"status": 503, "retry_after": 7})
    assert_busy_health(h, 7.0)
    reply = get_when(h, "/vitals", lambda r: r.status == 503, 3)
    assert assert_json_error(reply, 503)
    assert 6 <= retry_after(reply) <= 7
    assert h.sim.stats()["total"] == 1
    # A gateway asking for a day gets the cap, 5 minutes.
    h.sim.clear_faults()
    h.gateway.cooldown.reset()
    h.sim.reset()
    h.sim.set_fault("status", status=429, retry_after=86400)
    time.sleep(PERIOD)  # a new cache window, so the next read asks the gateway
    wait_for("the refusal", lambda: h.get("/soe") and h.sim.stats()["total"], 3)
    assert_busy_health(h, 300.0)
    reply = h.get("/json")
    assert reply.status in (200, 503)
    if reply.status == 503:
        assert 299 <= retry_after(reply) <= 300


class RecordingCooldown(Cooldown):
    """A short cooldown that remembers every length it chose."""

    def __init__(self, base: float, cap: float) -> None:
        super().__init__(base=base, cap=cap)
        self.lengths: list[float] = []

    def trip(self, retry_after: float | None) -> float:
        seconds = super().trip(retry_after)
        self.lengths.append(seconds)
        return seconds


def test_cooldown_grows_while_the_gateway_keeps_refusing(proxy_factory: Factory) -> None:
    """Short base and cap (the schedule itself is checked above with the defaults)."""
    cooldown = RecordingCooldown(base=0.25, cap=1.0)
    h = proxy_factory(ENV, gateway_options={"cooldown": cooldown})
    warm(h, SINGLE)
    h.sim.reset()
    h.sim.set_fault("status", status=503)
    with Pollers(h, SINGLE + MIXED, threads=3):
        wait_for("four refusals", lambda: len(cooldown.lengths) >= 4, 10)
        _, body, _ = health(h)
        assert body["status"] == "degraded"
        assert body["gateway"]["cooldown_strikes"] >= 4
        # One refused request per cooldown: the gateway is left alone in between.
        assert h.sim.stats()["total"] <= len(cooldown.lengths) + 1
    assert cooldown.lengths[:4] == [0.25, 0.5, 1.0, 1.0]
    h.sim.clear_faults()
    wait_for("fresh data", lambda: fresh(h.get(SINGLE[0])), 1.0 + 2 * PERIOD + 1)
    assert health(h)[0] == 200


@pytest.mark.parametrize("status", [429, 503])
def test_busy_local_mode_recovers_despite_library_negative_caches(
        proxy_factory: Factory, bare_sim: Simulator, status: int) -> None:
    """Local mode: pypowerwall caches a 503 per API and a 429 for every API, for 5 minutes."""
    # 3 s: long enough that a busy machine still sees the cooldown when /health is asked.
    cooldown = RecordingCooldown(base=3.0, cap=6.0)
    h = local_mode(proxy_factory, bare_sim, ENV, gateway_options={"cooldown": cooldown})
    last_good, first = busy_start(h, LOCAL_SINGLE, {"status": status})
    assert first.status == 200 and first.body == last_good[LOCAL_SINGLE[0]]
    assert_busy_health(h, 3.0)
    refused = h.sim.stats()["total"]
    assert refused == 1
    h.sim.clear_faults()
    for path in LOCAL_SINGLE:
        get_when(h, path, fresh, 3.0 + 2 * PERIOD + 1)
    assert health(h)[0] == 200


# ---- session expiry ------------------------------------------------------------------------


@pytest.mark.parametrize("auth_mode", ["cookie", "token"])
def test_session_expiry_costs_one_login(proxy_factory: Factory, bare_sim: Simulator,
                                        auth_mode: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    h = local_proxy(proxy_factory, bare_sim, PW_AUTH_MODE=auth_mode)
    paths = LOCAL_SINGLE + ["/csv", "/json", "/pod", "/api/site_info", "/api/meters/site"]
    warm(h, paths)
    time.sleep(PERIOD)  # a new window: the next reads go to the gateway
    bare_sim.reset()
    bare_sim.set_fault("expire_session")  # every session ends at once, like a gateway restart
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda p: (p, h.get(p)), paths * 4))
    for path, reply in replies:
        assert reply.status == 200, (path, reply.status, reply.body[:200])
        assert reply.header("X-Cache") == "HIT"  # nothing unusual for clients
    stats = bare_sim.stats()["paths"]
    assert stats.get("/api/login/Basic") == 1, stats  # one re-login, not one per waiting request
    # Clients keep getting fresh data on the new session; health never wavered.
    bare_sim.clear_faults()
    time.sleep(PERIOD)
    for path in paths:
        get_when(h, path, fresh, 2 * PERIOD + 1)
    assert bare_sim.stats()["paths"].get("/api/login/Basic") == 1
    status, body, _ = health(h)
    assert status == 200 and body["connection_health"]["consecutive_failures"] == 0


def test_session_expiry_simulate_control_client(proxy_factory: Factory) -> None:
    """--simulate reads over TEDAPI; its local control client logs in again once."""
    h = proxy_factory({**ENV, "PW_CONTROL_SECRET": "s3cret-token"})
    before = get_when(h, "/control/reserve", lambda r: r.status == 200, 10)
    time.sleep(PERIOD)
    h.sim.reset()
    h.sim.set_fault("expire_session")
    replies = [h.get("/control/reserve") for _ in range(5)]
    assert all(r.status == 200 for r in replies), [r.body for r in replies]
    assert replies[0].json() == before.json()
    reply = h.post("/control/reserve", "value=37&token=s3cret-token")
    assert reply.status == 200, reply.body
    assert h.sim.stats()["paths"].get("/api/login/Basic") == 1
    assert health(h)[0] == 200


# ---- grid outage ---------------------------------------------------------------------------


def gateway_load(h: ProxyHandle, seconds: float) -> int:
    """Gateway requests while four clients poll for `seconds`."""
    h.sim.reset()
    with Pollers(h, SINGLE + MIXED) as polls:
        time.sleep(seconds)
        total = int(h.sim.stats()["total"])
    assert {s.reply.status for s in polls.replies()} == {200}
    return total


def test_grid_outage_is_data_not_a_failure(sim_proxy: ProxyHandle) -> None:
    h = sim_proxy
    warm(h, SINGLE)
    normal = gateway_load(h, 2 * PERIOD)
    h.sim.set_fault("grid_outage")
    during = gateway_load(h, 2 * PERIOD)
    assert during <= normal * 1.5 + 4, (normal, during)  # the gateway sees normal polling
    h.sim.reset()
    h.sim.set_fault("grid_outage")
    get_when(h, "/api/system_status/grid_status",
             lambda r: fresh(r) and r.json()["grid_status"] == "SystemIslandedActive", 2 * PERIOD + 1)
    agg = get_when(h, "/aggregates", fresh, 3)
    assert abs(agg.json()["site"]["instant_power"]) < 50  # no grid, no site power
    csv = h.get("/csv/v2?headers")
    assert csv.status == 200 and csv.text.splitlines()[1].split(",")[5] == "0"
    assert h.get("/json").json()["grid_status"] == 0
    st, body, _ = health(h)
    assert st == 200 and body["status"] == "ok"  # the gateway itself is fine
    # The gateway sees normal polling, and the grid comes back as data too.
    h.sim.clear_faults()
    wait_for("grid back", lambda: (r := h.get("/api/system_status/grid_status")).status == 200
             and r.json().get("grid_status") == "SystemGridConnected", 2 * PERIOD + 1)
    assert h.get("/csv/v2?headers").text.splitlines()[1].split(",")[5] == "1"
