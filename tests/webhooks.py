"""A local webhook receiver for the tests: a stdlib HTTP server on a free loopback port that
keeps every JSON body POSTed to it, answering the statuses it is told to first."""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any


class Hook:
    """Receives POSTs at http://127.0.0.1:<port>/<path>; `bodies` are the accepted ones."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.failures: list[int] = []  # statuses to answer, in order, before accepting
        self.lock = threading.Lock()
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with hook.lock:
                    status = hook.failures.pop(0) if hook.failures else 200
                    if status == 200:
                        hook.bodies.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "hook/secret-id") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{path}"

    def received(self) -> list[Any]:
        with self.lock:
            return list(self.bodies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
