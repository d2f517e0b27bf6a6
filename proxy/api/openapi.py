"""GET /openapi.json, generated from the route table, and GET /docs, the page that shows it.

`document` is pure: the rows the app serves (each with its `Doc`, see
`proxy.api.apidoc`), the gateway ids and PROXY_BASE_URL go in, an OpenAPI 3.1 object
comes out. A GET row is documented with GET and HEAD, a POST row with POST, and
every row with OPTIONS (the CORS preflight), as `App` serves them. A row that is
not proxy-wide is documented twice: at the root and under
/api/gateways/{id}/, where an unknown gateway answers 404.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from proxy import __version__
from proxy.api.apidoc import (
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
from proxy.api.app import CORS, App, json_bytes
from proxy.api.routing import Call, Mount, Route
from proxy.errors import HTTPError
from proxy.httpd.types import Response

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
    ("live", "Live push: server-sent events and WebSocket, a message per new cache window"),
    ("status", "The proxy describing itself"),
    ("metrics", "Prometheus"),
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
        "description": "PW_OPENC2_TOKEN, as `Authorization: Bearer …` on OpenC2 commands (query "
                       "only; the control secret may also set). The 2018 connector's routes also "
                       "take either token in an apikey or oc2-api-key header.",
    },
}

BAD_TARGET = Answer(400, "Malformed request target: not ASCII or UTF-8, control characters, "
                         "more than 50 query fields")
UNKNOWN_GATEWAY = Answer(404, "No gateway with this id")
BODY_FRAMING = (Answer(411, "A chunked body: send it with Content-Length"),
                Answer(413, "Body larger than 4 KiB"))
DONE = Answer(200, "Done, with the gateway's reply (an empty value: the current setting)",
              {"type": "object"})
MOUNT_ID = Param("id", "A configured gateway id", {"type": "string", "pattern": "^[a-z0-9_-]{1,32}$"})
_DEFAULT_WILDCARD = Param("rest", "The rest of the path", NAME)
ANY_SEGMENT: Obj = {"type": "string", "pattern": "^[^\\u0000-\\u001f\\u007f]+$"}
_OPERATION_ID = re.compile(r"[^A-Za-z0-9]+")

HEADERS: Obj = {
    "RetryAfter": {"description": "Seconds to wait before asking again", "required": True,
                   "schema": {"type": "integer", "minimum": 1}},
    "RetryAfterMaybe": {"description": "Seconds to wait before asking again (when it is known)",
                        "schema": {"type": "integer", "minimum": 1}},
    "XRequestID": {"description": "The request's X-Request-ID (or the envelope's request_id), "
                                  "echoed", "schema": {"type": "string"}},
    "Age": {"description": "Seconds since the gateway data was fetched",
            "schema": {"type": "integer", "minimum": 0}},
    "XCache": {"description": "HIT, or STALE: the last good copy during an outage",
               "schema": {"type": "string", "enum": ["HIT", "STALE"]}},
    "Allow": {"description": "The methods this path takes", "required": True,
              "schema": {"type": "string"}},
}


# ---- the document --------------------------------------------------------------------------

def document(mounts: Iterable[Mount], *, base_url: str = "/", gateway_ids: Sequence[str] = ()) -> Obj:
    """The OpenAPI 3.1 object for these route groups; ids are the examples of a gateway
    mount's {id}."""
    build = _Builder()
    gateway = _param(MOUNT_ID, "path", examples=tuple(gateway_ids))
    for mount in mounts:
        for route in mount.routes:
            doc = route.doc or Doc("Not documented yet", tag="undocumented")
            template, wild = _template(route, doc)
            params, unknown = ([gateway], (UNKNOWN_GATEWAY,)) if mount.templated else ([], ())
            build.path(mount.prefix[:-1] + template, route, doc, params, wild, unknown)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Powerwall proxy",
            "version": __version__,
            "description": "A caching proxy for Tesla Powerwall gateways. Every route also answers "
                           "HEAD and OPTIONS (CORS preflight); errors are JSON "
                           '{"error": "…"}. Routes that are not proxy-wide are served for the '
                           "default gateway at the root and for each gateway under "
                           "/api/gateways/{id}/. Integers in request bodies are written as "
                           "integers (30, not 30.0).",
        },
        "servers": [{"url": base_url.rstrip("/") or "/",
                     "description": "This proxy (PROXY_BASE_URL)"}],
        "tags": [{"name": name, "description": text} for name, text in TAGS],
        "paths": build.paths,
        "components": {"schemas": {**SCHEMAS, **build.shapes}, "responses": build.responses,
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
    elif where == "query":
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
        self.shapes: Obj = {}
        self._names: dict[str, str] = {}
        self._ids: set[str] = set()

    def path(self, template: str, route: Route, doc: Doc, mount: list[Obj], wild: list[Obj],
             extra: tuple[Answer, ...]) -> None:
        """The path item of one row at one place: its operations, as the app serves them."""
        self.shapes.update(doc.shapes)
        item: Obj = {}
        if mount or wild:
            item["parameters"] = [*mount, *wild]
        key = self._key(template)
        if "GET" in route.methods:
            ok = Answer(200, doc.summary, dict(doc.body), media=doc.media)
            answers = (ok, BAD_TARGET, *doc.answers, *extra)
            get: Obj = {"tags": [doc.tag], "summary": doc.summary, "operationId": f"get_{key}",
                        "responses": self._answers(answers, body=True, cached=route.cached)}
            if doc.description:
                get["description"] = doc.description
            if doc.query:
                get["parameters"] = [_param(p, "query") for p in doc.query]
            item["get"] = get
            item["head"] = {**get, "summary": doc.summary + " (headers only)",
                            "operationId": f"head_{key}",
                            "responses": self._answers(answers, body=False, cached=route.cached)}
        if "POST" in route.methods:
            item["post"] = self._post(doc, key, extra)
        if doc.other_methods:
            item["description"] = doc.other_methods
        else:
            item["options"] = {
                "tags": [doc.tag], "summary": "CORS preflight", "operationId": f"options_{key}",
                **_preflight(wild),
                "responses": {"204": {"description": "The methods and headers allowed",
                                      "headers": {"Allow": {"$ref": "#/components/headers/Allow"}}},
                              **self._answers((BAD_TARGET, *extra), body=True)}}
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

    def _post(self, doc: Doc, key: str, extra: tuple[Answer, ...]) -> Obj:
        write = doc.write or Write({JSON: ANY})
        answers = write.answers
        if not any(a.status == 200 for a in answers):
            answers = (DONE, *answers)
        post: Obj = {
            "tags": [doc.tag], "summary": write.summary or doc.summary, "operationId": f"post_{key}",
            "requestBody": {"required": write.required, "content": {
                media: {"schema": dict(schema)} for media, schema in write.body.items()}},
            "security": [{name: []} for name in write.security],
            "responses": self._answers((*answers, BAD_TARGET, *BODY_FRAMING, *extra), body=True),
        }
        if write.description:
            post["description"] = write.description
        if write.headers:
            post["parameters"] = [_param(p, "header") for p in write.headers]
        return post

    def _answers(self, answers: Iterable[Answer], *, body: bool, cached: bool = False) -> Obj:
        """Responses by status. A 200 is written out (with Age and X-Cache on a cached route);
        the others are references to named responses. Answers sharing a status are one
        response: descriptions joined, bodies by media type (several: any of them)."""
        by_status: dict[int, list[Answer]] = {}
        for answer in answers:
            by_status.setdefault(answer.status, []).append(answer)
        out: Obj = {}
        for status, group in by_status.items():
            response = _response(group, body)
            if status == 200:
                if cached:
                    response.setdefault("headers", {}).update({
                        "Age": {"$ref": "#/components/headers/Age"},
                        "X-Cache": {"$ref": "#/components/headers/XCache"}})
                out["200"] = response
                continue
            name_key = json.dumps(response, sort_keys=True)
            name = self._names.get(name_key)
            if name is None:
                name = f"{'' if body else 'Head'}{status}_{len(self.responses) + 1}"
                self._names[name_key] = name
                self.responses[name] = response
            out[str(status)] = {"$ref": "#/components/responses/" + name}
        return out


def _response(group: list[Answer], body: bool) -> Obj:
    response: Obj = {"description": "; or: ".join(dict.fromkeys(a.description for a in group))}
    content: Obj = {}
    for answer in group:
        if answer.body is not None and body:
            content.setdefault(answer.media.split(";")[0], []).append(dict(answer.body))
    if content:
        response["content"] = {media: {"schema": bodies[0] if len(bodies) == 1 else
                                        {"anyOf": list({json.dumps(b, sort_keys=True): b
                                                        for b in bodies}.values())}}
                               for media, bodies in content.items()}
    headers: Obj = {}
    if any(a.retry_after for a in group):
        headers["Retry-After"] = {"$ref": "#/components/headers/RetryAfter"}
    elif any(a.retry_sometimes for a in group):
        headers["Retry-After"] = {"$ref": "#/components/headers/RetryAfterMaybe"}
    for answer in group:
        for name in answer.echo:
            headers[name] = {"$ref": f"#/components/headers/{name.replace('-', '')}"}
    if headers:
        response["headers"] = headers
    return response


# ---- the routes ----------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _encoded(app: App) -> bytes:
    """The document of this app: its routes and gateways never change, so built once
    (about 25 ms and 330 KB a time) rather than per request."""
    return json_bytes(document(app.router.mounts, base_url=app.config.base_url,
                               gateway_ids=[s.id for s in app.sites]))


def get_openapi(app: App, call: Call) -> Response:
    return Response(200, [("Content-Type", "application/json"), CORS, ("Cache-Control", "no-cache")],
                    _encoded(app))


def get_docs(app: App, call: Call) -> Response:
    page = app.web.get("/docs.html")
    if page is None:
        raise HTTPError(404, "Not Found")
    return page


ROUTES: tuple[Route, ...] = (
    Route("/openapi.json", get_openapi,
          doc=Doc("This OpenAPI 3.1 document, generated from the route table", ref("OpenAPI"),
                  tag="docs")),
    Route("/docs", get_docs,
          doc=Doc("The API documentation as a page (works offline)", {"type": "string"}, HTML,
                  tag="docs", answers=(Answer(404, "The page is missing from web/"),))),
)
