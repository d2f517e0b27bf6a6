"""OpenC2 answers: an `Outcome` (status, results, text) framed as the request was.

The status is the HTTP status, and only the Language Spec's codes go on the wire (3.3.2.1);
a typed error (`proxy.errors`) becomes the nearest of them. The v1.1 envelope, the bare v1.0
Response and the 2018 connector's `id_ref` body each answer their own kind of request;
`response_requested` none and ack are honoured.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from typing import Any

from proxy.api.openc2.grammar import ENVELOPE_TYPE, RESPONSE_TYPE, Exchange, Flavor
from proxy.errors import GatewayError, HTTPError, ProxyError
from proxy.httpd.types import Response

STATUSES = frozenset({102, 200, 400, 401, 403, 404, 500, 501, 503})  # Language Spec 3.3.2.1


@dataclass(frozen=True, slots=True)
class Outcome:
    """An OpenC2 Response before it is framed."""

    status: int
    results: dict[str, Any] | None = None
    text: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    interim: int | None = None  # ack: 102 ahead of the final answer
    silent: bool = False  # response_requested none: no Response in the body



def outcome_of(exc: ProxyError) -> Outcome:
    """A typed error as an OpenC2 status: only the Language Spec's codes go on the wire."""
    status = exc.status
    headers: list[tuple[str, str]] = []
    message = exc.message
    if isinstance(exc, GatewayError):
        status = 503
        headers.append(("Retry-After", str(max(1, math.ceil(exc.retry_after)))))
    elif isinstance(exc, HTTPError):
        headers.extend(exc.headers)
    if status == 405:
        status, message, headers = 400, "OpenC2 commands are sent with POST", [("Allow", "POST")]
    elif status not in STATUSES:
        status = 503 if status in (429, 502, 504) else 500 if status >= 500 else 400
    return Outcome(status, text=message, headers=tuple(headers))


def render(ex: Exchange, outcome: Outcome) -> Response:
    headers = [("Cache-Control", "no-cache"), *outcome.headers]
    echo = ex.header_id or ex.request_id
    rid = ex.request_id or ex.header_id  # transfer 1.1 3.3.3: from X-Request-ID when the body had none
    if echo is not None:
        headers.append(("X-Request-ID", echo))
    if outcome.silent and outcome.status == 200:
        return Response(200, headers, b"", interim=outcome.interim)
    response: dict[str, Any] = {"status": outcome.status}
    if outcome.text:
        response["status_text"] = outcome.text
    if outcome.results is not None:
        response["results"] = outcome.results
    if ex.flavor is Flavor.ENVELOPE:
        head: dict[str, Any] = {"created": int(time.time() * 1000)}
        if rid is not None:
            head["request_id"] = rid
        if ex.sender:
            head["to"] = [ex.sender]
        body: Any = {"headers": head, "body": {"openc2": {"response": response}}}
        kind = ENVELOPE_TYPE
    elif ex.flavor is Flavor.SEED:
        body = {"id_ref": ex.seed_id, **response}
        body.setdefault("results", "failed" if outcome.status >= 400 else None)
        kind = "application/json"
    else:
        body, kind = response, RESPONSE_TYPE
    data = json.dumps(body, allow_nan=False).encode()
    return Response(outcome.status, [("Content-Type", kind), *headers], data, interim=outcome.interim)


def respond_as_asked(outcome: Outcome, args: dict[str, Any]) -> Outcome:
    """response_requested: ack -> 102 first; none -> no Response in the body; else the result."""
    wanted = args.get("response_requested", "complete")
    if wanted == "ack":
        return dataclasses.replace(outcome, interim=102)
    if wanted == "none":
        return dataclasses.replace(outcome, silent=True)
    return outcome
