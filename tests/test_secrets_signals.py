"""No secret leaves the proxy; signals stop it cleanly; as PID 1 it reaps orphans.

Secrets: the customer password, the gateway password (and the HTTP Basic
header made from it), the control secret, and the gateway's session cookies
and tokens. A sweep over every route (plus control writes, web pages and the
gateway passthrough) is grepped for all of them, headers included, and so is
every log line the proxy's own logging setup writes at DEBUG - in --simulate
mode (TEDAPI full + local control client) and in local mode with cookie and
token logins. A `python3 -m proxy --simulate` subprocess run with PW_DEBUG=yes
is swept too; it then gets SIGTERM and must stop serving and exit 0 within 2 s.
"""

from __future__ import annotations

import base64
import functools
import http.client
import io
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import proxy.simulator
from proxy.api.reference import ALLOWLIST
from proxy.config import load_config
from proxy.gateway.sources import PW_SOURCES as PW_CALLS
from proxy.main import _reap_children, _setup_logging, start
from proxy.simulator import Simulator
from tests.conftest import CONNECT_WAIT, DEFAULT_ENV, ProxyHandle
from tests.table import root_paths
from tests.test_routes import DATA_ROUTES

ROOT = Path(__file__).resolve().parent.parent
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
Fetch = Callable[..., tuple[int, str]]  # (method, path, body, headers) -> (status, everything sent back)


def unique(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(6)}Qz7Kx"  # the last five characters are distinctive too


# ---- the sweep ----------------------------------------------------------------------------------


def http_fetch(port: int) -> Fetch:
    def fetch(method: str, path: str, body: str | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            streaming = (r.getheader("Content-Type") or "").startswith("text/event-stream")
            data = first_event(r) if streaming else r.read()
            r.close()
        finally:
            conn.close()
        return r.status, f"HTTP/1.1 {r.status} {r.reason}\n{r.headers}\n{data.decode('latin-1')}"
    return fetch


def first_event(response: http.client.HTTPResponse) -> bytes:
    """A live stream never ends: what a client sees is its start and its first event."""
    seen = b""
    while b"data: " not in seen or not seen.endswith(b"\n\n"):
        line = response.fp.readline()
        if not line:
            break
        seen += line
    return seen


def sweep_paths() -> list[str]:
    paths = {p.replace("*", "x") for p in root_paths()}
    paths |= set(DATA_ROUTES) | set(ALLOWLIST) | {f"/pw/{name}" for name in PW_CALLS}
    paths |= {"/", "/console", "/example.html", "/styles/clear.css", "/index.html", "/static/app.js",
              "/static/app.css", "/nope", "/api/config", "/api/login/Basic", "/csv?headers",
              "/csv/v2?headers", "/tedapi/din", "/api/devices/vitals"}
    paths.discard("/health/reset")  # forgets the cache mid-sweep; swept last
    return sorted(paths)


def sweep(fetch: Fetch, control_secret: str) -> list[str]:
    """Everything the proxy sends back to a curious client, as text."""
    seen: list[str] = []
    for path in sweep_paths():
        seen.append(fetch("GET", path)[1])
    # Clients that send credentials must not get them echoed back, even in errors.
    auth = {"Authorization": f"Bearer {control_secret}"}
    for path in ("/aggregates", "/nope", "/control/reserve", "/api/status", "/static/app.js"):
        seen.append(fetch("GET", path, headers=auth)[1])
        seen.append(fetch("GET", f"{path}?token={control_secret}")[1])
    writes = (("/control/reserve", "value=40"), ("/control/mode", "value=self_consumption"),
              ("/control/grid_charging", "value=false"), ("/control/grid_export", "value=pv_only"),
              ("/control/reserve", "value=35&mode=self_consumption"), ("/control/reserve", ""))
    for path, body in writes:
        status, text = fetch("POST", path, f"{body}&token={control_secret}".lstrip("&"), FORM)
        if path in ("/control/reserve", "/control/mode"):  # local writes; the rest need the cloud
            assert status == 200, text[:300]
        seen.append(text)
        seen.append(fetch("POST", path, body, {**FORM, **auth})[1])
    for path, body in writes:  # bad tokens last: they soon get this client slowed down (429)
        seen.append(fetch("POST", path, f"{body}&token=wrong-{control_secret}", FORM)[1])
        seen.append(fetch("POST", path, f"{body}&token={control_secret}x", FORM)[1])
    for path in ("/stats", "/help", "/health", "/health/reset", "/stats/clear", "/stats", "/help"):
        seen.append(fetch("GET", path)[1])
    assert any(text.startswith("HTTP/1.1 200") and '"PW_CONTROL_SECRET": "********"' in text
               for text in seen), "the sweep never saw /stats"
    return seen


def basic(gw_pwd: str) -> str:
    return base64.b64encode(f"Tesla_Energy_Device:{gw_pwd}".encode()).decode()


def assert_no_secrets(where: str, texts: list[str], needles: list[str],
                      patterns: tuple[str, ...] = ()) -> None:
    needles = [n for n in needles if n]
    assert needles
    for text in texts:
        for needle in needles:
            assert needle not in text, f"{where}: secret {needle[:4]}... in {text[:300]!r}"
        for pattern in patterns:
            match = re.search(pattern, text)
            assert match is None, f"{where}: {pattern} matched {match.group()[:80]!r}"
        assert "set-cookie" not in text.lower(), f"{where}: a cookie handed out: {text[:300]!r}"


COOKIE_PATTERNS = (r"AuthCookie=", r"UserRecord=", r"Bearer [A-Za-z0-9_\-]{20,}")


# ---- in-process: every mode, the proxy's own logging at DEBUG ------------------------------------


class Tokens:
    """Every session token the simulator hands out (its store, plus a tap on issue())."""

    def __init__(self, sim: Simulator) -> None:
        self.store = sim.site.sessions
        self.issued: list[str] = []
        original = self.store.issue

        def issue() -> str:
            token = original()
            self.issued.append(token)
            return token

        self.store.issue = issue  # type: ignore[method-assign]

    def all(self) -> list[str]:
        with self.store._lock:
            return sorted(set(self.issued) | set(self.store._issued))


@pytest.fixture
def debug_logging(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[Any], io.StringIO]]:
    """Install the proxy's logging setup (as main() does) writing to a buffer; undo afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    libs = {name: logging.getLogger(name).level for name in ("pypowerwall", "urllib3")}

    def install(config: Any) -> io.StringIO:
        _setup_logging(config)
        buffer = io.StringIO()
        handler = root.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(buffer)
        root.addHandler(caplog.handler)  # after the proxy's handler, as a second reader
        return buffer

    yield install
    root.handlers[:], level = saved
    root.setLevel(level)
    for name, lib_level in libs.items():
        logging.getLogger(name).setLevel(lib_level)


MODES = ["simulate", "local-cookie", "local-token", "local-hybrid"]


@pytest.mark.parametrize("mode", MODES)
def test_no_secret_in_any_response_or_log_line(mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               debug_logging: Callable[[Any], io.StringIO],
                                               caplog: pytest.LogCaptureFixture) -> None:
    password, gw_pwd, control_secret = unique("Pw"), unique("Gw"), unique("Ctl")
    env = {**DEFAULT_ENV, "PW_AUTH_PATH": str(tmp_path), "PW_CACHE_FILE": str(tmp_path / ".powerwall"),
           "PW_CONTROL_SECRET": control_secret, "PW_DEBUG": "yes"}
    sim: Simulator | None = None
    if mode == "simulate":
        # The built-in simulator, with secrets of its own that no response can contain by chance.
        monkeypatch.setattr(proxy.simulator, "DEFAULT_PASSWORD", password)
        monkeypatch.setattr(proxy.simulator, "DEFAULT_GW_PWD", gw_pwd)
        monkeypatch.setattr(proxy.simulator, "Simulator",
                            functools.partial(Simulator, password=password, gw_pwd=gw_pwd))
    else:
        sim = Simulator(port=0, password=password, gw_pwd=gw_pwd).start()
        env |= {"PW_HOST": sim.host, "PW_PASSWORD": password,
                "PW_AUTH_MODE": "token" if mode == "local-token" else "cookie"}
        if mode == "local-hybrid":
            env["PW_GW_PWD"] = gw_pwd  # local API for data, TEDAPI (HTTP Basic) for vitals
    tokens = Tokens(sim) if sim is not None else None
    config = load_config(env, simulate=mode == "simulate")
    log_buffer = debug_logging(config)
    running = start(config, wait_connected=CONNECT_WAIT)
    try:
        handle = ProxyHandle(running)
        assert handle.gateway.connected, handle.gateway.info.connect_error
        if tokens is None:
            tokens = Tokens(handle.sim)
        responses = sweep(http_fetch(handle.port), control_secret)
        session_tokens = tokens.all()
        assert session_tokens, "the proxy never logged in to the gateway's local API"
    finally:
        running.stop()
        if sim is not None:
            sim.stop()
    needles = [password, gw_pwd, gw_pwd[-5:], control_secret, basic(gw_pwd), *session_tokens]
    assert_no_secrets(f"{mode} responses", responses, needles, COOKIE_PATTERNS)
    log_text = log_buffer.getvalue()
    assert "DEBUG" in log_text and "proxy" in log_text  # the logging setup was really in use
    assert_no_secrets(f"{mode} log", [log_text, caplog.text], needles, COOKIE_PATTERNS)
    assert_no_secrets(f"{mode} log records", [r.getMessage() for r in caplog.records], needles)


# ---- a real `python3 -m proxy --simulate`: its stderr, then SIGTERM --------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_serving(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"proxy exited early with {proc.returncode}"
        try:
            if http_fetch(port)("GET", "/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail("the proxy never became healthy")


def refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


def test_simulate_subprocess_debug_log_and_sigterm(tmp_path: Path) -> None:
    from proxy.simulator import DEFAULT_GW_PWD, DEFAULT_PASSWORD

    port, control_secret = free_port(), unique("Ctl")
    env = {**os.environ, "PW_PORT": str(port), "PW_BIND_ADDRESS": "127.0.0.1", "PW_DEBUG": "yes",
           "PW_CONTROL_SECRET": control_secret, "PW_CACHE_EXPIRE": "1", "PW_AUTH_PATH": str(tmp_path),
           "PYTHONUNBUFFERED": "1"}
    stderr_path = tmp_path / "stderr.log"
    with open(stderr_path, "wb") as stderr:  # a file, not a pipe nobody drains while we sweep
        proc = subprocess.Popen([sys.executable, "-m", "proxy", "--simulate"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_serving(port, proc)
        responses = sweep(http_fetch(port), control_secret)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=2.0)
        stopped = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0 and stopped <= 2.0, (code, stopped)
    assert refuses(port)
    log = stderr_path.read_text(errors="replace")
    assert " DEBUG " in log and "listening on" in log and "stopped" in log
    # The simulator's own secrets are fixed here; the session tokens cannot be read
    # from another process, so any cookie, bearer token or long opaque token counts.
    needles = [DEFAULT_GW_PWD, control_secret, basic(DEFAULT_GW_PWD)]
    patterns = (*COOKIE_PATTERNS, r"(?<![\w-])[A-Za-z0-9_\-]{64}(?![\w-])",
                rf"password\W{{1,4}}{DEFAULT_PASSWORD}\b")  # e.g. password=password, "password": "password"
    assert_no_secrets("--simulate responses", responses, needles, patterns)
    assert_no_secrets("--simulate stderr", [log], needles, patterns)


# ---- PID 1: the zombie reaper --------------------------------------------------------------------


def state_of(pid: int) -> str | None:
    """The process state letter from /proc (Z: zombie), or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def test_reaper_collects_exited_children_and_never_blocks() -> None:
    exited = [subprocess.Popen(["sh", "-c", f"exit {i}"]) for i in range(5)]
    running = subprocess.Popen(["sleep", "30"])
    try:
        deadline = time.monotonic() + 10
        while any(state_of(p.pid) != "Z" for p in exited):
            assert time.monotonic() < deadline, [state_of(p.pid) for p in exited]
            time.sleep(0.02)
        started = time.monotonic()
        _reap_children(signal.SIGCHLD, None)
        assert time.monotonic() - started < 1.0  # a live child does not make it wait
        assert [state_of(p.pid) for p in exited] == [None] * 5  # no zombies left
        assert state_of(running.pid) not in (None, "Z")  # a running child is left alone
    finally:
        running.kill()
        running.wait()
        for p in exited:
            p.wait()  # the reaper already collected them: Popen copes with ECHILD
    _reap_children(signal.SIGCHLD, None)  # and with no children at all it just returns


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if re.search(rf"^PPid:\s+{pid}$", status, re.MULTILINE):
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"),
                    reason="needs root with unshare and nsenter")
def test_proxy_as_pid1_reaps_orphans_and_stops_on_sigterm(tmp_path: Path) -> None:
    """The proxy as PID 1 of its own PID namespace, as in a container without an init."""
    if subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True).returncode:
        pytest.skip("unshare --pid is not permitted here")
    port = free_port()
    env = {**os.environ, "PW_PORT": str(port), "PW_BIND_ADDRESS": "127.0.0.1",
           "PW_AUTH_PATH": str(tmp_path)}
    with open(tmp_path / "stderr.log", "wb") as stderr:
        outer = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m", "proxy",
                                  "--simulate"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_serving(port, outer)
        (pid1,) = children_of(outer.pid)  # the proxy, PID 1 inside the namespace
        assert re.search(r"^NSpid:\s+\d+\s+1$", Path(f"/proc/{pid1}/status").read_text(), re.MULTILINE)
        # Orphans inside the namespace: each shell exits at once, leaving a child that
        # exits a moment later with only PID 1 to collect it.
        for _ in range(3):
            subprocess.run(["nsenter", "--target", str(pid1), "--pid", "--", "sh", "-c",
                            "sleep 0.5 & exit 0"], check=True)
        orphans = children_of(pid1)
        assert len(orphans) >= 3, orphans  # re-parented to the proxy
        deadline = time.monotonic() + 5
        while any(state_of(pid) is not None for pid in orphans):
            zombies = [pid for pid in orphans if state_of(pid) == "Z"]
            assert time.monotonic() < deadline, f"zombies left under PID 1: {zombies}"
            time.sleep(0.05)
        assert http_fetch(port)("GET", "/health")[0] == 200  # reaping did not disturb serving
        sent = time.monotonic()
        os.kill(pid1, signal.SIGTERM)
        code = outer.wait(timeout=2.0)
        assert code == 0 and time.monotonic() - sent <= 2.0
        assert refuses(port)
    finally:
        if outer.poll() is None:
            outer.kill()
            outer.wait()
