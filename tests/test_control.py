"""/control/*, end to end: real sockets, the real pypowerwall, the simulator.

* Wrong tokens from one client are slowed (429, growing Retry-After, JSON body),
  yet the right token from that same client is never refused.
* Behind a trusted reverse proxy (PW_TRUSTED_PROXIES) the right-most untrusted
  X-Forwarded-For address is the client; from anyone else the header is ignored.
* A GET never writes, whatever its query string carries.
* Answers speak the Tesla app's reserve scale, also where the gateway stores its own.
* JSON bodies work like forms; bad bodies are a JSON 400 and change nothing.
* GET /control/status tells whether control is on, and the current reserve and mode.
"""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Iterator
from typing import Any
from unittest.mock import create_autospec

import pypowerwall
import pytest

from proxy.api.forwarded import client_address
from proxy.api.tokens import FORGET_AFTER, FREE_BAD_TOKENS, PENALTY_CAP, TokenThrottle, same_secret
from proxy.config import ConfigError, load_config
from proxy.main import main, start
from tests.conftest import CONNECT_WAIT, DEFAULT_ENV, Factory, ProxyHandle, Reply

TOKEN = "s3cret-token"
FORM = "application/x-www-form-urlencoded"
TARGETS = (20, 35, 60, 85)


def sim_setting(h: ProxyHandle) -> tuple[Any, Any]:
    """What the gateway has stored: its raw reserve and its mode."""
    state = h.sim.state()
    return state["reserve"], state["mode"]


def another_reserve(h: ProxyHandle) -> int:
    """A reserve that differs from the stored one, so a write would show."""
    current = h.sim.state()["reserve_app"]
    return next(t for t in TARGETS if abs(t - current) > 2)


def post_form(h: ProxyHandle, path: str, form: str, xff: str | None = None,
              headers: dict[str, str] | None = None) -> Reply:
    extra = {**({"X-Forwarded-For": xff} if xff is not None else {}), **(headers or {})}
    return h.post(path, form, headers=extra)


def post_json(h: ProxyHandle, path: str, payload: Any, headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> Reply:
    body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    return h.request("POST", path, body=body, headers={"Content-Type": content_type, **(headers or {})})


def assert_json_error(r: Reply, status: int) -> str:
    assert r.status == status, (r.status, r.body)
    assert r.header("Content-Type") == "application/json", r.headers
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    assert TOKEN not in r.text
    return str(body["error"])


def post_with_header_lines(h: ProxyHandle, form: str, xff_lines: list[str]) -> int:
    """A POST carrying several X-Forwarded-For header lines; its status."""
    conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=30)
    try:
        conn.putrequest("POST", "/control/reserve")
        conn.putheader("Content-Type", FORM)
        conn.putheader("Content-Length", str(len(form)))
        for line in xff_lines:
            conn.putheader("X-Forwarded-For", line)
        conn.endheaders(form.encode())
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def guess(h: ProxyHandle, times: int, xff: str | None = None, prefix: str = "guess") -> list[Reply]:
    return [post_form(h, "/control/reserve", f"value=50&token={prefix}{i}", xff) for i in range(times)]


# ---- wrong tokens are slowed, the right one always works -------------------------------------


def test_guessing_is_slowed_but_the_right_token_still_works(proxy: ProxyHandle) -> None:
    stored = sim_setting(proxy)
    replies = guess(proxy, FREE_BAD_TOKENS + 6)
    assert [r.status for r in replies[:FREE_BAD_TOKENS]] == [401] * FREE_BAD_TOKENS
    for r in replies[:FREE_BAD_TOKENS]:
        assert assert_json_error(r, 401) == "Control Command Token Invalid"
        assert r.header("Retry-After") is None
    waits = []
    for r in replies[FREE_BAD_TOKENS:]:
        assert "Too many bad control tokens" in assert_json_error(r, 429)
        waits.append(int(r.header("Retry-After") or 0))
    assert waits[0] >= 1 and waits == sorted(waits) and waits[-1] > waits[0]  # it grows
    assert sim_setting(proxy) == stored  # no guess wrote anything

    # The owner, from the very same address, is not locked out: form, bearer and JSON.
    target = another_reserve(proxy)
    r = post_form(proxy, "/control/reserve", f"value={target}&token={TOKEN}")
    assert r.status == 200, r.body
    assert proxy.sim.state()["reserve_app"] == pytest.approx(target, abs=0.01)
    r = post_form(proxy, "/control/mode", "value=backup", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 200, r.body
    assert proxy.sim.state()["mode"] == "backup"
    r = post_json(proxy, "/control/mode", {"value": "self_consumption", "token": TOKEN})
    assert r.status == 200, r.body
    assert proxy.sim.state()["mode"] == "self_consumption"
    # ... while the next wrong one from here is still slowed.
    assert_json_error(guess(proxy, 1, prefix="again")[0], 429)


def test_missing_token_counts_as_wrong_and_never_writes(proxy: ProxyHandle) -> None:
    stored = sim_setting(proxy)
    statuses = [post_form(proxy, "/control/reserve", "value=50").status for _ in range(FREE_BAD_TOKENS + 1)]
    assert statuses == [401] * FREE_BAD_TOKENS + [429]
    assert sim_setting(proxy) == stored


def test_refusals_are_logged_without_the_guess(proxy: ProxyHandle, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxy")
    guess(proxy, FREE_BAD_TOKENS + 3, prefix="hunter")
    assert post_form(proxy, "/control/reserve", f"value={another_reserve(proxy)}&token={TOKEN}").status == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "proxy.control"]
    assert any("refused" in line and "127.0.0.1" in line for line in lines), lines
    assert any("accepted from 127.0.0.1" in line for line in lines), lines
    assert "hunter" not in caplog.text and TOKEN not in caplog.text


# ---- who the client is -------------------------------------------------------------------------


def test_trusted_proxy_forwarded_for_separates_clients(proxy_factory: Factory,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """The test client (127.0.0.1) plays a reverse proxy that the proxy trusts."""
    caplog.set_level(logging.INFO, logger="proxy")
    h = proxy_factory({"PW_CONTROL_SECRET": TOKEN, "PW_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8"})
    guesser = "203.0.113.5"
    statuses = [r.status for r in guess(h, FREE_BAD_TOKENS + 2, xff=guesser)]
    assert statuses == [401] * FREE_BAD_TOKENS + [429, 429]
    # Another client behind the same reverse proxy is not slowed by those guesses ...
    assert guess(h, 1, xff="203.0.113.6")[0].status == 401
    # ... and the guesser cannot shed its record by writing its own X-Forwarded-For: the
    # entries left of the right-most untrusted one are the client's words, not a hop's.
    assert guess(h, 1, xff=f"198.51.100.77, {guesser}")[0].status == 429
    # Trusted hops (ours) on the right are skipped, in one header or over several.
    assert guess(h, 1, xff=f"{guesser}, 10.1.2.3, 127.0.0.1")[0].status == 429
    assert post_with_header_lines(h, "value=50&token=x", [guesser, "10.1.2.3"]) == 429
    # Without X-Forwarded-For, the trusted peer itself is the client: a fresh record.
    assert guess(h, 1)[0].status == 401
    # The guesser's right token works, and the audit line names the forwarded client.
    target = another_reserve(h)
    r = post_form(h, "/control/reserve", f"value={target}&token={TOKEN}", xff=guesser)
    assert r.status == 200, r.body
    assert h.sim.state()["reserve_app"] == pytest.approx(target, abs=0.01)
    assert any(f"accepted from {guesser}" in r.getMessage() for r in caplog.records)


def test_ipv6_clients_are_counted_per_64(proxy_factory: Factory) -> None:
    h = proxy_factory({"PW_CONTROL_SECRET": TOKEN, "PW_TRUSTED_PROXIES": "127.0.0.1"})
    statuses = [post_form(h, "/control/reserve", f"value=5&token=g{i}", xff=f"2001:db8::{i + 1}").status
                for i in range(FREE_BAD_TOKENS + 1)]
    assert statuses == [401] * FREE_BAD_TOKENS + [429]  # one host, many addresses of its /64
    assert post_form(h, "/control/reserve", "value=5&token=g", xff="2001:db8:0:1::1").status == 401


@pytest.mark.parametrize("trusted", [None, "10.9.9.9", "192.168.0.0/16"])
def test_forwarded_for_from_an_untrusted_peer_is_ignored(proxy_factory: Factory, trusted: str | None) -> None:
    env = {"PW_CONTROL_SECRET": TOKEN, **({"PW_TRUSTED_PROXIES": trusted} if trusted else {})}
    h = proxy_factory(env)
    # Each guess claims a different address; none of it is believed: one client, slowed.
    statuses = [post_form(h, "/control/reserve", f"value=5&token=g{i}", xff=f"203.0.113.{i + 1}").status
                for i in range(FREE_BAD_TOKENS + 2)]
    assert statuses == [401] * FREE_BAD_TOKENS + [429, 429]


@pytest.mark.parametrize(("xff", "client"), [
    (None, "127.0.0.1"),
    ("203.0.113.9", "203.0.113.9"),
    ("203.0.113.9:4711", "203.0.113.9"),
    ("[2001:db8::9]:443", "2001:db8::9"),
    ("1.1.1.1, 203.0.113.9", "203.0.113.9"),
    ("203.0.113.9, 10.0.0.2", "203.0.113.9"),
    ("10.0.0.3, 10.0.0.2", "10.0.0.3"),  # every hop trusted: the farthest one we can see
    ("garbage, 10.0.0.2", "10.0.0.2"),  # not an address: stop at the last hop we know
    ("unknown", "127.0.0.1"),
])
def test_client_address_rules(xff: str | None, client: str) -> None:
    proxies = load_config({"PW_TRUSTED_PROXIES": "127.0.0.1,10.0.0.0/8"}).trusted_proxies
    headers = {"X-Forwarded-For": xff} if xff is not None else {}
    assert client_address("127.0.0.1", headers, proxies) == client
    assert client_address("192.0.2.1", headers, proxies) == "192.0.2.1"  # untrusted peer
    assert client_address("::ffff:127.0.0.1", {}, proxies) == "127.0.0.1"


def test_trusted_proxies_setting(capsys: pytest.CaptureFixture[str]) -> None:
    config = load_config({"PW_TRUSTED_PROXIES": " 172.17.0.1 , 10.0.0.0/8,,2001:db8::/32 "})
    assert [str(n) for n in config.trusted_proxies] == ["172.17.0.1/32", "10.0.0.0/8", "2001:db8::/32"]
    assert config.reference_view()["PW_TRUSTED_PROXIES"] == "172.17.0.1/32,10.0.0.0/8,2001:db8::/32"
    assert load_config({}).trusted_proxies == ()
    for bad in ("10.0.0.0/33", "proxy.local", "10.0.0.1 10.0.0.2", "300.1.1.1"):
        with pytest.raises(ConfigError, match="PW_TRUSTED_PROXIES"):
            load_config({"PW_TRUSTED_PROXIES": bad})
    assert main([], {"PW_TRUSTED_PROXIES": "nope"}) == 2  # refuses to start
    assert "PW_TRUSTED_PROXIES" in capsys.readouterr().err


# ---- a GET never writes ------------------------------------------------------------------------


def test_every_write_is_told_with_its_front_door(proxy: ProxyHandle) -> None:
    """The actions table's audit record: who changed what, and through which front door."""
    records: list[Any] = []
    unsubscribe = proxy.app.writes.subscribe(records.append)
    try:
        target = another_reserve(proxy)
        assert post_form(proxy, "/control/reserve", f"value={target}&token={TOKEN}").status == 200
        assert post_form(proxy, "/control/mode", f"value=backup&token={TOKEN}").status == 200
    finally:
        unsubscribe()
    assert [(r.gateway, r.action, r.summary, r.accepted, r.origin.value, r.client) for r in records] == [
        ("default", "reserve", f"reserve={target}", True, "http", "127.0.0.1"),
        ("default", "mode", "mode=backup", True, "http", "127.0.0.1")]
    assert proxy.get("/stats").json()["writes"]["http"]["accepted"] >= 2


def test_get_never_writes(proxy: ProxyHandle) -> None:
    target = another_reserve(proxy)
    stored = sim_setting(proxy)
    mode = "backup" if stored[1] != "backup" else "self_consumption"
    posts = proxy.app.stats.snapshot().posts
    for method in ("GET", "HEAD"):
        for path in (f"/control/reserve?value={target}&token={TOKEN}",
                     f"/control/reserve?value={target}&mode={mode}&token={TOKEN}",
                     f"/control/mode?value={mode}&token={TOKEN}",
                     f"/control/mode?value={mode}&level={target}&token={TOKEN}",
                     f"/control/grid_charging?value=true&token={TOKEN}",
                     f"/control/grid_export?value=never&token={TOKEN}",
                     f"/control/max_backup?value=cancel&token={TOKEN}",
                     f"/control/status?value={target}&token={TOKEN}"):
            r = proxy.request(method, path, headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status in (200, 404, 503), (path, r.status, r.body)
            assert sim_setting(proxy) == stored, (method, path)
    assert proxy.app.stats.snapshot().posts == posts
    assert proxy.get("/control/reserve").json()["reserve"] != pytest.approx(target, abs=1)


class V1rBackend:
    """What a v1r-mode pypowerwall client answers to the backup-event calls (the simulator has no
    v1r transport, so the library is stood in for, with its real signatures)."""

    def __init__(self) -> None:
        self.cancels = 0
        self.scheduled: list[int] = []
        self.pw = create_autospec(pypowerwall.Powerwall, instance=True)
        self.pw.client = create_autospec(object, instance=True)  # a client exists: connected
        self.pw.cloudmode, self.pw.fleetapi, self.pw.tedapi, self.pw.tedapi_mode = False, False, None, "v1r"
        self.pw.site_name.return_value = "Home"
        self.pw.get_reserve.return_value = 20.0
        self.pw.get_mode.return_value = "self_consumption"
        self.pw.get_grid_charging.return_value = False
        self.pw.get_grid_export.return_value = "battery_ok"
        self.pw.get_backup_events.side_effect = self.get_backup_events
        self.pw.cancel_max_backup.side_effect = self.cancel_max_backup
        self.pw.schedule_max_backup.side_effect = self.schedule_max_backup

    def get_backup_events(self) -> dict[str, Any]:
        manual = {"start_time": 1, "duration_seconds": 60, "end_time": 61, "active": False, "priority": 1}
        return {"manual_backup": None if self.cancels else manual, "backup_events": []}

    def cancel_max_backup(self) -> bool:
        self.cancels += 1
        return True

    def schedule_max_backup(self, seconds: int) -> bool:
        self.scheduled.append(seconds)
        return True


@pytest.fixture
def v1r(tmp_path: Any) -> Iterator[tuple[ProxyHandle, V1rBackend]]:
    """A proxy whose gateway is a v1r-mode client (built through start's client factory)."""
    backend = V1rBackend()
    env = {**DEFAULT_ENV, "PW_HOST": "192.168.91.1", "PW_GW_PWD": "gw-password",
           "PW_RSA_KEY_PATH": str(tmp_path / "key.pem"), "PW_AUTH_PATH": str(tmp_path),
           "PW_CONTROL_SECRET": TOKEN}
    handle = ProxyHandle(start(load_config(env), wait_connected=CONNECT_WAIT,
                               client_factory=lambda **kwargs: backend.pw))
    try:
        assert handle.gateway.connected, handle.gateway.info.connect_error
        yield handle, backend
    finally:
        handle.stop()


def test_max_backup_get_with_token_only_reads(v1r: tuple[ProxyHandle, V1rBackend]) -> None:
    """The reference cancelled an expired event on GET ?token=…; here only a POST writes."""
    proxy, backend = v1r
    for path in (f"/control/max_backup?token={TOKEN}", f"/control/max_backup?value=cancel&token={TOKEN}",
                 f"/control/max_backup?value=600&token={TOKEN}"):
        r = proxy.get(path)
        assert r.status == 200, r.body
        assert r.json()["manual_backup"]["active"] is False  # read as it is, not tidied
        assert proxy.request("HEAD", path).status == 200
    assert backend.cancels == 0 and backend.scheduled == []
    assert "max_backup" in proxy.get("/control/status").json()["actions"]
    # POST with the token: the tidy-up, a cancel and a schedule happen.
    r = post_form(proxy, "/control/max_backup", f"token={TOKEN}")
    assert r.status == 200 and r.json()["manual_backup"] is None
    assert backend.cancels == 1
    assert post_form(proxy, "/control/max_backup", f"value=cancel&token={TOKEN}").json() == \
        {"max_backup": "Cancelled"}
    assert post_json(proxy, "/control/max_backup", {"value": 600, "token": TOKEN}).json() == \
        {"max_backup": "Scheduled for 600 seconds"}
    assert backend.cancels == 2 and backend.scheduled == [600]
    assert_json_error(post_form(proxy, "/control/max_backup", "value=cancel&token=wrong"), 401)
    assert backend.cancels == 2


# ---- answers on the user's scale ---------------------------------------------------------------


def test_reserve_answers_on_the_users_scale(proxy: ProxyHandle) -> None:
    r = post_form(proxy, "/control/reserve", f"value=30&token={TOKEN}")
    assert r.status == 200, r.body
    assert r.json()["backup_reserve_percent"] == 30  # not the gateway's 33.5
    assert proxy.sim.state()["reserve"] == pytest.approx(33.5)  # which it did store
    # A mode-only write echoes the current reserve: on the user's scale too.
    r = post_form(proxy, "/control/mode", f"value=backup&token={TOKEN}")
    assert r.status == 200, r.body
    assert r.json() == {"real_mode": "backup", "backup_reserve_percent": 30}
    r = post_form(proxy, "/control/reserve", f"value=47&mode=self_consumption&token={TOKEN}")
    assert r.json() == {"real_mode": "self_consumption", "backup_reserve_percent": 47}
    r = post_json(proxy, "/control/mode", {"value": "autonomous", "level": 0, "token": TOKEN})
    assert r.json() == {"real_mode": "autonomous", "backup_reserve_percent": 0}
    assert proxy.sim.state()["reserve"] == pytest.approx(5)
    r = post_form(proxy, "/control/reserve", f"value=100&token={TOKEN}")
    assert r.json()["backup_reserve_percent"] == 100
    assert proxy.get("/control/reserve").json()["reserve"] == pytest.approx(100)


def test_reserve_answers_on_the_users_scale_in_local_mode(proxy_factory: Factory, simulator: Any) -> None:
    from proxy.simulator import DEFAULT_PASSWORD

    h = proxy_factory({"PW_HOST": simulator.host, "PW_PASSWORD": DEFAULT_PASSWORD,
                       "PW_CONTROL_SECRET": TOKEN}, simulate=False)
    r = post_form(h, "/control/reserve", f"value=30&token={TOKEN}")
    assert r.status == 200, r.body
    assert r.json()["backup_reserve_percent"] == 30
    assert simulator.state()["reserve"] == pytest.approx(33.5)
    assert h.get("/control/status").json()["reserve"] == 30


# ---- JSON bodies -------------------------------------------------------------------------------


def test_json_bodies(proxy: ProxyHandle) -> None:
    target = another_reserve(proxy)
    r = post_json(proxy, "/control/reserve", {"value": target, "token": TOKEN})
    assert r.status == 200, r.body
    assert r.json()["backup_reserve_percent"] == target
    assert proxy.sim.state()["reserve_app"] == pytest.approx(target, abs=0.01)
    r = post_json(proxy, "/control/reserve", {"value": "40"}, headers={"Authorization": f"Bearer {TOKEN}"},
                  content_type="application/json; charset=utf-8")
    assert r.status == 200 and r.json()["backup_reserve_percent"] == 40
    r = post_json(proxy, "/control/mode", {"value": "backup", "token": TOKEN, "note": {"ignored": [1]}})
    assert r.status == 200 and proxy.sim.state()["mode"] == "backup"
    # No value: a read, as with a form.
    assert post_json(proxy, "/control/reserve", {"token": TOKEN}).json()["reserve"] == pytest.approx(40)
    assert post_json(proxy, "/control/mode", {"token": TOKEN, "value": ""}).json() == {"mode": "backup"}
    assert post_json(proxy, "/control/mode", b"", headers={"Authorization": f"Bearer {TOKEN}"}).json() == \
        {"mode": "backup"}


BAD_JSON = [
    (b'{"value": 30, "token": "s3cret-token"', 400),  # cut short
    (b"[30]", 400),
    (b'"30"', 400),
    (b"30", 400),
    (b"null", 400),
    (b'{"value": 30, "value": 90, "token": "s3cret-token"}', 400),  # repeated key
    (b'{"value": 30, "token": "s3cret-token", "token": "x"}', 400),
    (b'{"value": NaN, "token": "s3cret-token"}', 400),
    (b'{"value": Infinity, "token": "s3cret-token"}', 400),
    (b'{"value": 30.0, "token": "s3cret-token"}', 400),  # an integer, not a float
    (b'{"value": 30.5, "token": "s3cret-token"}', 400),
    (b'{"value": -1, "token": "s3cret-token"}', 400),
    (b'{"value": 101, "token": "s3cret-token"}', 400),
    (b'{"value": true, "token": "s3cret-token"}', 400),
    (b'{"value": null, "token": "s3cret-token"}', 400),
    (b'{"value": [30], "token": "s3cret-token"}', 400),
    (b'{"value": {"v": 30}, "token": "s3cret-token"}', 400),
    (b'{"value": "\\uff15\\uff10", "token": "s3cret-token"}', 400),  # fullwidth digits
    (b'{"value": "30", "token": "s3cret-t\\u00f6ken"}', 400),
    (b'{"value": "30", "token": 12345}', 401),  # a wrong token, whatever its type
    (b'{"value": "30", "token": ["s3cret-token"]}', 400),
    (b'{"value": "30", "mode": "turbo", "token": "s3cret-token"}', 400),
    (b'\xff\xfe{"value": 30}', 400),  # not UTF-8
    (b'{"value": "30", "token": "s3cret-token"}\x00', 400),
    (b"[" * 2000 + b"]" * 2000, 400),  # deep nesting, within the 4 KiB limit
    (b'{"value": 30, "token": "wrong"}', 401),
]


@pytest.mark.parametrize(("body", "status"), BAD_JSON, ids=[f"json{i}" for i in range(len(BAD_JSON))])
def test_bad_json_bodies(proxy: ProxyHandle, body: bytes, status: int) -> None:
    stored = sim_setting(proxy)
    posts = proxy.app.stats.snapshot().posts
    assert_json_error(post_json(proxy, "/control/reserve", body), status)
    assert sim_setting(proxy) == stored
    assert proxy.app.stats.snapshot().posts == posts


@pytest.mark.parametrize(("content_type", "status"), [
    ("text/json", 415), ("application/xml", 415), ("multipart/form-data; boundary=x", 415),
    ("application/json-seq", 415),
])
def test_other_body_types_are_refused(proxy: ProxyHandle, content_type: str, status: int) -> None:
    stored = sim_setting(proxy)
    r = post_json(proxy, "/control/reserve", {"value": 30, "token": TOKEN}, content_type=content_type)
    assert "application/json" in assert_json_error(r, status)
    assert sim_setting(proxy) == stored


# ---- GET /control/status -----------------------------------------------------------------------


def test_control_status(proxy: ProxyHandle) -> None:
    target = another_reserve(proxy)
    assert post_form(proxy, "/control/reserve", f"value={target}&mode=backup&token={TOKEN}").status == 200
    r = proxy.get("/control/status")  # no token needed
    assert r.status == 200 and r.header("Content-Type") == "application/json"
    assert r.json() == {"enabled": True, "ready": True,
                        "actions": ["reserve", "reserve_hold", "mode", "grid_charging", "grid_export"],
                        "reserve": target, "mode": "backup"}
    assert TOKEN not in r.text
    assert proxy.request("HEAD", "/control/status").status == 200
    r = proxy.post("/control/status", f"token={TOKEN}")
    assert r.status == 405 and "GET" in (r.header("Allow") or "")


def test_control_status_when_disabled(proxy_factory: Factory) -> None:
    h = proxy_factory()
    r = h.get("/control/status")
    assert r.status == 200
    assert r.json() == {"enabled": False, "ready": False, "actions": [], "reserve": None, "mode": None}
    assert_json_error(h.get("/control/reserve"), 403)
    assert_json_error(h.post("/control/reserve", "value=30&token=x"), 403)


# ---- the pieces, without a network -------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_grows_caps_forgets_and_stays_bounded() -> None:
    clock = Clock()
    throttle = TokenThrottle(clock, capacity=3)
    waits = [throttle.wrong("a") for _ in range(FREE_BAD_TOKENS + 12)]
    assert waits[:FREE_BAD_TOKENS] == [0.0] * FREE_BAD_TOKENS
    assert waits[FREE_BAD_TOKENS:FREE_BAD_TOKENS + 4] == [1.0, 2.0, 4.0, 8.0]
    assert max(waits) == PENALTY_CAP
    clock.now += FORGET_AFTER + 1  # quiet long enough: a clean record
    assert throttle.strikes("a") == 0 and throttle.wrong("a") == 0.0
    for key in ("b", "c", "d"):
        throttle.wrong(key)
    assert len(throttle) == 3 and throttle.strikes("a") == 0  # the least recently seen went


def test_same_secret() -> None:
    assert same_secret(TOKEN, TOKEN)
    for wrong in ("", "s3cret", TOKEN + "x", TOKEN.upper(), " " + TOKEN, "s3cret-tökén", "\udcff"):
        assert not same_secret(wrong, TOKEN), wrong
    assert not same_secret("", "")  # an empty token is never right


# ---- several gateways: each mount controls its own ---------------------------------------------


def test_control_under_a_gateway_mount_writes_that_gateway(tmp_path: Any) -> None:
    from proxy.main import start
    from tests.conftest import CONNECT_WAIT, DEFAULT_ENV

    env = {**DEFAULT_ENV, "PW_AUTH_PATH": str(tmp_path), "PW_CONTROL_SECRET": TOKEN}
    h = ProxyHandle(start(load_config(env, simulate=True), simulate=2, wait_connected=CONNECT_WAIT))
    try:
        first, second = h.running.simulators
        before = first.state()["reserve"]
        target = next(t for t in TARGETS if abs(t - second.state()["reserve_app"]) > 2
                      and abs(t - first.state()["reserve_app"]) > 2)
        r = post_form(h, "/api/gateways/sim2/control/reserve", f"value={target}&mode=backup&token={TOKEN}")
        assert r.status == 200, r.body
        assert second.state()["reserve_app"] == pytest.approx(target, abs=0.01)
        assert second.state()["mode"] == "backup"
        assert first.state()["reserve"] == before  # the other gateway is untouched
        status = h.get("/api/gateways/sim2/control/status").json()
        assert (status["reserve"], status["mode"]) == (target, "backup")
        assert h.get("/control/status").json()["reserve"] != target  # the default: sim1
        assert h.get("/api/gateways/sim2/control/reserve").json()["reserve"] == pytest.approx(target)
        assert h.get("/api/gateways/sim2/stats").json()["posts"] == 1
        assert h.get("/api/gateways/sim1/stats").json()["posts"] == 0
    finally:
        h.stop()
