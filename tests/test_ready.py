"""The event loop's quick path answers exactly as a worker does.

A cached route whose bytes for this window are rendered is answered by the server's event loop
(`App.ready`), without a worker hop. These tests send the same raw request to the proxy and to
a second server around the same app that has no quick path (a plain function: every request
goes to a worker), and compare the two answers byte for byte: status line, every header in
order (Date, Server, Content-Type, CORS, Age, X-Cache, Content-Length, Connection) and the
body, for GET, HEAD, HTTP/1.0, conditional requests, a mounted gateway and pipelining.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from proxy.httpd.server import HTTPServer
from proxy.httpd.types import Request, Response
from tests.conftest import Factory, ProxyHandle

WAIT = 10.0
ATTEMPTS = 20


@pytest.fixture
def proxy5(proxy_factory: Factory) -> ProxyHandle:
    """Five-second windows: most pairs of requests land in one."""
    return proxy_factory({"PW_CACHE_EXPIRE": "5", "PW_CACHE_TTL": "10"})


@pytest.fixture
def worker_only(proxy5: ProxyHandle) -> Iterator[HTTPServer]:
    """The same app behind a server that cannot take the quick path."""
    app = proxy5.app

    def call(request: Request) -> Response:
        return app(request)

    server = HTTPServer(call, workers=2).start()
    yield server
    server.stop()


def raw(port: int, data: bytes) -> bytes:
    """Everything the server answers to ``data`` until it closes (we half-close first)."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def stamps(answer: bytes) -> list[bytes]:
    """The lines that may differ across a second boundary: Date and Age."""
    return [line for line in answer.split(b"\r\n") if line.startswith((b"Date:", b"Age:"))]


def quick_answers(h: ProxyHandle) -> int:
    return h.running.server.stats()["loop_answers"]


def both_paths(h: ProxyHandle, worker: HTTPServer, warm: str, data: bytes, answers: int = 1) -> bytes:
    """The proxy's answer, taken on the quick path, checked equal to the worker's."""
    for _ in range(ATTEMPTS):
        assert h.get(warm).status == 200  # renders this window's bytes
        before, window = quick_answers(h), h.app.site.window()
        quick = raw(h.port, data)
        slow = raw(worker.port, data)
        # A pair that straddles a window (new data) or a second (Date, Age) is asked again.
        if (quick_answers(h) == before + answers and h.app.site.window() == window
                and stamps(quick) == stamps(slow)):
            assert quick == slow
            return quick
    raise AssertionError(f"no pair of answers in one window and one second: {data!r}")


CASES = {
    "get": b"GET /aggregates HTTP/1.1\r\nHost: proxy\r\n\r\n",
    "head": b"HEAD /aggregates HTTP/1.1\r\nHost: proxy\r\n\r\n",
    "soe": b"GET /soe HTTP/1.1\r\n\r\n",
    "csv-variant": b"GET /csv?headers HTTP/1.1\r\n\r\n",
    "gateway-api": b"GET /api/meters/aggregates HTTP/1.1\r\n\r\n",
    "mounted": b"GET /api/gateways/default/soe HTTP/1.1\r\n\r\n",
    "http10": b"GET /aggregates HTTP/1.0\r\n\r\n",
    "http10-keep-alive": b"GET /aggregates HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "close": b"GET /aggregates HTTP/1.1\r\nConnection: close\r\n\r\n",
    "if-none-match": b'GET /aggregates HTTP/1.1\r\nIf-None-Match: *, "x"\r\n\r\n',
    "if-modified-since": b"GET /aggregates HTTP/1.1\r\n"
                         b"If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n\r\n",
    "head-conditional": b"HEAD /soe HTTP/1.1\r\nIf-None-Match: *\r\n\r\n",
    "origin": b"GET /aggregates HTTP/1.1\r\nOrigin: http://dashboard.local\r\n\r\n",
}
WARM = {"soe": "/soe", "csv-variant": "/csv?headers", "gateway-api": "/api/meters/aggregates",
        "mounted": "/api/gateways/default/soe", "head-conditional": "/soe"}


@pytest.mark.parametrize("case", list(CASES))
def test_quick_path_answers_byte_for_byte_as_a_worker(proxy5: ProxyHandle, worker_only: HTTPServer,
                                                      case: str) -> None:
    answer = both_paths(proxy5, worker_only, WARM.get(case, "/aggregates"), CASES[case])
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK"
    headers = dict(line.split(b": ", 1) for line in lines[1:])
    assert headers[b"Access-Control-Allow-Origin"] == b"*"
    assert headers[b"X-Cache"] == b"HIT" and headers[b"Age"].isdigit()
    assert headers[b"Server"] == b"pwproxy" and headers[b"Date"].endswith(b" GMT")
    assert int(headers[b"Content-Length"]) > 0
    if case.startswith("head"):
        assert body == b""
    else:
        assert len(body) == int(headers[b"Content-Length"])
    if case in ("http10", "close"):
        assert headers[b"Connection"] == b"close"
    elif case == "http10-keep-alive":
        assert headers[b"Connection"] == b"keep-alive"
    else:
        assert b"Connection" not in headers


def test_pipelined_requests_on_the_quick_path(proxy5: ProxyHandle, worker_only: HTTPServer) -> None:
    data = (b"GET /aggregates HTTP/1.1\r\n\r\nHEAD /aggregates HTTP/1.1\r\n\r\n"
            b"GET /aggregates?x=1 HTTP/1.1\r\n\r\n")
    answer = both_paths(proxy5, worker_only, "/aggregates", data, answers=3)
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 3


def test_what_is_not_ready_goes_to_a_worker(proxy5: ProxyHandle) -> None:
    """Not cached, not GET or HEAD, not rendered yet, a bad path: a worker answers them."""
    h = proxy5
    before = quick_answers(h)
    for path in ("/stats", "/health", "/api/gateways/nope/soe", "/%2e%2e/soe", "/version"):
        h.get(path)
    assert h.request("OPTIONS", "/aggregates").status == 204
    assert h.post("/aggregates", "x=1").status == 405
    assert quick_answers(h) == before


def test_quick_answers_are_counted_like_any_other(proxy5: ProxyHandle, worker_only: HTTPServer) -> None:
    """/stats and /metrics count a quick answer as they count a worker's."""
    h = proxy5
    label = ("/soe", "200")

    def counts() -> tuple[int, int, int]:
        return (h.app.requests.get(label), h.app.stats.snapshot().uri.get("/soe", 0),
                h.app.site.stats.snapshot().uri.get("/soe", 0))

    for port, quick in ((h.port, True), (worker_only.port, False)):
        for _ in range(ATTEMPTS):
            assert h.get("/soe").status == 200
            before, answered = counts(), quick_answers(h)
            replies = [raw(port, b"GET /soe HTTP/1.1\r\n\r\n") for _ in range(3)]
            if not quick or quick_answers(h) == answered + 3:
                break
        assert all(r.startswith(b"HTTP/1.1 200 ") for r in replies)
        assert [a - b for a, b in zip(counts(), before, strict=True)] == [3, 3, 3]
