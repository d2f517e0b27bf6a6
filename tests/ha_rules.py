"""Home Assistant's rules for MQTT discovery configs and states, as its MQTT and sensor
integrations state them (the subset our entities use), to check what the proxy publishes."""

from __future__ import annotations

import re
from typing import Any

PREFIX, DISCOVERY = "pypowerwall", "homeassistant"

ENERGY_UNITS = {"J", "kJ", "MJ", "GJ", "mWh", "Wh", "kWh", "MWh", "GWh", "TWh", "cal", "kcal",
                "Mcal", "Gcal"}
DEVICE_CLASS_UNITS: dict[str, set[str | None]] = {
    "power": {"W", "kW", "MW", "GW", "TW"},
    "battery": {"%"},
    "energy": set(ENERGY_UNITS),
    "energy_storage": set(ENERGY_UNITS),
    "duration": {"d", "h", "min", "s", "ms"},
    "temperature": {"°C", "°F", "K"},
    "enum": {None},
}
DEVICE_CLASS_STATE_CLASSES: dict[str, set[str | None]] = {
    "power": {"measurement", None},
    "battery": {"measurement", None},
    "energy": {"total", "total_increasing", None},
    "energy_storage": {"measurement", None},
    "duration": {"measurement", "total", "total_increasing", None},
    "temperature": {"measurement", None},
    "enum": {None},
}
STATE_CLASSES = {"measurement", "total", "total_increasing"}
BINARY_SENSOR_CLASSES = {"connectivity", "problem", "power", "running", "battery_charging"}
TOPIC = re.compile(rf"^{DISCOVERY}/(sensor|binary_sensor|number|select|event)/(?:[a-zA-Z0-9_-]+/)?"
                   r"[a-zA-Z0-9_-]+/config$")


def check_config(topic: str, config: dict[str, Any]) -> str:
    """Fail unless the config is one Home Assistant accepts; returns the component."""
    match = TOPIC.match(topic)
    assert match, f"discovery topic not of HA's form: {topic}"
    component = match.group(1)
    assert isinstance(config.get("unique_id"), str) and config["unique_id"], topic
    assert isinstance(config.get("name"), str) and config["name"], topic
    device, origin = config.get("device"), config.get("origin")
    assert isinstance(device, dict) and device.get("identifiers") and device.get("name"), topic
    assert isinstance(origin, dict) and origin.get("name"), topic
    availability = config.get("availability")
    assert isinstance(availability, list) and availability, topic
    assert all(set(a) == {"topic"} and a["topic"].startswith(PREFIX + "/") for a in availability)
    assert config.get("availability_mode") in ("all", "any", "latest"), topic
    assert config.get("entity_category") in (None, "config", "diagnostic"), topic
    if component in ("sensor", "binary_sensor"):
        expire = config.get("expire_after")
        assert isinstance(expire, int) and expire > 0, topic
        assert isinstance(config.get("state_topic"), str), topic
    device_class, unit = config.get("device_class"), config.get("unit_of_measurement")
    state_class = config.get("state_class")
    if component == "sensor":
        assert state_class in STATE_CLASSES | {None}, topic
        if device_class is not None:
            assert device_class in DEVICE_CLASS_UNITS, f"{topic}: unknown device class {device_class}"
            assert unit in DEVICE_CLASS_UNITS[device_class], f"{topic}: {unit} not for {device_class}"
            assert state_class in DEVICE_CLASS_STATE_CLASSES[device_class], topic
        if "options" in config:
            assert device_class == "enum" and config["options"], topic
            assert state_class is None and unit is None, topic
        if device_class == "enum":
            assert config.get("options"), topic
    if component == "binary_sensor":
        assert device_class in BINARY_SENSOR_CLASSES | {None}, topic
        assert unit is None and state_class is None, topic
    if component == "number":
        assert config["min"] < config["max"] and config["step"] > 0, topic
        assert config.get("mode") in ("auto", "box", "slider"), topic
        assert config["command_topic"].startswith(PREFIX + "/"), topic
    if component == "event":  # an event entity: the types its JSON payloads may name
        types = config.get("event_types")
        assert isinstance(types, list) and types and all(isinstance(t, str) for t in types), topic
        assert isinstance(config.get("state_topic"), str) and "expire_after" not in config, topic
    if component == "select":
        assert config["options"] and config["command_topic"].startswith(PREFIX + "/"), topic
    return component


def check_state(component: str, config: dict[str, Any], payload: str) -> None:
    """A state Home Assistant can take for that entity."""
    if component == "binary_sensor":
        assert payload in ("ON", "OFF"), (config["unique_id"], payload)
    elif config.get("unit_of_measurement") or config.get("state_class"):
        float(payload)  # numeric sensors need a number ("None" only for a missing value)
    elif config.get("options"):
        assert payload in config["options"], (config["unique_id"], payload)


