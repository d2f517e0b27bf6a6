"""A gateway that is not ours: a plain HTTP/1.0 server over TLS with a few fixed JSON bodies.

Like the stubs owners and other projects test with: it takes any customer login
(sets the two cookies), answers a handful of /api/* paths with canned JSON after
`delay` seconds, everything else 404, one request per connection. `html` makes
every data path answer a web page instead (a captive portal). It counts what it
was asked per path, and the most requests it was answering at once.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from proxy.simulator.tls import server_context

BODIES: dict[str, Any] = {
    "/api/status": {"din": "1232100-00-E--TG0000000000AB", "version": "23.44.0 eb113390",
                    "up_time_seconds": "61h4m3.5s", "device_type": "teg"},
    "/api/meters/aggregates": {
        name: {"last_communication_time": "2024-01-01T12:00:00-08:00", "instant_power": power,
               "instant_reactive_power": 0, "instant_apparent_power": abs(power), "frequency": 60,
               "energy_exported": 1000.0, "energy_imported": 2000.0, "instant_average_voltage": 240,
               "instant_total_current": 0, "timeout": 1500000000}
        for name, power in (("site", 120.0), ("battery", -800.0), ("load", 1500.0), ("solar", 2180.0))},
    "/api/system_status/soe": {"percentage": 71.5},
    "/api/system_status/grid_status": {"grid_status": "SystemGridConnected",
                                       "grid_services_active": False},
    "/api/system_status": {"nominal_full_pack_energy": 13500, "nominal_energy_remaining": 9650,
                           "system_island_state": "SystemGridConnected", "available_blocks": 1,
                           "battery_blocks": [], "grid_faults": []},
    "/api/operation": {"real_mode": "self_consumption", "backup_reserve_percent": 24.0},
    "/api/site_info/site_name": {"site_name": "Stub Home", "timezone": "America/Los_Angeles"},
    "/api/system_status/grid_faults": [],
    "/api/powerwalls": {"powerwalls": []},
}
PAGE = b"<html><head><title>Sign in</title></head><body><form>login</form></body></html>"


class StubGateway:
    """Start with `with StubGateway(delay=0.2) as stub:`; `stub.host` is pypowerwall's host."""

    def __init__(self, delay: float = 0.0, html: bool = False) -> None:
        self.delay, self.html = delay, html
        self._lock = threading.Lock()
        self.paths: dict[str, int] = {}
        self._in_flight = 0
        self.most_in_flight = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        context = server_context()
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> StubGateway:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.paths)

    def reset(self) -> None:
        with self._lock:
            self.paths = {}
            self.most_in_flight = self._in_flight

    def arrived(self, path: str) -> None:
        with self._lock:
            self.paths[path] = self.paths.get(path, 0) + 1
            self._in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self._in_flight)

    def answered(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def answer(self, method: str, path: str) -> tuple[int, str, bytes, list[tuple[str, str]]]:
        """(status, content type, body, extra headers) for one request."""
        if path == "/api/login/Basic" and method == "POST":
            cookies = [("Set-Cookie", "AuthCookie=stub-cookie; Path=/"),
                       ("Set-Cookie", "UserRecord=stub-record; Path=/")]
            return 200, "application/json", b'{"token": "stub-token"}', cookies
        if path in BODIES and method == "GET":
            if self.html:
                return 200, "text/html; charset=utf-8", PAGE, []
            return 200, "application/json", json.dumps(BODIES[path]).encode(), []
        return 404, "text/plain", b"404 page not found\n", []


def _handler(stub: StubGateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # BaseHTTPRequestHandler speaks HTTP/1.0 unless told otherwise: one request per
        # connection, no keep-alive, as the stubs people write.

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            path = self.path.split("?", 1)[0]
            stub.arrived(path)
            answering = True
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if stub.delay:
                    time.sleep(stub.delay)
                status, kind, body, extra = stub.answer(self.command, path)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                for name, value in extra:
                    self.send_header(name, value)
                self.end_headers()
                # Uncounted before the body goes out, not after: once the client has the whole
                # answer it may send its next request while this thread still counts this one.
                answering = False
                stub.answered()
                self.wfile.write(body)
            finally:
                if answering:
                    stub.answered()

        do_GET = do_POST = _serve

    return Handler
