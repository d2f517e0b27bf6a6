"""Gateway profiles and the drip/oversize/login_401 faults, over real sockets.

Each profile's distinguishing behaviour is checked on the wire and, where a client
would notice it, through the real pypowerwall library; the proxy is then pointed at
every profile with the credentials the profile hands out.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from pypowerwall.local.exceptions import LoginError

from proxy.config import load_config
from proxy.main import main, start
from proxy.simulator import DEFAULT_GW_PWD, DEFAULT_PASSWORD, Simulator
from proxy.simulator.faults import MAX_CHUNK, MAX_SIZE
from proxy.simulator.messages import Delivery
from proxy.simulator.profiles import (
    NAMES,
    PORTAL_PATHS,
    PW3_FORBIDDEN,
    PW3_MISSING,
    SPARSE_EMPTY,
    profile_named,
)
from tests.conftest import CONNECT_WAIT, DEFAULT_ENV, ProxyHandle, settled
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
GO_404 = b"404 page not found\n"
KEPT_BY_SPARSE = ("/api/meters/aggregates", "/api/system_status/soe", "/api/status",
                  "/api/system_status/grid_status", "/api/site_info/site_name")

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


@pytest.fixture(autouse=True)
def _verify_off_really(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CA_BUNDLE_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def sims() -> Iterator[dict[str, Simulator]]:
    """One running simulator per profile, shared by the module."""
    running = {name: Simulator(port=0, seed=5, profile=name).start() for name in NAMES}
    try:
        yield running
    finally:
        for sim in running.values():
            sim.stop()


@pytest.fixture
def profile_sim(request: pytest.FixtureRequest, sims: dict[str, Simulator]) -> Iterator[Simulator]:
    """The shared simulator of the profile named by the test's parameter, faults cleared."""
    sim = sims[request.param]
    sim.reset()
    yield sim
    sim.reset()


def by_name(*names: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("profile_sim", names, indirect=True)


def logged_in(sim: Simulator) -> dict[str, str]:
    reply = login(sim)
    assert reply.status == 200, reply.body
    return cookie_header(reply)


def _insecure() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def raw_exchange(sim: Simulator, data: bytes, timeout: float = 10.0) -> list[bytes]:
    """Send `data` on a fresh TLS connection and return every read until the server closes.

    Each TLS record comes back as its own read, so the list shows how the server wrote.
    """
    with socket.create_connection(("127.0.0.1", sim.port), timeout=timeout) as plain, \
            _insecure().wrap_socket(plain, server_hostname="powerwall") as tls:
        tls.sendall(data)
        reads: list[bytes] = []
        while True:
            try:
                piece = tls.recv(65536)
            except ssl.SSLEOFError:
                break
            if not piece:
                break
            reads.append(piece)
    return reads


def split_head(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in
               (line.partition(":") for line in lines)}
    return status_line, headers, body


# --- the table ---------------------------------------------------------------------------------

def test_profiles_are_named_rows_and_unknown_names_list_the_choices() -> None:
    assert NAMES[0] == "default" and len(set(NAMES)) == len(NAMES)
    assert set(NAMES) == {"default", "pw2-legacy", "pw3", "sparse", "http10", "portal", "solar-only"}
    with pytest.raises(ValueError) as caught:
        Simulator(profile="pw4")
    assert all(name in str(caught.value) for name in NAMES)
    with pytest.raises(ValueError):
        profile_named("")
    assert Simulator().profile is profile_named("default")


@pytest.mark.parametrize("name", NAMES)
def test_credentials_follow_the_connection_mode(name: str) -> None:
    sim = Simulator(profile=name, password="owner-pw", gw_pwd="GWSECRET99")
    assert sim.profile.name == name
    expected = {"gw_pwd": "GWSECRET99"} if sim.profile.tedapi else {"password": "owner-pw"}
    assert sim.credentials() == expected
    assert sim.profile.tedapi == (name in ("default", "pw3", "solar-only"))
    assert sim.profile.http10 == (name == "http10")


@by_name("default")
def test_default_keeps_its_firmware_vitals_404_and_tedapi(profile_sim: Simulator) -> None:
    assert profile_sim.profile.firmware == "25.10.2 8a1d7e3f"
    status = request(profile_sim, "GET", "/api/status").json()
    assert status["version"] == "25.10.2 8a1d7e3f"
    assert status["git_hash"] == "8a1d7e3f5c0b9d2e4a6f8b1c3d5e7f9a0b2c4d6e"
    vitals = request(profile_sim, "GET", "/api/devices/vitals")
    assert (vitals.status, vitals.body) == (404, GO_404)
    assert request(profile_sim, "GET", "/tedapi/din", headers=basic_auth()).status == 200
    reply = request(profile_sim, "GET", "/api/status")
    assert reply.header("Connection") is None  # keep-alive HTTP/1.1, nothing said


# --- pw2-legacy ----------------------------------------------------------------------------------

@by_name("pw2-legacy")
def test_pw2_legacy_serves_protobuf_vitals_to_the_library(profile_sim: Simulator,
                                                           tmp_path: Path) -> None:
    pw = local_powerwall(profile_sim, tmp_path, **profile_sim.credentials())
    assert pw.version() == "23.28.2 b0fb1e23" and profile_sim.profile.firmware.startswith("23.28")
    vitals = pw.vitals()
    kinds = [din.split("--")[0] for din in vitals]
    assert kinds == ["STSTSM", "TETHC", "TEPOD", "TEPINV", "TETHC", "TEPOD", "TEPINV",
                     "PVAC", "PVS", "TESYNC"]
    pods = [device for din, device in vitals.items() if din.startswith("TEPOD")]
    assert sum(pod["POD_nom_full_pack_energy"] for pod in pods) == 13900 + 13700
    assert all(pod["POD_nom_energy_remaining"] <= pod["POD_nom_full_pack_energy"] for pod in pods)
    gateway = vitals["STSTSM--1232100-00-E--TG1210000000GW"]
    assert gateway["teslaEnergyEcuAttributes"] == {"ecuType": 207}
    assert "SystemConnectedToGrid" in gateway["alerts"]
    assert vitals["TEPOD--2012170-25-E--TG1220000001AA"]["componentParentDin"] == \
        "TETHC--2012170-25-E--TG1220000001AA"
    assert sorted(pw.strings()) == ["A", "B", "C", "D"] and pw.strings()["D"]["Connected"] is False
    assert sorted(pw.temps()) == ["TETHC--2012170-25-E--TG1220000001AA",
                                  "TETHC--3012170-05-C--TG1230000002BB"]
    assert "SystemConnectedToGrid" in pw.alerts()
    assert pw.level() is not None and pw.power()["load"] > 0


@by_name("pw2-legacy")
def test_pw2_legacy_vitals_need_a_login_and_tedapi_is_gone(profile_sim: Simulator) -> None:
    assert request(profile_sim, "GET", "/api/devices/vitals").status == 401
    reply = request(profile_sim, "GET", "/api/devices/vitals", headers=logged_in(profile_sim))
    assert reply.status == 200 and reply.header("Content-Type") == "application/octet-stream"
    for method, path in (("GET", "/tedapi/din"), ("POST", "/tedapi/v1"),
                         ("POST", "/tedapi/device/1707000-11-J--TG1240000001AA/v1")):
        gone = request(profile_sim, method, path, b"", basic_auth())
        assert (gone.status, gone.body) == (404, GO_404), path
    assert profile_sim.stats()["paths"]["/tedapi/din"] == 1  # refused, but still counted


# --- pw3 -----------------------------------------------------------------------------------------

@by_name("pw3")
def test_pw3_answers_tedapi_and_refuses_local_paths_it_lacks(profile_sim: Simulator,
                                                             tmp_path: Path) -> None:
    assert profile_sim.credentials() == {"gw_pwd": DEFAULT_GW_PWD}
    pw = tedapi_powerwall(profile_sim, tmp_path)
    assert pw.version() == "25.18.1 4c2e9a71" and pw.level() is not None
    assert any(din.startswith("TEPOD") for din in pw.vitals())
    cookies = logged_in(profile_sim)
    for path in PW3_MISSING:
        reply = request(profile_sim, "GET", path, headers=cookies)
        assert (reply.status, reply.body) == (404, GO_404), path
    for path in PW3_FORBIDDEN:
        for headers in (cookies, {}):
            reply = request(profile_sim, "GET", path, headers=headers)
            assert reply.status == 403 and reply.json()["code"] == 403, path
            assert "adequate access rights" in reply.json()["message"]
    assert request(profile_sim, "GET", "/api/meters/aggregates", headers=cookies).status == 200
    local = local_powerwall(profile_sim, tmp_path)
    assert local.poll("/api/powerwalls") is None and local.poll("/api/solar_powerwall") is None
    assert local.level() is not None


@by_name("pw3", "solar-only")
def test_tedapi_queries_are_counted_by_what_they_ask(profile_sim: Simulator, tmp_path: Path) -> None:
    """/sim/stats counts each TEDAPI query (all POSTs to one path) by name, Basic or bearer."""
    bearer = {"tedapi_auth_mode": "bearer", "tedapi_api_version": "V2026_06"}
    pw = tedapi_powerwall(profile_sim, tmp_path, **(bearer if profile_sim.profile.bearer else {}))
    profile_sim.reset()
    for _ in range(2):
        assert pw.vitals()
    queries = profile_sim.stats()["queries"]
    controller = [q for q in queries if q.startswith("/tedapi/v1 query:DeviceControllerQuery")]
    assert len(controller) == 1 and queries[controller[0]] == 2, queries
    assert sum(queries.values()) == profile_sim.stats()["paths"]["/tedapi/v1"] + sum(
        n for p, n in profile_sim.stats()["paths"].items() if p.startswith("/tedapi/device/"))


# --- sparse --------------------------------------------------------------------------------------

@by_name("sparse")
def test_sparse_answers_empty_200_bodies_and_keeps_the_core(profile_sim: Simulator,
                                                            tmp_path: Path) -> None:
    cookies = logged_in(profile_sim)
    for path in SPARSE_EMPTY:
        for headers in (cookies, {}):
            reply = request(profile_sim, "GET", path, headers=headers)
            assert (reply.status, reply.body) == (200, b""), path
            assert reply.header("Content-Length") == "0"
    assert request(profile_sim, "POST", "/api/operation", b'{"real_mode": "backup"}',
                   cookies).body == b""
    for path in KEPT_BY_SPARSE:
        reply = request(profile_sim, "GET", path, headers=cookies)
        assert reply.status == 200 and isinstance(reply.json(), dict), path
    pw = local_powerwall(profile_sim, tmp_path, **profile_sim.credentials())
    assert pw.level() is not None and pw.power()["load"] > 0
    assert pw.poll("/api/system_status") is None and pw.vitals() is None


# --- http10 --------------------------------------------------------------------------------------

@by_name("http10")
def test_http10_closes_every_connection_and_says_so(profile_sim: Simulator,
                                                    tmp_path: Path) -> None:
    ask = b"GET /api/status HTTP/1.1\r\nHost: powerwall\r\nConnection: keep-alive\r\n\r\n"
    # Two requests in one write: an HTTP/1.0 server answers the first and hangs up.
    raw = b"".join(raw_exchange(profile_sim, ask + ask))
    status_line, headers, body = split_head(raw)
    assert status_line == "HTTP/1.0 200 OK"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body) and json.loads(body)["din"]
    assert raw.count(b"HTTP/1.") == 1
    form = b"username=customer&password=" + DEFAULT_PASSWORD.encode()
    post = (b"POST /api/login/Basic HTTP/1.1\r\nHost: powerwall\r\nContent-Type: "
            b"application/x-www-form-urlencoded\r\nContent-Length: "
            + str(len(form)).encode() + b"\r\n\r\n" + form)
    status_line, headers, _ = split_head(b"".join(raw_exchange(profile_sim, post)))
    assert status_line == "HTTP/1.0 200 OK" and headers["connection"] == "close"
    missing = split_head(b"".join(raw_exchange(profile_sim, b"GET /nope HTTP/1.0\r\n\r\n")))
    assert missing[0] == "HTTP/1.0 404 Not Found" and missing[1]["connection"] == "close"
    pw = local_powerwall(profile_sim, tmp_path, **profile_sim.credentials())
    assert pw.level() is not None and pw.site_name() == "Simulated Home"


@by_name("default")
def test_default_keeps_connections_open(profile_sim: Simulator) -> None:
    conn = connect(profile_sim)
    try:
        for _ in range(2):
            conn.request("GET", "/api/status")
            response = conn.getresponse()
            assert response.version == 11 and response.getheader("Connection") is None
            response.read()
    finally:
        conn.close()


# --- portal --------------------------------------------------------------------------------------

@by_name("portal")
def test_portal_answers_data_paths_with_an_html_login_page(profile_sim: Simulator,
                                                           tmp_path: Path) -> None:
    cookies = logged_in(profile_sim)
    for path in PORTAL_PATHS:
        for headers in (cookies, {}):
            reply = request(profile_sim, "GET", path, headers=headers)
            assert reply.status == 200, path
            assert reply.header("Content-Type") == "text/html; charset=utf-8"
            assert reply.text.startswith("<!DOCTYPE html>") and "<form" in reply.text
    aggregates = request(profile_sim, "GET", "/api/meters/aggregates", headers=cookies)
    assert aggregates.header("Content-Type") == "application/json" and aggregates.json()["site"]
    pw = local_powerwall(profile_sim, tmp_path, **profile_sim.credentials())
    assert pw.level() is not None
    page = pw.poll("/api/system_status")  # the library hands non-JSON answers on as text
    assert isinstance(page, str) and "<form" in page


# --- command line --------------------------------------------------------------------------------

def test_cli_profile_choice_and_unknown_profile() -> None:
    bad = subprocess.run([sys.executable, "-m", "proxy.simulator", "--profile", "pw9"],
                         cwd=REPO, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and all(name in bad.stderr for name in NAMES)
    with subprocess.Popen([sys.executable, "-m", "proxy.simulator", "--port", "0",
                           "--profile", "pw2-legacy"], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            port = int(line.rsplit(":", 1)[1])
            assert request(port, "GET", "/api/status").json()["version"].startswith("23.28.2")
            assert request(port, "GET", "/tedapi/din", headers=basic_auth()).status == 404
            proc.terminate()
            assert proc.wait(10) == 0
            assert proc.stderr is not None and "pw2-legacy" in proc.stderr.read()
        finally:
            proc.kill()


# --- faults: how a body is written -----------------------------------------------------------------

def test_delivery_pieces_cover_body_and_padding_in_bounded_writes() -> None:
    body = b'{"a": 1}'
    assert list(Delivery().pieces(body)) == [body] and list(Delivery().pieces(b"")) == []
    dripped = list(Delivery(chunk=3).pieces(body))
    assert dripped == [b'{"a', b'": ', b'1}']
    padded = list(Delivery(padding=200_000).pieces(body))
    assert b"".join(padded) == body + b" " * 200_000
    assert max(len(piece) for piece in padded) == 65536
    both = list(Delivery(padding=10, chunk=4).pieces(body))
    assert b"".join(both) == body + b" " * 10 and max(len(piece) for piece in both) == 4


# --- faults: drip ----------------------------------------------------------------------------------

@by_name("default")
def test_drip_writes_the_body_in_small_pieces(profile_sim: Simulator, tmp_path: Path) -> None:
    echoed = profile_sim.set_fault("drip", paths=["/api/status", "/api/system_status/soe"],
                                   chunk=16, delay=0.01)
    assert echoed["faults"][0] | {"seconds_remaining": None} == {
        "kind": "drip", "paths": ["/api/status", "/api/system_status/soe"],
        "seconds_remaining": None, "delay": 0.01, "chunk": 16}
    reads = raw_exchange(profile_sim, b"GET /api/status HTTP/1.1\r\nHost: p\r\n"
                                      b"Connection: close\r\n\r\n")
    status_line, headers, rest = split_head(reads[0])
    assert status_line == "HTTP/1.1 200 OK" and rest == b""  # the head went out alone
    pieces = reads[1:]
    body = b"".join(pieces)
    assert int(headers["content-length"]) == len(body) > 16 * 4
    assert max(len(piece) for piece in pieces) == 16 and len(pieces) == -(-len(body) // 16)
    assert json.loads(body)["version"] == "25.10.2 8a1d7e3f"
    pw = local_powerwall(profile_sim, tmp_path)
    assert pw.level() is not None  # slow but whole: the library still reads it


def test_drip_is_cut_short_by_stop() -> None:
    with Simulator(port=0) as sim:
        sim.set_fault("drip", chunk=1, delay=60)
        failures: list[BaseException] = []

        def reader() -> None:
            try:
                request(sim, "GET", "/api/status", timeout=30)
            except BaseException as exc:  # noqa: BLE001 - any failure is the expected outcome
                failures.append(exc)

        thread = threading.Thread(target=reader)
        thread.start()
        while not sim.stats()["total"]:
            time.sleep(0.01)
        sim.stop()
        thread.join(10)
        assert not thread.is_alive() and failures


# --- faults: oversize ------------------------------------------------------------------------------

@by_name("default")
def test_oversize_streams_a_huge_body_with_a_valid_prefix(profile_sim: Simulator) -> None:
    size = 24 << 20
    profile_sim.set_fault("oversize", paths=["/api/status"], size=size)
    conn = connect(profile_sim, timeout=30)
    tracemalloc.start()
    try:
        conn.request("GET", "/api/status")
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("Content-Length") == str(size)
        head = response.read(4096)
        total, tail_is_blank = len(head), True
        while piece := response.read(1 << 20):
            total += len(piece)
            tail_is_blank = tail_is_blank and not piece.strip()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        conn.close()
    assert total == size and tail_is_blank
    prefix = head.rstrip()
    assert json.loads(prefix)["din"] and len(prefix) < 1000  # the real answer, then whitespace
    assert peak < size // 4  # neither side held the body whole
    # Other paths and refusals are untouched.
    assert len(request(profile_sim, "GET", "/api/site_info/site_name",
                       headers=logged_in(profile_sim)).body) < 1000


@by_name("default")
def test_oversize_whitespace_keeps_json_valid_for_the_library(profile_sim: Simulator,
                                                              tmp_path: Path) -> None:
    profile_sim.set_fault("oversize", size=1 << 20)
    refused = request(profile_sim, "GET", "/api/meters/aggregates")
    assert refused.status == 401 and len(refused.body) < 200  # errors stay small
    pw = local_powerwall(profile_sim, tmp_path)
    assert pw.poll("/api/meters/aggregates")["site"]["instant_power"] is not None


# --- faults: login_401 -----------------------------------------------------------------------------

@by_name("default")
def test_login_401_refuses_every_login_but_keeps_sessions(profile_sim: Simulator,
                                                          tmp_path: Path) -> None:
    before = logged_in(profile_sim)
    wrong = login(profile_sim, "not-the-password")
    profile_sim.set_fault("login_401")
    refused = login(profile_sim)
    assert refused.status == 401 and refused.body == wrong.body
    assert refused.json() == {"code": 401, "error": "bad credentials", "message": "Login Error"}
    pw = local_powerwall(profile_sim, tmp_path, name="fresh")
    with pytest.raises(LoginError):
        pw.level()
    assert request(profile_sim, "GET", "/api/system_status/soe", headers=before).status == 200
    assert request(profile_sim, "GET", "/tedapi/din", headers=basic_auth()).status == 200
    profile_sim.clear_faults()
    assert login(profile_sim).status == 200


# --- the fault control API -------------------------------------------------------------------------

@by_name("default")
def test_new_fault_parameters_are_validated(profile_sim: Simulator) -> None:
    for bad in ({"kind": "drip", "chunk": 0}, {"kind": "drip", "chunk": MAX_CHUNK + 1},
                {"kind": "drip", "chunk": 1.5}, {"kind": "drip", "chunk": True},
                {"kind": "drip", "delay": -1}, {"kind": "oversize", "size": 0},
                {"kind": "oversize", "size": MAX_SIZE + 1}, {"kind": "oversize", "size": "big"},
                {"kind": "login_401", "colour": "red"}):
        reply = post_json(profile_sim, "/sim/fault", bad)
        assert reply.status == 400 and "error" in reply.json(), bad
    added = post_json(profile_sim, "/sim/fault", {"kind": "oversize", "size": 4096,
                                                 "paths": ["/api/status"]})
    assert added.status == 200 and added.json()["faults"][0]["size"] == 4096
    assert len(request(profile_sim, "GET", "/api/status").body) == 4096
    drip = post_json(profile_sim, "/sim/fault", {"kind": "drip", "paths": ["/x"]}).json()
    assert drip["faults"][1]["delay"] == 0.5 and drip["faults"][1]["chunk"] == 64
    assert post_json(profile_sim, "/sim/fault", {"kind": "login_401"}).status == 200


# --- the proxy on every profile --------------------------------------------------------------------

def start_proxy(profile: str, folder: Path) -> ProxyHandle:
    env = {**DEFAULT_ENV, "PW_AUTH_PATH": str(folder)}
    config = load_config(env, simulate=True, simulate_profile=profile)
    return settled(ProxyHandle(start(config, wait_connected=CONNECT_WAIT)))


@pytest.mark.parametrize("name", NAMES)
def test_the_proxy_connects_to_every_profile(name: str, tmp_path: Path) -> None:
    handle = start_proxy(name, tmp_path)
    try:
        assert handle.gateway.connected, handle.gateway.info.connect_error
        assert handle.sim.profile.name == name
        assert bool(handle.running.config.gw_pwd) == handle.sim.profile.tedapi
        assert bool(handle.running.config.password) != handle.sim.profile.tedapi
        reply = handle.get("/aggregates")
        assert reply.status == 200 and reply.json()["site"]["instant_power"] is not None
        assert handle.get("/version").json()["version"] == profile_named(name).firmware
    finally:
        handle.stop()


def test_several_simulated_gateways_share_the_profile(tmp_path: Path) -> None:
    env = {**DEFAULT_ENV, "PW_AUTH_PATH": str(tmp_path)}
    running = start(load_config(env, simulate=True, simulate_profile="sparse"), simulate=2,
                    wait_connected=CONNECT_WAIT)
    try:
        assert [sim.profile.name for sim in running.simulators] == ["sparse", "sparse"]
        fleet = running.config.fleet()
        assert len(fleet) == 2 and all(g.password and not g.gw_pwd for g in fleet)
        handle = ProxyHandle(running)
        assert handle.get("/api/gateways/sim2/aggregates").status == 200
    finally:
        running.stop()


def test_proxy_cli_refuses_a_profile_without_simulate_or_with_a_bad_name(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--profile", "pw3"], {}) == 2
    assert "--profile needs --simulate" in capsys.readouterr().err
    assert main(["--simulate", "--profile", "pw4"], {}) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in NAMES)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_proxy_simulate_profile_pw3_end_to_end() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "PW_PORT": str(port), "PW_BIND_ADDRESS": "127.0.0.1",
               "PW_AUTH_PATH": folder, "PW_CACHE_EXPIRE": "1", "PYTHONUNBUFFERED": "1"}
        log_path = Path(folder) / "stderr.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "proxy", "--simulate", "--profile",
                                     "pw3"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                    stderr=log)
        try:
            status, body = wait_for_aggregates(port, proc)
            assert status == 200 and json.loads(body)["battery"]["instant_power"] is not None
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/version")
            assert json.loads(conn.getresponse().read())["version"] == "25.18.1 4c2e9a71"
            conn.close()
            proc.terminate()
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        text = log_path.read_text(errors="replace")
        assert "simulated, profile pw3" in text and DEFAULT_GW_PWD not in text


def wait_for_aggregates(port: int, proc: subprocess.Popen[bytes]) -> tuple[int, bytes]:
    """Poll /aggregates until the proxy has data (a readiness wait, not a speed check)."""
    deadline = time.monotonic() + 60
    status, body = 0, b""
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/aggregates")
            response = conn.getresponse()
            status, body = response.status, response.read()
            conn.close()
            if status == 200:
                break
        except OSError:
            pass
        time.sleep(0.2)
    return status, body
