"""`Simulator`: start and stop a simulated gateway in-process (tests, proxy, CLI)."""

from __future__ import annotations

import secrets
import threading
from types import TracebackType
from typing import Any

from . import legacy_vitals, tedapi_wire, tls
from .faults import FaultBoard
from .gateway import Gateway
from .httpserver import GatewayHTTPServer
from .layout import layout_for, renumbered, with_firmware, with_units
from .model import HomeModel
from .profiles import Profile, profile_named
from .sessions import SessionStore
from .site import Hardware, Site
from .stats import RequestCounter

DEFAULT_PASSWORD = "password"
DEFAULT_GW_PWD = "SIMGWPWD01"
WILDCARD_BINDS = ("", "0.0.0.0", "::")
POLL_INTERVAL = 0.05  # how quickly serve_forever notices stop()


class Simulator:
    """A simulated Powerwall gateway speaking HTTPS on `bind`:`port` (0 = any free port).

    `profile` names a gateway personality (profiles.py); `model` overrides its hardware.
    ValueError if either is unknown.
    """

    def __init__(self, bind: str = "127.0.0.1", port: int = 0,
                 password: str = DEFAULT_PASSWORD, gw_pwd: str = DEFAULT_GW_PWD,
                 model: str | None = None, seed: int | None = None,
                 profile: str = "default", units: int | None = None, site: int = 0) -> None:
        self.profile: Profile = profile_named(profile)
        layout = with_firmware(layout_for(model or self.profile.model), self.profile.firmware,
                               self.profile.git_hash)
        if units is not None:
            layout = with_units(layout, units)
        layout = renumbered(layout, site)  # several simulated sites: each its own DIN
        self.bind = bind
        self.requested_port = port
        self.seed = secrets.randbits(32) if seed is None else seed
        self.faults = FaultBoard()
        home = HomeModel(layout, self.seed, outage=self.faults.grid_outage)
        sessions = SessionStore(clock=self.faults.now)
        self.site = Site(Hardware(layout), home, sessions, password, gw_pwd)
        self.counter = RequestCounter()
        self._stopping = threading.Event()
        self.gateway = Gateway(self.site, self.faults, self.counter, self._stopping,
                               self.profile)
        self._server: GatewayHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None  # kept after stop(), for messages and tests

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> Simulator:
        """Listen and serve from a background daemon thread; returns self once listening."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = GatewayHTTPServer((self.bind, self.requested_port), self.gateway,
                                   tls.server_context(), http10=self.profile.http10)
        self._server = server
        self._port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever,
                                        kwargs={"poll_interval": POLL_INTERVAL},
                                        name=f"pwsim-{self.port}", daemon=True)
        self._thread.start()
        # Import the protobuf module now, off the request path, so the first TEDAPI
        # answer is as quick as the rest without slowing start-up.
        warm = legacy_vitals.pb2 if self.profile.vitals else tedapi_wire.pb2
        threading.Thread(target=warm, name="pwsim-warmup", daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the listener and every connection; returns within a fraction of a second."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # wakes requests sleeping in a `slow` fault
        server.shutdown()
        server.server_close()
        server.close_connections()
        if thread is not None:
            thread.join(timeout=1.0)
        self._server = self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    # --- where it listens --------------------------------------------------------

    @property
    def port(self) -> int:
        """The listening port (the last one after stop())."""
        if self._port is None:
            raise RuntimeError("simulator has not been started")
        return self._port

    @property
    def host(self) -> str:
        """What pypowerwall takes as host: "127.0.0.1:PORT"."""
        name = "127.0.0.1" if self.bind in WILDCARD_BINDS else self.bind
        if ":" in name:
            name = f"[{name}]"
        return f"{name}:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    def credentials(self) -> dict[str, str]:
        """What a client needs for this profile: {"gw_pwd": ...} (TEDAPI) or {"password": ...}."""
        if self.profile.tedapi:
            return {"gw_pwd": self.site.gw_pwd}
        return {"password": self.site.password}

    # --- control (same as the /sim/* endpoints) ----------------------------------

    def set_fault(self, kind: str, paths: list[str] | None = None,
                  seconds: float | None = None, **params: Any) -> dict[str, Any]:
        """Activate a fault (POST /sim/fault); returns {"faults": [active faults]}.

        ValueError (with the same message as the HTTP 400) if the fault is invalid.
        """
        spec: dict[str, Any] = {"kind": kind, **params}
        if paths is not None:
            spec["paths"] = list(paths)
        if seconds is not None:
            spec["seconds"] = seconds
        return self.gateway.add_fault(spec)

    def clear_faults(self) -> None:
        """Clear faults, keep counters (POST /sim/clear)."""
        self.faults.clear()

    def reset(self) -> None:
        """Clear faults and counters (POST /sim/reset)."""
        self.gateway.reset()

    def stats(self) -> dict[str, Any]:
        """{"total": N, "paths": {...}} (GET /sim/stats)."""
        return self.counter.snapshot()

    def state(self) -> dict[str, Any]:
        """The home's numbers right now (GET /sim/state)."""
        return self.gateway.state()

    def set_firmware(self, version: str) -> dict[str, Any]:
        """Run another firmware release (POST /sim/firmware); ValueError as the HTTP 400."""
        return self.gateway.set_firmware({"version": version})
