"""Live push end to end: SSE and WebSocket streams through real sockets.

WebSocket clients are the `websockets` library's (sync client) and raw sockets for what a
library will not send (unmasked, oversized, cut-off frames). SSE is read with http.client and
raw sockets. The gateway is the simulator, whose request counts show what listening costs it.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from proxy.api.live import AGGREGATE, gateway_topic
from proxy.config import load_config
from proxy.httpd.server import HTTPServer
from proxy.httpd.stream import SSE, WEBSOCKET, Push, Sink, Stream
from proxy.httpd.types import Request, Response
from proxy.main import start
from tests.conftest import CONNECT_WAIT, DEFAULT_ENV, Factory, ProxyHandle

WAIT = 20.0  # the longest any test waits for something that should come within a window or two
AGGREGATE_KEYS = {"total_site_power", "total_battery_power", "total_load_power", "total_solar_power",
                  "total_grid_power", "total_battery_percent", "grid_status", "num_gateways",
                  "num_online", "stale", "gateways", "timestamp"}


# ---- helpers -----------------------------------------------------------------------------

class SSEReader:
    """Events off an http.client response: {"id": ..., "data": ...}; comments counted."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.response = response
        self.comments = 0
        self.retry: str | None = None

    def next(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        while True:
            line = self.response.fp.readline()
            if not line:
                raise EOFError("stream ended")
            text = line.decode().rstrip("\n")
            if text == "":
                if "data" in fields:
                    return fields
                continue
            if text.startswith(":"):
                self.comments += 1
                continue
            name, _, value = text.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "retry":
                self.retry = value
            else:
                fields[name] = value

    def event(self) -> tuple[str, Any]:
        fields = self.next()
        return fields.get("id", ""), json.loads(fields["data"])


class Listening:
    """An open SSE request: close() closes the response and its socket for good."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        self.conn = conn
        self.response = response

    def __iter__(self) -> Iterator[Any]:
        return iter((self, self.response))

    def close(self) -> None:
        self.response.close()
        self.conn.close()


def open_sse(h: ProxyHandle, path: str = "/events", headers: dict[str, str] | None = None,
             timeout: float = WAIT) -> Listening:
    conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=timeout)
    conn.request("GET", path, headers=headers or {})
    return Listening(conn, conn.getresponse())


def ws_url(h: ProxyHandle, path: str) -> str:
    return f"ws://127.0.0.1:{h.port}{path}"


def ws_json(ws: ClientConnection) -> Any:
    message = ws.recv(timeout=WAIT)
    assert isinstance(message, str)
    return json.loads(message)


def wait_for(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def listeners(h: ProxyHandle, key: str = AGGREGATE) -> int:
    return h.running.topics.stats()["topics"][key]["listeners"]


def raw_upgrade(port: int, path: str, extra: str = "", key: str | None = None) -> tuple[socket.socket, bytes]:
    """A WebSocket opening handshake over a plain socket; returns the socket and the head."""
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Version: 13"]
    if key:
        lines.append(f"Sec-WebSocket-Key: {key}")
    sock.sendall(("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return sock, head


def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
    """One client frame built by hand (RFC 6455 5.2), masked unless told otherwise."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head = struct.pack("!BB", first, mask_bit | size)
    elif size < 65536:
        head = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, size)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def read_frames(sock: socket.socket, buf: bytearray) -> Iterator[tuple[int, bytes]]:
    """Server frames (unmasked) as (opcode, payload) until the connection ends."""
    while True:
        while len(buf) >= 2:
            size = buf[1] & 0x7F
            offset = 2
            if size == 126:
                if len(buf) < 4:
                    break
                size, offset = struct.unpack("!H", buf[2:4])[0], 4
            elif size == 127:
                if len(buf) < 10:
                    break
                size, offset = struct.unpack("!Q", buf[2:10])[0], 10
            if len(buf) < offset + size:
                break
            opcode, payload = buf[0] & 0x0F, bytes(buf[offset:offset + size])
            del buf[:offset + size]
            yield opcode, payload
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return
        if not chunk:
            return
        buf += chunk


def close_code(sock: socket.socket) -> int | None:
    """Read server frames until its close frame; the code in it (None: no close frame)."""
    for opcode, payload in read_frames(sock, bytearray()):
        if opcode == 0x8:
            return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
    return None


@pytest.fixture
def live(proxy_factory: Factory) -> ProxyHandle:
    return proxy_factory()


# ---- server-sent events ----------------------------------------------------------------

def test_sse_aggregate_pushes_each_new_window_once_with_ids(live: ProxyHandle) -> None:
    conn, response = open_sse(live)
    try:
        assert response.status == 200
        assert response.getheader("Content-Type", "").startswith("text/event-stream")
        assert response.getheader("Cache-Control") == "no-cache"
        assert response.getheader("Content-Length") is None
        reader = SSEReader(response)
        seen = [reader.event() for _ in range(4)]
        assert reader.retry == "3000"
        ids = [int(event_id) for event_id, _ in seen]
        assert ids == sorted(set(ids)), "event ids are unique and increasing"
        for _, body in seen:
            assert set(body) >= AGGREGATE_KEYS
            assert body["num_gateways"] == 1 and body["num_online"] == 1
            assert body["stale"] is False
            assert isinstance(body["total_load_power"], float)
        # Pushes follow new data: the simulated home's numbers move from window to window.
        assert len({json.dumps(body["gateways"], sort_keys=True) for _, body in seen}) >= 2
    finally:
        conn.close()


def test_sse_gateway_stream_and_unknown_gateway(live: ProxyHandle) -> None:
    conn, response = open_sse(live, "/events?gw=default")
    try:
        assert response.status == 200
        _, body = SSEReader(response).event()
        assert body["id"] == "default" and body["online"] is True and body["default"] is True
        assert body["routes"] == "/api/gateways/default/"
        assert set(body["data"]) >= {"site_power", "battery_power", "load_power", "solar_power",
                                     "grid_power", "battery_percent", "grid_status", "stale"}
        # Same shape as the polled detail route.
        assert set(body) == set(live.get("/api/gateways/default").json())
    finally:
        conn.close()
    missing = live.get("/events?gw=nope")
    assert missing.status == 404
    assert missing.json() == {"error": "Gateway not found"}
    wait_for(lambda: listeners(live, gateway_topic("default")) == 0, "the listener to leave")


def test_sse_last_event_id_gets_the_current_snapshot_at_once(proxy_factory: Factory) -> None:
    # One window lasts a minute: whatever arrives within the test is the current snapshot.
    h = proxy_factory({"PW_CACHE_EXPIRE": "60", "PW_CACHE_TTL": "120"})
    first_conn, first = open_sse(h)
    try:
        current_id, current = SSEReader(first).event()
        conn, response = open_sse(h, headers={"Last-Event-ID": str(int(current_id) - 1)})
        try:
            event_id, body = SSEReader(response).event()
            assert event_id == current_id and body == current
        finally:
            conn.close()
    finally:
        first_conn.close()
    # Both listened to one topic, read once in that window.
    assert h.running.topics.stats()["topics"][AGGREGATE]["pushes"] == 1


def test_sse_head_is_the_head_alone(live: ProxyHandle) -> None:
    reply = live.request("HEAD", "/events")
    assert reply.status == 200
    assert reply.header("Content-Type", ).startswith("text/event-stream")
    assert reply.body == b""
    assert live.running.server.stats()["streams"] == 0


def test_sse_follows_proxy_base_url(proxy_factory: Factory) -> None:
    h = proxy_factory({"PROXY_BASE_URL": "/pw-proxy"})
    conn, response = open_sse(h, "/pw-proxy/events?gw=default")
    try:
        assert response.status == 200
        _, body = SSEReader(response).event()
        assert body["id"] == "default"
    finally:
        conn.close()
    with connect(ws_url(h, "/pw-proxy/ws/aggregate"), open_timeout=WAIT) as ws:
        assert set(ws_json(ws)) >= AGGREGATE_KEYS


def test_outage_and_recovery_are_pushed_once_each(proxy_factory: Factory) -> None:
    h = proxy_factory({"PW_CACHE_EXPIRE": "1", "PW_CACHE_TTL": "3", "PW_TIMEOUT": "1"})
    conn, response = open_sse(h, "/events?gw=default")
    reader = SSEReader(response)
    try:
        _, body = reader.event()
        assert body["online"] is True and body["data"]["stale"] is False
        h.sim.set_fault("down")
        stale = _next_where(reader, lambda b: b["data"]["stale"] is True)
        assert isinstance(stale["data"]["load_power"], float), "the last good copy, marked stale"
        gone = _next_where(reader, lambda b: b["data"]["load_power"] is None)
        assert gone["online"] is False and gone["data"]["site_power"] is None
        assert gone["data"]["battery_percent"] is None, "never a made-up 0"
        # Nothing new from a dead gateway: windows go by, reads happen, nothing is pushed.
        topic = h.running.topics.stats()["topics"][gateway_topic("default")]
        pushes, reads = topic["pushes"], topic["reads"]
        wait_for(lambda: h.running.topics.stats()["topics"][gateway_topic("default")]["reads"] >= reads + 3,
                 "three more windows")
        assert h.running.topics.stats()["topics"][gateway_topic("default")]["pushes"] == pushes
        h.sim.clear_faults()
        back = _next_where(reader, lambda b: b["online"] is True and b["data"]["load_power"] is not None)
        assert back["data"]["stale"] is False
    finally:
        conn.close()


def _next_where(reader: SSEReader, matches: Callable[[Any], bool], limit: int = 30) -> Any:
    for _ in range(limit):
        _, body = reader.event()
        if matches(body):
            return body
    raise AssertionError("the expected push never came")


# ---- listeners cost the gateway nothing -------------------------------------------------

def _requests_per_window(h: ProxyHandle, windows: int) -> dict[str, float]:
    """Gateway requests per path per window, counted between two refreshes of the topic."""
    def reads() -> int:
        return int(h.running.topics.stats()["topics"][AGGREGATE]["reads"])

    start = reads()
    wait_for(lambda: reads() > start, "a refresh")
    before, first = h.sim.stats()["paths"], reads()
    wait_for(lambda: reads() >= first + windows, f"{windows} refreshes", timeout=WAIT + windows * 2)
    after, last = h.sim.stats()["paths"], reads()
    return {path: (after[path] - before.get(path, 0)) / (last - first) for path in after
            if after[path] != before.get(path, 0)}


WINDOWS = 6


def test_many_listeners_cost_the_gateway_the_same_as_one(live: ProxyHandle) -> None:
    conn, response = open_sse(live)
    try:
        SSEReader(response).event()
        alone = _requests_per_window(live, WINDOWS)
        with contextlib.ExitStack() as crowd:
            for _ in range(40):
                crowd.callback(open_sse(live).close)
            paths = ["/ws/aggregate"] * 10 + ["/ws/gateway/default"] * 5
            sockets = [crowd.enter_context(connect(ws_url(live, p), open_timeout=WAIT)) for p in paths]
            # A client sees its 101 (or event-stream head) before the loop has subscribed it:
            # each count is waited for, never read at once.
            wait_for(lambda: listeners(live) == 51, "51 aggregate listeners")
            wait_for(lambda: listeners(live, gateway_topic("default")) == 5, "5 gateway listeners")
            wait_for(lambda: live.running.server.stats()["streams"] == 56, "56 streams")
            for ws in sockets:
                ws_json(ws)
            crowded = _requests_per_window(live, WINDOWS)
        assert alone, "the refresher reads the gateway"
        # The gateway sees the same requests per window with one listener or fifty-six (a
        # library call may take several HTTP requests on one path: TEDAPI's /tedapi/v1). A
        # request landing just past the end of a count shifts a path by one in WINDOWS.
        assert crowded.keys() == alone.keys()
        for path, rate in crowded.items():
            assert round(abs(rate - alone[path]) * WINDOWS, 6) <= 1, (path, rate, alone[path])
    finally:
        conn.close()


def test_refresher_stops_when_the_last_listener_leaves(live: ProxyHandle) -> None:
    conn, response = open_sse(live)
    SSEReader(response).event()
    assert live.running.topics.stats()["topics"][AGGREGATE]["refreshing"] is True
    conn.close()
    wait_for(lambda: not live.running.topics.stats()["topics"][AGGREGATE]["refreshing"],
             "the refresher to stop")
    wait_for(lambda: live.running.server.stats()["streams"] == 0, "the stream to end")
    # Nobody listens and nobody polls: the gateway hears nothing more from the proxy.
    quiet = live.sim.stats()["total"]
    reads = live.running.topics.stats()["topics"][AGGREGATE]["reads"]
    deadline = time.monotonic() + 2.5  # more than two windows of 1 s
    while time.monotonic() < deadline:
        time.sleep(0.1)
    assert live.sim.stats()["total"] == quiet
    assert live.running.topics.stats()["topics"][AGGREGATE]["reads"] == reads


# ---- WebSocket -------------------------------------------------------------------------

def test_ws_aggregate_and_gateway(live: ProxyHandle) -> None:
    with connect(ws_url(live, "/ws/aggregate"), open_timeout=WAIT) as ws:
        first, second = ws_json(ws), ws_json(ws)
        assert set(first) >= AGGREGATE_KEYS and set(second) >= AGGREGATE_KEYS
        ws.ping().wait(WAIT)  # our pings are answered
    with connect(ws_url(live, "/ws/gateway/default"), open_timeout=WAIT) as ws:
        body = ws_json(ws)
        assert body["id"] == "default" and body["data"]["grid_status"] == "UP"
        ws.close()
        assert ws.close_code == 1000
    wait_for(lambda: live.running.server.stats()["streams"] == 0, "both streams to end")


def test_ws_unknown_gateway_gets_the_error_then_a_normal_close(live: ProxyHandle) -> None:
    with connect(ws_url(live, "/ws/gateway/nope"), open_timeout=WAIT) as ws:
        assert ws_json(ws) == {"error": "Gateway not found"}
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=WAIT)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


def test_ws_fragmented_masked_messages_and_pings_are_handled(live: ProxyHandle) -> None:
    sock, head = raw_upgrade(live.port, "/ws/aggregate")
    try:
        assert head.startswith(b"HTTP/1.1 101 ")
        # A fragmented text message (the client's messages are read and ignored) ...
        sock.sendall(frame(0x1, b'{"hello":', fin=False) + frame(0x0, b' "there"}', fin=True))
        # ... a ping between fragments of another one, then our close.
        sock.sendall(frame(0x1, b"part", fin=False) + frame(0x9, b"are you there")
                     + frame(0x0, b" two"))
        opcodes: list[int] = []
        for opcode, payload in read_frames(sock, bytearray()):
            opcodes.append(opcode)
            if opcode == 0xA:
                assert payload == b"are you there"
                sock.sendall(frame(0x8, struct.pack("!H", 1000) + b"bye"))
            if opcode == 0x8:
                assert struct.unpack("!H", payload[:2])[0] == 1000
                break
        assert 0xA in opcodes and opcodes[-1] == 0x8
        assert sock.recv(10) == b"", "the server closes the TCP connection after the close handshake"
    finally:
        sock.close()


def test_ws_unmasked_client_frame_is_a_protocol_error(live: ProxyHandle) -> None:
    sock, head = raw_upgrade(live.port, "/ws/aggregate")
    try:
        assert head.startswith(b"HTTP/1.1 101 ")
        sock.sendall(frame(0x1, b"not masked", masked=False))
        assert close_code(sock) == 1002
    finally:
        sock.close()


def test_ws_message_over_64_kib_is_too_big(live: ProxyHandle) -> None:
    for chunks in ([frame(0x1, b"x" * (64 * 1024 + 1))],
                   [frame(0x1, b"y" * 40000, fin=False), frame(0x0, b"z" * 40000)]):
        sock, head = raw_upgrade(live.port, "/ws/aggregate")
        try:
            assert head.startswith(b"HTTP/1.1 101 ")
            with contextlib.suppress(OSError):
                for chunk in chunks:
                    sock.sendall(chunk)
            assert close_code(sock) == 1009
        finally:
            sock.close()
    wait_for(lambda: live.running.server.stats()["streams"] == 0, "the streams to close")


def test_ws_disconnect_mid_frame_leaves_others_listening(live: ProxyHandle) -> None:
    with connect(ws_url(live, "/ws/aggregate"), open_timeout=WAIT) as other:
        ws_json(other)
        sock, head = raw_upgrade(live.port, "/ws/aggregate")
        assert head.startswith(b"HTTP/1.1 101 ")
        sock.sendall(frame(0x1, b"a" * 1000)[:300])  # half a frame, then gone
        sock.close()
        wait_for(lambda: listeners(live) == 1, "the cut-off listener to be dropped")
        ws_json(other)  # the other one goes on receiving
        wait_for(lambda: live.running.server.stats()["streams"] == 1, "one stream left")


@pytest.mark.parametrize(("headers", "status"), [
    ({"Sec-WebSocket-Key": None}, 400),
    ({"Sec-WebSocket-Key": "c2hvcnQ="}, 400),  # 5 bytes, not 16
    ({"Sec-WebSocket-Version": "8"}, 426),
    ({"Upgrade": None}, 400),
    ({"Connection": "keep-alive"}, 400),
])
def test_bad_upgrade_requests(live: ProxyHandle, headers: dict[str, str | None], status: int) -> None:
    base: dict[str, str | None] = {"Upgrade": "websocket", "Connection": "Upgrade",
                                   "Sec-WebSocket-Version": "13",
                                   "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
    sent = {k: v for k, v in {**base, **headers}.items() if v is not None}
    reply = live.get("/ws/aggregate", headers=sent)
    assert reply.status == status
    assert "error" in reply.json()
    if status == 426:
        assert reply.header("Sec-WebSocket-Version") == "13"
    assert live.running.server.stats()["streams"] == 0
    assert live.post("/ws/aggregate", "x=1").status == 405


def test_ws_upgrade_over_http10_is_400(live: ProxyHandle) -> None:
    """RFC 6455 4.2.1: the opening handshake is an HTTP/1.1 (or later) GET."""
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", live.port), timeout=WAIT) as sock:
        sock.sendall((f"GET /ws/aggregate HTTP/1.0\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
                      "\r\n").encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in head
    assert "HTTP/1.1" in json.loads(body)["error"]
    assert live.running.server.stats()["streams"] == 0  # none was ever opened
    assert listeners(live) == 0


def test_ws_101_carries_cors_like_the_event_stream(live: ProxyHandle) -> None:
    sock, head = raw_upgrade(live.port, "/ws/aggregate")
    try:
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"\r\nAccess-Control-Allow-Origin: *\r\n" in head
    finally:
        sock.close()
    sse = open_sse(live)
    try:
        assert sse.response.getheader("Access-Control-Allow-Origin") == "*"
    finally:
        sse.close()


def test_streams_never_take_the_connections_pollers_need(tmp_path: Path) -> None:
    """Streams hold at most 3/4 of the connection cap: past that a stream is a 503, and a
    poller, /health and /stats still find a connection (idle ones are evicted for them)."""
    env = {**DEFAULT_ENV, "PW_AUTH_PATH": str(tmp_path), "PW_CACHE_FILE": str(tmp_path / ".powerwall")}
    h = ProxyHandle(start(load_config(env, simulate=True), wait_connected=CONNECT_WAIT, max_connections=8))
    listening: list[Listening] = []
    idle: list[socket.socket] = []
    try:
        stats = h.get("/stats").json()
        assert stats["server"]["max_connections"] == 8
        assert stats["server"]["max_streams"] == 6  # 3/4 of 8, though PW_MAX_STREAMS is 1000
        assert stats["config"]["PW_MAX_STREAMS"] == 1000
        listening = [open_sse(h) for _ in range(6)]
        assert all(s.response.status == 200 for s in listening)
        wait_for(lambda: h.running.server.stats()["streams"] == 6, "six streams")
        refused = h.get("/events")
        assert refused.status == 503 and refused.header("Retry-After") == "10"
        idle = [socket.create_connection(("127.0.0.1", h.port), timeout=WAIT) for _ in range(4)]
        for path in ("/aggregates", "/health", "/stats", "/soe"):
            assert h.get(path).status == 200, path
        assert h.running.server.stats()["streams"] == 6  # no stream was evicted for them
    finally:
        for sock in idle:
            sock.close()
        for sse in listening:
            sse.close()
        h.stop()


def test_max_streams_then_503(proxy_factory: Factory) -> None:
    h = proxy_factory({"PW_MAX_STREAMS": "2"})
    first = open_sse(h)
    with connect(ws_url(h, "/ws/aggregate"), open_timeout=WAIT):
        assert first.response.status == 200
        wait_for(lambda: h.running.server.stats()["streams"] == 2, "two streams")
        refused = h.get("/events")
        assert refused.status == 503 and "error" in refused.json()
        assert refused.header("Retry-After") is not None
        ws_refused = h.get("/ws/aggregate", headers={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()})
        assert ws_refused.status == 503
        assert h.get("/aggregates").status == 200, "polling is not limited by streams"
    wait_for(lambda: h.running.server.stats()["streams"] == 1, "a free slot")
    conn, response = open_sse(h)
    assert response.status == 200
    conn.close()
    first.close()


def test_stop_closes_streams_cleanly(proxy_factory: Factory) -> None:
    h = proxy_factory()
    conn, response = open_sse(h)
    reader = SSEReader(response)
    reader.event()
    with connect(ws_url(h, "/ws/aggregate"), open_timeout=WAIT) as ws:
        ws_json(ws)
        h.stop()  # what SIGTERM does
        with pytest.raises(EOFError):
            for _ in range(10):
                reader.next()
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(10):
                ws.recv(timeout=WAIT)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    conn.close()


def test_stats_show_streams(live: ProxyHandle) -> None:
    conn, response = open_sse(live, "/events?gw=default")
    try:
        SSEReader(response).event()
        stats = live.get("/stats").json()
        assert stats["server"]["streams"] == 1 and stats["server"]["max_streams"] == 1000
        assert stats["streams"]["topics"][gateway_topic("default")]["listeners"] == 1
        assert stats["config"]["PW_MAX_STREAMS"] == 1000
    finally:
        conn.close()


# ---- the transport alone: slow listeners and heartbeats ---------------------------------

class Fanout:
    """A test app: every stream subscribes here; the test publishes as fast as it likes."""

    def __init__(self) -> None:
        self.sinks: list[Sink] = []
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        protocol = WEBSOCKET if request.target.startswith("/ws") else SSE
        return Response(200, [("Content-Type", "text/event-stream")], stream=Stream(protocol, self.open))

    def open(self, sink: Sink) -> Callable[[], None]:
        with self.lock:
            self.sinks.append(sink)
        return lambda: self._remove(sink)

    def _remove(self, sink: Sink) -> None:
        with self.lock:
            if sink in self.sinks:
                self.sinks.remove(sink)

    def publish(self, push: Push) -> int:
        with self.lock:
            sinks = list(self.sinks)
        refused = [s for s in sinks if not s.offer(push)]
        for sink in refused:
            self._remove(sink)
        return len(sinks) - len(refused)


def test_a_stalled_listener_is_dropped_and_the_others_get_everything() -> None:
    app = Fanout()
    server = HTTPServer(app, stream_buffer=64 * 1024).start()
    try:
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", server.port))
        stalled.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
        reader_conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT)
        reader_conn.request("GET", "/events")
        reader = SSEReader(reader_conn.getresponse())
        wait_for(lambda: len(app.sinks) == 2, "two listeners")
        received: list[str] = []

        def read_all() -> None:
            while len(received) < 3000:
                received.append(reader.next()["id"])

        thread = threading.Thread(target=read_all)
        thread.start()
        body = json.dumps({"payload": "x" * 1000}).encode()
        for i in range(3000):
            # The reader keeps up (never more than 20 pushes behind); the stalled one never does.
            wait_for(lambda i=i: len(received) >= i - 20 or not thread.is_alive(), "the reader")
            app.publish(Push(body, str(i)))
        thread.join(WAIT)
        assert received == [str(i) for i in range(3000)], "every push, in order, to the one reading"
        # The sink refuses at once; the loop counts the drop when it next runs: wait for it.
        wait_for(lambda: server.stats()["dropped_streams"] == 1, "the stalled listener to be dropped")
        assert len(app.sinks) == 1
        stalled.close()
        reader_conn.close()
        reader.response.close()
    finally:
        server.stop()


def test_heartbeats_on_quiet_streams() -> None:
    app = Fanout()
    server = HTTPServer(app, stream_heartbeat=0.2).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT)
        conn.request("GET", "/events")
        response = conn.getresponse()
        line = response.fp.readline()
        assert line == b"retry: 3000\n"
        response.fp.readline()
        assert response.fp.readline().startswith(b":"), "a comment line as heartbeat"
        conn.close()
        sock, head = raw_upgrade(server.port, "/ws")
        assert head.startswith(b"HTTP/1.1 101 ")
        opcode, _ = next(read_frames(sock, bytearray()))
        assert opcode == 0x9, "a ping as heartbeat"
        sock.close()
    finally:
        server.stop()


def test_a_ping_flood_without_reading_is_dropped() -> None:
    server = HTTPServer(Fanout(), stream_buffer=4096).start()
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n").encode())
        ping = frame(0x9, b"p" * 125)
        with contextlib.suppress(OSError):  # the server may cut us off mid-flood
            for _ in range(20000):
                sock.sendall(ping)
                if server.stats()["dropped_streams"]:
                    break
        wait_for(lambda: server.stats()["dropped_streams"] == 1, "the flooder to be dropped")
        wait_for(lambda: server.stats()["streams"] == 0, "its stream to close")
        sock.close()
    finally:
        server.stop()
