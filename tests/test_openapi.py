"""/openapi.json and /docs: a valid OpenAPI 3.1 document that lists every route of the table,
and a live `--simulate` proxy that schemathesis finds in agreement with it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from proxy.api import openc2, reference
from proxy.api.apidoc import Doc
from proxy.api.mounts import GATEWAY, mounts
from proxy.api.openapi import document
from proxy.api.routing import Mount, Route, both
from proxy.config import load_config
from proxy.main import start
from tests.conftest import CONNECT_WAIT, DEFAULT_ENV, Factory, ProxyHandle

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cret-token"
OPENC2_TOKEN = "openc2-query-token"
LIVE_ENV = {"PW_CONTROL_SECRET": SECRET, "PW_OPENC2_TOKEN": OPENC2_TOKEN,
            "PW_TRUSTED_PROXIES": "127.0.0.1"}
MAX_EXAMPLES = "3"  # per operation and phase: ~600 operations, well under a minute


def gaps(mounts: Iterable[Mount], doc: dict[str, Any]) -> list[str]:
    """What the document misses of the route groups: each row needs a Doc, its path (a prefix
    row as /x/{name}) in every mount that serves it, and every method it serves."""
    problems: list[str] = []
    checked: set[int] = set()
    for mount in mounts:
        for route in mount.routes:
            if id(route) not in checked:
                checked.add(id(route))
                problems += _row_gaps(route)
            if route.doc is not None:
                problems += _place_gaps(mount.prefix[:-1], route, doc)
    return problems


def _row_gaps(route: Route) -> list[str]:
    if route.doc is None:
        return [f"{route.path}: no Doc in its row"]
    problems = []
    if route.path.endswith("*") and route.doc.wildcard is None:
        problems.append(f"{route.path}: a prefix row needs a wildcard Param")
    if "POST" in route.methods and route.doc.write is None:
        problems.append(f"{route.path}: serves POST without a Write")
    return problems


def _place_gaps(place: str, route: Route, doc: dict[str, Any]) -> list[str]:
    assert route.doc is not None
    if route.path.endswith("*"):  # /pw/* is /pw/{name}, /tedapi* is /tedapi/{name}
        template = re.escape(route.path[:-1].rstrip("/") + "/{") + "[^/{}]+}"
    else:
        template = re.escape(route.path)
    found = [p for p in doc["paths"] if re.fullmatch(re.escape(place) + template, p)]
    if len(found) != 1:
        return [f"{place}{route.path}: not in the document"]
    item = doc["paths"][found[0]]
    served = {m.lower() for m in route.methods if m != "OPTIONS"}
    if not route.doc.other_methods:
        served.add("options")  # the CORS preflight
    if "GET" in route.methods:
        served.add("head")
    missing = served - set(item)
    return [f"{place}{route.path}: methods {sorted(missing)} not documented"] if missing else []


def _operations(doc: dict[str, Any]) -> int:
    return sum(len([m for m in item if m not in ("parameters", "description")])
               for item in doc["paths"].values())


# ---- the document, without a network ------------------------------------------------------

ALL_ROUTES = mounts()  # every group, as proxy.main serves them


def test_every_route_of_the_table_is_documented() -> None:
    doc = document(ALL_ROUTES, gateway_ids=["default"])
    assert gaps(ALL_ROUTES, doc) == []
    validate(doc)
    assert {"/aggregates", "/csv", "/api/aggregate", "/api/gateways", "/api/gateways/{id}",
            "/control/reserve", "/pw/{name}", "/openapi.json", "/docs",
            "/api/gateways/{id}/aggregates", "/api/gateways/{id}/control/reserve"} <= set(doc["paths"])
    assert "/api/gateways/{id}/api/aggregate" not in doc["paths"]  # proxy-wide: not mounted


def test_a_route_without_its_doc_is_caught() -> None:
    def handler(app: Any, call: Any) -> Any:
        raise AssertionError("never called")

    rows = both((*reference.ROUTES, Route("/brand-new", handler), Route("/half/*", handler, doc=Doc("half")),
                 Route("/writes", handler, methods=("GET", "POST"), doc=Doc("reads"))), GATEWAY)
    doc = document(rows)
    assert gaps(rows, doc) == ["/brand-new: no Doc in its row",
                               "/half/*: a prefix row needs a wildcard Param",
                               "/writes: serves POST without a Write"]
    del doc["paths"]["/api/gateways/{id}/csv"]
    del doc["paths"]["/soe"]["head"]
    assert gaps(both(reference.ROUTES, GATEWAY), doc) == ["/soe: methods ['head'] not documented",
                                 "/api/gateways/{id}/csv: not in the document"]


def test_shapes_statuses_and_security() -> None:
    doc = document(ALL_ROUTES, base_url="/pw-proxy/", gateway_ids=["home", "cabin"])
    paths = doc["paths"]
    assert doc["openapi"] == "3.1.0" and doc["servers"] == [
        {"url": "/pw-proxy", "description": "This proxy (PROXY_BASE_URL)"}]
    schemes = doc["components"]["securitySchemes"]
    assert schemes["controlSecret"]["scheme"] == "bearer" and "PW_CONTROL_SECRET" in \
        schemes["controlSecret"]["description"]
    assert "PW_OPENC2_TOKEN" in schemes["openc2Token"]["description"]

    def response(path: str, method: str, status: str) -> dict[str, Any]:
        answer = paths[path][method]["responses"][status]
        if "$ref" in answer:
            answer = doc["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
        return dict(answer)

    assert paths["/aggregates"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] \
        == {"anyOf": [{"$ref": "#/components/schemas/Aggregates"}, {"type": "null"}]}
    assert response("/aggregates", "get", "503")["headers"]["Retry-After"]
    assert response("/aggregates", "get", "503")["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/Error"}
    assert "content" not in paths["/aggregates"]["head"]["responses"]["200"]
    assert paths["/csv"]["get"]["parameters"][0]["name"] == "headers"
    assert "text/plain" in paths["/csv"]["get"]["responses"]["200"]["content"]
    health = response("/health", "get", "503")
    assert health["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Health"}
    post = paths["/control/reserve"]["post"]
    assert post["security"] == [{"controlSecret": []}]
    assert set(post["requestBody"]["content"]) == {"application/x-www-form-urlencoded", "application/json"}
    assert {"200", "400", "401", "403", "413", "415", "429", "502", "503"} <= set(post["responses"])
    assert response("/control/reserve", "post", "429")["headers"]["Retry-After"]
    assert "security" not in paths["/control/reserve"]["get"]  # reads need no token
    mount = paths["/api/gateways/{id}/soe"]["parameters"][0]
    assert mount["in"] == "path" and [e["value"] for e in mount["examples"].values()] == ["home", "cabin"]
    assert "404" in paths["/api/gateways/{id}/soe"]["get"]["responses"]
    assert "404" not in paths["/stats"]["get"]["responses"]
    assert set(paths["/api/aggregate"]) == {"get", "head", "options"}
    assert paths["/api/gateways"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] \
        == {"$ref": "#/components/schemas/Gateways"}
    for path in openc2.PATHS:  # POST only: any other method answers 400, so no preflight either
        assert set(paths[path]) == {"post", "description"}, path
        post = paths[path]["post"]
        assert post["security"] == [{"openc2Token": []}, {"controlSecret": []}]
        assert post["requestBody"]["required"] is True
        assert {"200", "400", "401", "403", "404", "501", "503"} <= set(post["responses"])
    assert set(paths["/openc2"]["post"]["responses"]["200"]["content"]) == {
        "application/openc2+json", "application/openc2-rsp+json"}
    assert {"OpenC2Command", "OpenC2Envelope", "OpenC2Response"} <= set(doc["components"]["schemas"])
    ids = [op["operationId"] for item in paths.values() for m, op in item.items()
           if m not in ("parameters", "description")]
    assert len(ids) == len(set(ids)) == _operations(doc)


# ---- the live proxy ---------------------------------------------------------------------------

def test_served_document_is_valid_and_root_only(proxy: ProxyHandle) -> None:
    reply = proxy.get("/openapi.json")
    assert reply.status == 200 and reply.header("Content-Type") == "application/json"
    doc = reply.json()
    validate(doc)
    assert gaps(proxy.app.router.mounts, doc) == []
    assert doc == json.loads(json.dumps(document(proxy.app.router.mounts, gateway_ids=["default"])))
    assert proxy.request("HEAD", "/openapi.json").status == 200
    assert proxy.request("OPTIONS", "/docs").status == 204
    for path in ("/api/gateways/default/openapi.json", "/api/gateways/default/docs"):
        reply = proxy.get(path)
        assert reply.status == 404 and reply.json() == {"error": "Not Found"}
    assert proxy.request("POST", "/openapi.json", body=b"").status == 405
    page = proxy.get("/docs")
    assert page.status == 200 and page.header("Content-Type", ).startswith("text/html")
    assert b'src="docs.js"' in page.body and b"http" not in page.body.split(b"<body")[1]


def test_base_url_reaches_document_and_page(proxy_factory: Factory) -> None:
    proxy = proxy_factory({"PROXY_BASE_URL": "/pw-proxy/"})
    doc = proxy.get("/pw-proxy/openapi.json").json()
    assert doc["servers"][0]["url"] == "/pw-proxy"
    page = proxy.get("/pw-proxy/docs")
    assert page.status == 200 and b'<meta name="pw-base-url" content="/pw-proxy/">' in page.body
    assert proxy.get("/pw-proxy/docs.js").status == 200


@pytest.fixture
def fleet_of_two(tmp_path: Path) -> Iterator[ProxyHandle]:
    env = {**DEFAULT_ENV, "PW_AUTH_PATH": str(tmp_path), **LIVE_ENV}
    handle = ProxyHandle(start(load_config(env, simulate=True), simulate=2, wait_connected=CONNECT_WAIT))
    yield handle
    handle.stop()


def test_mount_examples_are_the_configured_gateways(fleet_of_two: ProxyHandle) -> None:
    doc = fleet_of_two.get("/openapi.json").json()
    mount = doc["paths"]["/api/gateways/{id}/aggregates"]["parameters"][0]
    assert [e["value"] for e in mount["examples"].values()] == ["sim1", "sim2"]


# ---- schemathesis against the live proxy -----------------------------------------------------

def schemathesis(url: str, *options: str) -> subprocess.CompletedProcess[str]:
    """One bounded schemathesis run (fixed seed: the same cases every time)."""
    env = {**os.environ, "PW_TEST_CONTROL_SECRET": SECRET, "PW_TEST_OPENC2_TOKEN": OPENC2_TOKEN,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "schemathesis.cli", "--no-color",
               "--config-file", str(ROOT / "tests" / "schemathesis.toml"), "run", url,
               "--checks", "all", "--max-examples", MAX_EXAMPLES, "--seed", "1", *options]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _report(run: subprocess.CompletedProcess[str]) -> str:
    out = run.stdout + run.stderr
    start_at = out.find("FAILURES")
    return out[start_at - 40:][:6000] if start_at >= 0 else out[-6000:]


@pytest.mark.slow
def test_schemathesis_finds_nothing(proxy_factory: Factory) -> None:
    proxy = proxy_factory(LIVE_ENV)
    run = schemathesis(proxy.url + "openapi.json")
    assert run.returncode == 0, _report(run)
    assert " passed" in run.stdout and "Operations:" in run.stdout
    # It really ran: every operation was tried (but GET /openapi.json, the document it
    # loaded, which it leaves out, and the live push streams, which schemathesis.toml turns
    # off: tests/test_push.py drives those), writes included.
    doc = proxy.get("/openapi.json").json()
    total = _operations(doc) - 1
    live = _operations({"paths": {p: i for p, i in doc["paths"].items()
                                  if p == "/events" or p.startswith("/ws/")}})
    assert live == 9
    assert f"{total - live} selected / {total} total" in run.stdout
    assert proxy.get("/stats").json()["posts"] > 0


@pytest.mark.slow
def test_schemathesis_on_several_gateways(fleet_of_two: ProxyHandle) -> None:
    """The proxy-wide routes, where several gateways make a difference."""
    run = schemathesis(fleet_of_two.url + "openapi.json", "--include-tag", "aggregate",
                       "--include-tag", "gateways")
    assert run.returncode == 0, _report(run)
    assert "selected /" in run.stdout and " passed" in run.stdout
