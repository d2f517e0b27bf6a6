"""Files under web/, and the style injection they share with the gateway passthrough.

HTML gets the PW_STYLE stylesheet injected. Files are read once and kept
encoded. The passthrough to the gateway's own web UI is `proxy.api.passthrough`.
"""

from __future__ import annotations

import html
import logging
import mimetypes
import threading
from pathlib import Path

from proxy.config import Config
from proxy.httpd.types import Response

log = logging.getLogger("proxy.web")

WEB_ROOT = Path(__file__).resolve().parents[2] / "web"
PAGES = {"/": "index.html", "/console": "console.html", "/history": "history.html"}
MAX_FILE = 4 * 1024 * 1024
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


def style_tags(config: Config) -> bytes:
    base = html.escape(config.base_url, quote=True)
    style = html.escape(config.style, quote=True)
    gateway = html.escape(config.default_id(), quote=True)  # whose live stream a page follows
    return (f'<meta name="pw-base-url" content="{base}">'
            f'<meta name="pw-style" content="{style}">'
            f'<meta name="pw-gateway" content="{gateway}">'
            f'<link rel="stylesheet" id="pw-style" href="{base}styles/{style}.css">').encode()


def inject(page: bytes, tags: bytes) -> bytes:
    """Put the style tags right before </head>, or first if the page has no head."""
    index = page.lower().find(b"</head>")
    if index < 0:
        return tags + page
    return page[:index] + tags + page[index:]


def cache_control(browser_cache: int, kind: str) -> tuple[str, str]:
    """HTML stays uncached so a changed PW_STYLE or base URL shows at once;
    PW_BROWSER_CACHE applies to the assets it loads."""
    if browser_cache > 0 and not kind.lower().startswith("text/html"):
        return ("Cache-Control", f"max-age={browser_cache}")
    return ("Cache-Control", "no-cache, no-store")


def content_type(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


class WebFiles:
    """Static files under web/, cached in memory."""

    def __init__(self, config: Config, root: Path = WEB_ROOT) -> None:
        self.config = config
        self.root = root.resolve()
        self.tags = style_tags(config)
        self._lock = threading.Lock()
        self._files: dict[str, Response | None] = {}

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
        return Response(200, [("Content-Type", kind), cache_control(self.config.browser_cache, kind)], body)

