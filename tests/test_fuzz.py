"""Property-based fuzzing (hypothesis) of paths, headers and control bodies, end to end.

Whatever arrives, the proxy answers: never a 5xx (the simulated gateway stays
healthy throughout, so a 5xx can only be the proxy's own fault) except the
passthrough's refusal to send the gateway more than its quota of unknown paths
per period, every error is a JSON body, no unhandled exception reaches the log,
and the server still answers afterwards. Examples are derandomized so a failure
reproduces.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.api.passthrough import TOO_MANY
from proxy.api.reference import ALLOWLIST
from proxy.config import load_config
from proxy.main import start
from tests.clients import fresh_address
from tests.conftest import CONNECT_WAIT, DEFAULT_ENV, ProxyHandle
from tests.table import root_paths

TOKEN = "s3cret-token"
SETTINGS = settings(deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyHandle]:
    folder = tmp_path_factory.mktemp("fuzz")
    env = {**DEFAULT_ENV, "PW_AUTH_PATH": str(folder), "PW_CACHE_FILE": str(folder / ".powerwall"),
           "PW_CONTROL_SECRET": TOKEN, "PW_CACHE_EXPIRE": "5"}
    handle = ProxyHandle(start(load_config(env, simulate=True), wait_connected=CONNECT_WAIT))
    assert handle.gateway.connected
    yield handle
    handle.stop()


def exchange(port: int, data: bytes) -> bytes:
    """From an address of its own: every example reaches the token check, never the 429."""
    with socket.create_connection(("127.0.0.1", port), timeout=15,
                                  source_address=(fresh_address(), 0)) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def check_answer(output: bytes, sent: bytes) -> int:
    """The first response is complete, not a 5xx, and a JSON error if it is an error."""
    head, sep, rest = output.partition(b"\r\n\r\n")
    assert sep, f"no answer to {sent[:300]!r}: {output[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if status >= 400:
        assert headers.get("content-type") == "application/json", (status, headers, sent[:200])
        if not sent.startswith(b"HEAD "):  # a HEAD answer has the length but not the body
            error = json.loads(rest[: int(headers["content-length"])])["error"]
            assert isinstance(error, str) and error and "Traceback" not in error
            assert status != 503 or error == TOO_MANY, (error, sent[:200])
    if status == 503:  # the fuzzer asks for more unknown pages than the gateway is sent
        assert int(headers["retry-after"]) >= 1 and not sent.startswith(b"POST "), sent[:300]
    else:
        assert status < 500, f"{status} for {sent[:300]!r}: {rest[:300]!r}"
    return status


def no_proxy_errors(caplog: pytest.LogCaptureFixture) -> None:
    bad = [f"{r.name} {r.levelname}: {r.getMessage()}" for r in caplog.records
           if r.name.startswith("proxy") and (r.exc_info or r.levelno >= logging.ERROR)]
    assert not bad, bad


# ---- paths ------------------------------------------------------------------------------------

KNOWN = sorted({path.rstrip("*") for path in root_paths()} | set(ALLOWLIST) | {
    "/", "/console", "/index.html", "/styles/black.css", "/flow.js", "/api/", "/pw/", "/control/",
    "/tedapi/", "/help", "/example.html"})
PIECES = st.sampled_from([
    "/", "//", "..", ".", "%2e", "%2E%2e", "%2f", "%5c", "\\", ";", "?", "#", "&", "=", "%", "%%", "%0",
    "%00", "%0d%0a", "%ff", "%c3%a9", "%c0%af", "%252e", "%3f", "%23", "~", "+", "*", "@", ":", "!",
    "api", "API", "config", "status", "customer", "registration", "etc", "passwd", "headers", "x=1",
    "token=s3cret-token", "é", "\u202e", "\ufeff", "𝟘", "\x00", "\x7f", "\t", " ", "\r\n",
])
PATHS = st.one_of(
    st.builds(lambda base, tail: base + "".join(tail), st.sampled_from(KNOWN), st.lists(PIECES, max_size=8)),
    st.builds(lambda parts: "/" + "".join(parts), st.lists(PIECES, max_size=12)),
    st.text(max_size=60).map(lambda t: "/" + t),
)
METHODS = st.sampled_from(["GET", "GET", "HEAD", "OPTIONS", "POST"])


def test_fuzzed_paths(proxy: ProxyHandle, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="proxy")

    @settings(SETTINGS, max_examples=600)
    @given(METHODS, PATHS)
    def check(method: str, path: str) -> None:
        target = path.encode("utf-8", "surrogatepass")
        body = b"" if method != "POST" else b"value=1"
        data = (method.encode() + b" " + target + b" HTTP/1.1\r\nHost: proxy\r\n"
                + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        check_answer(exchange(proxy.port, data), data)

    check()
    assert proxy.get("/health").status == 200
    no_proxy_errors(caplog)


# ---- headers --------------------------------------------------------------------------------

HEADER_NAMES = st.one_of(
    st.sampled_from(["Host", "Authorization", "Cookie", "Content-Type", "Accept", "Accept-Encoding",
                     "Connection", "Expect", "If-None-Match", "Range", "Origin", "X-Forwarded-For",
                     "User-Agent", "Referer", "Upgrade", "Proxy-Authorization",
                     "Access-Control-Request-Method"]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e, exclude_characters=":"),
            min_size=1, max_size=20),
)
HEADER_VALUES = st.one_of(
    st.sampled_from(["Bearer s3cret-token", "Bearer ", "Basic Zm9vOmJhcg==", "close", "keep-alive",
                     "100-continue", "application/x-www-form-urlencoded; charset=utf-8",
                     "application/json", "multipart/form-data; boundary=--x", "bytes=0-1,5-", "*",
                     "AuthCookie=abc; UserRecord=def", "websocket", "gzip, br"]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xff, exclude_characters="\r\n"), max_size=80),
)
TARGETS = st.sampled_from(["/aggregates", "/soe", "/csv?headers", "/health", "/stats", "/help", "/",
                           "/control/reserve", "/control/mode", "/api/status", "/pw/level", "/nope"])


def test_fuzzed_headers(proxy: ProxyHandle, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="proxy")

    @settings(SETTINGS, max_examples=300)
    @given(st.sampled_from(["GET", "POST", "HEAD", "OPTIONS"]), TARGETS,
           st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=8))
    def check(method: str, target: str, headers: list[tuple[str, str]]) -> None:
        body = b"value=" if method == "POST" else b""
        lines = [f"{method} {target} HTTP/1.1".encode()]
        for name, value in headers:
            if name.lower() in ("content-length", "transfer-encoding"):
                continue  # framing is the server's own tested business; here it must stay right
            lines.append(name.encode("latin-1") + b": " + value.encode("latin-1"))
        lines.append(b"Content-Length: %d" % len(body))
        data = b"\r\n".join(lines) + b"\r\n\r\n" + body
        check_answer(exchange(proxy.port, data), data)

    check()
    assert proxy.get("/health").status == 200
    no_proxy_errors(caplog)


# ---- control bodies ---------------------------------------------------------------------------

VALUES = st.one_of(
    st.sampled_from(["0", "50", "100", "101", "-1", "007", "1e2", "", " 5", "5 ", "٥", "５", "²", "0x10",
                     "self_consumption", "backup", "autonomous", "BACKUP", "true", "false", "cancel",
                     "battery_ok", "pv_only", "never", "60", "999999", "%00", "%ff", "%C2%B2", "+", "%2B5"]),
    st.text(max_size=20),
    st.integers(-1000, 1000).map(str),
)
KEYS = st.sampled_from(["value", "token", "mode", "level", "x", "", "value[]", "Value", "tok%65n"])


def form(pairs: list[tuple[str, str]], token: str | None) -> bytes:
    parts = [f"{k}={v}" for k, v in pairs]
    if token is not None:
        parts.append(f"token={token}")
    return "&".join(parts).encode("utf-8", "surrogatepass")


BODIES = st.one_of(
    st.builds(form, st.lists(st.tuples(KEYS, VALUES), max_size=5),
              st.sampled_from([TOKEN, TOKEN, "wrong", "", None, "s3cret-tokén"])),
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
CONTENT_TYPES = st.sampled_from([
    "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-8",
    "APPLICATION/X-WWW-FORM-URLENCODED", "application/json", "text/plain", "", None,
    "multipart/form-data; boundary=x", "application/x-www-form-urlencoded;;;", "\xe9"])
CONTROL_PATHS = st.sampled_from(["/control/reserve", "/control/mode", "/control/grid_charging",
                                 "/control/grid_export", "/control/max_backup", "/control/nope",
                                 "/control/reserve?value=50&token=s3cret-token"])


def test_fuzzed_control_bodies(proxy: ProxyHandle, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="proxy")

    @settings(SETTINGS, max_examples=400)
    @given(CONTROL_PATHS, BODIES, CONTENT_TYPES, st.booleans())
    def check(path: str, body: bytes, content_type: str | None, bearer: bool) -> None:
        lines = [f"POST {path} HTTP/1.1".encode(), b"Host: proxy"]
        if content_type is not None:
            lines.append(b"Content-Type: " + content_type.encode("latin-1"))
        if bearer:
            lines.append(f"Authorization: Bearer {TOKEN}".encode())
        lines.append(b"Content-Length: %d" % len(body))
        data = b"\r\n".join(lines) + b"\r\n\r\n" + body
        status = check_answer(exchange(proxy.port, data), data)
        assert status in (200, 400, 401, 404, 413, 415), (status, data[:300])

    check()
    assert proxy.get("/health").status == 200
    # Whatever was accepted, the control state is still one the gateway understands.
    assert 0 <= proxy.sim.state()["reserve_app"] <= 100.5
    no_proxy_errors(caplog)
