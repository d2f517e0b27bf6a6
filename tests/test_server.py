"""proxy.httpd.server over real sockets on port 0, driven by http.client and raw bytes."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import logging
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.httpd.server import HTTPServer
from proxy.httpd.types import App, Request, Response
from proxy.httpd.workers import CORE

TIMEOUT = 5.0  # generous: only a hang should ever reach it
FIXED_BODY = b'{"hello": "world"}'
PARTIAL_HEAD = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "


# --- the app and helpers -------------------------------------------------------------------


def echo_app(request: Request) -> Response:
    """Echo what the server delivered; a few fixed paths for special cases."""
    if request.target == "/boom":
        raise RuntimeError("secret internal detail")
    if request.target == "/fixed":
        return Response(200, [("Content-Type", "application/json")], FIXED_BODY)
    body = {
        "method": request.method,
        "target": request.target,
        "body": request.body.decode("latin-1"),
        "x_test": request.headers.get("x-test"),  # case-insensitive lookup
        "client": request.client,
    }
    return Response(200, [("Content-Type", "application/json")], json.dumps(body).encode())


class Recorder:
    """An echo app that remembers the requests it saw."""

    def __init__(self) -> None:
        self.requests: list[Request] = []

    def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        return echo_app(request)


class Raw(NamedTuple):
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def read_response(stream: BinaryIO, head_only: bool = False) -> Raw:
    """Read exactly one response, so pipelined answers stay in the stream."""
    status_line = stream.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers: dict[str, str] = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = 0 if head_only else int(headers.get("content-length", "0"))
    return Raw(int(status_line.split()[1]), headers, stream.read(length))


def connect(port: int, host: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection((host, port), timeout=TIMEOUT)


def exchange(port: int, data: bytes, half_close: bool = True) -> tuple[Raw, bytes]:
    """Send raw bytes on a fresh socket; the first response and whatever follows until EOF.

    With ``half_close`` the client sends EOF too, so a keep-alive server closes after answering;
    without it, EOF proves the server chose to close.
    """
    with connect(port) as sock, sock.makefile("rb") as stream:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_response(stream), stream.read()


def read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def get(port: int, target: str = "/", host: str = "127.0.0.1") -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    conn.request("GET", target)
    return conn.getresponse()


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def open_connections(server: HTTPServer) -> int:
    return server.stats()["open_connections"]


@pytest.fixture
def make_server() -> Iterator[Callable[..., HTTPServer]]:
    servers: list[HTTPServer] = []

    def make(app: App = echo_app, **kwargs: Any) -> HTTPServer:
        server = HTTPServer(app, **kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., HTTPServer]) -> HTTPServer:
    return make_server()


# --- keep-alive, HTTP/1.0, HEAD, pipelining, bodies ----------------------------------------


def test_keep_alive_serves_several_requests_on_one_socket(server: HTTPServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    sockets = []
    for i in range(3):
        conn.request("GET", f"/n?i={i}", headers={"X-Test": str(i)})
        response = conn.getresponse()
        body = json.loads(response.read())
        assert response.status == 200
        assert response.getheader("Connection") is None
        assert body == {
            "method": "GET",
            "target": f"/n?i={i}",
            "body": "",
            "x_test": str(i),
            "client": "127.0.0.1",
        }
        sockets.append(conn.sock)
    assert sockets[0] is not None and sockets.count(sockets[0]) == 3  # never reconnected
    assert open_connections(server) == 1
    conn.close()


def test_http10_closes_by_default(server: HTTPServer) -> None:
    response, rest = exchange(server.port, b"GET /ten HTTP/1.0\r\n\r\n", half_close=False)
    assert response.status == 200
    assert response.headers["connection"] == "close"
    assert response.json()["target"] == "/ten"
    assert rest == b""  # and then EOF


def test_http10_keep_alive_when_asked(server: HTTPServer) -> None:
    request = b"GET /ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    with connect(server.port) as sock, sock.makefile("rb") as stream:
        for _ in range(2):
            sock.sendall(request)
            response = read_response(stream)
            assert response.status == 200
            assert response.headers["connection"] == "keep-alive"


def test_http11_connection_close_is_honoured(server: HTTPServer) -> None:
    response, rest = exchange(server.port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", half_close=False)
    assert response.status == 200
    assert response.headers["connection"] == "close"
    assert rest == b""


def test_head_sends_no_body_but_the_get_length() -> None:
    recorder = Recorder()
    server = HTTPServer(recorder).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
        conn.request("HEAD", "/fixed")
        head = conn.getresponse()
        assert head.status == 200 and head.read() == b""
        assert head.getheader("Content-Length") == str(len(FIXED_BODY))
        conn.request("GET", "/fixed")  # same socket: no stray body bytes in between
        assert conn.getresponse().read() == FIXED_BODY
        assert [r.method for r in recorder.requests] == ["HEAD", "GET"]
    finally:
        server.stop()


FILE_BODY = bytes(range(256)) * 1200  # 300 KiB: several of the server's chunks


def file_app(request: Request) -> Response:
    """Answers with a file body (a temporary file, gone once the server closes it)."""
    handle = tempfile.TemporaryFile()  # noqa: SIM115 (the server closes it once sent)
    handle.write(FILE_BODY)
    handle.seek(0)
    return Response(200, [("Content-Type", "application/octet-stream")], file=handle)


def test_a_file_body_is_sent_whole_with_its_length_and_the_connection_kept(
        make_server: Callable[..., HTTPServer]) -> None:
    server = make_server(file_app)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    conn.request("GET", "/file")
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Length") == str(len(FILE_BODY))
    assert response.read() == FILE_BODY
    conn.request("HEAD", "/file")  # the same socket: the length, and no body bytes
    head = conn.getresponse()
    assert head.getheader("Content-Length") == str(len(FILE_BODY)) and head.read() == b""
    conn.request("GET", "/file")
    assert conn.getresponse().read() == FILE_BODY
    assert open_connections(server) == 1
    conn.close()


class FileReady:
    """An app whose `ready` answers with a file, which the loop cannot write (it writes bytes)."""

    def __init__(self) -> None:
        self.opened: list[BinaryIO] = []

    def __call__(self, request: Request) -> Response:
        return file_app(request)

    def ready(self, request: Request) -> Response | None:
        response = file_app(request)
        assert response.file is not None
        self.opened.append(response.file)
        return response


def test_a_file_answer_from_ready_is_declined_and_sent_whole_by_a_worker(
        make_server: Callable[..., HTTPServer]) -> None:
    app = FileReady()
    server = make_server(app)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    for _ in range(2):
        conn.request("GET", "/file")
        response = conn.getresponse()
        assert response.getheader("Content-Length") == str(len(FILE_BODY))
        assert response.read() == FILE_BODY
    assert len(app.opened) == 2 and all(f.closed for f in app.opened)  # declined files are closed
    assert server.stats()["loop_answers"] == 0
    conn.close()


def test_options_reaches_the_app(server: HTTPServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    conn.request("OPTIONS", "/anything")
    response = conn.getresponse()
    assert response.status == 200
    assert json.loads(response.read())["method"] == "OPTIONS"


def test_pipelined_requests_answered_in_order(server: HTTPServer) -> None:
    batch = b"GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyzGET /c HTTP/1.1\r\n\r\n"
    with connect(server.port) as sock, sock.makefile("rb") as stream:
        sock.sendall(batch)
        answers = [read_response(stream).json() for _ in range(3)]
    assert [a["target"] for a in answers] == ["/a", "/b", "/c"]
    assert answers[1]["body"] == "xyz"


def test_pipelined_partial_request_is_completed_later(server: HTTPServer) -> None:
    with connect(server.port) as sock, sock.makefile("rb") as stream:
        sock.sendall(b"GET /first HTTP/1.1\r\n\r\nGET /sec")
        assert read_response(stream).json()["target"] == "/first"
        sock.sendall(b"ond HTTP/1.1\r\n\r\n")
        assert read_response(stream).json()["target"] == "/second"


def test_request_split_across_reads(server: HTTPServer) -> None:
    with connect(server.port) as sock, sock.makefile("rb") as stream:
        for piece in (b"GET /sp", b"lit HTTP/1.1\r", b"\n\r", b"\n"):
            sock.sendall(piece)
            time.sleep(0.01)
        assert read_response(stream).json()["target"] == "/split"


def test_leading_empty_lines_and_bare_lf_are_tolerated(server: HTTPServer) -> None:
    response, _ = exchange(server.port, b"\r\n\r\nGET /lf HTTP/1.1\nConnection: close\n\n")
    assert response.status == 200 and response.json()["target"] == "/lf"


def test_raw_target_is_passed_unchanged(server: HTTPServer) -> None:
    response, _ = exchange(server.port, b"GET //two//slashes?q=%20 HTTP/1.1\r\n\r\n")
    assert response.json()["target"] == "//two//slashes?q=%20"


def test_post_body_is_delivered(server: HTTPServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    conn.request("POST", "/control/reserve", body=b"value=42&token=t")
    response = conn.getresponse()
    assert response.status == 200
    assert json.loads(response.read())["body"] == "value=42&token=t"


def test_expect_100_continue(server: HTTPServer) -> None:
    head = b"PUT /e HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    with connect(server.port) as sock, sock.makefile("rb") as stream:
        sock.sendall(head)
        assert stream.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert stream.readline() == b"\r\n"
        sock.sendall(b"hello")
        response = read_response(stream)
    assert response.status == 200 and response.json()["body"] == "hello"


def test_many_concurrent_keep_alive_clients_all_get_answers(
    make_server: Callable[..., HTTPServer],
) -> None:
    """Every hand-back must wake the loop; a lost wake-up strands a client until its timeout."""
    server = make_server(workers=4)
    failures: list[BaseException] = []

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
        try:
            for i in range(150):
                conn.request("GET", f"/c{n}/{i}")
                response = conn.getresponse()
                assert json.loads(response.read())["target"] == f"/c{n}/{i}"
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    # A worker counts a request just after sending it, so the last count may
    # trail the client's last read by a moment.
    wait_until(lambda: server.stats()["requests"] == 16 * 150)


# --- the quick path: answers the app has at hand, written by the loop --------------------------


class QuickApp:
    """An app with a quick path: `ready` answers /ready/*, a worker calls the app for the rest."""

    def __init__(self, body: bytes = FIXED_BODY, fail: bool = False) -> None:
        self.body = body
        self.fail = fail
        self.calls: list[str] = []  # targets the app proper was called for

    def __call__(self, request: Request) -> Response:
        self.calls.append(request.target)
        return echo_app(request)

    def ready(self, request: Request) -> Response | None:
        if self.fail:
            raise RuntimeError("a bug in ready()")
        if not request.target.startswith("/ready"):
            return None
        return Response(200, [("Content-Type", "application/json")], self.body)


def test_ready_answers_need_no_worker(make_server: Callable[..., HTTPServer]) -> None:
    app = QuickApp()
    server = make_server(app)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    for i in range(20):
        conn.request("HEAD" if i % 2 else "GET", f"/ready/{i}")
        response = conn.getresponse()
        assert response.status == 200 and response.read() == (b"" if i % 2 else FIXED_BODY)
        assert response.getheader("Content-Length") == str(len(FIXED_BODY))
    wait_until(lambda: server.stats()["requests"] == 20)  # counted as it is written
    stats = server.stats()
    assert (stats["loop_answers"], stats["requests"], stats["worker_threads"]) == (20, 20, 0)
    assert app.calls == []
    conn.request("GET", "/not-ready")  # the same connection, now to a worker
    assert json.loads(conn.getresponse().read())["target"] == "/not-ready"
    assert app.calls == ["/not-ready"] and server.stats()["worker_threads"] == 1
    conn.request("GET", "/ready/again")  # and back on the quick path
    assert conn.getresponse().read() == FIXED_BODY
    wait_until(lambda: server.stats()["loop_answers"] == 21)
    conn.close()


def test_ready_answers_in_order_behind_a_worker_answer(make_server: Callable[..., HTTPServer]) -> None:
    server = make_server(QuickApp())
    batch = b"GET /ready/1 HTTP/1.1\r\n\r\nGET /slow HTTP/1.1\r\n\r\nGET /ready/2 HTTP/1.1\r\n\r\n"
    with connect(server.port) as sock, sock.makefile("rb") as stream:
        sock.sendall(batch)
        answers = [read_response(stream) for _ in range(3)]
    assert [a.body for a in answers] == [FIXED_BODY, answers[1].body, FIXED_BODY]
    assert answers[1].json()["target"] == "/slow"


def test_a_large_ready_answer_to_a_slow_reader_does_not_hold_the_loop(
    make_server: Callable[..., HTTPServer],
) -> None:
    body = b"x" * (8 * 1024 * 1024)  # far more than the socket buffers take at once
    server = make_server(QuickApp(body))
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", server.port))
    slow.settimeout(TIMEOUT)
    slow.sendall(b"GET /ready/big HTTP/1.1\r\n\r\n")
    # While that answer waits for its reader, the loop serves others.
    other = get(server.port, "/other")
    assert json.loads(other.read())["target"] == "/other"
    with slow.makefile("rb") as stream:
        response = read_response(stream)
        assert response.status == 200 and response.body == body
        slow.sendall(b"GET /ready/next HTTP/1.1\r\n\r\n")  # keep-alive after the long write
        assert read_response(stream).body == body
    slow.close()


def test_ready_with_connection_close_closes_after_the_answer(make_server: Callable[..., HTTPServer]) -> None:
    server = make_server(QuickApp())
    response, rest = exchange(server.port, b"GET /ready HTTP/1.1\r\nConnection: close\r\n\r\n",
                              half_close=False)
    assert response.body == FIXED_BODY and response.headers["connection"] == "close" and rest == b""
    wait_until(lambda: open_connections(server) == 0)


def test_a_failing_ready_falls_back_to_the_app(make_server: Callable[..., HTTPServer],
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="proxy.server")
    app = QuickApp(fail=True)
    server = make_server(app)
    for i in range(3):
        response = get(server.port, f"/ready/{i}")
        assert response.status == 200 and json.loads(response.read())["target"] == f"/ready/{i}"
    assert app.calls == ["/ready/0", "/ready/1", "/ready/2"]
    errors = [r for r in caplog.records if r.name == "proxy.server" and r.exc_info]
    assert len(errors) == 1  # logged once, not once per request


# --- response framing ------------------------------------------------------------------------


def test_server_adds_framing_headers(make_server: Callable[..., HTTPServer]) -> None:
    def app(request: Request) -> Response:
        headers = [("Content-Length", "999"), ("Server", "other"), ("X-Kept", "yes")]
        return Response(200, headers, b"four")

    server = make_server(app)
    response, _ = exchange(server.port, b"GET / HTTP/1.1\r\n\r\n")
    assert response.headers["content-length"] == "4" and response.body == b"four"
    assert response.headers["server"] == "pwproxy"
    assert response.headers["x-kept"] == "yes"
    date = datetime.datetime.strptime(response.headers["date"], "%a, %d %b %Y %H:%M:%S GMT")
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    assert abs((now - date).total_seconds()) < 5


def test_204_has_neither_body_nor_length(make_server: Callable[..., HTTPServer]) -> None:
    server = make_server(lambda request: Response(204, [], b"ignored"))
    with connect(server.port) as sock, sock.makefile("rb") as stream:
        sock.sendall(b"DELETE /x HTTP/1.1\r\n\r\nGET /y HTTP/1.1\r\n\r\n")
        first, second = read_response(stream), read_response(stream)
    assert first.status == second.status == 204
    assert "content-length" not in first.headers and first.body == b""


def test_app_can_ask_for_close(make_server: Callable[..., HTTPServer]) -> None:
    server = make_server(lambda request: Response(200, [("Connection", "close")], b"bye"))
    response, rest = exchange(server.port, b"GET / HTTP/1.1\r\n\r\n", half_close=False)
    assert response.headers["connection"] == "close" and rest == b""


# --- errors the server answers itself ---------------------------------------------------------


def assert_json_error(response: Raw, status: int) -> None:
    assert response.status == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert isinstance(error, str) and error and "Traceback" not in error


def test_oversize_body_413_and_close(server: HTTPServer) -> None:
    response, rest = exchange(
        server.port, b"POST / HTTP/1.1\r\nContent-Length: 4097\r\n\r\n", half_close=False
    )
    assert_json_error(response, 413)
    assert response.headers["connection"] == "close" and rest == b""


def test_body_at_the_limit_is_accepted(server: HTTPServer) -> None:
    body = b"b" * 4096
    response, _ = exchange(server.port, b"POST / HTTP/1.1\r\nContent-Length: 4096\r\n\r\n" + body)
    assert response.status == 200 and len(response.json()["body"]) == 4096


def test_long_request_line_414(server: HTTPServer) -> None:
    response, _ = exchange(server.port, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n")
    assert_json_error(response, 414)


def test_huge_headers_431(server: HTTPServer) -> None:
    headers = b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * 1000) for i in range(20))
    response, _ = exchange(server.port, b"GET / HTTP/1.1\r\n" + headers + b"\r\n")
    assert_json_error(response, 431)


def test_too_many_headers_431(server: HTTPServer) -> None:
    headers = b"".join(b"X-%d: 1\r\n" % i for i in range(101))  # http.client allows 100
    response, _ = exchange(server.port, b"GET / HTTP/1.1\r\n" + headers + b"\r\n")
    assert_json_error(response, 431)


@pytest.mark.parametrize(
    "request_line",
    [b"HELLO", b"GET / HTTP/1.1 extra", b"GET / FTP/1.0", b"GET / HTTP/1.x", b"POST /", b"GET /"],
)
def test_malformed_request_line_400(server: HTTPServer, request_line: bytes) -> None:
    response, rest = exchange(server.port, request_line + b"\r\n\r\n", half_close=False)
    assert_json_error(response, 400)
    assert response.headers["connection"] == "close" and rest == b""


@pytest.mark.parametrize("request_line", [b"GET / HTTP/2.0", b"GET / HTTP/3.1"])
def test_unsupported_version_505(server: HTTPServer, request_line: bytes) -> None:
    response, _ = exchange(server.port, request_line + b"\r\n\r\n")
    assert_json_error(response, 505)


@pytest.mark.parametrize("method", [b"BREW", b"TRACE", b"CONNECT", b"get"])
def test_unknown_method_405(server: HTTPServer, method: bytes) -> None:
    response, _ = exchange(server.port, method + b" / HTTP/1.1\r\n\r\n")
    assert_json_error(response, 405)  # the client's mistake: a 4xx, with what is allowed
    assert response.headers["allow"] == "GET, HEAD, POST, OPTIONS"


@pytest.mark.parametrize(
    "header",
    [b"Content-Length: abc", b"Content-Length: -1", b"Content-Length: 1_0",
     b"Content-Length: 1\r\nContent-Length: 1"],
)  # fmt: skip
def test_bad_content_length_400(server: HTTPServer, header: bytes) -> None:
    response, _ = exchange(server.port, b"POST / HTTP/1.1\r\n" + header + b"\r\n\r\nx")
    assert_json_error(response, 400)


def test_chunked_body_refused_411(server: HTTPServer) -> None:
    request = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
    response, _ = exchange(server.port, request)
    assert_json_error(response, 411)


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nX: 1\r\n\r\n"  # 32 bytes: a whole second request


@pytest.mark.parametrize(
    ("header", "reason"),
    [(b"Content-Length : 32", "whitespace"), (b"Content-Length\t: 32", "whitespace"),
     (b"Transfer-Encoding : chunked\r\nContent-Length: 32", "whitespace"),
     (b"X-A: 1\r\n Content-Length: 32", "folding"), (b"X-A: 1\r\n\tX-B: 2", "folding"),
     (b"Content-Length 32", "colon"), (b": 32", "name"), (b"X-\x01: 1", "name")],
)  # fmt: skip
def test_malformed_header_lines_400_and_close(make_server: Callable[..., HTTPServer],
                                              header: bytes, reason: str) -> None:
    """RFC 9112 5.1/5.2: a header one parser reads and another doesn't is how requests get smuggled."""
    recorder = Recorder()
    server = make_server(recorder)
    assert len(SMUGGLED) == 32
    data = b"POST /front HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n" + SMUGGLED
    response, rest = exchange(server.port, data, half_close=False)
    assert_json_error(response, 400)
    assert reason in response.json()["error"]
    assert response.headers["connection"] == "close"
    assert rest == b""  # no second answer: the smuggled request was never read as one
    assert recorder.requests == []


def test_well_formed_header_lines_still_pass(server: HTTPServer) -> None:
    data = b"POST /ok HTTP/1.1\r\nX-Test:  padded value\r\nX-Empty:\r\nContent-Length: 3\r\n\r\nabc"
    response, _ = exchange(server.port, data)
    assert response.status == 200
    assert response.json() == {"method": "POST", "target": "/ok", "body": "abc", "x_test": "padded value",
                               "client": "127.0.0.1"}


def absolute(port: int, target: str) -> tuple[Raw, bytes]:
    return exchange(port, f"GET {target} HTTP/1.1\r\nHost: whatever\r\n\r\n".encode(), half_close=False)


@pytest.mark.parametrize(
    ("target", "served_as"),
    [("http://127.0.0.1:{port}/stats", "/stats"), ("HTTP://127.0.0.1:{port}/stats?x=1#f", "/stats?x=1#f"),
     ("http://localhost:{port}/a//b", "/a//b"), ("http://LOCALHOST.:{port}", "/"),
     ("http://127.0.0.1:{port}?q=1", "/?q=1"), ("http://{hostname}:{port}/by-name", "/by-name")],
)  # fmt: skip
def test_absolute_form_for_this_server_is_served_as_its_path(
    make_server: Callable[..., HTTPServer], target: str, served_as: str
) -> None:
    recorder = Recorder()
    server = make_server(recorder)
    with connect(server.port) as sock, sock.makefile("rb") as stream:
        sock.sendall(f"GET {target.format(port=server.port, hostname=socket.gethostname())} HTTP/1.1"
                     "\r\n\r\n".encode())
        response = read_response(stream)
        assert response.status == 200 and response.json()["target"] == served_as
        sock.sendall(b"GET /next HTTP/1.1\r\n\r\n")  # and the connection stays usable
        assert read_response(stream).json()["target"] == "/next"
    assert [r.target for r in recorder.requests] == [served_as, "/next"]


@pytest.mark.parametrize(
    "target",
    ["http://example.com/stats", "http://example.com:{port}/stats", "http://127.0.0.1:{other}/stats",
     "http://127.0.0.1/stats", "https://127.0.0.1:{port}/stats", "http://10.1.2.3:{port}/stats",
     "http://[::1]:{port}/stats", "http://gateway/api/config", "http://user@127.0.0.1:{port}/stats",
     "http://127.0.0.1:{port}:1/stats", "http://:{port}/stats", "http://[::1/stats", "ftp://127.0.0.1:{port}/",
     "http://127.0.0.1:99999999/stats"],
)  # fmt: skip
def test_absolute_form_for_another_server_is_400_and_not_served(
    make_server: Callable[..., HTTPServer], target: str
) -> None:
    recorder = Recorder()
    server = make_server(recorder)
    response, rest = absolute(server.port, target.format(port=server.port, other=server.port + 1))
    assert_json_error(response, 400)
    assert response.headers["connection"] == "close" and rest == b""
    assert recorder.requests == []


def test_absolute_form_over_tls_needs_the_https_scheme(tls_server: HTTPServer) -> None:
    conn = https(tls_server.port)
    conn.request("GET", f"https://127.0.0.1:{tls_server.port}/secure")
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["target"] == "/secure"
    conn.request("GET", f"http://127.0.0.1:{tls_server.port}/plain")
    response = conn.getresponse()
    assert response.status == 400 and "error" in json.loads(response.read())


def test_app_exception_500_without_traceback(server: HTTPServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="proxy.server")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    for _ in range(2):
        conn.request("GET", "/boom")
        response = conn.getresponse()
        body = response.read()
        assert response.status == 500
        assert json.loads(body) == {"error": "Internal Server Error"}
        assert b"secret" not in body and b"Traceback" not in body
    conn.request("GET", "/after")  # the connection survives an app error
    assert conn.getresponse().status == 200
    errors = [r for r in caplog.records if r.name == "proxy.server" and r.exc_info]
    assert len(errors) == 1  # logged once, not once per request


def test_header_injection_by_the_app_is_a_500(make_server: Callable[..., HTTPServer]) -> None:
    server = make_server(lambda request: Response(200, [("X-Bad", "a\r\nSet-Cookie: x=1")]))
    response, _ = exchange(server.port, b"GET / HTTP/1.1\r\n\r\n")
    assert response.status == 500 and "set-cookie" not in response.headers


GARBAGE = [
    b"\x00\x01\x02\x03\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),
    b"GET\r\n\r\n",
    b"   \r\n\r\n",
    b" GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nNoColonHere\r\n\r\n",
    b"GET / HTTP/1.1\r\n: empty-name\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: \xff\xfe\x00\r\n\r\n",
    b"GET / HTTP/1.1\r\n\tfolded\r\nA: b\r\n continued\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length : 3\r\n\r\nabc",
    b"GET / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab",
    b"GET /\x00\x7f\xff HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
    b"GET / HTTP/0.0\r\n\r\n",
    b"GET / HTTP/01.1\r\n\r\n",
    b"GET / HTTP/1.99999999999\r\n\r\n",
    b"\r\n" * 5000,
    b"\n" * 20000,
    b"G" * 20000,
]


def assert_no_5xx(port: int, data: bytes) -> None:
    with connect(port) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        output = read_to_eof(sock)
    for line in output.split(b"\r\n"):
        if line.startswith(b"HTTP/1.1 "):
            assert int(line.split()[1]) < 500, output


@pytest.mark.parametrize("data", GARBAGE)
def test_garbage_never_causes_a_5xx(server: HTTPServer, data: bytes) -> None:
    assert_no_5xx(server.port, data)
    assert get(server.port).status == 200


def test_fuzzed_heads_never_cause_a_5xx(server: HTTPServer) -> None:
    pieces = st.sampled_from(
        [b"GET", b"POST", b" ", b"/", b"HTTP/1.1", b"HTTP/1.0", b"\r\n", b"\n", b":", b"\x00",
         b"Content-Length", b"Expect", b"100-continue", b"Connection", b"close", b"9", b"-",
         b"\xff", b"\t", b"Transfer-Encoding"]
    )  # fmt: skip

    @settings(max_examples=150, deadline=None, derandomize=True, database=None)
    @given(st.lists(pieces, max_size=40))
    def check(parts: list[bytes]) -> None:
        assert_no_5xx(server.port, b"".join(parts) + b"\r\n\r\n")

    check()
    assert get(server.port).status == 200


# --- waiting clients cost no threads -------------------------------------------------------


def test_slow_loris_and_idle_clients_do_not_starve_others(server: HTTPServer) -> None:
    loris = [connect(server.port) for _ in range(200)]
    for sock in loris:
        sock.sendall(PARTIAL_HEAD)
    idle = [connect(server.port) for _ in range(50)]
    wait_until(lambda: open_connections(server) == 250)
    response = get(server.port, "/still-served")
    assert response.status == 200
    assert json.loads(response.read())["target"] == "/still-served"
    assert server.stats()["busy_workers"] <= 1
    for sock in loris + idle:
        sock.close()


def test_thread_count_does_not_grow_with_connections(
    make_server: Callable[..., HTTPServer],
) -> None:
    before = threading.active_count()
    server = make_server(workers=40)
    assert threading.active_count() - before == 1  # the loop: workers start when needed
    assert server.stats()["worker_threads"] == 0
    sockets = [connect(server.port) for _ in range(100)]
    for sock in sockets[:30]:
        with sock.makefile("rb") as stream:
            sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
            assert read_response(stream).status == 200
    wait_until(lambda: open_connections(server) == 100)
    # One request at a time needs a worker or a few (one may still be on its way back to
    # idle when the next request comes), never one per connection.
    workers = server.stats()["worker_threads"]
    assert 1 <= workers <= CORE
    assert threading.active_count() == before + 1 + workers
    for sock in sockets:
        sock.close()


def test_an_app_blocked_on_many_requests_still_answers_another(
    make_server: Callable[..., HTTPServer],
) -> None:
    """Workers start on demand: when every one is stuck (a slow backend), more are started,
    up to the limit, so a request that does not block is still answered."""
    release = threading.Event()

    def app(request: Request) -> Response:
        if request.target == "/block":
            release.wait(TIMEOUT * 2)
        return echo_app(request)

    server = make_server(app, workers=12)
    blocked = [connect(server.port) for _ in range(8)]
    try:
        for sock in blocked:
            sock.sendall(b"GET /block HTTP/1.1\r\n\r\n")
        wait_until(lambda: server.stats()["busy_workers"] >= CORE)
        response = get(server.port, "/free")  # queued behind four more /block requests
        assert response.status == 200 and json.loads(response.read())["target"] == "/free"
        assert server.stats()["worker_threads"] <= 12
    finally:
        release.set()
        for sock in blocked:
            sock.close()


def test_head_deadline_408(make_server: Callable[..., HTTPServer]) -> None:
    server = make_server(head_timeout=0.3)
    with connect(server.port) as sock, sock.makefile("rb") as stream:
        sock.sendall(PARTIAL_HEAD)
        response = read_response(stream)
        assert_json_error(response, 408)
        assert response.headers["connection"] == "close"
        assert stream.read() == b""


def test_idle_keep_alive_closed_silently(make_server: Callable[..., HTTPServer]) -> None:
    server = make_server(idle_timeout=0.3)
    with connect(server.port) as sock, sock.makefile("rb") as stream:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert read_response(stream).status == 200
        assert stream.read() == b""  # EOF, no 408
    wait_until(lambda: open_connections(server) == 0)


def test_max_connections_evicts_the_oldest_parked(make_server: Callable[..., HTTPServer]) -> None:
    server = make_server(max_connections=3)
    parked = []
    for n in range(1, 4):
        parked.append(connect(server.port))
        wait_until(lambda n=n: open_connections(server) == n)  # type: ignore[misc]
    response = get(server.port, "/newcomer")
    assert response.status == 200
    assert read_to_eof(parked[0]) == b""  # the oldest went
    assert open_connections(server) <= 3
    for sock in parked:
        sock.close()


# --- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throw-away self-signed certificate for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pwproxy-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_server(make_server: Callable[..., HTTPServer], tls_files: tuple[Path, Path]) -> HTTPServer:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    return make_server(ssl_context=context, head_timeout=0.5)


def https(port: int) -> http.client.HTTPSConnection:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the server is under test, not the certificate
    return http.client.HTTPSConnection("127.0.0.1", port, timeout=TIMEOUT, context=context)


def test_tls_keep_alive(tls_server: HTTPServer) -> None:
    conn = https(tls_server.port)
    for i in range(3):
        conn.request("POST", f"/tls/{i}", body=b"secure")
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read()) | {"client": ""} == {
            "method": "POST",
            "target": f"/tls/{i}",
            "body": "secure",
            "x_test": None,
            "client": "",
        }
    assert open_connections(tls_server) == 1
    conn.close()


def test_tls_silent_clients_do_not_block_others(tls_server: HTTPServer) -> None:
    silent = connect(tls_server.port)  # connects, never says hello
    partial = connect(tls_server.port)
    partial.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello
    plain = connect(tls_server.port)
    plain.sendall(b"GET / HTTP/1.1\r\n\r\n")  # plain HTTP on the TLS port
    conn = https(tls_server.port)
    conn.request("GET", "/while-others-stall")
    assert conn.getresponse().status == 200
    assert read_to_eof(plain) == b""
    for sock in (silent, partial):  # the handshake deadline (head_timeout) ends them
        assert read_to_eof(sock) == b""
        sock.close()
    plain.close()


# --- lifecycle, stats, logging, binding -----------------------------------------------------


def test_stop_closes_everything_quickly(make_server: Callable[..., HTTPServer]) -> None:
    before = threading.active_count()
    server = make_server()
    kept = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    kept.request("GET", "/")
    kept.getresponse().read()
    idle = connect(server.port)
    partial = connect(server.port)
    partial.sendall(PARTIAL_HEAD)
    wait_until(lambda: open_connections(server) == 3)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2.0
    assert kept.sock is not None and read_to_eof(kept.sock) == b""
    assert read_to_eof(idle) == b"" and read_to_eof(partial) == b""
    with pytest.raises(OSError):
        connect(server.port).close()
    assert threading.active_count() == before
    server.stop()  # idempotent
    kept.close()
    idle.close()
    partial.close()


def test_stop_bounded_by_timeout_even_with_a_stuck_app(
    make_server: Callable[..., HTTPServer],
) -> None:
    release = threading.Event()

    def stuck(request: Request) -> Response:
        release.wait(TIMEOUT)
        return Response(200)

    server = make_server(stuck)
    sock = connect(server.port)
    sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
    wait_until(lambda: server.stats()["busy_workers"] == 1)
    started = time.monotonic()
    server.stop(timeout=0.3)
    assert time.monotonic() - started < 1.0
    release.set()
    assert read_to_eof(sock) == b""  # shut down under the stuck worker's feet
    sock.close()


def test_stop_without_start_releases_the_port() -> None:
    server = HTTPServer(echo_app)
    port = server.port
    server.stop()
    server.stop()
    HTTPServer(echo_app, port=port).stop()  # the port is free again
    with pytest.raises(RuntimeError):
        server.start()


def test_serve_forever_returns_after_stop() -> None:
    server = HTTPServer(echo_app)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    assert get(server.port).status == 200
    server.stop()
    thread.join(TIMEOUT)
    assert not thread.is_alive()


def test_stats(make_server: Callable[..., HTTPServer]) -> None:
    server = make_server(workers=3)
    assert server.stats() == {
        "open_connections": 0,
        "busy_workers": 0,
        "workers": 3,
        "requests": 0,
        "max_connections": 1024,
        "evicted_connections": 0,
        "streams": 0,
        "max_streams": 768,  # PW_MAX_STREAMS is 1000, but streams hold at most 3/4 of 1024
        "dropped_streams": 0,
        "worker_threads": 0,  # started when a request needs one
        "loop_answers": 0,
    }
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    for _ in range(4):
        conn.request("GET", "/")
        conn.getresponse().read()
    wait_until(lambda: server.stats()["requests"] == 4)
    assert open_connections(server) == 1


@pytest.mark.parametrize("enabled", [True, False])
def test_access_log_only_when_enabled(
    make_server: Callable[..., HTTPServer], caplog: pytest.LogCaptureFixture, enabled: bool
) -> None:
    caplog.set_level(logging.INFO, logger="proxy.server.access")
    server = make_server(access_log=enabled)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    for _ in range(2):
        conn.request("GET", "/one")
        conn.getresponse().read()
    # The second answer is sent only after the first was logged (same connection, in order).
    lines = [r.getMessage() for r in caplog.records if r.name == "proxy.server.access"]
    if enabled:
        assert len(lines) >= 1 and lines[0].startswith('127.0.0.1 "GET /one HTTP/1.1" 200 ')
    else:
        assert lines == []


def test_ipv6_loopback(make_server: Callable[..., HTTPServer]) -> None:
    try:
        server = make_server(host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    response = get(server.port, "/v6", host="::1")
    assert response.status == 200 and json.loads(response.read())["client"] == "::1"


def test_constructor_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        HTTPServer(echo_app, workers=0)
    with pytest.raises(ValueError):
        HTTPServer(echo_app, head_timeout=0)
