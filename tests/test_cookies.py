"""A saved gateway login only for the credentials that made it (PW_CACHE_FILE).

pypowerwall reuses the cookie file of an earlier run without logging in; with a
fingerprint beside it, a changed or wrong password is never masked by an old cookie.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.config import load_config
from proxy.gateway.cookies import FINGERPRINT_SUFFIX, KEY_SUFFIX
from proxy.main import Running, start
from proxy.simulator import DEFAULT_PASSWORD, Simulator
from tests.conftest import DEFAULT_ENV, ProxyHandle, Reply, settled

COOKIE_WAIT = 5.0  # the start's connect: a refused login never connects, a good one in well under


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(port=0, seed=9, profile="pw2-legacy") as simulator:  # customer login only
        yield simulator


def run(sim: Simulator, folder: Path, password: str, **env: str) -> Running:
    merged = {**DEFAULT_ENV, "PW_HOST": sim.host, "PW_PASSWORD": password, "PW_AUTH_PATH": str(folder),
              **env}
    return start(load_config(merged), wait_connected=COOKIE_WAIT)


def soe(running: Running) -> Reply:
    """A data read: the library logs in when it first needs to (not at connect)."""
    return ProxyHandle(running).get("/soe")


def logins(sim: Simulator) -> int:
    return int(sim.stats()["paths"].get("/api/login/Basic", 0))


def test_a_wrong_password_is_not_masked_by_the_cookie_a_right_one_left(sim: Simulator,
                                                                        tmp_path: Path) -> None:
    first = run(sim, tmp_path, DEFAULT_PASSWORD)
    try:
        assert soe(first).status == 200
    finally:
        first.stop()
    cookie = tmp_path / ".powerwall"
    assert cookie.exists() and Path(f"{cookie}{FINGERPRINT_SUFFIX}").exists()
    assert oct(os.stat(f"{cookie}{KEY_SUFFIX}").st_mode & 0o777) == "0o600"
    assert DEFAULT_PASSWORD not in Path(f"{cookie}{FINGERPRINT_SUFFIX}").read_text()
    # The gateway still honours that session: only a login can tell the password is wrong.
    second = run(sim, tmp_path, "not-the-password")
    try:
        settled(ProxyHandle(second))  # its first read (the site name) logs in, and is refused
        refused = soe(second)
        assert refused.status == 503 and "refused the login" in refused.json()["error"], refused.body
        assert ProxyHandle(second).get("/health").json()["gateway"]["login_backoff_steps"] == 1
    finally:
        second.stop()
    again = run(sim, tmp_path, DEFAULT_PASSWORD)  # the right one logs in afresh and works
    try:
        assert soe(again).status == 200
    finally:
        again.stop()


def one_run(sim: Simulator, folder: Path, password: str = DEFAULT_PASSWORD) -> int:
    """Start, read, stop; the logins the gateway saw meanwhile."""
    before = logins(sim)
    running = run(sim, folder, password)
    try:
        assert soe(running).status == 200
    finally:
        running.stop()
    return logins(sim) - before


def test_the_same_credentials_reuse_their_cookie(sim: Simulator, tmp_path: Path) -> None:
    assert one_run(sim, tmp_path) == 1
    assert one_run(sim, tmp_path) == 0  # the second start used the saved login


def test_a_cookie_without_a_fingerprint_is_discarded(sim: Simulator, tmp_path: Path) -> None:
    one_run(sim, tmp_path)
    Path(tmp_path / f".powerwall{FINGERPRINT_SUFFIX}").unlink()  # e.g. left by another tool
    assert one_run(sim, tmp_path) == 1


def test_a_cookie_for_another_gateway_is_discarded(sim: Simulator, tmp_path: Path) -> None:
    one_run(sim, tmp_path)
    with Simulator(port=0, seed=10, profile="pw2-legacy") as other:
        assert one_run(other, tmp_path) == 1


def test_an_explicit_cache_file_wins_and_cloud_files_are_untouched(sim: Simulator,
                                                                   tmp_path: Path) -> None:
    cloud = {name: json.dumps({"owner@example.com": {"token": name}})
             for name in (".pypowerwall.auth", ".pypowerwall.fleetapi")}
    for name, text in cloud.items():
        (tmp_path / name).write_text(text)
    chosen = tmp_path / "mine" / "login.json"
    chosen.parent.mkdir()
    running = run(sim, tmp_path, DEFAULT_PASSWORD, PW_CACHE_FILE=str(chosen))
    try:
        assert soe(running).status == 200
        assert ProxyHandle(running).get("/stats").json()["cf"] == str(chosen)
    finally:
        running.stop()
    assert chosen.exists() and Path(f"{chosen}{FINGERPRINT_SUFFIX}").exists()
    assert not (tmp_path / ".powerwall").exists()
    assert {name: (tmp_path / name).read_text() for name in cloud} == cloud


def test_gateways_sharing_an_auth_path_get_a_cookie_file_each(tmp_path: Path) -> None:
    with Simulator(port=0, seed=1, profile="pw2-legacy") as one, \
            Simulator(port=0, seed=2, profile="pw2-legacy", site=1) as two:
        listed = json.dumps([{"id": gid, "host": s.host, "password": DEFAULT_PASSWORD,
                              "authpath": str(tmp_path)} for gid, s in (("one", one), ("two", two))])
        running = start(load_config({**DEFAULT_ENV, "PW_GATEWAYS": listed}), wait_connected=COOKIE_WAIT)
        try:
            for gid in ("one", "two"):
                assert ProxyHandle(running).get(f"/api/gateways/{gid}/soe").status == 200
            files = [g.config.cache_file for g in running.gateways]
        finally:
            running.stop()
    assert files == [str(tmp_path / ".powerwall-one"), str(tmp_path / ".powerwall-two")]
    assert all(Path(f).exists() and Path(f + FINGERPRINT_SUFFIX).exists() for f in files)
