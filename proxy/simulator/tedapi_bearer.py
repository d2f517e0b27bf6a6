"""TEDAPI behind the bearer login, as solar-only gateways speak it.

After `POST /api/login/Basic` as the installer (with the gateway password), a client
sends each TEDAPI request as an `AuthEnvelope` whose payload is a bare message envelope
(no outer message, no tail). With the V2026_06 query set the envelope carries a
pre-signed GraphQL query (`graphql.queryRequest`: the signed query bytes, their
signature and the variables) or a system-info request (`common.getSystemInfoRequest`);
the config.json read is still the legacy `config.send` envelope. Answers come back the
same way: a bare envelope inside an `AuthEnvelope`.

The gateway only runs queries Tesla signed: a query is recognised by its signed bytes
and signature, taken from pypowerwall's own V2026_06 set (imported on first use).
"""

from __future__ import annotations

import functools
import importlib
import json
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from . import tedapi_wire
from .layout import Layout

QUERY, SYSTEM_INFO, LEGACY = "query", "system_info", "legacy"


@functools.cache
def _energy_device() -> ModuleType:
    return importlib.import_module(
        "pypowerwall.tedapi.protobuf.V2026_06.tedapi_v2_energy_device_pb2")


@functools.cache
def _combined() -> ModuleType:
    return importlib.import_module("pypowerwall.tedapi.tedapi_combined_pb2")


@functools.cache
def _signed_queries() -> dict[bytes, tuple[str, bytes]]:
    """signed query bytes -> (operation name, signature)."""
    queries = importlib.import_module("pypowerwall.tedapi.queries").V2026_06_QUERIES
    return {q.signed_bytes: (name, q.code) for name, q in queries.items()}


def unwrap(body: bytes) -> bytes:
    """The bare envelope inside an AuthEnvelope body; ValueError if there is none."""
    auth = _combined().AuthEnvelope()
    try:
        auth.ParseFromString(body)
    except Exception as exc:  # protobuf's DecodeError
        raise ValueError(f"undecodable AuthEnvelope: {exc}") from exc
    if not auth.payload:
        raise ValueError("AuthEnvelope carries no payload")
    return bytes(auth.payload)


def wrap(envelope: bytes) -> bytes:
    """An AuthEnvelope around a bare envelope (the answer's framing)."""
    auth = _combined().AuthEnvelope()
    auth.payload = envelope
    return bytes(auth.SerializeToString())


@dataclass(frozen=True)
class BareRequest:
    kind: str  # QUERY, SYSTEM_INFO or LEGACY
    name: str = ""  # QUERY: the signed operation's name ("" if no signature matches)
    legacy: bytes = b""  # LEGACY: the request as a full legacy message (tedapi_wire parses it)


def parse(envelope: bytes) -> BareRequest:
    """What a bare envelope asks for; ValueError if it cannot be read at all."""
    env = _energy_device().MessageEnvelope()
    try:
        env.ParseFromString(envelope)
    except Exception:
        env = None  # not a V2026_06 envelope: maybe a legacy one
    if env is not None and env.HasField("graphql") and env.graphql.HasField("queryRequest"):
        request = env.graphql.queryRequest
        name, signature = _signed_queries().get(bytes(request.query), ("", b""))
        return BareRequest(QUERY, name if signature == bytes(request.signature) else "")
    if env is not None and env.HasField("common") and env.common.HasField("getSystemInfoRequest"):
        return BareRequest(SYSTEM_INFO)
    message = tedapi_wire.pb2().Message()
    try:
        message.message.ParseFromString(envelope)
    except Exception as exc:
        raise ValueError(f"undecodable TEDAPI envelope: {exc}") from exc
    message.tail.value = 1
    return BareRequest(LEGACY, legacy=bytes(message.SerializeToString()))


def bare(full_message: bytes) -> bytes:
    """A legacy answer (full message with tail) as the bare envelope bearer clients read."""
    message = tedapi_wire.pb2().Message()
    message.ParseFromString(full_message)
    return bytes(message.message.SerializeToString())


def _answer(din: str) -> Any:
    ed = _energy_device()
    env = ed.MessageEnvelope()
    env.deliveryChannel = ed.DELIVERY_CHANNEL_LOCAL_HTTPS
    env.sender.din = din
    env.recipient.local = ed.LOCAL_PARTICIPANT_INSTALLER
    return env


def query_answer(din: str, document: dict[str, Any] | None) -> bytes:
    """A GraphQL answer: the JSON document, or an error for a query the gateway won't run."""
    env = _answer(din)
    response = env.graphql.queryResponse
    if document is None:
        error = response.errors.add()
        error.code = 16  # unauthenticated: the signature did not verify
        error.message = "query signature invalid or query unknown"
    else:
        response.data = json.dumps(document, separators=(",", ":"))
    return bytes(env.SerializeToString())


def system_info_answer(layout: Layout) -> bytes:
    """The gateway's identity and firmware (what the legacy firmware request returns)."""
    env = _answer(layout.din)
    info = env.common.getSystemInfoResponse
    info.deviceId.partNumber = layout.gateway_part
    info.deviceId.serialNumber = layout.gateway_serial
    info.din = layout.din
    info.firmwareVersion.version = layout.firmware
    info.firmwareVersion.githash = layout.git_hash[:8].encode("ascii")
    info.deviceType = tedapi_wire.DEVICE_TYPE_SITECONTROLLER
    info.systemUpdate.updateStatus = tedapi_wire.UPDATE_IDLE
    info.systemUpdate.lastUpdateResult = tedapi_wire.UPDATE_SUCCEEDED
    tedapi_wire.set_radio(info.complianceInformation.radioLegalInformation.add(),
                          ("manufacturer", "model", "fccId", "icId"))
    return bytes(env.SerializeToString())
