"""What /openapi.json says about the OpenC2 group: its request and response shapes and the
`Doc` of each path, in the framing of that path.

Request shapes follow `grammar.parse`, `grammar.unwrap` and `profile.seed_command`: a body
that fits one answers 200, or 403/404/501/503 for reasons beyond its shape, never 400. Two
legal choices are left out of the request shapes and only described: response_requested
"none" (a 200 without a body) and "ack" (a 102 Processing first).
"""

from __future__ import annotations

from typing import Any

from proxy.api import control
from proxy.api.openc2.grammar import ACTIONS, ENVELOPE_TYPE, RESPONSE_TYPE, TARGETS
from proxy.api.openc2.profile import (
    FEATURES,
    MAX_PROPERTIES,
    NSID,
    READS_PER_MINUTE,
    SETTINGS,
    WRITES_PER_MINUTE,
    setting_target,
)

_SCHEMA_REF = "#/components/schemas/"
_UINT: dict[str, Any] = {"type": "integer", "minimum": 0}
_TARGET_NAME: dict[str, Any] = {"anyOf": [{"enum": list(TARGETS)},
                                          {"type": "string", "pattern": "^[a-z0-9-]{1,16}:[a-z0-9_]{1,32}$"}]}
_ASSET: dict[str, Any] = {"type": "object", "properties": {"asset_id": {
    "type": ["string", "null"], "description": "A gateway id or DIN; none: the default gateway"}}}
_COMMON: dict[str, Any] = {
    "args": {"type": "object", "minProperties": 1, "properties": {
        "response_requested": {"enum": ["status", "complete"],
                               "description": "also none (200 without a body) or ack (102 first)"},
        "start_time": _UINT, "stop_time": _UINT, "duration": _UINT},
        "description": "Anything but response_requested: 501 Option not supported"},
    "actuator": {"type": "object", "minProperties": 1, "maxProperties": 1,
                 "properties": {NSID: _ASSET},
                 "description": f"{NSID}: which gateway; another profile: 501"},
    "command_id": {"type": "string", "pattern": "^\\S{1,36}$"},
}


def _command(action: Any, target: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"type": "object", "required": ["action", "target"], "additionalProperties": False,
            "properties": {"action": action, "target": {
                "type": "object", "minProperties": 1, "maxProperties": 1, **target},
                **_COMMON, **fields}}


def _set(setting: str, value: dict[str, Any]) -> dict[str, Any]:
    return _command({"const": "set"}, {"required": [setting], "properties": {setting: value}})


def _value_schemas() -> dict[str, dict[str, Any]]:
    """The value each action OpenC2 may set takes, by action name (a new one needs its row)."""
    from proxy.api.apidoc import LEVEL, MODE

    return {"reserve": dict(LEVEL), "mode": dict(MODE),
            "grid_charging": dict(control.GRID_CHARGING_VALUE),
            "grid_export": dict(control.GRID_EXPORT_VALUE)}


def _command_shape() -> dict[str, Any]:
    values = _value_schemas()
    settings = [setting_target(s) for s in SETTINGS]
    return {"description": "An OpenC2 1.0 Command: what the x-esm profile does (query features "
                           "or properties, set a setting), or any other action-target pair (501)",
            "anyOf": [
        _command({"const": "query"}, {"required": ["features"], "properties": {"features": {
            "type": "array", "maxItems": 10, "items": {"enum": list(FEATURES)}}}},
            args={"type": "object", "required": ["response_requested"], "additionalProperties": False,
                  "properties": {"response_requested": {"const": "complete"}}},
            actuator={"type": "object", "minProperties": 1, "maxProperties": 1,
                      "properties": {NSID: {"type": "object"}}}),
        _command({"const": "query"}, {"required": ["properties"], "properties": {"properties": {
            "type": "array", "minItems": 1, "maxItems": MAX_PROPERTIES, "items": {"type": "string"},
            "examples": [["battery_percentage", "site_power", "grid_status"]]}}}),
        *(_set(setting_target(action), values[action.name]) for action in SETTINGS),
        _command({"enum": [a for a in ACTIONS if a not in ("query", "set")]},
                 {"propertyNames": _TARGET_NAME}, actuator={"type": "object", "minProperties": 1,
                                                            "maxProperties": 1}),
        _command({"enum": ["query", "set"]}, {"propertyNames": {
            "allOf": [_TARGET_NAME, {"not": {"enum": ["features", "properties", *settings]}}]}}),
    ]}


_RESPONSE: dict[str, Any] = {"type": "object", "required": ["status"], "properties": {
    "status": {"type": "integer"}, "status_text": {"type": "string"}, "results": {}}}


def _transfer_shapes() -> dict[str, Any]:
    """The HTTPS transfer 1.1 envelopes around a Command and a Response, and the Response."""
    return {
        "OpenC2Envelope": {"type": "object", "required": ["body"], "additionalProperties": False,
                           "description": "The HTTPS transfer 1.1 message around a Command",
                           "properties": {
                               "headers": {"type": "object", "properties": {
                                   "request_id": {"type": "string", "pattern": "^[\\x20-\\x7e]{1,128}$"}}},
                               "body": {"type": "object", "required": ["openc2"], "properties": {
                                   "openc2": {"type": "object", "required": ["request"],
                                              "additionalProperties": False, "properties": {
                                                  "request": {"$ref": _SCHEMA_REF + "OpenC2Command"}}}}},
                               "signature": {}}},
        "OpenC2Response": {**_RESPONSE, "description": "An OpenC2 1.0 Response; status is the "
                           "HTTP status"},
        "OpenC2ResponseEnvelope": {"type": "object", "required": ["headers", "body"], "properties": {
            "headers": {"type": "object", "required": ["created"], "properties": {
                "request_id": {"type": "string"}, "created": {"type": "integer"},
                "to": {"type": "array", "items": {"type": "string"}}}},
            "body": {"type": "object", "required": ["openc2"], "properties": {"openc2": {
                "type": "object", "required": ["response"], "properties": {
                    "response": {"$ref": _SCHEMA_REF + "OpenC2Response"}}}}}}},
    }


def _seed_shapes() -> dict[str, Any]:
    """The 2018 connector's command and answer."""
    return {
        "OpenC2SeedCommand": {"description": "The 2018 connector's grammar", "anyOf": [
            {"type": "object", "required": ["action", "target"], "properties": {
                "id": {}, "action": {"enum": ["query", "Query", "QUERY"]},
                "target": {"oneOf": [
                    {"type": "object", "required": ["openc2"], "maxProperties": 1},
                    {"type": "object", "required": ["property"], "maxProperties": 1, "properties": {
                        "property": {"type": "object", "required": ["name"],
                                     "properties": {"name": {"type": "string"}}}}}]},
                "actuator": {"type": "object", "minProperties": 1, "maxProperties": 1,
                             "additionalProperties": {"anyOf": [_ASSET, {"not": {"type": "object"}}]}}}},
            {"type": "object", "required": ["action", "target"], "properties": {
                "id": {}, "action": {"enum": [a for a in ACTIONS if a != "query"]},
                "target": {"type": "object", "minProperties": 1, "maxProperties": 1}}}]},
        "OpenC2SeedResponse": {**_RESPONSE, "required": ["id_ref", "status", "results"],
                               "properties": {**_RESPONSE["properties"], "id_ref": {}}},
    }


def _shapes() -> dict[str, Any]:
    return {"OpenC2Command": _command_shape(), **_transfer_shapes(), **_seed_shapes()}


Replies = list[tuple[str, dict[str, Any]]]


def _framing(seed: bool) -> tuple[Replies, dict[str, Any]]:
    """(the answers' media types and shapes, the request body by media type) of a path."""
    if seed:
        return ([("application/json", {"$ref": _SCHEMA_REF + "OpenC2SeedResponse"})],
                {"application/json": {"$ref": _SCHEMA_REF + "OpenC2SeedCommand"}})
    command = {"anyOf": [{"$ref": _SCHEMA_REF + "OpenC2Envelope"},
                         {"$ref": _SCHEMA_REF + "OpenC2Command"}]}
    replies: Replies = [(ENVELOPE_TYPE, {"$ref": _SCHEMA_REF + "OpenC2ResponseEnvelope"}),
                        (RESPONSE_TYPE, {"$ref": _SCHEMA_REF + "OpenC2Response"})]  # as asked
    return replies, {media: command for media in ("application/openc2+json",
                                                  "application/openc2-cmd+json", "application/json")}


def _answers(replies: Replies) -> tuple[Any, ...]:
    from proxy.api.apidoc import Answer

    def framed(status: int, text: str, **more: Any) -> tuple[Answer, ...]:
        return tuple(Answer(status, text, schema, media=media, echo=("X-Request-ID",), **more)
                     for media, schema in replies)

    return (
        *framed(200, "The Response: results of the query, or the setting written"),
        Answer(102, "Processing: the command asked for an ack (the result follows)", None),
        *framed(400, "Not an OpenC2 command (its status_text says why)"),
        *framed(401, "Missing or wrong bearer token"),
        *framed(403, "set without the control secret, or control disabled"),
        *framed(404, "Unknown property or asset_id"),
        Answer(404, "OpenC2 is off (PW_OPENC2_TOKEN is not set)", media="application/json"),
        *framed(500, "Internal error"),
        *framed(501, "Command, target or option not supported"),
        *framed(503, "Gateway unavailable, gateway refused the write, more than "
                     f"{READS_PER_MINUTE} queries or {WRITES_PER_MINUTE} sets a minute, or too "
                     "many wrong tokens", retry_sometimes=True),
    )


def doc_for(path: str) -> Any:
    """The Doc of one OpenC2 path: what it takes and answers, in its own framing."""
    from proxy.api.apidoc import Doc, Param, Write

    seed = path not in ("/.well-known/openc2", "/openc2")
    replies, body = _framing(seed)
    write = Write(body, security=("openc2Token", "controlSecret"), summary="Run an OpenC2 command",
                  required=True,
                  description="Answered from the window cache; set writes as /control/* does. "
                              f"At most {READS_PER_MINUTE} queries and {WRITES_PER_MINUTE} sets "
                              "a minute in all, each on its own budget."
                              + (" The token may also come in an apikey or oc2-api-key header."
                                 if seed else ""),
                  headers=(Param("X-Request-ID", "Echoed in the answer",
                                 {"type": "string", "pattern": "^[\\x20-\\x7e]{1,128}$"}),),
                  answers=_answers(replies))
    return Doc("OpenC2 Consumer (x-esm profile)" if not seed else "OpenC2, the 2018 connector's grammar",
               tag="openc2", write=write, shapes=_shapes(),
               other_methods="Any other method, OPTIONS included (there is no CORS preflight here), "
                             "answers 400 with Allow: POST in the OpenC2 framing of this path; "
                             "404 while OpenC2 is off.")
