"""The app: a Request goes in, a Response comes out.

Every route group is a `Mount` (`proxy.api.mounts` lists them, `proxy.api.routing` finds a
path's row by exact lookups), matched on the path without its query string, after
`PROXY_BASE_URL` is stripped. Errors are typed (`proxy.errors`) and mapped to HTTP in
`error_response`, the one place that does so, unless the group renders its own (OpenC2).
Unmatched paths fall through to `web/` and then the gateway's web UI.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs, unquote, unquote_to_bytes

from proxy.api.passthrough import Passthrough
from proxy.api.routing import Call, Mount, NotMounted, Route, Router, allow
from proxy.api.tokens import TokenThrottle
from proxy.api.web import WebFiles
from proxy.config import Config
from proxy.errors import GatewayError, GatewayUnavailable, HTTPError, NotSupported, ProxyError
from proxy.gateway import Gateway
from proxy.httpd.types import Request, Response
from proxy.reports import Reports
from proxy.site.actions import Writes
from proxy.site.site import Rendered, Site, Sites
from proxy.stats import Stats, Tally

log = logging.getLogger("proxy.app")

_SEGMENTS = re.compile(r"[/\\]")  # path segments, with a backslash counted as a separator

JSON = "application/json"
CSV = "text/plain; charset=utf-8"
CORS = ("Access-Control-Allow-Origin", "*")
PREFLIGHT = [
    CORS,
    ("Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS"),
    ("Access-Control-Allow-Headers", "Authorization, Content-Type"),
    ("Access-Control-Max-Age", "600"),
]


UNMATCHED = "unmatched"  # the route label of a request refused before routing (bad path)


class App:
    """Everything a request handler may use, built once by main()."""

    def __init__(self, config: Config, sites: Sites, *, web: WebFiles, passthrough: Passthrough,
                 mounts: Iterable[Mount], stats: Stats | None = None,
                 reports: Reports | None = None, topics: Any = None,
                 writes: Writes | None = None, throttle: TokenThrottle | None = None) -> None:
        self.config = config
        self.sites = sites
        self.site = sites.default()
        self.web = web
        self.passthrough = passthrough
        self.stats = stats or Stats()
        # For /metrics: answers by (route, status) and stale answers by gateway; never cleared.
        self.requests = Tally(limit=1024, overflow=("other", "other"))
        self.stale_answers = Tally(limit=64)
        # Every part's own report (server, hub, streams, mqtt, ...): /stats, /health, /metrics.
        self.reports = Reports() if reports is None else reports
        self.topics = topics  # live push topics (proxy.api.live.Topics); None: no streams (404)
        self.router = Router(mounts)  # every route group (proxy.api.mounts)
        self.started = time.time()
        self.writes = Writes() if writes is None else writes  # every control write, from every front door
        self.throttle = TokenThrottle() if throttle is None else throttle  # wrong tokens, per client

    @property
    def gateway(self) -> Gateway:
        """The default gateway."""
        return self.site.gateway

    def __call__(self, request: Request) -> Response:
        routed: list[str] = []  # the route's label, once known
        try:
            response = self._dispatch(request, routed)
        except ProxyError as exc:
            self._count_error(exc)
            response = error_response(exc)
        self.requests.add((routed[-1] if routed else UNMATCHED, str(response.status)))
        return response

    def _dispatch(self, request: Request, routed: list[str]) -> Response:
        path, query = self.split_target(request.target)
        method = "GET" if request.method == "HEAD" else request.method
        try:
            match = self.router.match(path, self.sites)
        except NotMounted as exc:
            routed.append(exc.label)
            raise
        if match is None:
            routed.append("fallback")
            return self.fallback(Call(path, query, request, self.site), method)
        routed.append(match.label)
        call = Call(match.path, query, request, match.site, mount=match.gateway_id)
        errors = match.mount.errors
        if errors is None:
            return self._routed(match.route, call, path, method)
        try:
            return self._routed(match.route, call, path, method)
        except ProxyError as exc:  # the group renders its own errors (OpenC2)
            self._count_error(exc)
            return errors(self, exc, call)

    def _routed(self, route: Route, call: Call, path: str, method: str) -> Response:
        request = call.request
        if request.method == "OPTIONS" and "OPTIONS" not in route.methods:
            return Response(204, [*PREFLIGHT, ("Allow", allow(route))])
        if method not in route.methods:
            raise HTTPError(405, "Method Not Allowed", [("Allow", allow(route))])
        result = self._cached(route, call) if route.cached else route.handler(self, call)
        response = result if isinstance(result, Response) else self.respond(result, call.site)
        if request.method == "GET" and response.status < 400:
            self.stats.count_get(path)
            call.site.stats.count_get(call.path)
        return response

    def _cached(self, route: Route, call: Call) -> Rendered | Response:
        """The route's bytes of this window, rendered once from fresh data."""
        site = call.site
        key = (route.path, route.vary(call) if route.vary else "")
        window = site.window()
        hit = site.renders.get(key, window)
        if hit is not None:
            return hit
        result = route.handler(self, call)
        if isinstance(result, Rendered) and not result.stale:
            # A stale rendering is not kept: the next poll re-checks its age and the gateway.
            site.renders.put(key, window, result)
        return result

    def respond(self, rendered: Rendered, site: Site) -> Response:
        headers = [("Content-Type", rendered.content_type), CORS]
        if rendered.data_at is not None:
            exact_age = site.age(rendered.data_at)
            if rendered.stale and exact_age > site.cache_ttl:
                # A slow read of another value aged the copy past PW_CACHE_TTL.
                raise GatewayUnavailable("gateway unavailable and the last good data is too old")
            age = int(exact_age)
            if rendered.stale:
                self.stale_answers.add((site.id,))
            headers.append(("Age", str(age)))
            headers.append(("X-Cache", "STALE" if rendered.stale else "HIT"))
            if rendered.stale:
                headers.append(("Warning", '110 - "Response is Stale"'))
        return Response(200, headers, rendered.body)

    def split_target(self, target: str) -> tuple[str, dict[str, list[str]]]:
        """Decode the path, strip PROXY_BASE_URL, parse the query; refuse what cannot be a path."""
        raw_path, _, raw_query = target.partition("?")
        raw_path = raw_path.split("#", 1)[0]
        if not raw_path.startswith("/"):
            raise HTTPError(400, "Bad Request: the path must start with /")
        if not target.isascii():
            # A request-target is ASCII (RFC 9112); raw 8-bit bytes must be percent-encoded.
            raise HTTPError(400, "Bad Request: the path must be ASCII (percent-encode other bytes)")
        try:
            path = unquote_to_bytes(raw_path).decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPError(400, "Bad Request: the path is not valid UTF-8") from None
        try:
            query = parse_qs(raw_query, keep_blank_values=True, errors="strict", max_num_fields=50)
        except UnicodeDecodeError:
            raise HTTPError(400, "Bad Request: the query is not valid UTF-8") from None
        except ValueError:
            raise HTTPError(400, "Bad Request: too many query fields") from None
        if any(ord(c) < 0x20 or c == "\x7f" for c in path):
            raise HTTPError(400, "Bad Request: control characters in the path")
        if any(unquote(part).split(";")[0] in (".", "..") for part in _SEGMENTS.split(path)):
            # Traversal (/../, %2e%2e, ..%5c, ..;, double-encoded): no file and no gateway
            # page lives there, so it is never looked up, let alone forwarded.
            raise HTTPError(404, "Not Found")
        return self.strip_base(path), query

    def strip_base(self, path: str) -> str:
        base = self.config.base_url
        if base != "/":
            if path.startswith(base):
                return "/" + path[len(base):]
            if path == base[:-1]:
                return "/"
        return path

    def fallback(self, call: Call, method: str) -> Response:
        """No route: a file under web/, else the gateway's own web UI (never its /api)."""
        if call.request.method == "OPTIONS":
            return Response(204, [*PREFLIGHT, ("Allow", "GET, HEAD, OPTIONS")])
        if method != "GET":
            raise HTTPError(404, "Not Found")
        page = self.web.get(call.path)
        if page is not None:
            self.stats.count_get(call.path)
            return page
        # "//api/x" is "/api/x" to the gateway: the deny rule sees what the gateway will.
        path = re.sub(r"/{2,}", "/", call.path)
        if path.lower().startswith("/api/") or path.lower() == "/api" or self.gateway.info.cloudmode:
            raise HTTPError(404, "Not Found")
        return self.passthrough.get(path, call.request.target.partition("?")[2])

    def _count_error(self, exc: ProxyError) -> None:
        if isinstance(exc, GatewayError):
            self.stats.count_timeout()
        elif exc.status >= 400 and not isinstance(exc, NotSupported) and exc.status != 404:
            self.stats.count_error()


def json_bytes(obj: Any) -> bytes:
    """The reference's compact-but-spaced JSON (json.dumps defaults), as bytes."""
    return json.dumps(obj).encode()


def json_response(status: int, obj: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, [("Content-Type", JSON), CORS, *(headers or [])], json_bytes(obj))


def error_response(exc: ProxyError) -> Response:
    """The one mapping from typed errors to HTTP."""
    headers: list[tuple[str, str]] = []
    if isinstance(exc, GatewayError):
        headers.append(("Retry-After", str(max(1, int(exc.retry_after + 0.999)))))
    elif isinstance(exc, HTTPError):
        headers.extend(exc.headers)
    return json_response(exc.status, {"error": exc.message}, headers)
