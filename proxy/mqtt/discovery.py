"""MQTT topics and Home Assistant discovery: pure functions of the settings and a frame.

Everything a publisher sends is built here, without a broker or a network: the state topics
(`{prefix}/{gateway}/{point}[/{label}]`), availability (`{prefix}/status` as the proxy's last
will, `{prefix}/{gateway}/status` per gateway), the command and result topics of the
control actions MQTT offers, and the discovery configs Home Assistant reads, all from the
table of measurements (`proxy.site.points`): one device per gateway (and one for the
aggregate with several), stable unique ids, an origin block, classes and units from the
table, and `expire_after` so a silent proxy shows unavailable rather than frozen numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from proxy import __version__
from proxy.config import Config, Secret
from proxy.site.frames import Frame
from proxy.site.points import AGGREGATE_POINTS, MODES, POINTS, Kind, Point, slug, values

ORIGIN = {"name": "Powerwall proxy", "sw_version": __version__}
MANUFACTURER = "Tesla"
EXPIRE_WINDOWS = 6  # a state expires in Home Assistant after this many silent windows ...
MIN_EXPIRE = 30  # ... and never sooner than this many seconds


@dataclass(frozen=True, slots=True)
class Settings:
    """What the publisher needs from the configuration."""

    host: str
    port: int
    user: str = ""
    password: Secret = Secret()
    tls: bool = False
    prefix: str = "pypowerwall"
    discovery_prefix: str = "homeassistant"
    retain: bool = False
    control: bool = False  # commands accepted: control secret set and a broker user + password
    events: bool = False  # the history's events go to {prefix}/{gateway}/event (PW_HISTORY)

    @classmethod
    def from_config(cls, config: Config) -> Settings:
        return cls(
            host=config.mqtt_host, port=config.mqtt_port or (8883 if config.mqtt_tls else 1883),
            user=config.mqtt_user, password=config.mqtt_password, tls=config.mqtt_tls,
            prefix=config.mqtt_prefix, discovery_prefix=config.mqtt_discovery_prefix,
            retain=config.mqtt_retain,
            control=bool(config.control_secret) and bool(config.mqtt_user) and bool(config.mqtt_password),
            events=config.history,
        )

    @property
    def status_topic(self) -> str:
        """The proxy's availability: "online" while connected, "offline" as its last will."""
        return f"{self.prefix}/status"

    @property
    def birth_topic(self) -> str:
        """Where Home Assistant says it is online (and discovery must be sent again)."""
        return f"{self.discovery_prefix}/status"

    @property
    def command_filter(self) -> str:
        return f"{self.prefix}/+/control/+/set"

    @property
    def node(self) -> str:
        """The prefix as an id part (unique ids and discovery object ids)."""
        return slug(self.prefix.replace("/", "_"))


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: str
    retain: bool = False
    qos: int = 0


# ---- topics and payloads: pure functions ----------------------------------------------

def state_topic(settings: Settings, gateway: str, point: Point, label: str = "") -> str:
    base = f"{settings.prefix}/{gateway}/{point.key}"
    return f"{base}/{slug(label)}" if label else base


def gateway_status_topic(settings: Settings, gateway: str) -> str:
    return f"{settings.prefix}/{gateway}/status"


def event_topic(settings: Settings, gateway: str) -> str:
    """Where a gateway's events go, as /api/events lists them (not retained)."""
    return f"{settings.prefix}/{gateway}/event"


# Home Assistant's event entity wants {"event_type": …} from the types it was told; the grid's
# entity takes the grid events from the gateway's event topic and ignores the others ({}).
GRID_EVENTS = ("grid_down", "grid_up")
_GRID_EVENT = ("{% if value_json.kind in " + repr(list(GRID_EVENTS)) + " %}{{ {'event_type': "
               "value_json.kind, 'duration_seconds': value_json.detail.get('duration_seconds')} "
               "| tojson }}{% else %}{}{% endif %}")


def grid_event_config(settings: Settings, gateway: str, device: dict[str, Any],
                      availability: list[str]) -> tuple[str, dict[str, Any]]:
    """(discovery topic, config) of the Home Assistant event entity of a gateway's grid."""
    unique_id = f"{settings.node}_{gateway}_grid_event"
    return f"{settings.discovery_prefix}/event/{unique_id}/config", {
        "name": "Grid", "unique_id": unique_id, "state_topic": event_topic(settings, gateway),
        "event_types": list(GRID_EVENTS), "value_template": _GRID_EVENT,
        "availability": [{"topic": t} for t in availability], "availability_mode": "all",
        "icon": "mdi:transmission-tower", "device": device, "origin": ORIGIN}


def command_topic(settings: Settings, gateway: str, command: str) -> str:
    return f"{settings.prefix}/{gateway}/control/{command}/set"


def result_topic(settings: Settings, gateway: str, command: str) -> str:
    return f"{settings.prefix}/{gateway}/control/{command}/result"


def payload_of(value: Any) -> str:
    """A state as its MQTT payload: numbers plain (integral ones without .0), ON/OFF, text."""
    if isinstance(value, bool):
        return "ON" if value else "OFF"
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return str(value)


def expire_after(interval: float) -> int:
    return max(MIN_EXPIRE, math.ceil(EXPIRE_WINDOWS * interval))


def _label_name(point: Point, label: str) -> str:
    if point.label == "meter":
        return f"{label.title()} {point.name}"
    short = label.rsplit("--", 1)[-1]  # a battery's serial number ends its name
    return f"{point.name} {short}"


def device_block(settings: Settings, gateway: str, name: str, firmware: str | None,
                 model: str = "Powerwall gateway") -> dict[str, Any]:
    device: dict[str, Any] = {"identifiers": [f"{settings.node}_{gateway}"], "name": name,
                              "manufacturer": MANUFACTURER, "model": model}
    if firmware:
        device["sw_version"] = firmware
    return device


def entity_config(settings: Settings, point: Point, *, gateway: str, label: str, device: dict[str, Any],
                  availability: list[str], expire: int) -> tuple[str, dict[str, Any]]:
    """(discovery topic, config) of one Home Assistant entity for a point (and label)."""
    object_id = f"{point.key}_{slug(label)}" if label else point.key
    unique_id = f"{settings.node}_{gateway}_{object_id}"
    component = "binary_sensor" if point.kind is Kind.FLAG else "sensor"
    config: dict[str, Any] = {
        "name": _label_name(point, label) if label else point.name,
        "unique_id": unique_id,
        "state_topic": state_topic(settings, gateway, point, label),
        "availability": [{"topic": t} for t in availability],
        "availability_mode": "all",
        "expire_after": expire,
        "device": device,
        "origin": ORIGIN,
    }
    if point.device_class:
        config["device_class"] = point.device_class
    if point.state_class:
        config["state_class"] = point.state_class
    if point.unit:
        config["unit_of_measurement"] = point.unit
    if point.device_class == "enum":
        config["options"] = list(point.states)
    if point.diagnostic:
        config["entity_category"] = "diagnostic"
    if point.icon:
        config["icon"] = point.icon
    return f"{settings.discovery_prefix}/{component}/{unique_id}/config", config


def control_configs(settings: Settings, gateway: str, device: dict[str, Any],
                    availability: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """A number (reserve) and a select (mode) entity, when MQTT control is on."""
    by_key = {p.key: p for p in POINTS}
    common = {"availability": [{"topic": t} for t in availability], "availability_mode": "all",
              "device": device, "origin": ORIGIN}
    reserve_id = f"{settings.node}_{gateway}_reserve_setting"
    mode_id = f"{settings.node}_{gateway}_mode_setting"
    return [
        (f"{settings.discovery_prefix}/number/{reserve_id}/config", {
            "name": "Backup reserve setting", "unique_id": reserve_id,
            "command_topic": command_topic(settings, gateway, "reserve"),
            "state_topic": state_topic(settings, gateway, by_key["battery_reserve"]),
            "min": 0, "max": 100, "step": 1, "mode": "box", "unit_of_measurement": "%",
            "entity_category": "config", "icon": "mdi:battery-lock", **common}),
        (f"{settings.discovery_prefix}/select/{mode_id}/config", {
            "name": "Operation mode setting", "unique_id": mode_id,
            "command_topic": command_topic(settings, gateway, "mode"),
            "state_topic": state_topic(settings, gateway, by_key["operation_mode"]),
            "options": list(MODES), "entity_category": "config", "icon": "mdi:home-battery",
            **common}),
    ]


def deserves_entity(point: Point, value: Any, topic: str, announced: set[str]) -> bool:
    """Whether a value gets (or keeps) its Home Assistant entity. A lifetime counter gets one
    once it has counted something for this gateway: a solar meter never imports and a home
    never exports, and an entity that stays 0 for ever only clutters the Energy dashboard.
    Every other value gets one, and so does a counter once announced."""
    return point.kind is not Kind.TOTAL or value != 0 or topic in announced


def gateway_messages(settings: Settings, frame: Frame, firmware: str | None, interval: float,
                     announced: Iterable[str],
                     control: bool = False) -> tuple[list[Message], list[Message]]:
    """(discovery configs, states) of one gateway's frame, with the control entities when
    `control`. A point without a value gets no new entity; one announced before gets "None"
    (Home Assistant's unknown), never a 0. A counter at 0 waits for its first count."""
    known = set(announced)
    device = device_block(settings, frame.id, frame.label, firmware)
    proxy_only = [settings.status_topic]
    both = [settings.status_topic, gateway_status_topic(settings, frame.id)]
    expire = expire_after(interval)
    configs: list[Message] = []
    states: list[Message] = []
    for point in POINTS:
        found = values(point, frame)
        availability = proxy_only if point.kind is Kind.FLAG else both
        for label, value in found.items():
            topic, config = entity_config(settings, point, gateway=frame.id, label=label,
                                          device=device, availability=availability, expire=expire)
            if not deserves_entity(point, value, topic, known):
                continue
            configs.append(Message(topic, json.dumps(config), retain=True, qos=1))
            states.append(Message(state_topic(settings, frame.id, point, label), payload_of(value),
                                  retain=settings.retain))
        if not point.label and not found:
            topic, _ = entity_config(settings, point, gateway=frame.id, label="", device=device,
                                     availability=availability, expire=expire)
            if topic in known:
                states.append(Message(state_topic(settings, frame.id, point), "None",
                                      retain=settings.retain))
    extra = control_configs(settings, frame.id, device, both) if control else []
    if settings.events:
        extra.append(grid_event_config(settings, frame.id, device, both))
    configs += [Message(topic, json.dumps(config), retain=True, qos=1) for topic, config in extra]
    return configs, states


def aggregate_messages(settings: Settings, body: dict[str, Any],
                       interval: float) -> tuple[list[Message], list[Message]]:
    """(discovery configs, states) of the aggregate device (several gateways)."""
    device = device_block(settings, "aggregate", "Powerwall aggregate", None, model="All gateways")
    configs: list[Message] = []
    states: list[Message] = []
    for point in AGGREGATE_POINTS:
        for label, value in values(point, body).items():
            topic, config = entity_config(settings, point, gateway="aggregate", label=label,
                                          device=device, availability=[settings.status_topic],
                                          expire=expire_after(interval))
            configs.append(Message(topic, json.dumps(config), retain=True, qos=1))
            states.append(Message(state_topic(settings, "aggregate", point, label),
                                  payload_of(value), retain=settings.retain))
    return configs, states


def online_message(settings: Settings, frame: Frame) -> Message:
    """The gateway_online state, which is the proxy's to tell even when the gateway is silent."""
    point = next(p for p in POINTS if p.kind is Kind.FLAG)
    return Message(state_topic(settings, frame.id, point), payload_of(frame.online),
                   retain=settings.retain)


def firmware(frame: Frame) -> str | None:
    point = next(p for p in POINTS if p.key == "firmware_version")
    found = values(point, frame)
    return str(found[""]) if found else None
