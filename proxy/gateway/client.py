"""One gateway's library clients: how they are made, what they turned out to be, which one writes.

pypowerwall's constructor arguments, the mode label and the choice of the control
backend are functions of the gateway's settings and of what the connected client
reports (`library.describe`); only `Clients` keeps state: which credentials made the
client whose login is saved in a cookie file (`proxy.gateway.cookies`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from proxy.config import GatewayConfig
from proxy.gateway import cookies, library
from proxy.gateway.outcome import Exchange

NO_CLOUD_CONTROL = "Unable to connect to cloud mode - Run Setup"


@dataclass(frozen=True, slots=True)
class GatewayInfo:
    """What the gateway client turned out to be, for /stats and /health."""

    connected: bool = False
    mode: str = "Unknown"
    tedapi_mode: str = "off"
    cloudmode: bool = False
    fleetapi: bool = False
    tedapi: bool = False
    pw3: bool = False
    tedapi_api_version: str = "V2024_06"
    tedapi_auth_mode: str = "basic"
    siteid: Any = None
    counter: Any = None
    connect_attempts: int = 0
    connect_error: str | None = None


class Clients:
    """Makes library clients; remembers the one whose login is saved in a file, owning its lock."""

    def __init__(self, factory: Callable[..., Any]) -> None:
        self.factory = factory
        self._lock = threading.Lock()
        self._cookie_kwargs: dict[str, Any] = {}  # the client whose login is saved in a file

    def make(self, **kwargs: Any) -> Any:
        """A new library client; its saved login only if these credentials made it."""
        cookies.vouch(kwargs)
        if cookies.applies(kwargs):
            with self._lock:
                self._cookie_kwargs = kwargs
        client = self.factory(**kwargs)
        cookies.stamp(kwargs)
        return client

    def stamp(self, exchanges: Iterable[Exchange]) -> None:
        """After a call that logged in, the cookie file it wrote is vouched for."""
        with self._lock:
            saved = self._cookie_kwargs
        if saved and any(x.logs_in and x.ok for x in exchanges):
            cookies.stamp(saved)


def client_kwargs(c: GatewayConfig) -> dict[str, Any]:
    """pypowerwall's constructor arguments, from the gateway's settings."""
    cloud = c.cloud_mode or c.fleetapi  # a file's gateway may ask for the cloud by name
    return {
        "host": "" if cloud else c.host,
        "password": c.password.reveal(),
        "email": c.email,
        "timezone": c.timezone,
        # The proxy's window cache is the only time-based cache, and its answer book
        # coalesces the library's repeat requests at the transport, where every answer
        # (a web page too) is seen: the library's own caches stay off.
        "pwcacheexpire": 0,
        "timeout": c.timeout,
        # Our transport watch needs a requests.Session; PW_POOL_MAXSIZE=0 ("no
        # keep-alive") is honoured by asking the gateway to close instead.
        "poolmaxsize": max(1, c.pool_maxsize),
        "siteid": c.siteid or None,
        "authpath": c.auth_path,
        "authmode": c.auth_mode,
        "cachefile": c.cache_file,
        "auto_select": True,
        "retry_modes": False,  # we retry in the background ourselves
        "gw_pwd": c.gw_pwd.reveal() or None,
        "rsa_key_path": c.rsa_key_path or None,
        "wifi_host": c.wifi_host or None,
        "tedapi_api_version": c.tedapi_api_version,
        "tedapi_auth_mode": c.tedapi_auth_mode,
        # A local gateway that is briefly down must not flip us into cloud mode.
        "failover": not c.host or cloud,
        **({"cloudmode": c.cloud_mode, "fleetapi": c.fleetapi} if cloud else {}),
    }


def cloud_control_kwargs(c: GatewayConfig) -> dict[str, Any]:
    """A cloud client for writes, beside a local client that cannot write."""
    return {"host": "", "password": c.password.reveal(), "email": c.email,
            "siteid": c.siteid or None, "authpath": c.auth_path, "authmode": c.auth_mode,
            "cachefile": c.cache_file, "auto_select": True}


def described(info: GatewayInfo, pw: Any, c: GatewayConfig, *, control: bool,
              simulated: bool) -> GatewayInfo:
    """`info` after a connect: what the client reports, and the mode label it makes."""
    d = library.describe(pw)
    info = replace(info, connected=True, cloudmode=d.cloudmode, fleetapi=d.fleetapi,
                   tedapi_mode=d.tedapi_mode, tedapi=d.tedapi, pw3=d.pw3, siteid=d.siteid,
                   tedapi_auth_mode=d.tedapi_auth_mode or c.tedapi_auth_mode,
                   counter=d.counter, connect_error=None)
    return replace(info, mode=mode_label(info, c, control=control, simulated=simulated))


def mode_label(info: GatewayInfo, c: GatewayConfig, *, control: bool, simulated: bool) -> str:
    """"Local (full+control)", "Cloud", "FleetAPI" ...: the mode as /stats and the log say it."""
    if info.fleetapi:
        label = "FleetAPI"
    elif info.cloudmode:
        label = "Cloud"
    elif info.tedapi_mode != "off":
        extras = [info.tedapi_mode]
        if c.wifi_host and info.tedapi_mode == "v1r":
            extras.append("wifi")
        if control:
            extras.append("control")
        label = f"Local ({'+'.join(extras)})"
    else:
        label = "Local"
    return f"{label} [simulated]" if simulated else label


def control_backend(info: GatewayInfo, c: GatewayConfig, pw: Any, clients: Clients,
                    control_password: str) -> tuple[Any, str | None]:
    """(the client writes go through, None), or (None, why there is none): the reference's
    choice, plus local /api/operation writes."""
    try:
        if info.cloudmode or info.tedapi_mode == "v1r" or (
                info.tedapi_mode in ("off", "hybrid") and c.password):
            # cloud/FleetAPI/v1r write through the main client; so does a
            # customer-password local client (the gateway's /api/operation).
            control_pw = pw
        elif library.has_cloud_auth(c.auth_path):
            control_pw = clients.factory(**cloud_control_kwargs(c))
        elif c.password or control_password:
            password = c.password.reveal() or control_password
            control_pw = clients.make(**(client_kwargs(c) | {
                "password": password, "gw_pwd": None, "rsa_key_path": None}))
        else:
            return None, NO_CLOUD_CONTROL
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if control_pw is not None and not library.has_client(control_pw):
        return None, NO_CLOUD_CONTROL
    return control_pw, None
