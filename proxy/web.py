"""Files under web/ and the passthrough to the gateway's own web UI.

Both inject the PW_STYLE stylesheet into HTML. Files are read once and kept
encoded; the passthrough never forwards cookies to or from the gateway.
"""

from __future__ import annotations

import html
import http.cookiejar
import logging
import mimetypes
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from proxy.config import Config
from proxy.errors import GatewayUnavailable, HTTPError
from proxy.gateway import Gateway
from proxy.http_types import Response

log = logging.getLogger("proxy.web")

WEB_ROOT = Path(__file__).resolve().parent.parent / "web"
PAGES = {"/": "index.html", "/console": "console.html"}
MAX_FILE = 4 * 1024 * 1024
MAX_PASSTHROUGH = 8 * 1024 * 1024
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "application/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".txt": "text/plain; charset=utf-8",
}
# Headers from the gateway that are its own business, or that we recompute.
_DROP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
         "set-cookie", "server", "date", "strict-transport-security", "upgrade"}


def style_tags(config: Config) -> bytes:
    base = html.escape(config.base_url, quote=True)
    style = html.escape(config.style, quote=True)
    return (f'<meta name="pw-base-url" content="{base}">'
            f'<meta name="pw-style" content="{style}">'
            f'<link rel="stylesheet" id="pw-style" href="{base}styles/{style}.css">').encode()


def inject(page: bytes, tags: bytes) -> bytes:
    """Put the style tags right before </head>, or first if the page has no head."""
    index = page.lower().find(b"</head>")
    if index < 0:
        return tags + page
    return page[:index] + tags + page[index:]


def content_type(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


class WebFiles:
    """Static files (cached in memory) and the gateway web passthrough."""

    def __init__(self, config: Config, root: Path = WEB_ROOT) -> None:
        self.config = config
        self.root = root.resolve()
        self.tags = style_tags(config)
        self._lock = threading.Lock()
        self._files: dict[str, Response | None] = {}
        self._session: requests.Session | None = None

    def get(self, path: str) -> Response | None:
        """The file for a URL path, or None; traversal outside web/ is never served."""
        with self._lock:
            if path in self._files:
                return self._files[path]
        response = self._load(path)
        with self._lock:
            if len(self._files) < 256:  # bounded: unknown paths don't grow the map forever
                self._files[path] = response
        return response

    def _load(self, path: str) -> Response | None:
        name = PAGES.get(path, path.lstrip("/"))
        if not name or any(part in ("..", "") for part in name.split("/")) or "\\" in name:
            return None
        target = (self.root / name).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            return None
        if target.stat().st_size > MAX_FILE:
            return None
        body = target.read_bytes()
        kind = content_type(target.name)
        if kind.startswith("text/html"):
            body = inject(body, self.tags)
        return Response(200, [("Content-Type", kind), self.cache_control(kind)], body)

    def cache_control(self, kind: str) -> tuple[str, str]:
        # HTML stays uncached so a changed PW_STYLE or base URL shows at once;
        # PW_BROWSER_CACHE applies to the assets it loads.
        if self.config.browser_cache > 0 and not kind.startswith("text/html"):
            return ("Cache-Control", f"max-age={self.config.browser_cache}")
        return ("Cache-Control", "no-cache, no-store")

    def passthrough(self, gateway: Gateway, path: str, target: str) -> Response:
        """GET the same path from the gateway's web server (no credentials, no cookies)."""
        host = self.config.host
        if not host or not gateway.connected:
            raise HTTPError(404, "Not Found")
        gateway.check_cooldown()  # a refusing gateway gets no page requests either
        _, _, query = target.partition("?")
        url = f"https://{host}{quote(path, safe='/:@!$&()*+,;=-._~')}" + (f"?{query}" if query else "")
        try:
            upstream = self._fetch(url)
        except requests.RequestException as exc:
            raise GatewayUnavailable(f"gateway web UI unreachable ({type(exc).__name__})") from None
        if upstream[0] == 404:
            # Unknown to us and to the gateway: our JSON 404, not its plain-text page.
            raise HTTPError(404, "Not Found")
        return self._relay(*upstream)

    def _fetch(self, url: str) -> tuple[int, dict[str, Any], bytes]:
        session = self._session_for()
        with session.get(url, verify=False, timeout=self.config.timeout, stream=True,
                         allow_redirects=False) as r:
            body = r.raw.read(MAX_PASSTHROUGH + 1, decode_content=True)
            if len(body) > MAX_PASSTHROUGH:
                raise HTTPError(502, "gateway page too large")
            return r.status_code, dict(r.headers), body

    def _relay(self, status: int, headers: dict[str, Any], body: bytes) -> Response:
        kind = str(headers.get("Content-Type", "application/octet-stream"))
        out = [(k, str(v)) for k, v in headers.items() if k.lower() not in _DROP
               and k.lower() not in ("content-type", "cache-control")]
        if kind.lower().startswith("text/html"):
            body = inject(body, self.tags)
        out += [("Content-Type", kind), self.cache_control(kind)]
        return Response(status, out, body)

    def _session_for(self) -> requests.Session:
        with self._lock:
            if self._session is None:
                self._session = requests.Session()
                self._session.cookies.set_policy(_NoCookies())
            return self._session


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """A cookie policy that accepts nothing, so gateway cookies never stick or leak."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False
