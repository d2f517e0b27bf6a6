"""The app: a Request goes in, a Response comes out.

Routing is a table (`proxy.api.reference.ROUTES`) matched on the path without its
query string, after `PROXY_BASE_URL` is stripped. Errors are typed
(`proxy.errors`) and mapped to HTTP in `error_response`, the one place that
does so. Unmatched paths fall through to `web/` and then the gateway's web UI.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, unquote_to_bytes

from proxy.api.apidoc import Doc
from proxy.api.passthrough import Passthrough
from proxy.api.web import WebFiles
from proxy.config import Config
from proxy.errors import GatewayError, GatewayUnavailable, HTTPError, NotSupported, ProxyError
from proxy.gateway import Gateway
from proxy.httpd.types import Request, Response
from proxy.site.hub import Hub
from proxy.site.site import Rendered, Site, Sites
from proxy.stats import Stats, Tally

log = logging.getLogger("proxy.app")

GATEWAY_MOUNT = "/api/gateways/"
_SEGMENTS = re.compile(r"[/\\]")  # path segments, with a backslash counted as a separator
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

JSON = "application/json"
CSV = "text/plain; charset=utf-8"
CORS = ("Access-Control-Allow-Origin", "*")
PREFLIGHT = [
    CORS,
    ("Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS"),
    ("Access-Control-Allow-Headers", "Authorization, Content-Type"),
    ("Access-Control-Max-Age", "600"),
]


@dataclass(frozen=True, slots=True)
class Call:
    """A routed request: the path as routed, its parsed query, the original request,
    and the site (gateway) the route serves."""

    path: str
    query: dict[str, list[str]]
    request: Request
    site: Site
    mount: str = ""  # "" at the root; the gateway id under /api/gateways/{id}/

    def flag(self, name: str) -> bool:
        return name in self.query

    def param(self, name: str) -> str:
        values = self.query.get(name)
        return values[0] if values else ""


Handler = Callable[["App", Call], "Rendered | Response"]
ErrorRenderer = Callable[["App", ProxyError, Call], Response]
Report = Callable[[], dict[str, Any]]  # a part of the proxy describing itself (/stats, /metrics)
UNMATCHED = "unmatched"  # the route label of a request refused before routing (bad path)


@dataclass(frozen=True, slots=True)
class Route:
    """One row of the route table."""

    path: str
    handler: Handler
    methods: tuple[str, ...] = ("GET",)
    cached: bool = False  # render once per cache window, serve the bytes to everyone
    vary: Callable[[Call], str] | None = None  # cache-key suffix for query variants
    root_only: bool = False  # proxy-wide (gateway list, aggregates): not under /api/gateways/{id}/
    # A route group with its own error body (OpenC2): its typed errors, a wrong method
    # included, are rendered by this instead of `error_response`.
    errors: ErrorRenderer | None = None
    doc: Doc | None = None  # what /openapi.json says about it (proxy.apidoc)


@dataclass
class Router:
    """Exact-path lookup; `prefix` rows catch a family (e.g. /tedapi/…) after exact rows."""

    exact: dict[str, Route] = field(default_factory=dict)
    prefixes: list[Route] = field(default_factory=list)

    @classmethod
    def build(cls, rows: Iterable[Route]) -> Router:
        router = cls()
        for row in rows:
            if row.path.endswith("*"):
                router.prefixes.append(row)
            elif row.path in router.exact:
                raise ValueError(f"duplicate route {row.path}")
            else:
                router.exact[row.path] = row
        return router

    def match(self, path: str) -> Route | None:
        route = self.exact.get(path)
        if route is not None:
            return route
        for row in self.prefixes:
            if path.startswith(row.path[:-1]):
                return row
        return None


class App:
    """Everything a request handler may use, built once by main()."""

    def __init__(self, config: Config, sites: Sites, *, web: WebFiles, passthrough: Passthrough,
                 routes: Iterable[Route], stats: Stats | None = None,
                 reports: dict[str, Report] | None = None, hub: Hub | None = None) -> None:
        self.config = config
        self.sites = sites
        self.site = sites.default()
        self.web = web
        self.passthrough = passthrough
        self.stats = stats or Stats()
        # For /metrics: answers by (route, status) and stale answers by gateway; never cleared.
        self.requests = Tally(limit=1024, overflow=("other", "other"))
        self.stale_answers = Tally(limit=64)
        # Other parts' own status (e.g. "mqtt"), shown in /stats and /metrics.
        self.reports: dict[str, Report] = dict(reports or {})
        self.routes = tuple(routes)  # in table order, for /openapi.json
        self.hub = hub  # live push topics; None: no streams (their routes answer 404)
        self.router = Router.build(self.routes)
        self.started = time.time()
        self.server_stats: Callable[[], dict[str, int]] = dict
        self.control_guard: Any = None  # set by proxy.control (bad-token throttling)

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
        call = self.mounted(path, query, request)
        method = "GET" if request.method == "HEAD" else request.method
        route = self.router.match(call.path)
        if route is None or (call.mount and route.root_only):
            if call.mount:
                routed.append(GATEWAY_MOUNT + "{id}/*")
                raise HTTPError(404, "Not Found")
            routed.append("fallback")
            return self.fallback(call, method)
        routed.append(_label(route, call))
        if route.errors is not None:
            try:
                return self._routed(route, call, path, method)
            except ProxyError as exc:
                self._count_error(exc)
                return route.errors(self, exc, call)
        return self._routed(route, call, path, method)

    def _routed(self, route: Route, call: Call, path: str, method: str) -> Response:
        request = call.request
        if request.method == "OPTIONS" and "OPTIONS" not in route.methods:
            return Response(204, [*PREFLIGHT, ("Allow", allow(route))])
        if method not in route.methods:
            raise HTTPError(405, "Method Not Allowed", [("Allow", allow(route))])
        result = self._cached(route, call) if route.cached else route.handler(self, call)
        response = result if isinstance(result, Response) else self.respond(result, call.site)
        if request.method == "GET" and response.status < 400:
            self._count_get(call, path)
        return response

    def ready(self, request: Request) -> Response | None:
        """The answer to a GET or HEAD of a cached route whose bytes for this window are
        already rendered from fresh data; None for anything else (the server then calls the
        app from a worker). The HTTP server calls this on its event loop: it only looks up."""
        if request.method not in ("GET", "HEAD"):
            return None
        try:
            path, query = self.split_target(request.target)
            call = self.mounted(path, query, request)
            route = self.router.match(call.path)
            if (route is None or not route.cached or "GET" not in route.methods
                    or (call.mount and route.root_only)):
                return None
            hit = call.site.renders.get(_render_key(route, call), call.site.window())
            if hit is None or hit.stale:
                return None
            response = self.respond(hit, call.site)
        except ProxyError:  # the worker answers it, and counts it
            return None
        if request.method == "GET":
            self._count_get(call, path)
        self.requests.add((_label(route, call), str(response.status)))
        return response

    def _count_get(self, call: Call, path: str) -> None:
        self.stats.count_get(path)
        call.site.stats.count_get(call.path)

    def mounted(self, path: str, query: dict[str, list[str]], request: Request) -> Call:
        """The reference routes serve the default gateway at the root and each gateway under
        /api/gateways/{id}/ (the list and detail routes of that prefix are rows of their own)."""
        if path.startswith(GATEWAY_MOUNT):
            gateway_id, slash, rest = path[len(GATEWAY_MOUNT):].partition("/")
            if slash:
                site = self.sites.get(gateway_id)
                if site is None:
                    raise HTTPError(404, "Gateway not found")
                return Call("/" + rest, query, request, site, mount=gateway_id)
        return Call(path, query, request, self.site)

    def _cached(self, route: Route, call: Call) -> Rendered | Response:
        """The route's bytes of this window, rendered once from fresh data."""
        site = call.site
        key = _render_key(route, call)
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
            query = parse_qs(raw_query, keep_blank_values=True, errors="strict",
                             max_num_fields=50) if raw_query else {}
        except UnicodeDecodeError:
            raise HTTPError(400, "Bad Request: the query is not valid UTF-8") from None
        except ValueError:
            raise HTTPError(400, "Bad Request: too many query fields") from None
        if _CONTROL.search(path):
            raise HTTPError(400, "Bad Request: control characters in the path")
        # Without a dot or a percent sign (the common case) no segment can be "." or "..".
        if ("." in path or "%" in path) and any(
                unquote(part).split(";")[0] in (".", "..") for part in _SEGMENTS.split(path)):
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


def _label(route: Route, call: Call) -> str:
    """A routed request's label in the request counts (/metrics)."""
    return GATEWAY_MOUNT + "{id}" + route.path if call.mount else route.path


def _render_key(route: Route, call: Call) -> tuple[str, str]:
    return route.path, route.vary(call) if route.vary else ""


def allow(route: Route) -> str:
    methods = list(route.methods)
    if "GET" in methods:
        methods.append("HEAD")
    return ", ".join([*methods, "OPTIONS"])


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
