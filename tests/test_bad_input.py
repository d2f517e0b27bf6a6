"""Bad input, end to end: each gets the right 4xx, a JSON error, and changes nothing.

"Nothing" means: the simulated gateway's reserve and mode are unchanged, no
control write was counted, and (for paths) nothing was forwarded to the gateway.
Requests go over raw sockets so that bytes no HTTP library would send arrive as-is.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from proxy.config import load_config
from proxy.main import start
from tests.clients import fresh_address
from tests.conftest import CONNECT_WAIT, DEFAULT_ENV, ProxyHandle, settled

TOKEN = "s3cret-token"
FORM = "application/x-www-form-urlencoded"


@dataclass
class Raw:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def exchange(port: int, data: bytes, timeout: float = 10.0) -> Raw:
    """Send raw bytes from an address of its own (no bad-token history), half-close, and parse
    the first response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                  source_address=(fresh_address(), 0)) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return parse(b"".join(chunks))


def parse(output: bytes) -> Raw:
    head, sep, rest = output.partition(b"\r\n\r\n")
    assert sep, f"no complete response: {output[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), lines[0]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    return Raw(int(lines[0].split()[1]), headers, rest[:length])


def assert_json_error(r: Raw, status: int) -> str:
    assert r.status == status, (r.status, r.body[:200])
    assert r.headers.get("content-type") == "application/json", r.headers
    body = r.json()
    assert isinstance(body, dict) and list(body) == ["error"], body
    assert isinstance(body["error"], str) and body["error"]
    assert b"Traceback" not in r.body and b'File "' not in r.body
    return str(body["error"])


def request(method: str, target: bytes | str, body: bytes = b"", headers: dict[str, str] | None = None,
            content_type: str | None = FORM) -> bytes:
    """Raw request bytes: the target is sent exactly as given."""
    if isinstance(target, str):
        target = target.encode("latin-1")
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: proxy"]
    if content_type is not None and method == "POST":
        lines.append(b"Content-Type: " + content_type.encode("latin-1"))
    for name, value in (headers or {}).items():
        lines.append(name.encode("latin-1") + b": " + value.encode("latin-1"))
    if body or method == "POST":
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body



@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyHandle]:
    """One --simulate proxy with control enabled, shared by this module's tests."""
    folder = tmp_path_factory.mktemp("bad-input")
    env = {**DEFAULT_ENV, "PW_AUTH_PATH": str(folder), "PW_CACHE_FILE": str(folder / ".powerwall"),
           "PW_CONTROL_SECRET": TOKEN}
    handle = ProxyHandle(start(load_config(env, simulate=True), wait_connected=CONNECT_WAIT))
    assert handle.gateway.connected
    yield settled(handle)
    handle.stop()


def state(h: ProxyHandle) -> tuple[Any, ...]:
    """What a bad request must not change: the gateway's settings and the write counter."""
    sim = h.sim.state()
    return sim["reserve"], sim["mode"], h.app.stats.snapshot().posts


def send(h: ProxyHandle, data: bytes) -> Raw:
    return exchange(h.port, data)


# ---- the request line and head ---------------------------------------------------------------


@pytest.mark.parametrize("line", [
    b"HELLO", b"GET", b"GET / HTTP/1.1 extra", b"GET / FTP/1.0", b"GET / HTTP/1.x",
    b"GET / HTTP/", b"GET /", b"GET  HTTP/1.1", b"POST /control/reserve",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on the plain port
])
def test_malformed_request_lines_400(proxy: ProxyHandle, line: bytes) -> None:
    before = state(proxy)
    r = send(proxy, line + b"\r\n\r\n")
    assert_json_error(r, 400)
    assert r.headers.get("connection") == "close"
    assert state(proxy) == before


def test_oversized_request_line_414(proxy: ProxyHandle) -> None:
    r = send(proxy, b"GET /aggregates?" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n")
    assert_json_error(r, 414)


@pytest.mark.parametrize("headers", [
    b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * 1000) for i in range(20)),  # 20 KB of headers
    b"Cookie: " + b"c" * 17000 + b"\r\n",  # one huge header
    b"".join(b"X-%d: 1\r\n" % i for i in range(120)),  # too many headers
], ids=["big", "one-huge", "many"])
def test_oversized_headers_431(proxy: ProxyHandle, headers: bytes) -> None:
    r = send(proxy, b"GET /aggregates HTTP/1.1\r\n" + headers + b"\r\n")
    assert_json_error(r, 431)


@pytest.mark.parametrize("length_header", [b"Content-Length : %d", b"Content-Length\t: %d",
                                           b"X-Pad: 1\r\n Content-Length: %d"])
def test_smuggled_request_behind_a_malformed_length_is_never_run(proxy: ProxyHandle,
                                                                  length_header: bytes) -> None:
    """Whitespace before the colon (or a folded line) hides a length from one parser but not from
    another: the request it frames would run as a second one. A 400 and a closed connection."""
    proxy.sim.reset()
    before = state(proxy)
    smuggled = request("POST", "/control/reserve", f"value=42&token={TOKEN}".encode())
    front = b"GET /aggregates HTTP/1.1\r\nHost: proxy\r\n" + length_header % len(smuggled) + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(front + smuggled)
        output = b""
        while chunk := sock.recv(65536):  # the proxy closes: no half-close needed
            output += chunk
    r = parse(output)
    assert "header" in assert_json_error(r, 400)
    assert r.headers.get("connection") == "close"
    assert output.count(b"HTTP/1.1 ") == 1  # one answer: nothing after it was read as a request
    assert state(proxy) == before and proxy.sim.stats()["total"] == 0


def test_absolute_form_naming_the_proxy_is_served(proxy: ProxyHandle) -> None:
    r = send(proxy, request("GET", f"http://127.0.0.1:{proxy.port}/stats?x=1"))
    assert r.status == 200 and "server" in r.json()


@pytest.mark.parametrize("target", ["http://{sim}/api/status", "https://{sim}/api/config",
                                    "http://example.com/aggregates", "http://127.0.0.1:{other}/stats"])
def test_absolute_form_naming_another_host_is_400_and_never_forwarded(proxy: ProxyHandle,
                                                                       target: str) -> None:
    proxy.sim.reset()
    r = send(proxy, request("GET", target.format(sim=proxy.sim.host, other=proxy.port + 1)))
    assert_json_error(r, 400)
    assert proxy.sim.stats()["total"] == 0


def test_oversized_control_body_refused_before_it_is_read(proxy: ProxyHandle) -> None:
    before = state(proxy)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        # Only the head: a 413 must come back without the proxy waiting for 1 MB.
        sock.sendall(b"POST /control/reserve HTTP/1.1\r\nContent-Type: " + FORM.encode()
                     + b"\r\nContent-Length: 1000000\r\n\r\nvalue=50&token=" + TOKEN.encode())
        reply = sock.recv(65536)
    assert_json_error(parse(reply), 413)
    body = f"value=50&token={TOKEN}&pad=".encode() + b"x" * 4100  # just over 4 KiB, all sent
    assert_json_error(send(proxy, request("POST", "/control/reserve", body)), 413)
    assert state(proxy) == before


@pytest.mark.parametrize("method", ["BREW", "TRACE", "CONNECT", "PROPFIND", "get", "Post"])
def test_unknown_methods_405(proxy: ProxyHandle, method: str) -> None:
    before = state(proxy)
    r = send(proxy, request(method, "/control/reserve", f"value=50&token={TOKEN}".encode()))
    assert_json_error(r, 405)
    assert r.headers["allow"] == "GET, HEAD, POST, OPTIONS"
    assert state(proxy) == before


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PUT", "/control/reserve", "GET, POST, HEAD, OPTIONS"),
    ("DELETE", "/control/mode", "GET, POST, HEAD, OPTIONS"),
    ("PATCH", "/aggregates", "GET, HEAD, OPTIONS"),
    ("POST", "/aggregates", "GET, HEAD, OPTIONS"),
    ("POST", "/health/reset", "GET, HEAD, OPTIONS"),
])
def test_wrong_method_on_a_route_405_with_allow(proxy: ProxyHandle, method: str, path: str,
                                                allow: str) -> None:
    before = state(proxy)
    r = send(proxy, request(method, path, f"value=50&token={TOKEN}".encode()))
    assert_json_error(r, 405)
    assert r.headers["allow"] == allow
    assert state(proxy) == before


# ---- paths --------------------------------------------------------------------------------------

TRAVERSAL = [
    "/../etc/passwd", "/../../../../etc/passwd", "/styles/../../proxy/config.py",
    "/%2e%2e/%2e%2e/etc/passwd", "/%2E%2E/proxy/main.py", "/styles/..%2f..%2fproxy%2fconfig.py",
    "/styles/%2e%2e%2f%2e%2e%2fproxy%2fconfig.py", "/%252e%252e/%252e%252e/etc/passwd",
    "/..%5c..%5cetc%5cpasswd", "/styles\\..\\..\\proxy\\config.py", "/./aggregates/..",
    "/api/../api/config", "/api/./config", "/pw/../control/reserve", "/.%2e/.%2e/etc/passwd",
    "/web/../proxy/config.py", "/console/..;/..;/etc/passwd",
]


@pytest.mark.parametrize("path", TRAVERSAL)
def test_path_traversal_is_a_json_404_and_never_forwarded(proxy: ProxyHandle, path: str) -> None:
    proxy.sim.reset()
    r = send(proxy, request("GET", path))
    assert_json_error(r, 404)
    assert b"root:" not in r.body and b"import" not in r.body
    assert proxy.sim.stats()["total"] == 0  # the gateway never saw it


@pytest.mark.parametrize(("target", "status"), [
    (b"/a%00b", 400), (b"/aggregates%00", 400), (b"/a\x00b", 400), (b"/aggregates%0d%0aX-Injected:%201", 400),
    (b"/a%7f", 400), (b"/a\x7f", 400),
    (b"/a\xff\xfe", 400), (b"/aggregates\xc3\xa9", 400), (b"/a%ff", 400), (b"/a%c0%af", 400),
    (b"/a%ed%a0%80", 400),  # a UTF-16 surrogate encoded as UTF-8
    (b"/aggregates?x=%ff", 400), (b"/aggregates?\xff", 400),
    (b"/aggregates?" + b"&".join(b"k%d=1" % i for i in range(60)), 400),
    (b"aggregates", 400), (b"*", 400), (b"http://gateway/api/config", 400),
])
def test_nul_control_and_non_utf8_paths(proxy: ProxyHandle, target: bytes, status: int) -> None:
    proxy.sim.reset()
    before = state(proxy)
    r = send(proxy, request("GET", target))
    assert_json_error(r, status)
    assert "x-injected" not in r.headers
    assert proxy.sim.stats()["total"] == 0
    assert state(proxy) == before


DENIED = [
    "/api/config", "/api/config?/api/status", "/api/config?x=/api/status", "/api/config#/api/status",
    "/api/config%23/api/status", "/api/config%3F/api/status", "/api/config;/api/status",
    "/%61pi/config", "/api%2fconfig", "//api/config", "/api//config", "///api/config",
    "/api/status/", "/api/status%3Fx", "/api/status%20", "/API/status", "/api/devices/vitals?x",
    "/api/customer/registration", "/api/customer/registration?x", "/api/customer/registration%3F",
    "/api/customer/registration/", "/api/login/Basic?username=customer", "/api/operation/x",
    "/api", "/api?x=/api/status",
]


@pytest.mark.parametrize("path", DENIED)
def test_query_and_encoding_tricks_do_not_open_the_deny_list(proxy: ProxyHandle, path: str) -> None:
    proxy.sim.reset()
    r = send(proxy, request("GET", path))
    assert_json_error(r, 404)
    assert proxy.sim.stats()["total"] == 0  # nothing reached the gateway's /api


ALLOWED = [
    "/api/status?cmd=../config", "/api/status?/../../api/config", "/api/status?x=%2e%2e%2fconfig",
    "/api/status#../config", "/api/status?path=/api/config&token=x", "/%61pi/status",
]


@pytest.mark.parametrize("path", ALLOWED)
def test_query_tricks_on_the_allow_list_reach_only_the_allowed_path(proxy: ProxyHandle, path: str) -> None:
    r = send(proxy, request("GET", path))
    assert r.status == 200, (r.status, r.body[:200])
    assert "din" in r.json() and "version" in r.json()  # /api/status, nothing else


# ---- control bodies --------------------------------------------------------------------------


def control(h: ProxyHandle, body: bytes, path: str = "/control/reserve", content_type: str | None = FORM,
            headers: dict[str, str] | None = None) -> Raw:
    return send(h, request("POST", path, body, headers, content_type))


CONTROL_CASES = [
    # (path, body, content type, extra headers, status)
    ("/control/reserve", b"", FORM, None, 401),  # empty: no token
    ("/control/reserve", b"value=50", FORM, None, 401),  # missing token
    ("/control/reserve", b"value=50&token=", FORM, None, 401),
    ("/control/reserve", b"value=50&token=wrong", FORM, None, 401),
    ("/control/reserve", b"value=50&token=S3CRET-TOKEN", FORM, None, 401),
    ("/control/reserve", b"value=50&token=s3cret", FORM, None, 401),
    ("/control/reserve", b"value=50&token=s3cret-token%20", FORM, None, 401),
    ("/control/reserve", b"value=50&token=s3cret-t%C3%B6ken", FORM, None, 400),  # non-ASCII token
    ("/control/reserve", "value=50&token=s3cret-tökén".encode(), FORM, None, 400),
    ("/control/reserve", b"value=50", FORM, {"Authorization": "Bearer s3cret-t\xc3\xb6ken"}, 401),
    ("/control/reserve", b"value=50", FORM, {"Authorization": "Bearer"}, 401),
    ("/control/reserve", b"value=50", FORM, {"Authorization": "Basic czNjcmV0LXRva2VuOg=="}, 401),
    ("/control/reserve", b"value=50", FORM, {"Authorization": "Bearer wrong"}, 401),
    ("/control/reserve", b'<value>50</value>', "application/xml", None, 415),
    ("/control/reserve", b'{"value": 50, "token": "s3cret-token"', "application/json", None, 400),
    ("/control/reserve", b"value=50&token=s3cret-token", "text/plain", None, 415),
    ("/control/reserve", b"value=50&token=s3cret-token", "multipart/form-data; boundary=x", None, 415),
    ("/control/reserve", b'{"value": 50, "token": "s3cret-token"}', FORM, None, 400),  # not a form
    ("/control/reserve", b"=&&==", FORM, None, 400),
    ("/control/reserve", b"value=50&token=s3cret-token&value=90", FORM, None, 400),  # repeated
    ("/control/reserve", b"value=50&token=s3cret-token&token=x", FORM, None, 400),
    ("/control/reserve", b"value=50&token=s3cret-token\xff", FORM, None, 400),  # not ASCII
    ("/control/reserve", "value=５０&token=s3cret-token".encode(), FORM, None, 400),  # fullwidth digits
    ("/control/reserve", b"value=%EF%BC%95%EF%BC%90&token=s3cret-token", FORM, None, 400),
    ("/control/reserve", "value=٥٠&token=s3cret-token".encode(), FORM, None, 400),  # Arabic-Indic
    ("/control/reserve", b"value=%C2%B2&token=s3cret-token", FORM, None, 400),  # superscript two
    ("/control/reserve", b"value=101&token=s3cret-token", FORM, None, 400),
    ("/control/reserve", b"value=-1&token=s3cret-token", FORM, None, 400),
    ("/control/reserve", b"value=1000&token=s3cret-token", FORM, None, 400),
    ("/control/reserve", b"value=50.5&token=s3cret-token", FORM, None, 400),
    ("/control/reserve", b"value=1e2&token=s3cret-token", FORM, None, 400),
    ("/control/reserve", b"value=0x32&token=s3cret-token", FORM, None, 400),
    ("/control/reserve", b"value=+50&token=s3cret-token", FORM, None, 400),
    ("/control/reserve", b"value=%2050&token=s3cret-token", FORM, None, 400),
    ("/control/reserve", b"value=50%00&token=s3cret-token", FORM, None, 400),
    ("/control/reserve", b"value=fifty&token=s3cret-token", FORM, None, 400),
    ("/control/reserve", b"value=50&mode=turbo&token=s3cret-token", FORM, None, 400),
    ("/control/mode", b"value=turbo&token=s3cret-token", FORM, None, 400),
    ("/control/mode", b"value=BACKUP&token=s3cret-token", FORM, None, 400),
    ("/control/mode", b"value=backup%20&token=s3cret-token", FORM, None, 400),
    ("/control/mode", b"value=backup%00&token=s3cret-token", FORM, None, 400),
    ("/control/mode", "value=bаckup&token=s3cret-token".encode(), FORM, None, 400),  # Cyrillic a
    ("/control/mode", b"value=backup&level=101&token=s3cret-token", FORM, None, 400),
    ("/control/mode", b"value=backup&level=%D9%A5&token=s3cret-token", FORM, None, 400),
    ("/control/grid_charging", b"value=maybe&token=s3cret-token", FORM, None, 400),
    ("/control/grid_export", b"value=sometimes&token=s3cret-token", FORM, None, 400),
    ("/control/max_backup", b"value=60&token=wrong", FORM, None, 404),  # needs v1r: not here
    ("/control/nope", b"value=1&token=s3cret-token", FORM, None, 404),
    ("/control/nope", b"value=1&token=wrong", FORM, None, 401),
]


@pytest.mark.parametrize(("path", "body", "content_type", "headers", "status"), CONTROL_CASES)
def test_bad_control_requests(proxy: ProxyHandle, path: str, body: bytes, content_type: str | None,
                              headers: dict[str, str] | None, status: int) -> None:
    before = state(proxy)
    r = control(proxy, body, path, content_type, headers)
    error = assert_json_error(r, status)
    assert TOKEN not in error
    assert state(proxy) == before


def test_control_body_without_content_type_is_read_as_a_form(proxy: ProxyHandle) -> None:
    """The reference's clients send no Content-Type; a bad value still changes nothing."""
    before = state(proxy)
    assert_json_error(control(proxy, b"value=150&token=" + TOKEN.encode(), content_type=None), 400)
    assert state(proxy) == before


def test_a_good_request_still_works_after_all_that(proxy: ProxyHandle) -> None:
    """The refusals above are about the input, not a broken control path."""
    reserve, mode, posts = state(proxy)
    target = 30 if reserve > 40 else 60
    r = control(proxy, f"value={target}&token={TOKEN}".encode())
    assert r.status == 200, r.body
    assert proxy.sim.state()["reserve_app"] == pytest.approx(target, abs=0.5)
    assert state(proxy)[2] == posts + 1
