"""Connection states that say what is wrong, no login storms, --check, and the bearer path.

Every state (starting, unreachable, refused, cooling_down, ok) is checked where an owner meets
it: the log line, /health, the 503 body clients get, and --check. Each talks to the simulator
(or to a port that refuses or never answers) over real sockets.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from proxy.gateway import connection, library
from proxy.simulator import DEFAULT_GW_PWD, DEFAULT_PASSWORD, Simulator
from tests.brokers import free_port, wait_for
from tests.conftest import CONNECT_WAIT, Factory, ProxyHandle, settled
from tests.sim_helpers import quiet

ROOT = Path(__file__).parent.parent
TOKEN = "s3cret-token"
OC2 = "oc2-token"
BOUND = 15.0  # how long a state may take to show on a loaded machine


@pytest.fixture
def launch(proxy_factory: Factory) -> Callable[..., ProxyHandle]:
    """launch(env) -> a proxy for the gateway in `env`, returned at once, connected or not."""
    return lambda env: proxy_factory(env, simulate=False, connected=False)


@pytest.fixture
def legacy() -> Iterator[Simulator]:
    """A Powerwall 2 gateway: the proxy logs in with the customer password."""
    with Simulator(port=0, seed=3, profile="pw2-legacy") as sim:
        yield sim


@pytest.fixture
def solar() -> Iterator[Simulator]:
    """A solar-only gateway: TEDAPI only through the bearer login."""
    with Simulator(port=0, seed=4, profile="solar-only") as sim:
        yield sim


@contextmanager
def silent_gateway() -> Iterator[int]:
    """A port that takes the TCP connection and then never says a word (no TLS handshake)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


def health(h: ProxyHandle) -> dict[str, Any]:
    body: dict[str, Any] = h.get("/health").json()
    return body


def connection_is(h: ProxyHandle, state: str) -> dict[str, Any] | None:
    body = health(h)
    return body if body["connection"] == state else None


def logins(sim: Simulator) -> int:
    return int(sim.stats()["paths"].get("/api/login/Basic", 0))


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("proxy")]


# ---- unreachable ------------------------------------------------------------------------------


def test_unreachable_names_host_port_and_connection_refused_at_once(
        launch: Callable[..., ProxyHandle], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="proxy")
    host = f"127.0.0.1:{free_port()}"
    h = launch({"PW_HOST": host, "PW_PASSWORD": "pw"})
    why = f"cannot reach the gateway at {host} (connection refused)"
    wait_for(lambda: any(m.startswith(f"gateway: unreachable: {why}") for m in messages(caplog)),
             5.0, "the log line")  # as soon as it is known
    body = wait_for(lambda: connection_is(h, "unreachable"), BOUND, "unreachable in /health")
    assert body["status"] == "starting"
    assert body["connection_health"]["last_error"] == f"unreachable: {why}"
    assert body["gateway"]["connection_error"].startswith(why + "; ")
    reply = h.get("/aggregates")
    assert reply.status == 503 and reply.json()["error"].startswith(f"unreachable: {why}; ")
    assert int(reply.header("Retry-After") or 0) >= 1
    fallback = body["fallback_mode"]
    assert fallback["is_fallback_mode"] is True and fallback["recovery_thread_alive"] is True
    assert fallback["next_attempt_at"] is not None and fallback["recovery_attempts"] >= 1
    stats = h.get("/stats").json()
    # Answers before the first login are "starting", not timeouts or errors.
    assert (stats["starting"], stats["timeout"], stats["errors"]) == (1, 0, 0)
    assert health(h)["proxy_stats"]["total_starting"] == 1


def test_unreachable_names_a_gateway_that_never_answers_as_timed_out(
        launch: Callable[..., ProxyHandle]) -> None:
    with silent_gateway() as port:
        h = launch({"PW_HOST": f"127.0.0.1:{port}", "PW_GW_PWD": "x", "PW_TIMEOUT": "1"})
        body = wait_for(lambda: connection_is(h, "unreachable"), BOUND, "unreachable in /health")
        assert body["gateway"]["connection_error"].startswith(
            f"cannot reach the gateway at 127.0.0.1:{port} (timed out); ")


def test_the_gateways_own_wifi_address_gets_a_hint() -> None:
    text = connection.unreachable("192.168.91.1", "timed out")
    assert text.startswith("cannot reach the gateway at 192.168.91.1 (timed out); 192.168.91.1 "
                           "answers only on the gateway's own Wi-Fi network")
    assert "Wi-Fi" not in connection.unreachable("10.0.0.2:443", "connection refused")


# ---- refused ----------------------------------------------------------------------------------


def test_refused_customer_password_names_the_variable_and_is_never_connected(
        launch: Callable[..., ProxyHandle], legacy: Simulator,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxy")
    h = launch({"PW_HOST": legacy.host, "PW_PASSWORD": "not-the-password"})
    why = "the gateway refused the login with the customer password (PW_PASSWORD): HTTP 401"
    body = wait_for(lambda: connection_is(h, "refused"), BOUND, "refused in /health")
    assert body["status"] == "degraded" and body["connection_health"]["last_error"] == f"refused: {why}"
    assert body["gateway"]["connection_error"].startswith(f"{why}; next attempt in ")
    reply = h.get("/soe")
    assert reply.status == 503 and reply.json()["error"].startswith(f"refused: {why}; next attempt in ")
    assert int(reply.header("Retry-After") or 0) > 50
    lines = messages(caplog)
    assert [m for m in lines if "refused" in m] == [f"gateway: refused: {why}; next attempt in 60 s"]
    assert not any("connected" in m for m in lines), lines
    assert logins(legacy) == 1  # one attempt per backoff step


def test_refused_gateway_password_of_a_listed_gateway_names_its_key(
        launch: Callable[..., ProxyHandle], simulator: Simulator) -> None:
    listed = json.dumps([{"id": "cabin", "host": simulator.host, "gw_pwd": "WRONGPWD99"}])
    h = launch({"PW_GATEWAYS": listed})
    body = wait_for(lambda: connection_is(h, "refused"), BOUND, "refused in /health")
    assert body["gateway"]["connection_error"].startswith(
        "the gateway refused the login with the gateway password (gateway 'cabin' key 'gw_pwd'): "
        "HTTP 403; ")


def test_customer_password_refused_with_a_working_gateway_password_is_degraded(
        launch: Callable[..., ProxyHandle], simulator: Simulator) -> None:
    h = launch({"PW_HOST": simulator.host, "PW_PASSWORD": "not-the-password",
                "PW_GW_PWD": DEFAULT_GW_PWD})
    assert h.gateway.wait_connected(CONNECT_WAIT)
    body = health(h)
    assert (body["status"], body["connection"]) == ("degraded", "refused")
    assert body["gateway"]["connection_error"] == (
        "the gateway refused the login with the customer password (PW_PASSWORD): HTTP 401; "
        "serving TEDAPI data with the gateway password (PW_GW_PWD) meanwhile")
    assert h.get("/aggregates").status == 200  # the data still flows
    assert h.get("/stats").json()["tedapi_mode"] == "full"


# ---- cooling_down, starting, ok -------------------------------------------------------------


def test_cooling_down_says_what_the_gateway_answered(proxy_factory: Factory) -> None:
    h = proxy_factory()
    assert health(h)["connection"] == "ok" and health(h)["gateway"]["connection_error"] is None
    h.sim.set_fault("status", status=429, retry_after=20)
    window = h.gateway.cache.window()
    wait_for(lambda: h.gateway.cache.window() != window, BOUND, "a new cache window")
    reply = h.get("/vitals")  # never fetched before: no last good copy to serve
    assert reply.status == 503
    assert reply.json()["error"].startswith(
        "cooling_down: the gateway asked for calm (gateway answered HTTP 429); next request in ")
    body = health(h)
    assert (body["status"], body["connection"]) == ("degraded", "cooling_down")
    # Retry-After 20 is honoured (a loaded machine may take seconds to get here: no tight bound)
    assert 5 <= body["gateway"]["cooldown_remaining_seconds"] <= 20


def test_answers_before_the_first_login_are_starting_not_timeouts(
        launch: Callable[..., ProxyHandle], legacy: Simulator) -> None:
    legacy.set_fault("slow", paths=["/api/login/Basic"], delay=1.5)
    h = launch({"PW_HOST": legacy.host, "PW_PASSWORD": DEFAULT_PASSWORD})
    body = health(h)
    assert (body["status"], body["connection"]) == ("starting", "starting")
    reply = h.get("/aggregates")
    assert reply.status == 503
    assert reply.json()["error"] == f"starting: connecting to the gateway at {legacy.host}"
    assert h.gateway.wait_connected(CONNECT_WAIT)
    assert h.get("/aggregates").status == 200
    stats = h.get("/stats").json()
    assert (stats["starting"], stats["timeout"], stats["errors"]) == (1, 0, 0)
    assert connection_is(h, "ok")


# ---- --check ----------------------------------------------------------------------------------


def check(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": "/usr/bin:/bin", "PW_TIMEOUT": "2", "PW_AUTH_PATH": str(tmp_path),
               "PW_CACHE_FILE": str(tmp_path / ".powerwall"), **env}
    return subprocess.run([sys.executable, "-m", "proxy", "--check", *args], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=120)


def test_check_prints_one_line_per_gateway_and_exits_0_or_2(tmp_path: Path, legacy: Simulator) -> None:
    fleet = check(tmp_path, "--simulate", "2")
    assert fleet.returncode == 0, fleet.stderr
    lines = fleet.stdout.splitlines()
    assert [line.split(" ")[1] for line in lines] == ["sim1", "sim2"]
    assert all(": ok: connected, mode Local" in line and 'site "Simulated Home"' in line
               for line in lines), lines
    port = free_port()
    down = check(tmp_path, PW_HOST=f"127.0.0.1:{port}", PW_PASSWORD="pw")
    assert (down.returncode, down.stdout) == (2, (
        f"gateway default (127.0.0.1:{port}): unreachable: cannot reach the gateway at "
        f"127.0.0.1:{port} (connection refused)\n"))
    wrong = check(tmp_path, PW_HOST=legacy.host, PW_PASSWORD="not-the-password")
    assert (wrong.returncode, wrong.stdout) == (2, (
        f"gateway default ({legacy.host}): refused: the gateway refused the login with the "
        "customer password (PW_PASSWORD): HTTP 401\n"))
    bad = check(tmp_path, PW_PORT="eighty")
    assert bad.returncode == 2 and bad.stdout == "" and "Traceback" not in bad.stderr
    assert "PW_PORT must be an integer" in bad.stderr


# ---- no login storms ----------------------------------------------------------------------------

STORM_ROUTES = ["/aggregates", "/soe", "/vitals", "/strings", "/api/system_status/grid_status",
                "/pw/level", "/csv"]


@pytest.mark.parametrize(("profile", "slow"), [
    ("pw2-legacy", 0.0), ("default", 0.0), ("solar-only", 0.0), ("pw2-legacy", 0.4)])
def test_no_login_storm_when_every_data_request_answers_401(
        launch: Callable[..., ProxyHandle], caplog: pytest.LogCaptureFixture,
        profile: str, slow: float) -> None:
    caplog.set_level(logging.WARNING, logger="proxy")
    with Simulator(port=0, seed=9, profile=profile) as sim:
        given = sim.credentials()
        env = {"PW_HOST": sim.host, "PW_PASSWORD": given.get("password", ""),
               "PW_GW_PWD": given.get("gw_pwd", ""), "PW_CACHE_TTL": "0"}
        if sim.profile.bearer:
            env.update(PW_TEDAPI_AUTH_MODE="bearer", PW_TEDAPI_API_VERSION="V2026_06")
        h = launch(env)
        assert h.gateway.wait_connected(CONNECT_WAIT)
        settled(h)
        assert h.get("/aggregates").status == 200
        if slow:
            sim.set_fault("slow", delay=slow)
        sim.set_fault("data_401")
        before = logins(sim)
        for _ in range(4):  # four cache windows of telegraf-like polling
            window = h.gateway.cache.window()
            with ThreadPoolExecutor(len(STORM_ROUTES)) as pool:
                replies = list(pool.map(lambda p: h.get(p, timeout=BOUND), STORM_ROUTES))
            assert all(r.status in (200, 503) for r in replies)
            wait_for(lambda w=window: h.gateway.cache.window() != w, BOUND, "the next window")
        wait_for(lambda: quiet(h), BOUND, "the last fetches to finish")  # their logins count too
        assert logins(sim) - before <= 1, sim.stats()  # one re-login, then the backoff
        body = health(h)
        assert (body["connection"], body["gateway"]["login_backoff_steps"]) == ("refused", 1)
        assert body["gateway"]["login_backoff_remaining_seconds"] > 50
        assert "but answers HTTP 401 to /" in body["gateway"]["connection_error"]
        assert "even after a fresh login" in body["gateway"]["connection_error"]
        refusals = [m for m in messages(caplog) if "refused:" in m]
        assert len(refusals) == 1, refusals  # logged once per step
        reply = h.get("/json")
        assert reply.status == 503 and reply.json()["error"].startswith("refused: ")


def test_a_403_still_means_the_firmware_lacks_the_path(launch: Callable[..., ProxyHandle]) -> None:
    with Simulator(port=0, seed=2, profile="pw3") as sim:
        h = launch({"PW_HOST": sim.host, "PW_GW_PWD": DEFAULT_GW_PWD})
        assert h.gateway.wait_connected(CONNECT_WAIT)
        settled(h)
        before = logins(sim)
        reply = h.get("/api/solar_powerwall")
        assert reply.status == 200
        body = health(h)
        assert (body["connection"], body["gateway"]["login_backoff_steps"]) == ("ok", 0)
        assert logins(sim) - before <= 1


# ---- the bearer path (solar-only gateways) --------------------------------------------------


def test_bearer_on_a_solar_only_gateway_end_to_end(launch: Callable[..., ProxyHandle],
                                                   solar: Simulator) -> None:
    h = launch({"PW_HOST": solar.host, "PW_GW_PWD": DEFAULT_GW_PWD, "PW_TEDAPI_AUTH_MODE": "bearer",
                "PW_TEDAPI_API_VERSION": "V2026_06"})
    assert h.gateway.wait_connected(CONNECT_WAIT), h.gateway.info.connect_error
    settled(h)
    aggregates = h.get("/aggregates").json()
    assert aggregates["battery"]["instant_power"] == 0 and aggregates["solar"]["instant_power"] >= 0
    assert set(h.get("/strings").json()) == {"A", "B", "C", "D"}
    assert any(key.startswith("PVAC--") for key in h.get("/vitals").json())
    assert h.get("/version").json()["version"] == "25.26.2 7c3b1e94"
    assert h.get("/tedapi/config").json()["battery_blocks"] == []
    stats = h.get("/stats").json()
    assert (stats["tedapi_auth_mode"], stats["tedapi_api_version"]) == ("bearer", "V2026_06")
    assert stats["config"]["PW_TEDAPI_AUTH_MODE"] == "bearer" and stats["mode"] == "Local (full)"
    body = health(h)
    assert body["connection"] == "ok"
    assert body["transports"] == {"wifi_tedapi": {"active": True, "status": "ok", "host": solar.host,
                                                  "auth_mode": "bearer"}}
    paths = solar.stats()["paths"]
    assert paths["/tedapi/v1"] >= 1 and paths["/api/login/Basic"] >= 1


def test_basic_auth_against_a_bearer_only_gateway_is_refused(launch: Callable[..., ProxyHandle],
                                                             solar: Simulator) -> None:
    h = launch({"PW_HOST": solar.host, "PW_GW_PWD": DEFAULT_GW_PWD})
    body = wait_for(lambda: connection_is(h, "refused"), BOUND, "refused in /health")
    assert "the gateway password (PW_GW_PWD): HTTP 401" in body["gateway"]["connection_error"]


def test_simulated_solar_only_runs_with_bearer(proxy_factory: Factory) -> None:
    """python3 -m proxy --simulate --profile solar-only, PW_TEDAPI_AUTH_MODE=bearer."""
    h = proxy_factory({"PW_TEDAPI_AUTH_MODE": "bearer"}, simulate_profile="solar-only")
    assert h.get("/aggregates").json()["battery"]["instant_power"] == 0
    assert h.get("/soe").status == 200 and h.get("/vitals").status == 200
    stats = h.get("/stats").json()
    assert (stats["tedapi_auth_mode"], stats["tedapi_api_version"]) == ("bearer", "V2026_06")
    assert health(h)["transports"]["wifi_tedapi"]["auth_mode"] == "bearer"
    assert h.sim.profile.name == "solar-only" and h.sim.stats()["paths"]["/tedapi/v1"] >= 1


# ---- /health blocks from the library and the connect loop ----------------------------------


def test_v1r_transport_reports_the_failover() -> None:
    din = "1707000-11-J--TG0123456789AB"
    tedapi = SimpleNamespace(v1r=True, din=din, gw_ip="10.42.1.40", lan_failed=True,
                             lan_recover_after=time.time() + 480, lan_last_success=0, failover=True,
                             wifi_session=None)
    shown = library.transports(SimpleNamespace(tedapi=tedapi), None, False, True)
    lan = shown["v1r_lan"]
    assert (lan["status"], lan["leader_din"], lan["failover"], lan["failed_over"]) == (
        "unavailable", din, True, True)
    assert 470 <= lan["lan_retry_in_seconds"] <= 480
    assert shown["wifi_tedapi"] == {"active": False}
    healthy = SimpleNamespace(**{**vars(tedapi), "lan_failed": False})
    lan = library.transports(SimpleNamespace(tedapi=healthy), None, False, True)["v1r_lan"]
    assert lan["status"] == "ok" and lan["failed_over"] is False and "lan_retry_in_seconds" not in lan


def test_reconnects_view_is_the_references_fallback_block() -> None:
    now = [1000.0]
    record = connection.Reconnects(clock=lambda: now[0])
    assert record.view(None) == {"is_fallback_mode": False, "fallback_since": None,
                                 "fallback_duration_seconds": None, "recovery_attempts": 0,
                                 "last_recovery_attempt": None, "recovery_enabled": True,
                                 "next_attempt_at": None, "recovery_thread_alive": None}
    record.attempt()
    record.failed(4.0)
    now[0] = 1002.5
    view = record.view(True)
    assert (view["is_fallback_mode"], view["fallback_since"], view["fallback_duration_seconds"]) == (
        True, 1000.0, 2.5)
    assert (view["recovery_attempts"], view["next_attempt_at"], view["recovery_thread_alive"]) == (
        1, 1004.0, True)
    record.succeeded()
    assert record.view(None)["is_fallback_mode"] is False


# ---- numbers as the app shows them ----------------------------------------------------------


@pytest.mark.parametrize("mode", ["tedapi", "local"])
def test_a_reserve_of_41_reads_41_everywhere(launch: Callable[..., ProxyHandle], proxy_factory: Factory,
                                             simulator: Simulator, mode: str) -> None:
    tokens = {"PW_CONTROL_SECRET": TOKEN, "PW_OPENC2_TOKEN": OC2}
    if mode == "local":
        h = launch({"PW_HOST": simulator.host, "PW_PASSWORD": DEFAULT_PASSWORD, **tokens})
        assert h.gateway.wait_connected(CONNECT_WAIT)
        h.sim = simulator
        settled(h)
    else:
        h = proxy_factory(tokens)  # --simulate: TEDAPI reads, local writes
    assert h.post("/control/reserve", f"value=41&token={TOKEN}").status == 200
    assert h.sim.state()["reserve"] == pytest.approx(43.95)  # the gateway's own scale
    window = h.gateway.cache.window()
    wait_for(lambda: h.gateway.cache.window() != window, BOUND, "the next window")
    assert h.get("/control/reserve").body == b'{"reserve": 41}'
    assert h.get("/pw/get_reserve").body == b'{"reserve": 41}'
    assert h.get("/control/status").json()["reserve"] == 41
    assert '"reserve": 41,' in h.get("/json").text
    assert '"backup_reserve_percent": 41}' in h.get("/pod").text
    command = {"action": "query", "target": {"properties": ["backup_reserve_percent"]}}
    reply = h.request("POST", "/openc2", body=json.dumps(command), headers={
        "Content-Type": "application/openc2-cmd+json;version=1.0",
        "Authorization": f"Bearer {OC2}"})
    assert reply.status == 200 and b'"backup_reserve_percent": 41}' in reply.body
