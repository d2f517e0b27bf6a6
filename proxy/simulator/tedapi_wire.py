"""TEDAPI protobuf framing, using pypowerwall's own generated protobuf module.

Requests are `tedapi_pb2.Message`s; the gateway answers with a `Message` whose
envelope carries a config file (`config.recv.file.text`), a query result
(`payload.recv.text`, JSON) or the firmware description (`firmware.system`).
The protobuf module is imported on first use: importing pypowerwall costs a few
hundred milliseconds, which the simulator's start-up must not pay.
"""

from __future__ import annotations

import functools
import importlib
import json
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from .layout import Layout

CONFIG, FIRMWARE, QUERY = "config", "firmware", "query"
DEVICE_TYPE_SITECONTROLLER = 4
CONFIG_SIGNATURE = bytes.fromhex("3045022100") + b"\x11" * 32
UPDATE_IDLE, UPDATE_SUCCEEDED = 1, 2  # systemUpdate.updateStatus, .lastUpdateResult
RADIO = ("Murata", "Type 1MW", "VPYLB1MW", "772C-LB1MW")  # maker, model, FCC id, IC id


def set_radio(device: Any, fields: tuple[str, str, str, str]) -> None:
    """Fill one radio's regulatory identity; the two protobuf sets name the fields apart."""
    for name, value in zip(fields, RADIO, strict=True):
        getattr(device, name).value = value


@functools.cache
def pb2() -> ModuleType:
    """The library's V2024_06 TEDAPI protobuf module (imported once, lazily)."""
    return importlib.import_module("pypowerwall.tedapi.protobuf.V2024_06.tedapi_pb2")


@dataclass(frozen=True)
class TedapiRequest:
    """What a client asked for in one POST /tedapi/v1 body."""

    kind: str  # CONFIG, FIRMWARE or QUERY
    recipient: str
    tail: int
    file: str = ""
    query: str = ""
    variables: dict[str, Any] = field(default_factory=dict)

    @property
    def query_name(self) -> str:
        """The GraphQL operation name (e.g. "ComponentsQuery")."""
        words = self.query.replace("(", " ").replace("{", " ").split()
        return words[1] if len(words) > 1 and words[0] == "query" else ""

    @property
    def full_controller(self) -> bool:
        # Only the full DeviceControllerQuery asks for components (msa signals).
        return "components" in self.query


def _variables(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def parse_request(body: bytes) -> TedapiRequest:
    """Decode a request body; ValueError if it is not a TEDAPI message we answer."""
    message = pb2().Message()
    try:
        message.ParseFromString(body)
    except Exception as exc:  # protobuf raises its own DecodeError type
        raise ValueError(f"undecodable TEDAPI message: {exc}") from exc
    envelope = message.message
    recipient, tail = envelope.recipient.din, message.tail.value
    if envelope.HasField("config"):
        return TedapiRequest(CONFIG, recipient, tail, file=envelope.config.send.file)
    if envelope.HasField("firmware"):
        return TedapiRequest(FIRMWARE, recipient, tail)
    if envelope.HasField("payload"):
        send = envelope.payload.send
        return TedapiRequest(QUERY, recipient, tail, query=send.payload.text,
                             variables=_variables(send.b.value))
    raise ValueError("TEDAPI message carries no config, firmware or query request")


def _answer(din: str, tail: int) -> Any:
    message = pb2().Message()
    envelope = message.message
    envelope.deliveryChannel = 1
    envelope.sender.din = din
    envelope.recipient.local = 1
    message.tail.value = tail or 1
    return message


def config_response(din: str, tail: int, name: str, text: str) -> bytes:
    """Answer to a config file read: the file's text plus its signature."""
    message = _answer(din, tail)
    recv = message.message.config.recv
    recv.file.name = name
    recv.file.text = text
    recv.code = CONFIG_SIGNATURE
    return bytes(message.SerializeToString())


def query_response(din: str, tail: int, document: dict[str, Any]) -> bytes:
    """Answer to a GraphQL-style query: the JSON result in payload.recv.text."""
    message = _answer(din, tail)
    recv = message.message.payload.recv
    recv.value = 1
    recv.text = json.dumps(document, separators=(",", ":"))
    return bytes(message.SerializeToString())


def firmware_response(layout: Layout, tail: int) -> bytes:
    """Answer to a firmware request: version, git hash and gateway identity."""
    message = _answer(layout.din, tail)
    system = message.message.firmware.system
    system.gateway.partNumber = layout.gateway_part
    system.gateway.serialNumber = layout.gateway_serial
    system.din = layout.din
    system.version.text = layout.firmware
    system.version.githash = layout.git_hash[:8].encode("ascii")
    system.deviceType = DEVICE_TYPE_SITECONTROLLER
    system.systemUpdate.updateStatus = UPDATE_IDLE
    system.systemUpdate.lastUpdateResult = UPDATE_SUCCEEDED
    set_radio(system.wireless.device.add(), ("company", "model", "fcc_id", "ic"))
    return bytes(message.SerializeToString())
