"""The gateway simulator, driven by the real pypowerwall library over real sockets."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pypowerwall.local.exceptions import LoginError

from proxy.simulator import DEFAULT_GW_PWD, DEFAULT_PASSWORD, Simulator
from proxy.simulator.layout import layout_for
from proxy.simulator.model import HomeModel
from tests.sim_helpers import (
    CA_BUNDLE_VARS,
    basic_auth,
    connect,
    cookie_header,
    local_powerwall,
    login,
    post_json,
    request,
    tedapi_powerwall,
)

REPO = Path(__file__).resolve().parent.parent
ALLOWLIST = (
    "/api/status", "/api/site_info/site_name", "/api/meters/site", "/api/meters/solar",
    "/api/sitemaster", "/api/powerwalls", "/api/system_status", "/api/system/update/status",
    "/api/site_info", "/api/system_status/grid_faults", "/api/operation",
    "/api/site_info/grid_codes", "/api/solars", "/api/solars/brands", "/api/customer",
    "/api/meters", "/api/installer", "/api/networks", "/api/system/networks",
    "/api/meters/readings", "/api/synchrometer/ct_voltage_references",
    "/api/auth/toggle/supported", "/api/solar_powerwall", "/api/troubleshooting/problems",
    "/api/meters/aggregates", "/api/system_status/soe", "/api/system_status/grid_status",
)
DROPPED = (ConnectionError, http.client.HTTPException, ssl.SSLError)

# The library disables this warning at import, but pytest resets filters per test.
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


@pytest.fixture(autouse=True)
def _verify_off_really(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CA_BUNDLE_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def shared_pw3() -> Iterator[Simulator]:
    with Simulator(port=0, model="pw3", seed=11) as sim:
        yield sim


@pytest.fixture(scope="module")
def shared_pw2() -> Iterator[Simulator]:
    with Simulator(port=0, model="pw2", seed=22) as sim:
        yield sim


@pytest.fixture
def sim(shared_pw3: Simulator) -> Iterator[Simulator]:
    """The shared Powerwall 3 simulator with no faults and zeroed counters."""
    shared_pw3.reset()
    yield shared_pw3
    shared_pw3.reset()


@pytest.fixture
def sim2(shared_pw2: Simulator) -> Iterator[Simulator]:
    shared_pw2.reset()
    yield shared_pw2
    shared_pw2.reset()


def paths(sim: Simulator) -> dict[str, int]:
    return dict(sim.stats()["paths"])


# --- lifecycle and CLI ---------------------------------------------------------------

def test_starts_fast_and_stops_promptly_even_mid_request() -> None:
    began = time.perf_counter()
    sim = Simulator(port=0).start()
    assert time.perf_counter() - began < 0.3
    assert sim.host == f"127.0.0.1:{sim.port}" and sim.url == f"https://{sim.host}"
    sim.set_fault("slow", delay=30)
    failures: list[BaseException] = []

    def stuck_client() -> None:
        try:
            request(sim, "GET", "/api/status", timeout=20)
        except BaseException as exc:  # noqa: BLE001 - any failure is the expected outcome
            failures.append(exc)

    client = threading.Thread(target=stuck_client)
    client.start()
    time.sleep(0.2)
    began = time.perf_counter()
    sim.stop()
    assert time.perf_counter() - began < 1.0
    client.join(5)
    assert failures and not client.is_alive()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", sim.port), 1):
        pass


def test_context_manager_and_restart_on_same_object() -> None:
    with Simulator(port=0, model="pw2") as sim:
        assert request(sim, "GET", "/api/status").status == 200
    sim.start()
    try:
        assert request(sim, "GET", "/api/status").json()["din"].startswith("1232100")
    finally:
        sim.stop()


def test_cli_prints_one_url_line_and_exits_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy.simulator", "--port", "0", "--model", "pw2", "--seed", "3",
         "--password", "pw-cli", "--gw-pwd", "GWCLI12345"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = _read_line(proc, 10.0)
        match = re.fullmatch(r"Simulated Powerwall gateway listening on https://127\.0\.0\.1:(\d+)\n",
                             line)
        assert match, line
        port = int(match.group(1))
        assert request(port, "GET", "/api/status").json()["version"].startswith("25.")
        assert login(port, "pw-cli").status == 200
        assert request(port, "GET", "/tedapi/din", headers=basic_auth("GWCLI12345")).status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        assert proc.stdout is not None and proc.stdout.read() == ""
    finally:
        proc.kill()
        proc.wait()


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    lines: list[str] = []
    stream = proc.stdout
    assert stream is not None
    reader = threading.Thread(target=lambda: lines.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert lines, "the simulator printed nothing"
    return lines[0]


# --- local API through the library -----------------------------------------------------

@pytest.mark.parametrize("model", ["pw3", "pw2"])
def test_local_mode_reads_everything(model: str, sim: Simulator, sim2: Simulator,
                                     tmp_path: Path) -> None:
    target = sim if model == "pw3" else sim2
    pw = local_powerwall(target, tmp_path)
    assert pw.mode == "local" and pw.tedapi_mode == "off"
    assert 0 < pw.level() < 100
    power = pw.power()
    assert set(power) == {"site", "solar", "battery", "load"} and power["load"] > 0
    assert pw.grid_status() == "UP" and pw.grid_status("numeric") == 1
    assert pw.site_name() == "Simulated Home"
    assert pw.version().startswith("25.10") and pw.din() == layout_for(model).din
    assert pw.uptime().startswith("72h")
    assert pw.vitals() is None  # /api/devices/vitals is gone on firmware >= 23.44
    strings = pw.strings()
    assert strings["A"]["Connected"] is True and {"Voltage", "Current", "Power"} <= set(strings["A"])
    assert "SystemConnectedToGrid" in pw.alerts()
    blocks = pw.battery_blocks()
    assert len(blocks) == 2 and all(b["nominal_full_pack_energy"] > 0 for b in blocks.values())
    assert pw.system_status()["system_island_state"] == "SystemGridConnected"
    assert pw.get_reserve() == pytest.approx(20.0) and pw.get_mode() == "self_consumption"
    assert pw.get_time_remaining() > 0
    for path in ALLOWLIST:
        assert pw.poll(path) is not None, path


def test_local_payload_shapes_match_the_gateway(sim: Simulator, tmp_path: Path) -> None:
    pw = local_powerwall(sim, tmp_path)
    aggregates = pw.poll("/api/meters/aggregates")
    for meter in ("site", "battery", "load", "solar"):
        block = aggregates[meter]
        for field in ("instant_power", "instant_reactive_power", "instant_apparent_power",
                      "frequency", "energy_exported", "energy_imported",
                      "instant_average_voltage", "instant_average_current",
                      "last_communication_time", "instant_total_current"):
            assert field in block, (meter, field)
    assert set(pw.poll("/api/system_status/soe")) == {"percentage"}
    assert pw.poll("/api/system_status/grid_status") == {
        "grid_status": "SystemGridConnected", "grid_services_active": False}
    operation = pw.poll("/api/operation")
    assert operation["real_mode"] == "self_consumption"
    assert operation["backup_reserve_percent"] == 24.0
    assert pw.poll("/api/powerwalls")["powerwalls"][0]["PackageSerialNumber"] == "TG1240000001AA"
    assert pw.poll("/api/site_info")["grid_code"]["grid_code"].startswith("60Hz")


def test_operation_post_changes_later_reads_in_both_apis(tmp_path: Path) -> None:
    with Simulator(port=0, seed=5) as sim:
        pw = local_powerwall(sim, tmp_path)
        result = pw.set_operation(level=50, mode="backup")
        assert result == {"real_mode": "backup", "backup_reserve_percent": 50}
        assert pw.get_reserve(scale=False) == 50 and pw.get_mode() == "backup"
        assert pw.set_reserve(30)["backup_reserve_percent"] == 30
        assert pw.get_mode() == "backup"  # the library back-fills the mode it did not change
        ted = tedapi_powerwall(sim, tmp_path)
        assert ted.get_reserve(scale=False) == 30 and ted.get_mode() == "backup"
        state = sim.state()
        assert state["reserve"] == 30 and state["mode"] == "backup"
        assert state["reserve_app"] == pytest.approx(ted.get_reserve())
        cookies = cookie_header(login(sim))
        bad = post_json(sim, "/api/operation", {"real_mode": "party"}, cookies)
        assert bad.status == 400 and bad.json()["code"] == 400
        assert post_json(sim, "/api/operation", {"backup_reserve_percent": 101}, cookies).status == 400


# --- login and sessions -----------------------------------------------------------------

def test_login_form_and_json_set_cookies_and_token(sim: Simulator) -> None:
    reply = login(sim)
    assert reply.status == 200
    body = reply.json()
    assert body["token"] and body["roles"] == ["Home_Owner"]
    cookies = cookie_header(reply)["Cookie"]
    assert "AuthCookie=" in cookies and "UserRecord=" in cookies
    as_json = post_json(sim, "/api/login/Basic", {"username": "customer",
                                                  "password": DEFAULT_PASSWORD,
                                                  "email": "a@b.c",
                                                  "clientInfo": {"timezone": "UTC"}})
    assert as_json.status == 200 and as_json.json()["token"] != body["token"]
    bearer = {"Authorization": f"Bearer {as_json.json()['token']}"}
    assert request(sim, "GET", "/api/meters/aggregates", headers=bearer).status == 200
    assert request(sim, "GET", "/api/meters/aggregates", headers=cookie_header(reply)).status == 200


def test_wrong_password_is_401_like_the_gateway(sim: Simulator, tmp_path: Path) -> None:
    reply = login(sim, "wrong")
    assert reply.status == 401
    assert reply.json() == {"code": 401, "error": "bad credentials", "message": "Login Error"}
    pw = local_powerwall(sim, tmp_path, password="wrong")
    with pytest.raises(LoginError):
        pw.level()


def test_requests_without_a_session_are_refused_except_public_ones(sim: Simulator) -> None:
    assert request(sim, "GET", "/api/meters/aggregates").status == 401
    assert request(sim, "GET", "/api/status").status == 200
    assert request(sim, "GET", "/api/devices/vitals").status == 404
    wrong = request(sim, "GET", "/api/login/Basic")
    assert wrong.status == 405 and wrong.header("Allow") == "POST"
    conn = connect(sim)
    try:  # an iterable body makes http.client send it chunked
        form = [b"username=customer&", b"password=" + DEFAULT_PASSWORD.encode()]
        conn.request("POST", "/api/login/Basic", body=iter(form))
        reply = conn.getresponse()
        assert reply.status == 200 and json.loads(reply.read())["token"]
        conn.request("GET", "/api/status")  # the stream is still in step afterwards
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    huge = request(sim, "POST", "/api/login/Basic", headers={"Content-Length": str(2 << 20)})
    assert huge.status == 400


def test_logout_ends_the_session_and_token_mode_works(sim: Simulator, tmp_path: Path) -> None:
    pw = local_powerwall(sim, tmp_path, authmode="token")
    assert pw.level() is not None
    bearer = dict(pw.client.auth)
    assert bearer["Authorization"].startswith("Bearer ")
    assert request(sim, "GET", "/api/system_status/soe", headers=bearer).status == 200
    assert request(sim, "GET", "/api/logout", headers=bearer).status == 204
    assert request(sim, "GET", "/api/system_status/soe", headers=bearer).status == 401


# --- TEDAPI through the library -----------------------------------------------------------

def test_tedapi_full_mode_pw3(sim: Simulator, tmp_path: Path) -> None:
    pw = tedapi_powerwall(sim, tmp_path)
    assert pw.tedapi_mode == "full" and pw.tedapi.pw3 is True
    vitals = pw.vitals()
    for unit in layout_for("pw3").units:
        for prefix in ("TEPINV", "TEPOD", "PVAC", "PVS"):
            assert f"{prefix}--{unit.din}" in vitals, (prefix, unit.din)
    assert vitals[f"TEPINV--{layout_for('pw3').units[0].din}"]["PCH_FanSpeed_A"] > 0
    strings = pw.strings()
    assert {"A", "F", "A1", "F1"} <= set(strings)
    assert all(v is not None for v in pw.temps().values()) and len(pw.temps()) == 2
    assert "SystemConnectedToGrid" in pw.alerts()
    blocks = pw.battery_blocks()
    assert set(blocks) == {"TG1240000001AA", "TG1240000002BB"}
    assert all(b["nominal_full_pack_energy"] for b in blocks.values())
    fans = pw.tedapi.get_fan_speeds()
    assert len(fans) == 2 and all(f["PCH_FanSpeed_A"] for f in fans.values())
    assert 0 < pw.level() < 100 and pw.power()["load"] > 0 and pw.grid_status() == "UP"
    assert pw.version().startswith("25.10") and pw.din() == layout_for("pw3").din
    assert pw.site_name() == "Simulated Home" and pw.get_reserve() == pytest.approx(20.0)
    leader = layout_for("pw3").units[0].din
    block = pw.tedapi.get_battery_block(leader)
    assert block["components"]["bms"][0]["signals"]
    hits = paths(sim)
    assert hits["/tedapi/din"] == 1 and hits["/"] == 1
    assert all(hits[f"/tedapi/device/{u.din}/v1"] > 0 for u in layout_for("pw3").units)


def test_tedapi_full_mode_pw2(sim2: Simulator, tmp_path: Path) -> None:
    pw = tedapi_powerwall(sim2, tmp_path)
    assert pw.tedapi_mode == "full" and pw.tedapi.pw3 is False
    layout = layout_for("pw2")
    vitals = pw.vitals()
    for unit in layout.units:
        for prefix in ("TETHC", "TEPINV", "TEPOD"):
            assert f"{prefix}--{unit.din}" in vitals, (prefix, unit.din)
        tepinv = vitals[f"TEPINV--{unit.din}"]
        assert tepinv["PINV_EnergyCharged"] > 0 and tepinv["PINV_PllLocked"] is True
        assert vitals[f"TEPOD--{unit.din}"]["POD_available_dischg_power"] == unit.max_power_w
    assert layout.pvac is not None
    pvac_name = f"{layout.pvac.part}--{layout.pvac.serial}"
    for prefix in ("STSTSM--" + layout.din, "PVAC--" + pvac_name, "PVS--" + pvac_name):
        assert prefix in vitals, prefix
    assert set(pw.strings()) == {"A", "B", "C", "D"}
    temps = pw.temps()
    assert set(temps) == {f"TETHC--{u.din}" for u in layout.units}
    assert pw.alerts() and pw.battery_blocks()[layout.units[0].serial]["THC_State"]
    assert set(pw.tedapi.get_fan_speeds()) == {"PVAC--" + pvac_name}
    assert 0 < pw.level() < 100 and pw.grid_status() == "UP"
    assert pw.power()["load"] > 0
    assert "/tedapi/device" not in " ".join(paths(sim2))


def test_tedapi_raw_endpoints_and_auth(sim: Simulator, sim2: Simulator) -> None:
    denied = request(sim, "GET", "/tedapi/din")
    assert denied.status == 403
    assert denied.json()["message"] == "User does not have adequate access rights"
    assert request(sim, "GET", "/tedapi/din", headers=basic_auth("nope")).status == 403
    din = request(sim, "GET", "/tedapi/din", headers=basic_auth())
    assert din.status == 200 and din.body.decode() == layout_for("pw3").din
    garbage = request(sim, "POST", "/tedapi/v1", b"\x0a\xff\xff", basic_auth())
    assert garbage.status == 400
    # PW2/PW3 detection: only a Powerwall 2 gateway serves a page on "/".
    assert request(sim, "GET", "/").status == 404
    root = request(sim2, "GET", "/")
    assert root.status == 200 and b"<title>Simulated gateway</title>" in root.body
    unknown_din = request(sim, "POST", "/tedapi/device/1707000-11-J--XX/v1", b"", basic_auth())
    assert unknown_din.status == 404


# --- one home, two APIs ------------------------------------------------------------------

def test_both_apis_show_the_same_numbers_at_the_same_moment(sim: Simulator,
                                                            tmp_path: Path) -> None:
    local, ted = local_powerwall(sim, tmp_path), tedapi_powerwall(sim, tmp_path)
    local.level()  # log in first, so the comparison below is quick
    for _ in range(10):
        tick = sim.state()["tick"]
        a, b = local.power(), ted.power()
        levels = local.level(), ted.level()
        grid = local.grid_status(), ted.grid_status()
        state = sim.state()
        if state["tick"] == tick:
            break
    assert a == b == {"site": state["site_w"], "solar": state["solar_w"],
                      "battery": state["battery_w"], "load": state["load_w"]}
    assert levels[0] == levels[1] == state["soe"]
    assert grid == ("UP", "UP")
    assert a["solar"] + a["site"] + a["battery"] == pytest.approx(a["load"], abs=0.11)


# --- the home model ------------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _local_wall(hour: int) -> float:
    today = time.localtime()
    return time.mktime((today.tm_year, today.tm_mon, today.tm_mday, hour, 0, 0, 0, 0, -1))


def _model(hour: int, seed: int = 5, **kw: Any) -> tuple[HomeModel, FakeClock]:
    clock = FakeClock()
    return HomeModel(layout_for("pw3"), seed, clock=clock,
                     wall_clock=lambda: _local_wall(hour), **kw), clock


def test_soe_integrates_battery_power_and_energies_accumulate() -> None:
    model, clock = _model(12)
    first = model.snapshot()
    assert first.flows.solar > 3000 and first.flows.battery < 0  # sunny noon: charging
    clock.now = 120.0
    later = model.snapshot()
    mean_w = (first.flows.battery + later.flows.battery) / 2
    expected = -mean_w * 120 / 3600 * 0.95
    assert later.remaining_wh - first.remaining_wh == pytest.approx(expected, rel=0.15)
    assert later.energy.solar_exported > first.energy.solar_exported
    assert later.energy.load_imported > first.energy.load_imported
    assert later.energy.battery_imported > first.energy.battery_imported


def test_night_has_no_solar_and_the_battery_carries_the_house() -> None:
    model, clock = _model(2)
    snap = model.snapshot()
    assert snap.flows.solar == 0 and snap.flows.battery == snap.flows.load and snap.flows.site == 0
    clock.now = 60.0
    assert model.snapshot().remaining_wh < snap.remaining_wh
    model.set_operation(reserve_percent=100.0)
    clock.now = 61.0
    held = model.snapshot()
    assert held.flows.battery == 0 and held.flows.site == held.flows.load  # reserve reached


def test_numbers_move_with_noise_but_are_reproducible_by_seed() -> None:
    one, clock_one = _model(12, seed=9)
    two, clock_two = _model(12, seed=9)
    other, clock_other = _model(12, seed=10)
    loads = []
    for second in (0.0, 5.0, 30.0, 300.0):
        clock_one.now = clock_two.now = clock_other.now = second
        snap = one.snapshot()
        assert snap == two.snapshot()
        assert snap != other.snapshot()
        loads.append(snap.flows.load)
        assert 59.9 < snap.frequency < 60.1 and 235 < snap.v_l1n + snap.v_l2n < 250
    assert len(set(loads)) == len(loads)


def test_same_tick_same_snapshot_and_long_gaps_are_cheap() -> None:
    model, clock = _model(12)
    clock.now = 10.2
    assert model.snapshot() is model.snapshot()
    clock.now = 3 * 86400.0
    began = time.perf_counter()
    snap = model.snapshot()
    assert time.perf_counter() - began < 0.5
    assert 0 <= snap.remaining_wh <= snap.full_pack_wh


def test_islanded_home_runs_on_the_battery() -> None:
    model, _ = _model(20, outage=lambda: True)
    snap = model.snapshot()
    assert snap.islanded and snap.grid_status == "SystemIslandedActive"
    assert snap.flows.site == 0
    assert snap.flows.battery == pytest.approx(snap.flows.load - snap.flows.solar, abs=0.11)


# --- faults, observed through the library --------------------------------------------------

def test_fault_down_looks_unreachable(sim: Simulator, tmp_path: Path) -> None:
    ted = tedapi_powerwall(sim, tmp_path)
    sim.set_fault("down")
    assert local_powerwall(sim, tmp_path).level() is None
    assert ted.vitals() is None and ted.level() is None
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(sim.url + "/api/status", verify=False, timeout=5)
    hits = paths(sim)
    assert hits["/api/system_status/soe"] == 1 and hits["/api/status"] == 1
    assert hits["/tedapi/v1"] >= 1


def test_fault_down_for_listed_paths_only(sim: Simulator, tmp_path: Path) -> None:
    sim.set_fault("down", paths=["/api/system_status/soe", "/api/site_info*"])
    pw = local_powerwall(sim, tmp_path)
    assert pw.level() is None and pw.site_name() is None
    assert pw.grid_status() == "UP"
    with pytest.raises(DROPPED):
        request(sim, "GET", "/api/site_info/grid_codes")


def test_fault_slow_delays_answers(sim: Simulator, tmp_path: Path) -> None:
    sim.set_fault("slow", paths=["/api/system_status/soe"], delay=1.0)
    impatient = local_powerwall(sim, tmp_path, timeout=0.5)
    assert impatient.level() is None  # the library timed out
    assert impatient.site_name() == "Simulated Home"
    began = time.perf_counter()
    reply = request(sim, "GET", "/api/system_status/soe", headers=cookie_header(login(sim)))
    assert reply.status == 200 and time.perf_counter() - began >= 1.0


@pytest.mark.parametrize("code", [503, 429, 500])
def test_fault_status_codes(code: int, sim: Simulator, tmp_path: Path) -> None:
    sim.set_fault("status", paths=["/api/system_status/soe", "/tedapi/v1"], status=code,
                  retry_after=7 if code == 429 else None)
    reply = request(sim, "GET", "/api/system_status/soe")
    assert reply.status == code and reply.json()["code"] == code
    assert reply.header("Retry-After") == ("7" if code == 429 else None)
    pw = local_powerwall(sim, tmp_path, name=f"s{code}")
    assert pw.level() is None and pw.level() is None
    # 429/503 make the library back off (no second request); 500 does not.
    assert paths(sim)["/api/system_status/soe"] == (3 if code == 500 else 2)
    sim.clear_faults()
    ted = tedapi_powerwall(sim, tmp_path, name=f"t{code}")
    sim.set_fault("status", paths=["/tedapi/v1"], status=code)
    assert ted.vitals() is None


def test_fault_expire_session_forces_a_new_login(sim: Simulator, tmp_path: Path) -> None:
    pw = local_powerwall(sim, tmp_path)
    assert pw.level() is not None
    old = {"Cookie": "; ".join(f"{k}={v}" for k, v in pw.client.auth.items())}
    assert paths(sim)["/api/login/Basic"] == 1
    sim.set_fault("expire_session")
    assert pw.level() is not None  # the library logged in again by itself
    assert paths(sim)["/api/login/Basic"] == 2
    assert request(sim, "GET", "/api/system_status/soe", headers=old).status == 401
    fresh = {"Cookie": "; ".join(f"{k}={v}" for k, v in pw.client.auth.items())}
    assert request(sim, "GET", "/api/system_status/soe", headers=fresh).status == 200


def test_expire_session_for_listed_paths_and_short_windows(sim: Simulator) -> None:
    cookies = cookie_header(login(sim))
    result = sim.set_fault("expire_session", paths=["/api/system_status/soe"])
    assert [f["kind"] for f in result["faults"]] == ["expire_session"]
    grid = "/api/system_status/grid_status"
    assert request(sim, "GET", grid, headers=cookies).status == 200  # not a listed path
    assert request(sim, "GET", "/api/system_status/soe", headers=cookies).status == 401
    assert request(sim, "GET", grid, headers=cookies).status == 401  # that session is gone
    again = cookie_header(login(sim))
    assert request(sim, "GET", "/api/system_status/soe", headers=again).status == 200
    sim.clear_faults()
    sim.set_fault("expire_session", seconds=0.05)
    time.sleep(0.1)  # the window is over, but the sessions it ended stay ended
    assert request(sim, "GET", grid, headers=again).status == 401


def test_fault_malformed_bodies(sim: Simulator, tmp_path: Path) -> None:
    ted = tedapi_powerwall(sim, tmp_path)
    sim.set_fault("malformed", paths=["/api/system_status/soe", "/tedapi/v1", "/tedapi/din"])
    assert local_powerwall(sim, tmp_path).level() is None
    assert ted.level() is None
    reply = request(sim, "GET", "/api/system_status/soe", headers=cookie_header(login(sim)))
    assert reply.status == 200 and reply.header("Content-Type") == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply.body)
    din = request(sim, "GET", "/tedapi/din", headers=basic_auth())
    with pytest.raises(UnicodeDecodeError):
        din.body.decode("utf-8")


def test_fault_grid_outage_islands_the_home_in_both_apis(sim: Simulator,
                                                         tmp_path: Path) -> None:
    local, ted = local_powerwall(sim, tmp_path), tedapi_powerwall(sim, tmp_path)
    sim.set_fault("grid_outage")
    assert local.grid_status() == "DOWN" and ted.grid_status() == "DOWN"
    power = local.power()
    assert power["site"] == 0 and ted.power()["site"] == 0
    assert power["battery"] == pytest.approx(power["load"] - power["solar"], abs=0.11)
    assert local.system_status()["system_island_state"] == "SystemIslandedActive"
    assert "SystemIslandedActive" in local.alerts()
    tesync = next(v for k, v in ted.vitals().items() if k.startswith("TESYNC--"))
    assert tesync["ISLAND_GridConnected"] != "ISLAND_GridConnected_Connected"
    assert sim.state()["islanded"] is True
    sim.clear_faults()
    assert local.grid_status() == "UP" and ted.grid_status() == "UP"
    sim.set_fault("grid_outage", seconds=0.3)
    assert local.grid_status() == "DOWN"
    time.sleep(0.4)
    assert local.grid_status() == "UP"


def test_fault_api_over_http(sim: Simulator) -> None:
    added = post_json(sim, "/sim/fault", {"kind": "status", "status": 429, "retry_after": 3,
                                          "paths": ["/api/status"], "seconds": 60})
    assert added.status == 200
    [fault] = added.json()["faults"]
    assert fault["kind"] == "status" and fault["status"] == 429 and fault["retry_after"] == 3
    assert 59 < fault["seconds_remaining"] <= 60
    post_json(sim, "/sim/fault", {"kind": "slow", "delay": 0.1})
    assert len(request(sim, "GET", "/sim/fault").json()["faults"]) == 2
    assert request(sim, "GET", "/api/status").status == 429
    for bad in ({"kind": "nope"}, {"kind": "status", "status": 200}, {"kind": "slow", "delay": -1},
                {"kind": "down", "paths": "/api"}, {"kind": "down", "seconds": 0}, [1],
                {"kind": "down", "colour": "red"}):
        reply = post_json(sim, "/sim/fault", bad)
        assert reply.status == 400 and "error" in reply.json(), bad
    assert request(sim, "POST", "/sim/fault", "not json").status == 400
    assert request(sim, "POST", "/sim/clear").json() == {"faults": []}
    assert request(sim, "GET", "/api/status").status == 200
    assert request(sim, "GET", "/sim/nothing").status == 404
    with pytest.raises(ValueError):
        sim.set_fault("status", status=99)


# --- counting -------------------------------------------------------------------------------

def test_counters_are_exact(sim: Simulator, tmp_path: Path) -> None:
    for _ in range(3):
        request(sim, "GET", "/api/status")
    request(sim, "GET", "/api/meters/aggregates?x=1")  # 401, still a gateway request
    request(sim, "GET", "/no/such/page")
    request(sim, "POST", "/tedapi/v1", b"junk", basic_auth())
    sim.set_fault("down", paths=["/api/sitemaster"])
    with pytest.raises(DROPPED):
        request(sim, "GET", "/api/sitemaster")
    request(sim, "GET", "/sim/stats")
    request(sim, "GET", "/sim/state")
    request(sim, "POST", "/sim/clear")
    expected = {"total": 7, "paths": {"/api/status": 3, "/api/meters/aggregates": 1,
                                      "/no/such/page": 1, "/tedapi/v1": 1, "/api/sitemaster": 1},
                "queries": {}, "in_flight": 0, "most_in_flight": 1}
    assert sim.stats() == expected
    assert request(sim, "GET", "/sim/stats").json() == expected
    pw = local_powerwall(sim, tmp_path)
    pw.level()  # the library's first call: 401, login, retry
    pw.level()
    hits = paths(sim)
    assert hits["/api/system_status/soe"] == 3 and hits["/api/login/Basic"] == 1
    assert request(sim, "POST", "/sim/reset").status == 200
    assert sim.stats() == {"total": 0, "paths": {}, "queries": {}, "in_flight": 0, "most_in_flight": 0}


def test_keep_alive_and_concurrent_clients_are_all_counted(sim: Simulator) -> None:
    conn = connect(sim)
    try:
        for _ in range(3):
            conn.request("GET", "/api/status")
            response = conn.getresponse()
            assert response.status == 200 and response.read()
    finally:
        conn.close()
    replies: list[int] = []
    workers = [threading.Thread(target=lambda: replies.append(
        request(sim, "GET", "/api/auth/toggle/supported").status)) for _ in range(20)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    assert replies == [200] * 20
    assert paths(sim) == {"/api/status": 3, "/api/auth/toggle/supported": 20}


# --- web UI ---------------------------------------------------------------------------------

def test_tiny_web_ui(sim: Simulator) -> None:
    page = request(sim, "GET", "/index.html")
    assert page.status == 200 and (page.header("Content-Type") or "").startswith("text/html")
    assert page.body.startswith(b"<html><head><title>Simulated gateway</title></head><body>")
    assert page.body.rstrip().endswith(b"</body></html>")
    script = request(sim, "GET", "/static/app.js")
    assert script.status == 200 and script.header("Content-Type") == "application/javascript"
    style = request(sim, "GET", "/static/app.css")
    assert style.status == 200 and style.header("Content-Type") == "text/css"
    assert request(sim, "GET", "/static/nope.js").status == 404


def test_default_credentials_are_the_documented_ones() -> None:
    assert DEFAULT_PASSWORD == "password" and DEFAULT_GW_PWD == "SIMGWPWD01"
    assert os.environ.get("REQUESTS_CA_BUNDLE") is None
