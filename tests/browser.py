"""A small headless-Chromium driver for the browser tests.

Speaks the DevTools protocol over ``--remote-debugging-pipe`` (NUL-separated JSON on
file descriptors 3 and 4), so it needs no extra Python package and opens no port.
Only what the tests use: open a page at a viewport size, evaluate JavaScript, wait for
a condition, record console errors and network requests, take PNG screenshots.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# Flags from DEVELOPERS.md: headless, no sandbox (we run as root in containers),
# no GPU, and nothing that talks to the network on its own.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-default-browser-check",
    "--mute-audio",
    "--force-color-profile=srgb",
)

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
SHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"  # git-ignored


def find_chromium() -> str | None:
    """Path of a Chromium binary: $CHROMIUM, /usr/bin/chromium, or one on PATH."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM = find_chromium()
# pytestmark of a module of browser tests: marked, and skipped (saying why) without Chromium.
BROWSER_TESTS = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not found; install Debian's "
                       "`chromium` (tests/run.sh does) or set $CHROMIUM"),
]


def _above_4(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class BrowserError(RuntimeError):
    """A DevTools command failed or timed out."""


class Chromium:
    """One headless Chromium process; open pages with :meth:`new_page`."""

    def __init__(self, executable: str, extra_args: tuple[str, ...] = ()) -> None:
        self.profile = tempfile.mkdtemp(prefix="pw-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Chromium's ends go above fd 4 first, so the shell's 3<& / 4>& cannot clobber them.
        to_chrome_r, from_chrome_w = _above_4(to_chrome_r), _above_4(from_chrome_w)
        # bash (dash takes single-digit fds only) puts our pipe ends on fds 3
        # (commands) and 4 (replies), where --remote-debugging-pipe expects them,
        # then becomes Chromium.
        script = f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w} {to_chrome_r}<&- {from_chrome_w}>&-'
        args = [*CHROMIUM_FLAGS, *extra_args, f"--user-data-dir={self.profile}",
                "--remote-debugging-pipe", "about:blank"]
        self._log = open(os.path.join(self.profile, "chromium.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [shutil.which("bash") or "/bin/bash", "-c", script, executable, *args],
            pass_fds=(to_chrome_r, from_chrome_w),
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._lock = threading.Condition()
        self._next_id = 0
        self._results: dict[int, dict[str, Any]] = {}
        self._listeners: dict[str, Callable[[str, dict[str, Any]], None]] = {}
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        self.send("Browser.getVersion")  # fails fast if Chromium did not start

    # -- transport ---------------------------------------------------------
    def _read_loop(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_chrome, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._lock:
                    self._results[-1] = {"error": {"message": "chromium exited"}}
                    self._lock.notify_all()
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                self._dispatch(json.loads(raw))

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message:
            with self._lock:
                self._results[message["id"]] = message
                self._lock.notify_all()
            return
        listener = self._listeners.get(message.get("sessionId", ""))
        if listener:
            listener(message["method"], message.get("params", {}))

    def send(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None, timeout: float = 30) -> dict[str, Any]:
        """Send one DevTools command and wait for its result."""
        with self._lock:
            self._next_id += 1
            ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._lock:
            while ident not in self._results:
                if -1 in self._results:
                    raise BrowserError(f"{method}: chromium exited")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrowserError(f"{method}: no answer in {timeout} s")
                self._lock.wait(left)
            reply = self._results.pop(ident)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    # -- pages ---------------------------------------------------------------
    def new_page(self, width: int = 800, height: int = 480) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget",
                            {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, target, session)
        self._listeners[session] = page._on_event
        for domain in ("Page", "Runtime", "Network", "Log"):
            page.send(f"{domain}.enable")
        page.set_viewport(width, height)
        return page

    def close(self) -> None:
        with contextlib.suppress(BrowserError):
            self.send("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    """One tab. Records console errors, requests and responses as they happen."""

    def __init__(self, browser: Chromium, target: str, session: str) -> None:
        self.browser = browser
        self.target = target
        self.session = session
        self.console_errors: list[str] = []
        self.requests: list[str] = []
        self.responses: dict[str, dict[str, Any]] = {}
        self._loaded = threading.Event()

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Page.loadEventFired":
            self._loaded.set()
        elif method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Network.responseReceived":
            response = params["response"]
            self.responses[response["url"]] = {
                "status": response["status"],
                "headers": {k.lower(): v for k, v in response["headers"].items()},
                "mimeType": response.get("mimeType"),
            }
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.console_errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            self.console_errors.append(f"exception: {text}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            self.console_errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())

    def send(self, method: str, params: dict[str, Any] | None = None,
             timeout: float = 30) -> dict[str, Any]:
        return self.browser.send(method, params, session=self.session, timeout=timeout)

    def set_viewport(self, width: int, height: int) -> None:
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def goto(self, url: str, timeout: float = 20) -> None:
        """Navigate and wait for the load event."""
        self._loaded.clear()
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"navigate {url}: {result['errorText']}")
        if not self._loaded.wait(timeout):
            raise BrowserError(f"navigate {url}: no load event in {timeout} s")

    def evaluate(self, expression: str) -> Any:
        """Value of a JavaScript expression (promises are awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression,
                                                "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"evaluate {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15, interval: float = 0.1) -> Any:
        """Poll until a JavaScript expression is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out after {timeout} s waiting for {expression}")
            time.sleep(interval)

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        """A PNG of the window, or with `full_page` of the whole page however long it is."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params.update(captureBeyondViewport=True, clip={
                "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        data = self.send("Page.captureScreenshot", params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self.browser._listeners.pop(self.session, None)
        with contextlib.suppress(BrowserError):
            self.browser.send("Target.closeTarget", {"targetId": self.target}, timeout=5)
