"""Resource exhaustion, end to end against the composed proxy (--simulate).

* Hundreds of idle and slow-loris connections cost no threads and do not stop
  other clients being served; a head that never completes is cut off (408).
* A flood of bad control tokens is slowed down (429) and logged once per
  interval, not once per attempt; the right token still works; other clients
  are not punished; the table of offenders stays bounded.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from proxy.api.tokens import FREE_BAD_TOKENS, MAX_TRACKED_CLIENTS
from proxy.config import load_config
from proxy.main import start
from tests.conftest import CONNECT_WAIT, DEFAULT_ENV, ProxyHandle

TOKEN = "s3cret-token"
HEAD_TIMEOUT = 2.0  # the server's default is 10 s; shortened so the test waits 2 s, not 10
PARTIAL_HEAD = b"GET /aggregates HTTP/1.1\r\nHost: proxy\r\nX-Slow: "


def make_proxy(tmp_path: Path, server_options: dict[str, Any] | None = None) -> ProxyHandle:
    merged = {**DEFAULT_ENV, "PW_AUTH_PATH": str(tmp_path), "PW_CACHE_FILE": str(tmp_path / ".powerwall"),
              "PW_CONTROL_SECRET": TOKEN}
    handle = ProxyHandle(start(load_config(merged, simulate=True), wait_connected=CONNECT_WAIT,
                               server_options=server_options))
    assert handle.gateway.connected
    return handle


@pytest.fixture
def short_head_proxy(tmp_path: Path) -> Iterator[ProxyHandle]:
    """The composed proxy, its server built with a shorter header-read deadline."""
    handle = make_proxy(tmp_path, {"head_timeout": HEAD_TIMEOUT})
    yield handle
    handle.stop()


@pytest.fixture
def control_proxy(tmp_path: Path) -> Iterator[ProxyHandle]:
    handle = make_proxy(tmp_path)
    yield handle
    handle.stop()


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def answered(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (or `timeout`)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return data + b"<timeout>"
    except OSError:
        pass
    return data


def test_idle_and_slow_loris_connections_do_not_starve_other_clients(short_head_proxy: ProxyHandle) -> None:
    h = short_head_proxy
    assert h.get("/aggregates").status == 200  # warm: the gateway connection exists
    threads_before = threading.active_count()
    idle = [connect(h.port) for _ in range(300)]
    loris = [connect(h.port) for _ in range(200)]
    try:
        for sock in loris:
            sock.sendall(PARTIAL_HEAD)
        stop = threading.Event()

        def trickle() -> None:  # one more header byte now and then: a head that never ends
            while not stop.wait(0.3):
                for sock in loris:
                    with contextlib.suppress(OSError):
                        sock.send(b"x")

        dripper = threading.Thread(target=trickle, daemon=True)
        dripper.start()
        try:
            deadline = time.monotonic() + 5  # the loop accepts in batches: let it catch up
            while h.running.server.stats()["open_connections"] < 500:
                assert time.monotonic() < deadline, h.running.server.stats()
                time.sleep(0.02)
            # Other clients are served, several at once, while 500 connections wait.
            with ThreadPoolExecutor(8) as pool:
                replies = list(pool.map(lambda p: h.get(p, timeout=5).status,
                                        ["/aggregates", "/soe", "/health", "/stats"] * 6))
            assert replies == [200] * 24
            # Waiting connections cost a buffer, not a thread.
            assert threading.active_count() <= threads_before + 2, (threads_before, threading.active_count())
            # Slow-loris heads are cut off at the header-read deadline, with a 408 ...
            started = time.monotonic()
            first = answered(loris[0], HEAD_TIMEOUT + 5)
        finally:
            stop.set()
            dripper.join()
        assert first.startswith(b"HTTP/1.1 408 "), first[:100]
        assert b'{"error": "Request Timeout"}' in first
        assert time.monotonic() - started <= HEAD_TIMEOUT + 5
        for sock in loris[1:]:
            rest = answered(sock, 3)
            assert rest.startswith(b"HTTP/1.1 408 ") or rest == b"", rest[:100]
            sock.close()
        # ... and the connections they held are gone; the idle ones do no harm meanwhile.
        assert h.get("/aggregates").status == 200
        deadline = time.monotonic() + 5
        while h.running.server.stats()["open_connections"] > len(idle) + 2:
            assert time.monotonic() < deadline, h.running.server.stats()
            time.sleep(0.05)
    finally:
        for sock in idle + loris:
            sock.close()


def post(port: int, body: str, source: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    data = ("POST /control/reserve HTTP/1.1\r\nHost: proxy\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}").encode()
    with connect(port, source) as sock:
        sock.sendall(data)
        output = answered(sock, 10)
    head, _, rest = output.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, rest


def test_bad_token_flood_is_slowed_and_logged_once(control_proxy: ProxyHandle,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    h = control_proxy
    caplog.set_level(logging.INFO, logger="proxy")
    reserve = h.sim.state()["reserve"]
    statuses = []
    for i in range(60):
        status, headers, body = post(h.port, f"value=50&token=guess{i}")
        statuses.append(status)
        if status == 429:
            assert int(headers["retry-after"]) >= 1
            assert b"error" in body
    assert statuses[:FREE_BAD_TOKENS] == [401] * FREE_BAD_TOKENS
    assert set(statuses[FREE_BAD_TOKENS:]) == {429}  # slowed down
    assert h.sim.state()["reserve"] == reserve
    # The guesses never lock the owner out: the right token from the same address works.
    status, _, body = post(h.port, f"value=50&token={TOKEN}")
    assert status == 200, body
    assert h.sim.state()["reserve_app"] == pytest.approx(50, abs=0.5)
    refused = [r for r in caplog.records if r.name == "proxy.control" and "refused" in r.getMessage()]
    assert len(refused) == 1, [r.getMessage() for r in refused]  # once per interval, not per attempt
    assert TOKEN not in caplog.text and "guess1" not in caplog.text
    # Another client is not punished for this one's guesses.
    status, _, body = post(h.port, f"value=50&token={TOKEN}", source="127.0.0.2")
    assert status == 200, body
    assert h.get("/health").status == 200


def test_bad_token_table_is_bounded(control_proxy: ProxyHandle) -> None:
    """Each client's bad tokens are remembered for a while, but never more than a fixed number of clients."""
    h = control_proxy
    sources = [f"127.0.{i // 250 + 10}.{i % 250 + 1}" for i in range(MAX_TRACKED_CLIENTS + 60)]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda s: post(h.port, "value=50&token=nope", source=s)[0], sources))
    assert set(statuses) == {401}
    assert h.get("/stats").json()["bad_tokens"]["clients"] == MAX_TRACKED_CLIENTS
    assert h.get("/health").status == 200
