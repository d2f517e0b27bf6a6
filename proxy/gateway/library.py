"""pypowerwall's internals, in one module: building clients, finding their sessions,
emptying their caches. A library upgrade re-runs tests/test_faults.py first.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from proxy.gateway.logins import LoginOnce
from proxy.gateway.traffic import Traffic

CLOUD_AUTH_FILES = (".pypowerwall.auth", ".pypowerwall.fleetapi")
_NATIVE = "_native_fail_until"  # TEDAPI mode's 5-minute backoff after a failed local-API energy fetch


def factory(**kwargs: Any) -> Any:
    """pypowerwall.Powerwall(**kwargs)."""
    # Imported here, not at module import: pypowerwall costs ~0.2 s and 30 MB,
    # and nothing should happen at import time.
    import pypowerwall

    return pypowerwall.Powerwall(**kwargs)


@dataclass(frozen=True, slots=True)
class Description:
    """What a connected client turned out to be (for /stats, /health and mode checks)."""

    cloudmode: bool = False
    fleetapi: bool = False
    tedapi_mode: str = "off"
    tedapi: bool = False
    pw3: bool = False
    siteid: Any = None
    counter: Any = None
    tedapi_auth_mode: str = ""  # the live TEDAPI transport's: "basic" or "bearer"


def describe(pw: Any) -> Description:
    cloudmode = bool(getattr(pw, "cloudmode", False))
    tedapi = getattr(pw, "tedapi", None)
    client = getattr(pw, "client", None)
    return Description(
        cloudmode=cloudmode,
        fleetapi=bool(getattr(pw, "fleetapi", False)),
        tedapi_mode=str(getattr(pw, "tedapi_mode", "off") or "off"),
        tedapi=bool(tedapi),
        pw3=bool(getattr(tedapi, "pw3", False)) if tedapi else False,
        siteid=getattr(client, "siteid", None) if cloudmode else None,
        counter=getattr(client, "counter", None) if cloudmode else None,
        tedapi_auth_mode=str(getattr(tedapi, "auth_mode", "") or "") if tedapi else "",
    )


def has_client(pw: Any) -> bool:
    """pypowerwall keeps a half-made object when a login fails: is there a client?"""
    return getattr(pw, "client", None) is not None


def has_cloud_auth(auth_path: str) -> bool:
    base = auth_path or "."
    return any(os.path.exists(os.path.join(base, name)) for name in CLOUD_AUTH_FILES)


def is_local_client(pw: Any) -> bool:
    from pypowerwall.local.pypowerwall_local import PyPowerwallLocal

    return isinstance(getattr(pw, "client", None), PyPowerwallLocal)


def reserve_for_backend(pw: Any, level: float) -> float:
    """The reserve to write, on the scale the control backend expects.

    Users (and GET /control/reserve) speak the Tesla app's scale. The local
    /api/operation takes the gateway's raw scale (app x 0.95 + 5) verbatim;
    cloud, FleetAPI and v1r convert by themselves.
    """
    if is_local_client(pw):
        return round(level * 0.95 + 5, 2)
    return float(level)


def user_number(value: float) -> float | int:
    """A percentage as a person writes it: 30, not 30.000000000000004; 12.5 stays 12.5."""
    rounded = round(float(value), 2)
    return int(rounded) if rounded.is_integer() else rounded


def app_reserve(pw: Any) -> Any:
    """The backup reserve on the Tesla app's scale, as the app shows it.

    The library converts the gateway's raw percentage (app x 0.95 + 5) back with
    floating point, so a reserve set to 41 reads 41.00000000000001: every reader of
    the reserve (control, /pw/get_reserve, /pod, /json, OpenC2, MQTT) gets it here.
    """
    value = pw.get_reserve()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return user_number(value)
    return value


def reserve_answer(pw: Any, result: Any, level: int | None) -> Any:
    """The backend's reply to a write, its reserve on the user's (Tesla app) scale.

    The local /api/operation echoes the gateway's raw scale, v1r echoes the raw
    value it wrote, cloud and FleetAPI echo the app scale. When the write set a
    reserve, the accepted level is the answer; a mode-only local write echoes the
    current raw reserve, converted back as the library's scaled getter does.
    """
    if not isinstance(result, dict):
        return result
    answer = dict(result)
    nested = answer.get("set_backup_reserve_percent")
    if level is not None:
        if "backup_reserve_percent" in answer:
            answer["backup_reserve_percent"] = level
        if isinstance(nested, dict) and "backup_reserve_percent" in nested:
            answer["set_backup_reserve_percent"] = {**nested, "backup_reserve_percent": level}
    elif is_local_client(pw):
        raw = answer.get("backup_reserve_percent")
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            answer["backup_reserve_percent"] = user_number(max(0.0, raw / 0.95 - 5 / 0.95))
    return answer


def _objects(pw: Any) -> list[Any]:
    client = getattr(pw, "client", None)
    candidates = [pw, client, getattr(pw, "tedapi", None), getattr(client, "tedapi", None)]
    unique: list[Any] = []
    for obj in candidates:
        if obj is not None and obj is not False and all(obj is not u for u in unique):
            unique.append(obj)
    return unique


def _sessions(pw: Any) -> list[requests.Session]:
    sessions: list[requests.Session] = []
    for obj in _objects(pw):
        if hasattr(obj, "api_session") and obj.api_session is None and hasattr(obj, "_native_get"):
            # TEDAPI's local-API session (energy counters) is made on first use; make
            # it now, as the library would, so its first exchanges are watched too.
            obj.api_session = requests.Session()
            obj.api_session.verify = False
        for attr in ("session", "wifi_session", "api_session"):
            session = getattr(obj, attr, None)
            if isinstance(session, requests.Session) and all(session is not s for s in sessions):
                sessions.append(session)
    return sessions


def _is_tedapi_session(pw: Any, session: requests.Session) -> bool:
    tedapi = getattr(pw, "tedapi", None)
    return bool(tedapi) and (getattr(tedapi, "session", None) is session
                             or getattr(tedapi, "wifi_session", None) is session)


def answered(pw: Any, traffic: Traffic) -> None:
    """Tell the login guards how a call went: a fresh session proves itself by answering."""
    for guard in _login_guards(pw):
        guard.answered(traffic)


def _login_guards(pw: Any) -> list[LoginOnce]:
    client, tedapi = getattr(pw, "client", None), getattr(pw, "tedapi", None)
    found = [obj.__dict__.get(name) for obj, name in ((client, "_get_session"),
                                                      (tedapi, "_bearer_login"),
                                                      (tedapi, "_customer_login")) if obj]
    return [guard for guard in found if isinstance(guard, LoginOnce)]


def _guard_logins(pw: Any) -> None:
    client = getattr(pw, "client", None)
    if client is not None and is_local_client(pw) and not isinstance(
            client.__dict__.get("_get_session"), LoginOnce):
        client._get_session = LoginOnce(client._get_session)
    tedapi = getattr(pw, "tedapi", None)
    # TEDAPI logs in again on every 401 too: its bearer transport, and the customer login it
    # makes for the local API's energy counters.
    for name, serves in (("_bearer_login", "/tedapi/"), ("_customer_login", "/api/")):
        method = getattr(tedapi, name, None) if tedapi else None
        if method is not None and not isinstance(tedapi.__dict__.get(name), LoginOnce):
            setattr(tedapi, name, LoginOnce(method, serves))


def prepare(pw: Any, pool_maxsize: int) -> None:
    """Turn off the library's own retries, one login at a time (run per call: a reconnect
    replaces sessions)."""
    _guard_logins(pw)
    for session in _sessions(pw):
        if _is_tedapi_session(pw, session) and not getattr(session, "_pwproxy_no_retry", False):
            # urllib3 retries 429/5xx five times with backoff: a retry storm
            # at the moment the gateway asks for calm. We back off ourselves.
            session.mount("https://", HTTPAdapter(pool_connections=1, max_retries=0,
                                                  pool_maxsize=max(1, pool_maxsize)))
            session._pwproxy_no_retry = True  # type: ignore[attr-defined]


def empty_caches(pw: Any, *, keep_native_backoff: bool) -> None:
    """Start a cache window with empty library caches and no library cooldown.

    The library's own TTL cache would stack on ours (double staleness), and its
    5-minute negative caches after a 429/503 would keep us dark after the gateway
    is back. Inside one window it still coalesces the calls several library
    methods make for the same data.
    """
    for obj in _objects(pw):
        for attr in ("pwcache", "pwcachetime"):
            store = getattr(obj, attr, None)
            if isinstance(store, dict):
                store.clear()
        if hasattr(obj, "pwcooldown"):
            obj.pwcooldown = 0
        if not keep_native_backoff and isinstance(getattr(obj, _NATIVE, None), (int, float)):
            # Its 5-minute backoff after a failed local-API energy fetch would serve
            # zeros for 5 minutes after an outage; only a gateway that said no keeps it.
            setattr(obj, _NATIVE, 0.0)


def forget_refusals(pw: Any) -> None:
    """Drop the library's memory of refusals (run before every call).

    After a 429/503 the library stops asking for 5 minutes and answers None, and
    it remembers a failed path as "nothing" for 5-10 minutes. Our own cooldown
    decides when the gateway is asked again; a None the library made up from an
    old refusal must never pass for the gateway's answer.
    """
    negative = _negative_marker()
    for obj in _objects(pw):
        if hasattr(obj, "pwcooldown"):
            obj.pwcooldown = 0
        store = getattr(obj, "pwcache", None)
        if isinstance(store, dict) and negative is not None:
            for key in [k for k, v in list(store.items()) if v is negative]:
                store.pop(key, None)


def _negative_marker() -> Any:
    from pypowerwall.local import pypowerwall_local

    return getattr(pypowerwall_local, "_NEG_CACHE", None)


def native_backoff(pw: Any) -> float:
    """Until when pypowerwall skips the local API's energy counters (TEDAPI mode)."""
    until = [getattr(obj, _NATIVE, 0.0) for obj in _objects(pw)]
    return max((float(u) for u in until if isinstance(u, (int, float))), default=0.0)


def transports(pw: Any, control_pw: Any, control_wanted: bool, healthy: bool) -> dict[str, Any]:
    """/health `transports`, as the reference reports them: per TEDAPI transport its status,
    host and auth mode (v1r: the LAN failover too), and the control transport."""
    tedapi = getattr(pw, "tedapi", None) if pw is not None else None
    out: dict[str, Any] = {}
    if tedapi and getattr(tedapi, "v1r", False):
        out["v1r_lan"] = _v1r_lan(tedapi, healthy)
        out["wifi_tedapi"] = _v1r_wifi(tedapi)
    elif tedapi:
        out["wifi_tedapi"] = {"active": True, "status": _ok(bool(tedapi.din) and healthy),
                              "host": getattr(tedapi, "gw_ip", None),
                              "auth_mode": str(getattr(tedapi, "auth_mode", "basic"))}
    if control_pw is not None:
        if tedapi and getattr(tedapi, "v1r", False):
            out["lan_control"] = {"active": True, "status": "ok", "mode": "v1r_filestore"}
        else:
            out["cloud_control"] = {"active": True, "status": "ok",
                                    "mode": str(getattr(control_pw, "mode", "unknown"))}
    elif control_wanted:
        out["cloud_control"] = {"active": False, "status": "failed"}
    return out


def _ok(ok: bool) -> str:
    return "ok" if ok else "unavailable"


def _v1r_lan(tedapi: Any, healthy: bool) -> dict[str, Any]:
    failed_over = bool(getattr(tedapi, "lan_failed", False))
    lan: dict[str, Any] = {"active": True, "status": _ok(bool(tedapi.din) and not failed_over and healthy),
                           "host": getattr(tedapi, "gw_ip", None), "leader_din": tedapi.din,
                           "failover": bool(getattr(tedapi, "failover", True)),
                           "failed_over": failed_over}
    last = getattr(tedapi, "lan_last_success", 0) or 0
    if last:
        lan["last_success_age_seconds"] = round(time.time() - last, 1)
    if failed_over:
        retry = float(getattr(tedapi, "lan_recover_after", 0) or 0) - time.time()
        lan["lan_retry_in_seconds"] = max(0, round(retry))
    return lan


def _v1r_wifi(tedapi: Any) -> dict[str, Any]:
    if not getattr(tedapi, "wifi_session", None):
        return {"active": False}
    cooldown = max(0.0, float(getattr(tedapi, "wifi_cooldown", 0) or 0) - time.time())
    available = bool(getattr(tedapi, "wifi_available", False))
    status = "ok" if available else ("degraded" if cooldown > 0 else "unavailable")
    return {"active": True, "status": status, "host": getattr(tedapi, "wifi_host", None),
            "available": available, "cooldown_remaining_seconds": round(cooldown)}
