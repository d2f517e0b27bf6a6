"""Helpers for talking to the gateway simulator over real sockets in tests."""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import urllib.parse
from pathlib import Path
from typing import Any

import pypowerwall

from proxy.simulator import DEFAULT_GW_PWD, DEFAULT_PASSWORD, Simulator
from tests.conftest import ProxyHandle, Reply

# requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's
# verify=False, which pypowerwall's TEDAPI client relies on; tests unset them.
CA_BUNDLE_VARS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def quiet(h: ProxyHandle) -> bool:
    """Neither the proxy nor its simulator has a gateway call under way: no fetch claimed,
    none in a lane or waiting for one, none being answered (wait for it before counting)."""
    calls = h.gateway.lanes.view()
    if h.gateway.cache.in_flight() or calls["in_flight"] or calls["waiting"]:
        return False
    return h.sim is None or h.sim.stats()["in_flight"] == 0


def _insecure() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def connect(target: Simulator | int, timeout: float = 10.0) -> http.client.HTTPSConnection:
    """An HTTPS connection to a simulator (or a port) that does not check the certificate."""
    port = target if isinstance(target, int) else target.port
    return http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=_insecure())


def request(target: Simulator | int, method: str, path: str, body: bytes | str | None = None,
            headers: dict[str, str] | None = None, timeout: float = 10.0) -> Reply:
    """One request on a fresh HTTPS connection."""
    conn = connect(target, timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def post_json(target: Simulator | int, path: str, payload: Any,
              headers: dict[str, str] | None = None, timeout: float = 10.0) -> Reply:
    merged = {"Content-Type": "application/json", **(headers or {})}
    return request(target, "POST", path, json.dumps(payload), merged, timeout)


def login(target: Simulator | int, password: str = DEFAULT_PASSWORD) -> Reply:
    """Log in with a form body, as pypowerwall does."""
    form = urllib.parse.urlencode({"username": "customer", "password": password,
                                   "email": "owner@example.com", "clientInfo": "timezone"})
    return request(target, "POST", "/api/login/Basic", form,
                   {"Content-Type": "application/x-www-form-urlencoded"})


def cookie_header(reply: Reply) -> dict[str, str]:
    """A Cookie header carrying the AuthCookie/UserRecord a login set."""
    pairs = [value.split(";", 1)[0] for name, value in reply.headers.items()
             if name.lower() == "set-cookie"]
    return {"Cookie": "; ".join(pairs)}


def basic_auth(password: str = DEFAULT_GW_PWD) -> dict[str, str]:
    token = base64.b64encode(f"Tesla_Energy_Device:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def local_powerwall(sim: Simulator, folder: Path, name: str = "local", **kw: Any) -> Any:
    """pypowerwall in local mode (customer login), no caching, cache file in `folder`."""
    options: dict[str, Any] = {"password": DEFAULT_PASSWORD, "email": "owner@example.com",
                               "pwcacheexpire": 0, "timeout": 5, "failover": False,
                               "cachefile": os.fspath(folder / f".{name}"), **kw}
    return pypowerwall.Powerwall(host=sim.host, **options)


def tedapi_powerwall(sim: Simulator, folder: Path, name: str = "tedapi", **kw: Any) -> Any:
    """pypowerwall in full TEDAPI mode (gateway password only), no caching."""
    options: dict[str, Any] = {"gw_pwd": DEFAULT_GW_PWD, "pwcacheexpire": 0, "timeout": 5,
                               "failover": False, "cachefile": os.fspath(folder / f".{name}"),
                               **kw}
    return pypowerwall.Powerwall(host=sim.host, **options)
