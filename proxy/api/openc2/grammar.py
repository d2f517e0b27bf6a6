"""OpenC2 grammar: what a message is, as the Language Spec 1.0 and HTTPS transfer specs say.

Pure functions of the request: the media type and version, the JSON body (I-JSON: UTF-8,
unique member names, no NaN), the v1.1 envelope or the bare v1.0 Command, and the Command's
fields checked against the Language Spec's types. Anything that is not a Command is 400;
what a Command asks for is the profile's business (`proxy.api.openc2.profile`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from proxy.errors import HTTPError
from proxy.httpd.types import Request
from proxy.payloads import strict_json

LANGUAGE_VERSION = "1.0"
ENVELOPE_TYPE = "application/openc2+json;version=1.0"  # HTTPS transfer 1.1, both directions
COMMAND_TYPE = "application/openc2-cmd+json;version=1.0"  # HTTPS transfer 1.0, a Command
RESPONSE_TYPE = "application/openc2-rsp+json;version=1.0"  # HTTPS transfer 1.0, a Response
ACCEPTED_MEDIA = ("application/openc2+json", "application/openc2-cmd+json", "application/json")
MAX_ID = 128  # request ids: printable ASCII, echoed in a header
ACTIONS = ("scan", "locate", "query", "deny", "contain", "allow", "start", "stop", "restart",
           "cancel", "set", "update", "redirect", "create", "delete", "detonate", "restore",
           "copy", "investigate", "remediate")  # Language Spec 3.3.1.1: fixed, never extended
TARGETS = ("artifact", "command", "device", "domain_name", "email_addr", "features", "file",
           "idn_domain_name", "idn_email_addr", "ipv4_net", "ipv6_net", "ipv4_connection",
           "ipv6_connection", "iri", "mac_addr", "process", "properties", "uri")  # 3.3.1.2
RESPONSE_TYPES = ("none", "ack", "status", "complete")
COMMAND_NOT_SUPPORTED = "Command not supported"
TARGET_NOT_SUPPORTED = "Target type not supported"
OPTION_NOT_SUPPORTED = "Option not supported"
ID = re.compile(rf"[\x20-\x7e]{{1,{MAX_ID}}}")
_COMMAND_ID = re.compile(r"\S{1,36}")


def section(value: Any, *keys: str) -> Any:
    """value[keys[0]][keys[1]]…, or None where a level is missing or not an object."""
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


class Flavor(Enum):
    """How a message is framed: as it came in, so it is answered."""

    ENVELOPE = "envelope"  # transfer 1.1: {"headers": …, "body": {"openc2": {"request": …}}}
    BARE = "bare"  # transfer 1.0: the Command itself
    SEED = "seed"  # the 2018 connector: {"id": …, "action": …} answered {"id_ref": …}


@dataclass
class Exchange:
    """What the answer must echo, learnt while the request is read."""

    flavor: Flavor
    header_id: str | None = None  # X-Request-ID
    request_id: str | None = None  # headers.request_id, else X-Request-ID (transfer 1.1 3.3.3)
    sender: str | None = None  # headers.from: answered in headers.to
    seed_id: Any = None


# ---- reading a request -----------------------------------------------------------------

def decode(request: Request) -> dict[str, Any]:
    """The body as a JSON object: UTF-8, no repeated keys, no NaN; else 400."""
    kind = request.headers.get("Content-Type", "")
    media, _, params = kind.partition(";")
    if kind and media.strip().lower() not in ACCEPTED_MEDIA:
        raise HTTPError(400, f"Content-Type must be {ENVELOPE_TYPE} or {COMMAND_TYPE}")
    version = re.search(r"version\s*=\s*\"?([^\";\s]+)", params)
    if version and version.group(1) != LANGUAGE_VERSION:
        raise HTTPError(400, f"only OpenC2 version {LANGUAGE_VERSION} is understood")
    try:
        data = strict_json(request.body)
    except (UnicodeError, ValueError, RecursionError):
        raise HTTPError(400, "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise HTTPError(400, "body must be a JSON object")
    return data


def request_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not ID.fullmatch(value):
        raise HTTPError(400, f"{where} must be 1-{MAX_ID} printable ASCII characters")
    return value


def unwrap(message: dict[str, Any], ex: Exchange) -> dict[str, Any]:
    """The Command out of a v1.1 envelope, or the message itself when it is a bare Command."""
    if "action" in message or not ({"headers", "body"} & message.keys()):
        ex.flavor, ex.request_id = Flavor.BARE, ex.header_id
        return message
    ex.flavor = Flavor.ENVELOPE
    extra = set(message) - {"headers", "body", "signature"}
    if extra:
        raise HTTPError(400, f"unknown message field: {sorted(extra)[0]}")
    headers = message.get("headers", {})
    if not isinstance(headers, dict):
        raise HTTPError(400, "headers must be an object")
    if "request_id" in headers:
        ex.request_id = request_id(headers["request_id"], "headers.request_id")
    else:
        ex.request_id = ex.header_id  # transfer 1.1 3.3.3: filled from X-Request-ID
    sender = headers.get("from")
    ex.sender = sender if isinstance(sender, str) else None
    content = section(message.get("body"), "openc2")
    if not isinstance(content, dict) or len(content) != 1:
        raise HTTPError(400, "body.openc2 must hold one request")
    command = content.get("request")
    if not isinstance(command, dict):
        raise HTTPError(400, "body.openc2 must hold a request (this is a Consumer)")
    return command


@dataclass(frozen=True, slots=True)
class Command:
    action: str
    target: str
    value: Any
    args: dict[str, Any]
    actuator: dict[str, Any] | None
    command_id: str | None


def parse(command: dict[str, Any], ex: Exchange, nsid: str) -> Command:
    """A v1.0 Command, checked against the Language Spec's types (400 when it is not one);
    an actuator of another profile than `nsid` is 501."""
    action = command.get("action")
    if action is None:
        raise HTTPError(400, "action is required")
    if action not in ACTIONS:
        raise HTTPError(400, f"unknown action: {str(action)[:40]}")
    target = command.get("target")
    if target is None:
        raise HTTPError(400, "target is required")
    if not isinstance(target, dict) or len(target) != 1:
        raise HTTPError(400, "target must be an object with exactly one key")
    (name, value), = target.items()
    if name not in TARGETS and not re.fullmatch(r"[a-z0-9-]{1,16}:[a-z0-9_]{1,32}", name):
        raise HTTPError(400, f"unknown target: {name[:40]}")
    extra = set(command) - {"action", "target", "args", "actuator", "command_id"}
    if extra:
        raise HTTPError(400, f"unknown command field: {sorted(extra)[0][:40]}")
    return Command(action, name, value, _args(command.get("args")), _actuator(command.get("actuator"), nsid),
                   _command_id(command.get("command_id"), ex))


def _args(args: Any) -> dict[str, Any]:
    if args is None:
        return {}
    if not isinstance(args, dict) or not args:
        raise HTTPError(400, "args must be an object with at least one argument")
    wanted = args.get("response_requested", "complete")
    if wanted not in RESPONSE_TYPES:
        raise HTTPError(400, f"response_requested must be one of {', '.join(RESPONSE_TYPES)}")
    for key in ("start_time", "stop_time", "duration"):
        if key in args and (isinstance(args[key], bool) or not isinstance(args[key], int) or args[key] < 0):
            raise HTTPError(400, f"{key} must be a whole number of milliseconds")
    return args


def _actuator(actuator: Any, nsid_wanted: str) -> dict[str, Any] | None:
    if actuator is None:
        return None
    if not isinstance(actuator, dict) or len(actuator) != 1:
        raise HTTPError(400, "actuator must be an object with exactly one key")
    (nsid, specifiers), = actuator.items()
    if nsid != nsid_wanted:
        raise HTTPError(501, COMMAND_NOT_SUPPORTED)  # addressed to a profile we do not implement
    if not isinstance(specifiers, dict):
        raise HTTPError(400, f"actuator {nsid} must be an object")
    if set(specifiers) - {"asset_id"}:
        raise HTTPError(501, OPTION_NOT_SUPPORTED)
    return specifiers


def _command_id(value: Any, ex: Exchange) -> str | None:
    if value is None:
        return ex.request_id  # Language Spec 3.3.1: the request_id is the command_id
    if not isinstance(value, str) or not _COMMAND_ID.fullmatch(value):
        raise HTTPError(400, "command_id must be 1-36 characters without spaces")
    return value
