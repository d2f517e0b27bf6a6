"""OpenC2, end to end: the OASIS `openc2` library is the Producer against a running proxy.

Every well-formed Command is built by the library and every Response we send is parsed by it
(`openc2.parse` refuses a Response with a field the Language Spec does not have); raw JSON
is used only for what the library will not build (malformed commands, the 2018 grammar).
Each test says which requirement of the Language Spec 1.0 (LS) or the HTTPS transfer spec
1.1 (HTTPS) it checks; HELP.md's conformance table points here.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import openc2
import pytest
from stix2 import properties as stix_properties

from proxy.api.openc2.answer import outcome_of
from proxy.api.openc2.consumer import Budgets, CommandLimit
from proxy.api.openc2.grammar import COMMAND_TYPE, ENVELOPE_TYPE, RESPONSE_TYPE
from proxy.api.openc2.profile import PROPERTIES, find_property, go_duration_seconds
from proxy.api.tokens import FREE_BAD_TOKENS
from proxy.config import load_config
from proxy.errors import GatewayUnavailable, HTTPError
from proxy.main import start
from tests.conftest import CONNECT_WAIT, DEFAULT_ENV, Factory, ProxyHandle, Reply

TOKEN = "oc2-query-token"
SECRET = "ctl-s3cret"
WELL_KNOWN = "/.well-known/openc2"
ALL_PROPERTIES = [p.name for p in PROPERTIES]
NUMBERS = {p.name for p in PROPERTIES if p.kind in ("number", "integer")}


@cache
def profile() -> dict[str, Any]:
    """The x-esm actuator and extended targets, declared to the library once."""
    @openc2.CustomActuator("x-esm", [("asset_id", stix_properties.StringProperty())])
    class Esm:
        pass

    @openc2.CustomTarget("x-esm:backup_reserve", [("backup_reserve", stix_properties.IntegerProperty())])
    class BackupReserve:
        pass

    @openc2.CustomTarget("x-esm:operation_mode", [("operation_mode", stix_properties.StringProperty())])
    class OperationMode:
        pass

    @openc2.CustomTarget("x-esm:grid_charging", [("grid_charging", stix_properties.BooleanProperty())])
    class GridCharging:
        pass

    @openc2.CustomTarget("x-esm:grid_export", [("grid_export", stix_properties.StringProperty())])
    class GridExport:
        pass

    return {"actuator": Esm, "backup_reserve": BackupReserve, "operation_mode": OperationMode,
            "grid_charging": GridCharging, "grid_export": GridExport}


def esm(asset_id: str | None = None) -> Any:
    actuator = profile()["actuator"]
    return actuator(asset_id=asset_id) if asset_id is not None else actuator()


def features(*names: str, **args: Any) -> openc2.Command:
    kw = {"args": openc2.Args(**args)} if args else {}
    return openc2.Command(action="query", target=openc2.Features(list(names)), **kw)


def props(*names: str, asset_id: str | None = None, **args: Any) -> openc2.Command:
    kw: dict[str, Any] = {"args": openc2.Args(**args)} if args else {}
    if asset_id is not None:
        kw["actuator"] = esm(asset_id)
    return openc2.Command(action="query", target=openc2.Properties(properties=list(names)), **kw)


def set_cmd(name: str, value: Any, **args: Any) -> openc2.Command:
    kw = {"args": openc2.Args(**args)} if args else {}
    return openc2.Command(action="set", target=profile()[name](**{name: value}), **kw)


# ---- the wire ------------------------------------------------------------------------------

def post(h: ProxyHandle, path: str, body: bytes | str, token: str | None = TOKEN,
         content_type: str = ENVELOPE_TYPE, headers: dict[str, str] | None = None) -> Reply:
    merged = {"Content-Type": content_type, "Accept": content_type, **(headers or {})}
    if token is not None:
        merged["Authorization"] = f"Bearer {token}"
    return h.request("POST", path, body=body, headers=merged)


def envelope(command: openc2.Command | dict[str, Any], request_id: str | None = None) -> str:
    request = json.loads(command.serialize()) if isinstance(command, openc2.Command) else command
    headers: dict[str, Any] = {"created": int(time.time() * 1000), "from": "producer.test"}
    if request_id is not None:
        headers["request_id"] = request_id
    return json.dumps({"headers": headers, "body": {"openc2": {"request": request}}})


def strict_json(body: bytes) -> Any:
    """I-JSON (RFC 7493): UTF-8, no repeated member names, no NaN or infinity."""
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        assert len({k for k, _ in pairs}) == len(pairs), pairs
        return dict(pairs)

    def no_constant(name: str) -> Any:
        raise AssertionError(f"{name} in a response")

    return json.loads(body.decode("utf-8"), object_pairs_hook=unique, parse_constant=no_constant)


def response_of(reply: Reply, request_id: str | None = None) -> openc2.Response:
    """The library's parse of our answer, after the transfer rules: the HTTP status is the
    OpenC2 status, no-cache and Date are set, the id comes back (HTTPS 3.2.1, 3.3.3, 3.4)."""
    assert reply.header("Cache-Control") == "no-cache"
    assert reply.header("Date")
    data = strict_json(reply.body)
    if reply.header("Content-Type") == ENVELOPE_TYPE:
        if request_id is not None:
            assert data["headers"]["request_id"] == request_id
        assert isinstance(data["headers"]["created"], int)
        data = data["body"]["openc2"]["response"]
    else:
        assert reply.header("Content-Type") == RESPONSE_TYPE, reply.headers
    parsed = openc2.parse(data)
    assert isinstance(parsed, openc2.Response)
    assert parsed.status == reply.status, (reply.status, data)
    return parsed


def ask(h: ProxyHandle, command: openc2.Command, token: str | None = TOKEN,
        path: str = WELL_KNOWN) -> tuple[Reply, openc2.Response]:
    rid = str(uuid.uuid4())
    if path == WELL_KNOWN:
        reply = post(h, path, envelope(command, rid), token, headers={"X-Request-ID": rid})
    else:
        reply = post(h, path, command.serialize(), token, COMMAND_TYPE, {"X-Request-ID": rid})
    if reply.status == 102:  # ack: http.client stops at the interim answer (see the ack test)
        return reply, openc2.parse({"status": 102})
    assert reply.header("X-Request-ID") == rid
    return reply, response_of(reply, rid if path == WELL_KNOWN else None)


def raw(h: ProxyHandle, command: Any, token: str | None = TOKEN) -> tuple[Reply, openc2.Response]:
    body = command if isinstance(command, (bytes, str)) else json.dumps(command)
    reply = post(h, "/openc2", body, token, COMMAND_TYPE)
    return reply, response_of(reply)


@pytest.fixture
def oc2(proxy_factory: Factory) -> ProxyHandle:
    return proxy_factory({"PW_OPENC2_TOKEN": TOKEN, "PW_CONTROL_SECRET": SECRET})


# ---- query features (LS 4.1) -----------------------------------------------------------------

def test_query_features_in_the_v11_envelope(oc2: ProxyHandle) -> None:
    reply, resp = ask(oc2, features("versions", "profiles", "pairs", "rate_limit"))
    assert reply.status == 200
    assert resp.results["versions"] == ["1.0"]
    assert resp.results["profiles"] == ["x-esm"]
    assert resp.results["pairs"] == {
        "query": ["features", "properties"],
        "set": ["x-esm:backup_reserve", "x-esm:operation_mode", "x-esm:grid_charging",
                "x-esm:grid_export"]}
    assert isinstance(resp.results["rate_limit"], int) and resp.results["rate_limit"] > 0
    envelope_body = reply.json()
    assert envelope_body["headers"]["to"] == ["producer.test"]


def test_empty_features_is_a_heartbeat_and_repeats_count_once(oc2: ProxyHandle) -> None:
    reply, resp = ask(oc2, features())
    assert (reply.status, resp.get("results")) == (200, None)
    # The library refuses to build a repeated feature; a Consumer still takes it as one.
    reply, resp = raw(oc2, {"action": "query", "target": {"features": ["versions", "versions"]}})
    assert resp.results == {"versions": ["1.0"]}


@pytest.mark.parametrize("args", [{"response_requested": "ack"}, {"response_requested": "none"},
                                  {"response_requested": "status"}, {"duration": 5000},
                                  {"start_time": 1, "response_requested": "complete"}])
def test_query_features_refuses_any_other_argument(oc2: ProxyHandle, args: dict[str, Any]) -> None:
    reply, resp = ask(oc2, features("versions", **args))
    assert reply.status == 400
    assert resp.status_text == "query features accepts only response_requested=complete"
    reply, resp = ask(oc2, features("versions", response_requested="complete"))
    assert reply.status == 200 and resp.results == {"versions": ["1.0"]}


def test_request_id_is_filled_from_x_request_id(oc2: ProxyHandle) -> None:
    """HTTPS 3.3.3: no request_id in the body -> the Response carries X-Request-ID's value."""
    rid = str(uuid.uuid4())
    reply = post(oc2, WELL_KNOWN, envelope(features()), headers={"X-Request-ID": rid})
    assert reply.header("X-Request-ID") == rid
    response_of(reply, rid)
    # ... and a body id with no header comes back in both places.
    reply = post(oc2, WELL_KNOWN, envelope(features(), request_id="only-in-body"))
    assert reply.header("X-Request-ID") == "only-in-body"
    response_of(reply, "only-in-body")


def test_bare_v10_command_on_openc2_gets_a_bare_response(oc2: ProxyHandle) -> None:
    reply, resp = ask(oc2, features("versions"), path="/openc2")
    assert reply.header("Content-Type") == RESPONSE_TYPE
    assert set(reply.json()) == {"status", "results"} and resp.results == {"versions": ["1.0"]}
    # An envelope on /openc2 is answered as an envelope, a bare one on the v1.1 path bare.
    assert post(oc2, "/openc2", envelope(features())).header("Content-Type") == ENVELOPE_TYPE
    bare = post(oc2, WELL_KNOWN, features().serialize(), content_type=COMMAND_TYPE)
    assert bare.status == 200 and bare.header("Content-Type") == RESPONSE_TYPE


# ---- query properties (x-esm) ---------------------------------------------------------------

def test_every_property_typed_from_the_cache(oc2: ProxyHandle) -> None:
    reply, resp = ask(oc2, props(*ALL_PROPERTIES))
    values = resp.results["x-esm"]
    assert list(values) == ALL_PROPERTIES
    for name, value in values.items():
        if value is None:
            continue  # the gateway did not give it (e.g. TEDAPI site info has no voltage)
        expected = (int, float) if name in NUMBERS else str
        assert isinstance(value, expected) and not isinstance(value, bool), (name, value)
    assert reply.header("X-Cache") in ("HIT", "STALE") and reply.header("Age") is not None
    info = oc2.get("/api/site_info").json()
    assert values["site_name"] == info["site_name"]
    assert values["timezone"] == info["timezone"]
    assert values["nominal_system_energy_kwh"] == info["nominal_system_energy_kWh"]
    assert values["grid_status"] == oc2.get("/api/system_status/grid_status").json()["grid_status"]
    assert values["firmware_version"] == oc2.get("/version").json()["version"]
    assert values["device_count"] == len(oc2.get("/api/system_status").json()["battery_blocks"])
    assert values["operation_mode"] in ("self_consumption", "backup", "autonomous")
    assert 0 <= values["battery_percentage"] <= 100 and values["uptime"] > 0
    # Mixed case and the 2018 connector's spellings name the same rows.
    _, resp = ask(oc2, props("Site_Name", "time_zone", "instant_apparent_power"))
    assert list(resp.results["x-esm"]) == ["site_name", "timezone", "site_instant_apparent_power"]


def test_queries_cost_the_gateway_nothing_beyond_its_cache_window(proxy_factory: Factory) -> None:
    h = proxy_factory({"PW_OPENC2_TOKEN": TOKEN, "PW_CACHE_EXPIRE": "30", "PW_CACHE_TTL": "60"})
    ask(h, props(*ALL_PROPERTIES))
    before = h.sim.stats()["total"]
    for _ in range(15):
        assert ask(h, props(*ALL_PROPERTIES))[0].status == 200
    assert h.sim.stats()["total"] == before


def test_unknown_property_is_404_naming_it(oc2: ProxyHandle) -> None:
    reply, resp = ask(oc2, props("battery_percentage", "fan_rpm_z"))
    assert reply.status == 404 and resp.status_text == "unknown property: fan_rpm_z"


def test_properties_per_gateway_by_id_or_din(tmp_path: Any) -> None:
    env = {**DEFAULT_ENV, "PW_AUTH_PATH": str(tmp_path), "PW_OPENC2_TOKEN": TOKEN}
    h = ProxyHandle(start(load_config(env, simulate=True), simulate=3, wait_connected=CONNECT_WAIT))
    try:
        seen = {}
        dins = {gid: h.get(f"/api/gateways/{gid}/pw/din").json()["din"] for gid in ("sim1", "sim2", "sim3")}
        for gid in ("sim1", "sim2", "sim3"):
            _, resp = ask(h, props("nominal_system_energy_kwh", "device_count", asset_id=gid))
            info = h.get(f"/api/gateways/{gid}/api/site_info").json()
            assert resp.results["x-esm"]["nominal_system_energy_kwh"] == info["nominal_system_energy_kWh"]
            seen[gid] = resp.results["x-esm"]
            reply, by_din = ask(h, props("nominal_system_energy_kwh", "device_count", asset_id=dins[gid]))
            assert by_din.results == resp.results
        assert len(set(dins.values())) == 3  # each simulated site has its own DIN
        assert len({json.dumps(v) for v in seen.values()}) > 1  # different gateways, different sites
        _, default = ask(h, props("nominal_system_energy_kwh", "device_count"))
        assert default.results["x-esm"] == seen["sim1"]
        reply, resp = ask(h, props("site_name", asset_id="TGEadsasd"))
        assert reply.status == 404 and resp.status_text == "unknown asset_id: TGEadsasd"
    finally:
        h.stop()


def test_gateway_down_beyond_the_cache_ttl_is_503(proxy_factory: Factory) -> None:
    h = proxy_factory({"PW_OPENC2_TOKEN": TOKEN, "PW_CACHE_TTL": "1"})
    assert ask(h, props("battery_percentage"))[0].status == 200
    h.sim.set_fault("down")
    time.sleep(2.5)  # past PW_CACHE_TTL, into a new cache window
    reply, resp = ask(h, props("battery_percentage"))
    assert reply.status == 503 and resp.status_text
    assert int(reply.header("Retry-After") or 0) >= 1
    h.sim.clear_faults()


# ---- set: the same writes as /control/* ----------------------------------------------------------

def test_set_round_trips_show_on_control_reads(oc2: ProxyHandle, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxy.control")
    bearer = {"Authorization": f"Bearer {SECRET}"}
    target = next(t for t in (23, 37, 71) if abs(t - oc2.sim.state()["reserve_app"]) > 2)
    reply, resp = ask(oc2, set_cmd("backup_reserve", target), token=SECRET)
    assert reply.status == 200 and resp.results == {"x-esm": {"backup_reserve_percent": target}}
    assert oc2.get("/control/reserve", headers=bearer).json()["reserve"] == pytest.approx(target)
    assert oc2.sim.state()["reserve_app"] == pytest.approx(target, abs=0.01)
    _, query = ask(oc2, props("backup_reserve_percent"))
    assert query.results["x-esm"]["backup_reserve_percent"] == target
    for mode in ("backup", "self_consumption"):
        reply, resp = ask(oc2, set_cmd("operation_mode", mode), token=SECRET)
        assert reply.status == 200 and resp.results == {"x-esm": {"operation_mode": mode}}, resp
        assert oc2.get("/control/mode", headers=bearer).json() == {"mode": mode}
    lines = [r.getMessage() for r in caplog.records if r.name == "proxy.control"]
    assert f"control: reserve={target} accepted from 127.0.0.1" in lines  # the /control/* audit line
    assert "control: mode=backup accepted from 127.0.0.1" in lines
    assert SECRET not in caplog.text and TOKEN not in caplog.text


def test_grid_charging_and_export_through_the_cloud_backend(tmp_path: Any,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """A local gateway cannot change these (pypowerwall: cloud or FleetAPI only), so this runs
    against the spec'd cloud fake: each set reaches the library's own call once, with the value."""
    from tests.test_modes import _fake_powerwall

    caplog.set_level(logging.INFO, logger="proxy.control")
    fake = _fake_powerwall(fleetapi=False)
    fake.set_grid_charging.return_value = {"grid_charging": True}
    fake.set_grid_export.return_value = {"grid_export": "never"}
    env = {**DEFAULT_ENV, "PW_AUTH_PATH": str(tmp_path), "PW_OPENC2_TOKEN": TOKEN,
           "PW_CONTROL_SECRET": SECRET}
    h = ProxyHandle(start(load_config(env), wait_connected=5, client_factory=lambda **kw: fake))
    try:
        reply, resp = ask(h, set_cmd("grid_charging", True), token=SECRET)
        assert reply.status == 200 and resp.results == {"x-esm": {"grid_charging": True}}
        fake.set_grid_charging.assert_called_once_with(True)
        reply, resp = ask(h, set_cmd("grid_export", "never"), token=SECRET)
        assert reply.status == 200 and resp.results == {"x-esm": {"grid_export": "never"}}
        fake.set_grid_export.assert_called_once_with("never")
        fake.set_grid_export.return_value = {"error": "refused"}
        reply, resp = ask(h, set_cmd("grid_export", "pv_only"), token=SECRET)
        assert (reply.status, resp.status_text) == (503, "Failed to set grid_export")
    finally:
        h.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "proxy.control"]
    assert "control: grid_charging=true accepted from 127.0.0.1" in lines
    assert "control: grid_export=pv_only failed from 127.0.0.1" in lines


def test_set_validates_as_control_does_and_writes_nothing_bad(oc2: ProxyHandle) -> None:
    stored = (oc2.sim.state()["reserve"], oc2.sim.state()["mode"])
    form = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/x-www-form-urlencoded"}
    same_text = oc2.request("POST", "/control/reserve", body="value=101", headers=form).json()["error"]
    reply, resp = ask(oc2, set_cmd("backup_reserve", 101), token=SECRET)
    assert reply.status == 400 and resp.status_text == same_text
    for bad in ({"x-esm:backup_reserve": 30.5}, {"x-esm:backup_reserve": True},
                {"x-esm:operation_mode": "turbo"}, {"x-esm:grid_export": "sometimes"},
                {"x-esm:grid_charging": "maybe"}, {"x-esm:backup_reserve": [30]}):
        reply, resp = raw(oc2, {"action": "set", "target": bad}, token=SECRET)
        assert reply.status == 400, (bad, resp)
    assert (oc2.sim.state()["reserve"], oc2.sim.state()["mode"]) == stored


def test_set_needs_the_control_secret_and_control_on(oc2: ProxyHandle, proxy_factory: Factory) -> None:
    stored = oc2.sim.state()["reserve"]
    reply, resp = ask(oc2, set_cmd("backup_reserve", 44), token=TOKEN)  # the query token
    assert (reply.status, resp.status_text) == (403, "set disabled")
    reply, resp = ask(oc2, set_cmd("backup_reserve", 44), token=None)
    assert reply.status == 401
    assert oc2.sim.state()["reserve"] == stored
    off = proxy_factory({"PW_OPENC2_TOKEN": TOKEN})  # no PW_CONTROL_SECRET
    reply, resp = ask(off, set_cmd("backup_reserve", 44), token=TOKEN)
    assert (reply.status, resp.status_text) == (403, "set disabled")
    assert "set" not in ask(off, features("pairs"))[1].results["pairs"]


def test_response_requested_ack_none_status(oc2: ProxyHandle) -> None:
    # ack: http.client takes the interim 102 for the answer (and the connection is closed) ...
    reply, resp = ask(oc2, set_cmd("operation_mode", "backup", response_requested="ack"), token=SECRET)
    assert reply.status == 102 and reply.body == b"" and reply.header("Connection") == "close"
    assert oc2.sim.state()["mode"] == "backup"
    # ... on the wire the 102 comes first, then the final Response with its own status.
    command = set_cmd("operation_mode", "self_consumption", response_requested="ack").serialize()
    head = (f"POST /openc2 HTTP/1.1\r\nHost: x\r\nContent-Type: {COMMAND_TYPE}\r\n"
            f"Authorization: Bearer {SECRET}\r\nContent-Length: {len(command)}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", oc2.port), timeout=30) as sock:
        sock.sendall(head.encode() + command.encode())
        wire = b""
        while chunk := sock.recv(65536):
            wire += chunk
    interim, _, final = wire.partition(b"\r\n\r\n")
    assert interim.startswith(b"HTTP/1.1 102 Processing\r\n")
    assert final.startswith(b"HTTP/1.1 200 OK\r\n")
    assert strict_json(final.partition(b"\r\n\r\n")[2]) == {
        "status": 200, "results": {"x-esm": {"operation_mode": "self_consumption"}}}
    assert b"\r\nX-Request-ID: " not in interim and b"\r\nContent-Type: " + RESPONSE_TYPE.encode() in final
    # none: no Response in the body (HTTP still answers; HTTPS 3.2.1), the write happened.
    reply = post(oc2, "/openc2", set_cmd("operation_mode", "backup", response_requested="none").serialize(),
                 SECRET, COMMAND_TYPE)
    assert (reply.status, reply.body, reply.header("Content-Type")) == (200, b"", None)
    assert oc2.get("/control/mode", headers={"Authorization": f"Bearer {SECRET}"}).json() == {
        "mode": "backup"}
    # status and complete: the result.
    for wanted in ("status", "complete"):
        reply, resp = ask(oc2, props("site_name", response_requested=wanted))
        assert reply.status == 200 and resp.results["x-esm"]["site_name"]


# ---- errors: the class decides the status, never a 200 with an error inside ---------------

MALFORMED = [
    (b"{not json", 400, "body is not valid JSON"),
    (b'{"action": "query", "action": "set", "target": {"features": []}}', 400, "body is not valid JSON"),
    (b'{"action": "query", "target": {"properties": [NaN]}}', 400, "body is not valid JSON"),
    (b"[]", 400, "body must be a JSON object"),
    ({"target": {"features": []}}, 400, "action is required"),
    ({"action": "query"}, 400, "target is required"),
    ({"action": "query", "target": {"features": [], "properties": ["site_name"]}}, 400,
     "target must be an object with exactly one key"),
    ({"action": "query", "target": {}}, 400, "target must be an object with exactly one key"),
    ({"action": "explode", "target": {"features": []}}, 400, "unknown action: explode"),
    ({"action": "query", "target": {"features": []}, "colour": 1}, 400, "unknown command field: colour"),
    ({"action": "query", "target": {"properties": []}}, 400, "properties must be a list of 1 to 64 names"),
    ({"action": "query", "target": {"features": ["colour"]}}, 400, "unknown feature: colour"),
    ({"action": "query", "target": {"features": []}, "args": {}}, 400,
     "args must be an object with at least one argument"),
    ({"action": "query", "target": {"features": []}, "command_id": "has spaces in it"}, 400,
     "command_id must be 1-36 characters without spaces"),
    ({"action": "deny", "target": {"ipv4_net": "10.0.0.0/8"}}, 501, "Command not supported"),
    ({"action": "query", "target": {"ipv4_net": "10.0.0.0/8"}}, 501, "Target type not supported"),
    ({"action": "set", "target": {"properties": ["site_name"]}}, 501, "Target type not supported"),
    ({"action": "set", "target": {"x-acme:widget": 1}}, 501, "Target type not supported"),
    ({"action": "query", "target": {"properties": ["site_name"]}, "args": {"duration": 1000}}, 501,
     "Option not supported"),
    ({"action": "query", "target": {"properties": ["site_name"]}, "actuator": {"slpf": {}}}, 501,
     "Command not supported"),
    ({"action": "query", "target": {"properties": ["site_name"]}, "actuator": {"x-esm": {"colour": 1}}},
     501, "Option not supported"),
]


@pytest.mark.parametrize("command,status,text", MALFORMED)
def test_each_error_class_has_its_status(oc2: ProxyHandle, command: Any, status: int, text: str) -> None:
    reply, resp = raw(oc2, command)
    assert (reply.status, resp.status_text) == (status, text)
    assert resp.get("results") is None


def test_other_methods_get_an_openc2_error_body(oc2: ProxyHandle) -> None:
    """HTTPS 3.2.1: POST only. 405 is not an OpenC2 status, so 400 with Allow: POST."""
    for path in ("/.well-known/openc2", "/openc2", "/oc2/", "/openc2/command/"):
        for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS"):
            reply = oc2.request(method, path, headers={"X-Request-ID": "m-1"})
            assert reply.status == 400, (method, path)
            assert reply.header("Allow") == "POST" and reply.header("X-Request-ID") == "m-1"
            body = strict_json(reply.body)
            assert body["status"] == 400 if "status" in body else body["body"]["openc2"]["response"][
                "status"] == 400, body
        head = oc2.request("HEAD", path)
        assert head.status == 400 and head.body == b""


def test_off_without_a_token(proxy_factory: Factory) -> None:
    h = proxy_factory({"PW_CONTROL_SECRET": SECRET})
    for path in ("/.well-known/openc2", "/openc2", "/oc2/", "/openc2/command/"):
        for method in ("POST", "GET"):
            reply = h.request(method, path, body=features().serialize(),
                              headers={"Authorization": f"Bearer {SECRET}"})
            assert (reply.status, reply.json()) == (404, {"error": "Not Found"}), (method, path)


def test_bad_tokens_are_401_then_slowed_and_the_right_one_still_works(oc2: ProxyHandle) -> None:
    for i in range(FREE_BAD_TOKENS):
        reply, resp = ask(oc2, features(), token=f"guess{i}")
        assert (reply.status, resp.status_text) == (401, "Invalid or missing bearer token")
    reply, resp = ask(oc2, features(), token="guess-again")
    assert reply.status == 503 and "Too many bad control tokens" in (resp.status_text or "")
    assert int(reply.header("Retry-After") or 0) >= 1
    assert ask(oc2, features(), token=TOKEN)[0].status == 200
    assert ask(oc2, features(), token=SECRET)[0].status == 200  # the control secret may query
    # The throttle is the one /control/* uses: a wrong token there counts here too.
    form = "value=50&token=nope"
    assert oc2.post("/control/reserve", form).status == 429
    assert TOKEN not in oc2.get("/stats").text


def test_the_token_is_masked_in_stats_and_help(oc2: ProxyHandle) -> None:
    config = oc2.get("/stats").json()["config"]
    assert config["PW_OPENC2_TOKEN"] == "********"
    for path in ("/stats", "/help"):
        assert TOKEN not in oc2.get(path).text
    assert TOKEN in load_config({"PW_OPENC2_TOKEN": TOKEN}).secrets()


# ---- the 2018 connector's routes and grammar --------------------------------------------------

def seed(h: ProxyHandle, path: str, body: dict[str, Any], key: str | None = TOKEN,
         header: str = "apikey") -> Reply:
    headers = {"Content-Type": "application/json", **({header: key} if key is not None else {})}
    return h.request("POST", path, body=json.dumps(body), headers=headers)


def seed_query(name: str, qid: str = "0607a498-0bd3-409c-9033-06eee09f7db4") -> dict[str, Any]:
    return {"id": qid, "action": "query", "target": {"property": {"name": name}},
            "actuator": {"endpoint_smart_meter": {"actuator_id": "com.tesla.powerwall", "asset_id": ""}}}


def test_seed_routes_answer_its_requests(oc2: ProxyHandle) -> None:
    info = oc2.get("/api/site_info").json()
    for path, header in (("/openc2/command/", "apikey"), ("/openc2/command", "apikey"),
                         ("/oc2/", "oc2-api-key")):
        reply = seed(oc2, path, seed_query("TimeZone", "q-1"), header=header)
        assert reply.status == 200, (path, reply.body)
        assert strict_json(reply.body) == {"id_ref": "q-1", "status": 200,
                                           "results": {"time_zone": info["timezone"]}}
    answers = {"site_name": "site_name", "grid_freq_setting": "grid_frequency_setting",
               "nominal_system_energy_kwh": "nominal_system_energy_kwh", "uptime": "uptime",
               "battery_percentage": "battery_percentage", "device_count": "device_count",
               "last_communication_time": "last_communication_time",
               "instant_apparent_power": "instant_apparent_power", "country": "country"}
    for asked, key in answers.items():
        body = seed(oc2, "/openc2/command/", seed_query(asked.upper())).json()
        assert body["status"] == 200 and list(body["results"]) == [key], body
    discovery = seed(oc2, "/oc2/", {"id": "d", "action": "query", "target": {"openc2": {}},
                                    "actuator": {"endpoint_smart_meter": {}}}, header="oc2-api-key")
    listed = discovery.json()["results"]["target"]["property"]
    assert listed[:2] == ["battery_percentage", "nominal_system_energy_kwh"] and len(listed) == 12


def test_seed_errors_are_honest(oc2: ProxyHandle) -> None:
    cases = [
        (seed_query("site_name"), "wrong", 401),
        (seed_query("fan_speed"), TOKEN, 404),
        ({**seed_query("site_name"), "action": "deny"}, TOKEN, 501),
        ({**seed_query("site_name"), "actuator": {"slpf": {}}}, TOKEN, 501),
        ({"id": "x", "action": "query"}, TOKEN, 400),
    ]
    for body, key, status in cases:
        reply = seed(oc2, "/openc2/command/", body, key)
        data = strict_json(reply.body)
        assert reply.status == status == data["status"], (body, data)
        assert data["id_ref"] in (body.get("id"), None) and data["results"] == "failed"


# ---- the full control set on /control/* -------------------------------------------------------

def test_reserve_hold_sets_the_reserve_to_the_charge(proxy_factory: Factory) -> None:
    h = proxy_factory({"PW_CONTROL_SECRET": SECRET})
    bearer = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    json_only = {"Content-Type": "application/json"}
    assert h.request("POST", "/control/reserve_hold", body="{}", headers=json_only).status == 401
    reply = h.request("POST", "/control/reserve_hold", body="{}", headers=bearer)
    assert reply.status == 200, reply.body
    held = reply.json()["backup_reserve_percent"]
    assert isinstance(held, int)
    state = h.sim.state()
    assert state["reserve_app"] == pytest.approx(held, abs=0.01)
    assert abs(held - state["soe_app"]) <= 1.5  # the charge of this cache window, rounded
    assert h.get("/control/reserve", headers=bearer).json()["reserve"] == pytest.approx(held)
    assert h.get("/control/reserve_hold").status == 405
    assert "reserve_hold" in h.get("/control/status").json()["actions"]
    off = proxy_factory({})
    assert off.request("POST", "/control/reserve_hold", body="{}", headers=bearer).status == 403


def test_json_bodies_with_bearer_on_every_control_route(proxy_factory: Factory) -> None:
    h = proxy_factory({"PW_CONTROL_SECRET": SECRET})
    bearer = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    target = next(t for t in (26, 41, 77) if abs(t - h.sim.state()["reserve_app"]) > 2)
    for route, value in (("reserve", target), ("mode", "backup")):
        reply = h.request("POST", f"/control/{route}", body=json.dumps({"value": value}), headers=bearer)
        assert reply.status == 200, (route, reply.body)
        shown = h.get(f"/control/{route}", headers=bearer).json()[route]
        assert shown == (pytest.approx(value) if route == "reserve" else value), route
    assert h.sim.state()["mode"] == "backup"
    # A local gateway cannot change grid charging or export (pypowerwall: cloud/FleetAPI only):
    # the JSON value passes validation and reaches the backend, a bad one never does.
    for route, good, bad in (("grid_charging", False, "maybe"), ("grid_export", "pv_only", "sometimes")):
        reply = h.request("POST", f"/control/{route}", body=json.dumps({"value": good}), headers=bearer)
        assert (reply.status, reply.json()) == (502, {"error": f"Failed to set {route}"})
        reply = h.request("POST", f"/control/{route}", body=json.dumps({"value": bad}), headers=bearer)
        assert reply.status == 400 and "Invalid" in reply.json()["error"]


def test_control_status_needs_no_token(proxy_factory: Factory) -> None:
    on = proxy_factory({"PW_CONTROL_SECRET": SECRET})
    assert on.get("/control/status").json()["enabled"] is True
    off = proxy_factory({})
    reply = off.get("/control/status")
    assert reply.status == 200 and reply.json()["enabled"] is False


# ---- pure parts --------------------------------------------------------------------------

def test_go_durations() -> None:
    assert go_duration_seconds("61h18m9.5s") == 61 * 3600 + 18 * 60 + 9.5
    assert go_duration_seconds("1m30s") == 90.0
    assert go_duration_seconds("250ms") == 0.25
    for bad in ("", "soon", "5 days", None, 12, "1h-3m"):
        assert go_duration_seconds(bad) is None, bad


def test_aliases() -> None:
    assert find_property("SITE.Last_Communication_Time") is find_property("site_last_communication_time")
    assert find_property("powerwalls") is find_property("device_count")
    assert find_property("grid_frequency_setting") is find_property("grid_freq_setting")
    assert find_property("fan_speed") is None


def test_command_limit_per_minute() -> None:
    now = [120.0]
    limit = CommandLimit(per_minute=3, clock=lambda: now[0])
    assert [limit.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limit.take() == pytest.approx(60.0)
    now[0] = 150.0
    assert limit.take() == pytest.approx(30.0)
    now[0] = 180.0
    assert limit.take() == 0.0


def test_a_set_is_served_however_many_queries_came_first(tmp_path: Path) -> None:
    """Reads and writes have budgets of their own: queries with the read token spend theirs
    to the last place, and a set with the control secret is served at once."""
    env = {**DEFAULT_ENV, "PW_AUTH_PATH": str(tmp_path), "PW_CACHE_FILE": str(tmp_path / ".powerwall"),
           "PW_OPENC2_TOKEN": TOKEN, "PW_CONTROL_SECRET": SECRET}
    frozen = lambda: 30.0  # noqa: E731 -- one minute throughout, whatever the test's pace
    budgets = Budgets(reads=CommandLimit(4, frozen), writes=CommandLimit(2, frozen))
    h = ProxyHandle(start(load_config(env, simulate=True), wait_connected=CONNECT_WAIT,
                          openc2_budgets=budgets))
    try:
        statuses = [ask(h, props("battery_percentage"))[0].status for _ in range(6)]
        assert statuses[:4] == [200] * 4 and statuses[4:] == [503, 503]  # the read budget is spent
        refused, _ = ask(h, props("battery_percentage"), token=SECRET)
        assert refused.status == 503 and refused.header("Retry-After") is not None
        for _ in range(2):  # sets with the read token are refused and spend no write place
            assert ask(h, set_cmd("backup_reserve", 20))[0].status in (403, 503)
        reply, resp = ask(h, set_cmd("backup_reserve", 35), token=SECRET)
        assert reply.status == 200 and resp.results == {"x-esm": {"backup_reserve_percent": 35}}
        assert h.sim.state()["reserve_app"] == pytest.approx(35, abs=0.5)
        stats = h.get("/stats").json()
        assert stats["openc2"] == {"reads": {"per_minute": 4, "used": 4},
                                   "writes": {"per_minute": 2, "used": 1}}
        assert stats["writes"]["openc2"] == {"accepted": 1, "failed": 0}  # its front door, told
    finally:
        h.stop()


def test_only_openc2_statuses_reach_the_wire() -> None:
    assert outcome_of(HTTPError(429, "slow down", [("Retry-After", "4")])).status == 503
    assert outcome_of(HTTPError(502, "Failed to set reserve")).status == 503
    assert outcome_of(HTTPError(415, "type")).status == 400
    assert outcome_of(HTTPError(413, "big")).status == 400
    gone = outcome_of(GatewayUnavailable("gateway unavailable", retry_after=2.2))
    assert (gone.status, dict(gone.headers)["Retry-After"]) == (503, "3")
    method = outcome_of(HTTPError(405, "Method Not Allowed"))
    assert (method.status, dict(method.headers)) == (400, {"Allow": "POST"})

