"""GET /openapi.json, generated from the route table, and GET /docs, the page that shows it.

`document` is pure: the rows the app serves (each with its `Doc`, see
`proxy.apidoc`), the gateway ids and PROXY_BASE_URL go in, an OpenAPI 3.1 object
comes out. A GET row is documented with GET and HEAD, a POST row with POST, and
every row with OPTIONS (the CORS preflight), as `App` serves them. A row that is
not proxy-wide is documented twice: at the root and under
/api/gateways/{id}/, where an unknown gateway answers 404.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from proxy import __version__
from proxy.apidoc import (
    ANY,
    HTML,
    JSON,
    NAME,
    SCHEMAS,
    Answer,
    Doc,
    Param,
    Write,
    ref,
)
from proxy.app import GATEWAY_MOUNT, App, Call, Route, json_response
from proxy.errors import HTTPError
from proxy.http_types import Response

Obj = dict[str, Any]

TAGS = (
    ("data", "The reference proxy's data routes, read through the cache window"),
    ("api", "The gateway's own /api paths (an allow-list; any other /api path is 404)"),
    ("pw", "pypowerwall's methods by name"),
    ("tedapi", "TEDAPI objects (TEDAPI modes only)"),
    ("cloud", "Tesla cloud objects (cloud mode only)"),
    ("fleetapi", "FleetAPI objects (FleetAPI mode only)"),
    ("control", "Read and change settings; writes need PW_CONTROL_SECRET"),
    ("openc2", "OpenC2 commands (PW_OPENC2_TOKEN)"),
    ("gateways", "The configured gateways"),
    ("aggregate", "All gateways added up"),
    ("status", "The proxy describing itself"),
    ("docs", "This documentation"),
)

SECURITY_SCHEMES: Obj = {
    "controlSecret": {
        "type": "http", "scheme": "bearer",
        "description": "PW_CONTROL_SECRET, as `Authorization: Bearer …` or as the `token` field "
                       "of the form or JSON body. Wrong tokens are slowed per client (429).",
    },
    "openc2Token": {
        "type": "http", "scheme": "bearer",
        "description": "PW_OPENC2_TOKEN, as `Authorization: Bearer …` on OpenC2 commands.",
    },
}

BAD_TARGET = Answer(400, "Malformed request target: not ASCII or UTF-8, control characters, "
                         "more than 50 query fields")
UNKNOWN_GATEWAY = Answer(404, "No gateway with this id")
MOUNT_ID = Param("id", "A configured gateway id", {"type": "string", "pattern": "^[a-z0-9_-]{1,32}$"})
_DEFAULT_WILDCARD = Param("rest", "The rest of the path", NAME)
ANY_SEGMENT: Obj = {"type": "string", "pattern": "^[^\\u0000-\\u001f\\u007f]+$"}
_OPERATION_ID = re.compile(r"[^A-Za-z0-9]+")

HEADERS: Obj = {
    "RetryAfter": {"description": "Seconds to wait before asking again", "required": True,
                   "schema": {"type": "integer", "minimum": 1}},
    "Age": {"description": "Seconds since the gateway data was fetched",
            "schema": {"type": "integer", "minimum": 0}},
    "XCache": {"description": "HIT, or STALE: the last good copy during an outage",
               "schema": {"type": "string", "enum": ["HIT", "STALE"]}},
    "Allow": {"description": "The methods this path takes", "required": True,
              "schema": {"type": "string"}},
}


# ---- the document --------------------------------------------------------------------------

def document(routes: Iterable[Route], *, base_url: str = "/", gateway_ids: Sequence[str] = ()) -> Obj:
    """The OpenAPI 3.1 object for these rows; ids are the examples of the gateway mount's {id}."""
    build = _Builder()
    for route in routes:
        doc = route.doc or Doc("Not documented yet", tag="undocumented")
        template, wild = _template(route, doc)
        build.path(template, route, doc, [], wild, ())
        if not route.root_only:
            mount = _param(MOUNT_ID, "path", examples=tuple(gateway_ids))
            build.path(GATEWAY_MOUNT + "{id}" + template, route, doc, [mount], wild,
                       (UNKNOWN_GATEWAY,))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Powerwall proxy",
            "version": __version__,
            "description": "A caching proxy for Tesla Powerwall gateways. Every route also answers "
                           "HEAD and OPTIONS (CORS preflight); errors are JSON "
                           '{"error": "…"}. Routes that are not proxy-wide are served for the '
                           "default gateway at the root and for each gateway under "
                           "/api/gateways/{id}/.",
        },
        "servers": [{"url": base_url.rstrip("/") or "/",
                     "description": "This proxy (PROXY_BASE_URL)"}],
        "tags": [{"name": name, "description": text} for name, text in TAGS],
        "paths": build.paths,
        "components": {"schemas": SCHEMAS, "responses": build.responses,
                       "securitySchemes": SECURITY_SCHEMES, "headers": HEADERS},
    }


def _template(route: Route, doc: Doc) -> tuple[str, list[Obj]]:
    """The OpenAPI path of a row: a prefix row "/pw/*" becomes "/pw/{name}".

    A concrete path of the table (/pw/level) is matched before the template, as OpenAPI
    has it, so the template documents what any other name gets."""
    if not route.path.endswith("*"):
        return route.path, []
    wildcard = doc.wildcard or _DEFAULT_WILDCARD
    stem = route.path[:-1]
    if not stem.endswith("/"):
        stem += "/"
    return f"{stem}{{{wildcard.name}}}", [_param(wildcard, "path")]


def _preflight(wild: list[Obj]) -> Obj:
    """The preflight answers any path under a prefix row, whatever the name."""
    return {"parameters": [{**p, "schema": ANY_SEGMENT} for p in wild]} if wild else {}


def _param(param: Param, where: str, examples: tuple[str, ...] = ()) -> Obj:
    out: Obj = {"name": param.name, "in": where, "description": param.description,
                "schema": dict(param.schema)}
    if where == "path":
        out["required"] = True
    else:
        out["allowEmptyValue"] = True
    values = examples or param.examples
    if values:
        out["examples"] = {v or "empty": {"value": v} for v in values}
    return out


class _Builder:
    """Paths as they are added; answers shared by many operations become named responses."""

    def __init__(self) -> None:
        self.paths: Obj = {}
        self.responses: Obj = {}
        self._names: dict[str, str] = {}
        self._ids: set[str] = set()

    def path(self, template: str, route: Route, doc: Doc, mount: list[Obj], wild: list[Obj],
             extra: tuple[Answer, ...]) -> None:
        """The path item of one row at one place: its operations, as the app serves them."""
        item: Obj = {}
        if mount or wild:
            item["parameters"] = [*mount, *wild]
        key = self._key(template)
        if "GET" in route.methods:
            answers = (*doc.answers, *extra)
            get: Obj = {"tags": [doc.tag], "summary": doc.summary, "operationId": f"get_{key}",
                        "responses": self._ok(doc, route.cached, answers, body=True)}
            if doc.description:
                get["description"] = doc.description
            if doc.query:
                get["parameters"] = [_param(p, "query") for p in doc.query]
            item["get"] = get
            item["head"] = {**get, "summary": doc.summary + " (headers only)",
                            "operationId": f"head_{key}",
                            "responses": self._ok(doc, route.cached, answers, body=False)}
        if "POST" in route.methods:
            item["post"] = self._post(doc, key, extra)
        item["options"] = {
            "tags": [doc.tag], "summary": "CORS preflight", "operationId": f"options_{key}",
            **_preflight(wild),
            "responses": {"204": {"description": "The methods and headers allowed",
                                  "headers": {"Allow": {"$ref": "#/components/headers/Allow"}}},
                          **self._errors((BAD_TARGET, *extra), body=True)},
        }
        self.paths[template] = item

    def _key(self, template: str) -> str:
        """A unique operationId stem: /api/aggregate/ is api_aggregate_index."""
        key = _OPERATION_ID.sub("_", template).strip("_") or "root"
        if template.endswith("/") and template != "/":
            key += "_index"
        while key in self._ids:
            key += "_"
        self._ids.add(key)
        return key

    def _ok(self, doc: Doc, cached: bool, answers: tuple[Answer, ...], *, body: bool) -> Obj:
        ok: Obj = {"description": doc.summary}
        if body:
            ok["content"] = {doc.media.split(";")[0]: {"schema": dict(doc.body)}}
        if cached:
            ok["headers"] = {"Age": {"$ref": "#/components/headers/Age"},
                             "X-Cache": {"$ref": "#/components/headers/XCache"}}
        return {"200": ok, **self._errors((BAD_TARGET, *answers), body=body)}

    def _post(self, doc: Doc, key: str, extra: tuple[Answer, ...]) -> Obj:
        write = doc.write or Write({JSON: ANY})
        return {
            "tags": [doc.tag], "summary": write.summary or doc.summary, "operationId": f"post_{key}",
            "requestBody": {"required": False, "content": {
                media: {"schema": dict(schema)} for media, schema in write.body.items()}},
            "security": [{name: []} for name in write.security],
            "responses": {"200": {"description": "Done, with the gateway's reply (an empty value: "
                                                 "the current setting)",
                                  "content": {JSON: {"schema": {"type": "object"}}}},
                          **self._errors((BAD_TARGET, *write.answers, *extra), body=True)},
        }

    def _errors(self, answers: Iterable[Answer], *, body: bool) -> Obj:
        """Responses by status, as references; answers sharing a status are joined into one."""
        by_status: dict[int, list[Answer]] = {}
        for answer in answers:
            by_status.setdefault(answer.status, []).append(answer)
        return {str(status): {"$ref": "#/components/responses/" + self._response(group, body)}
                for status, group in by_status.items()}

    def _response(self, group: list[Answer], body: bool) -> str:
        first = group[0]
        joined = Answer(first.status, "; or: ".join(dict.fromkeys(a.description for a in group)),
                        first.body, any(a.retry_after for a in group))
        if len(group) > 1 and any(a.body != first.body for a in group):
            joined = Answer(first.status, joined.description, {"anyOf": [dict(a.body) for a in group]},
                            joined.retry_after)
        key = json.dumps([joined.status, joined.description, joined.body, joined.retry_after, body],
                         sort_keys=True)
        name = self._names.get(key)
        if name is None:
            name = f"{'' if body else 'Head'}{first.status}_{len(self.responses) + 1}"
            response: Obj = {"description": joined.description}
            if body:
                response["content"] = {JSON: {"schema": dict(joined.body)}}
            if joined.retry_after:
                response["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
            self._names[key] = name
            self.responses[name] = response
        return name


# ---- the routes ----------------------------------------------------------------------------

def get_openapi(app: App, call: Call) -> Response:
    body = document(app.routes, base_url=app.config.base_url, gateway_ids=[s.id for s in app.sites])
    return json_response(200, body, [("Cache-Control", "no-cache")])


def get_docs(app: App, call: Call) -> Response:
    page = app.web.get("/docs.html")
    if page is None:
        raise HTTPError(404, "Not Found")
    return page


ROUTES: tuple[Route, ...] = (
    Route("/openapi.json", get_openapi, root_only=True,
          doc=Doc("This OpenAPI 3.1 document, generated from the route table", ref("OpenAPI"),
                  tag="docs")),
    Route("/docs", get_docs, root_only=True,
          doc=Doc("The API documentation as a page (works offline)", {"type": "string"}, HTML,
                  tag="docs", answers=(Answer(404, "The page is missing from web/"),))),
)
