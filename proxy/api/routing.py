"""Routing: a route group is a `Mount` (a prefix, its rows, its error renderer, its id binding),
and the `Router` finds a request's row by exact dict lookups.

As starlette's `Mount`, a prefix plus its rows is itself a route, but nothing is matched by
regular expression: a fixed mount's rows are keys of one dict by their full path; a prefix row
(`/pw/*`) catches a family after the exact rows; a mount whose prefix names a gateway
(`/api/gateways/{id}/`) takes the id from the path, binds it to its site through the one
parser of outside gateway ids (`Sites.find`: 404 "Gateway not found"), and looks the rest up
in the rows mounted there. Every group and its prefix are listed once, in `proxy.api.mounts`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from proxy.errors import HTTPError, ProxyError
from proxy.httpd.types import Request, Response
from proxy.site.site import Rendered, Site, Sites

if TYPE_CHECKING:
    from proxy.api.apidoc import Doc
    from proxy.api.app import App

ID = "{id}"  # the one placeholder a prefix may hold: a gateway id


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


@dataclass(frozen=True, slots=True)
class Route:
    """One row of a route group."""

    path: str  # within its mount; a trailing "*" catches a family (/pw/*)
    handler: Handler
    methods: tuple[str, ...] = ("GET",)
    cached: bool = False  # render once per cache window, serve the bytes to everyone
    vary: Callable[[Call], str] | None = None  # cache-key suffix for query variants
    doc: Doc | None = None  # what /openapi.json says about it (proxy.api.apidoc)


Bind = Callable[[Sites, str], Site]  # (every site, the id in the path or "") -> the site served


def default_site(sites: Sites, _: str) -> Site:
    return sites.default()


def site_by_id(sites: Sites, gateway_id: str) -> Site:
    return sites.find(gateway_id)  # UnknownGateway: 404 "Gateway not found"


@dataclass(frozen=True, slots=True)
class Mount:
    """A route group under a prefix: its rows, who renders its errors, which site it serves."""

    prefix: str  # "/" or e.g. "/api/gateways/{id}/"; always ends with "/"
    routes: tuple[Route, ...]
    errors: ErrorRenderer | None = None  # the group's own error body (OpenC2); None: the app's
    bind: Bind = default_site

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/") or not self.prefix.endswith("/"):
            raise ValueError(f"a mount prefix starts and ends with /: {self.prefix!r}")
        if self.prefix.count(ID) > 1 or (ID in self.prefix and not self.prefix.endswith(ID + "/")):
            raise ValueError(f"a mount prefix ends with its one {ID}: {self.prefix!r}")

    @property
    def head(self) -> str:
        """The prefix up to its {id} (the whole prefix when it has none)."""
        return self.prefix.split(ID, 1)[0]

    @property
    def templated(self) -> bool:
        return ID in self.prefix

    def full_path(self, route: Route) -> str:
        """The row's path as clients see it (with "{id}" under a gateway mount)."""
        return self.prefix[:-1] + route.path

    def rows(self) -> Iterator[tuple[str, Route]]:
        for route in self.routes:
            yield self.full_path(route), route


@dataclass(frozen=True, slots=True)
class Match:
    """Where a path goes: the mount, its row, the path within the mount, the site it serves."""

    mount: Mount
    route: Route
    path: str  # within the mount (what a handler sees as call.path)
    site: Site
    gateway_id: str = ""  # the {id} of a gateway mount ("" at the root)

    @property
    def label(self) -> str:
        """The route as /metrics counts it: its full path, "{id}" for the gateway."""
        return self.mount.full_path(self.route)


@dataclass
class _Table:
    """Exact rows by path, then prefix rows in table order."""

    exact: dict[str, tuple[Mount, Route]] = field(default_factory=dict)
    prefixes: list[tuple[str, Mount, Route]] = field(default_factory=list)
    bind: Bind = default_site  # who a gateway mount's {id} names (its first mount's binding)

    def add(self, path: str, mount: Mount, route: Route) -> None:
        if path.endswith("*"):
            self.prefixes.append((path[:-1], mount, route))
        elif path in self.exact:
            raise ValueError(f"duplicate route {path}")
        else:
            self.exact[path] = (mount, route)

    def find(self, path: str) -> tuple[Mount, Route] | None:
        found = self.exact.get(path)
        if found is not None:
            return found
        return next(((m, r) for stem, m, r in self.prefixes if path.startswith(stem)), None)


class NotMounted(HTTPError):
    """A path under a gateway mount that no row there takes: 404, counted under `label`."""

    def __init__(self, label: str) -> None:
        super().__init__(404, "Not Found")
        self.label = label


class Router:
    """Every mount's rows; fixed once built."""

    def __init__(self, mounts: Iterable[Mount]) -> None:
        self.mounts = tuple(mounts)
        self._root = _Table()
        self._by_head: dict[str, _Table] = {}  # a gateway mount's head -> the rows under it
        for mount in self.mounts:
            if mount.templated:
                if mount.head not in self._by_head:
                    self._by_head[mount.head] = _Table(bind=mount.bind)
                for route in mount.routes:
                    self._by_head[mount.head].add(route.path, mount, route)
            else:
                for path, route in mount.rows():
                    self._root.add(path, mount, route)

    def match(self, path: str, sites: Sites) -> Match | None:
        """The row a path goes to and the site it serves; None when no mount has the path (the
        app falls back to files). Under a gateway mount the id is bound first (UnknownGateway:
        "Gateway not found"), and a path no row there takes is a 404 of its own (NotMounted)."""
        for head, table in self._by_head.items():
            gateway_id, slash, rest = path[len(head):].partition("/")
            if path.startswith(head) and slash:
                site = table.bind(sites, gateway_id)
                found = table.find("/" + rest)
                if found is None:
                    raise NotMounted(head + ID + "/*")
                return Match(found[0], found[1], "/" + rest, site, gateway_id)
        found = self._root.find(path)
        if found is None:
            return None
        return Match(found[0], found[1], path, found[0].bind(sites, ""))

    def rows(self) -> list[tuple[Mount, Route]]:
        """Every (mount, row), in mount order (for the OpenAPI document)."""
        return [(mount, route) for mount in self.mounts for route in mount.routes]


def allow(route: Route) -> str:
    methods = list(route.methods)
    if "GET" in methods:
        methods.append("HEAD")
    return ", ".join([*methods, "OPTIONS"])


def both(routes: Sequence[Route], gateway_prefix: str) -> tuple[Mount, Mount]:
    """A group served for the default gateway at the root and for each gateway under its prefix."""
    return Mount("/", tuple(routes)), Mount(gateway_prefix, tuple(routes), bind=site_by_id)
