"""The table of measurements and what is built from it, without a network: reading points from
a frame, Home Assistant discovery configs and states, and metric families."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from proxy.api.metrics import UNITS, metric_name, point_family
from proxy.gateway.sources import AGGREGATES, ALERTS, GRID_STATUS, RESERVE, SOE, SYSTEM_STATUS, TEMPS
from proxy.mqtt.discovery import (
    Settings,
    aggregate_messages,
    expire_after,
    gateway_messages,
    online_message,
    payload_of,
)
from proxy.site.frames import Frame, aggregate
from proxy.site.points import MAX_LABELS, MODE, POINT_SOURCES, POINTS, Kind, values
from tests.frames import numbers_frame
from tests.ha_rules import check_config, check_state

AGG = {m: {"instant_power": p, "energy_imported": 1000.5 * (i + 1), "energy_exported": 10.0 * i}
       for i, (m, p) in enumerate((("site", -120.0), ("solar", 3000.0), ("battery", -800.0),
                                   ("load", 2080.0)))}
FULL = {
    AGGREGATES.key: AGG, SOE.key: {"percentage": 81.5}, RESERVE.key: 20.0,
    SYSTEM_STATUS.key: {"nominal_energy_remaining": 11000, "nominal_full_pack_energy": 13500},
    GRID_STATUS.key: "UP", MODE.key: "self_consumption", TEMPS.key: {"TEPOD--1--TG1": 25.5},
    ALERTS.key: ["A", "B"], "time_remaining": 12.5, "version": "25.10.2 abc",
}
SETTINGS = Settings(host="b", port=1883, user="u", control=True)


def frame(values_by_key: dict[str, Any], status: str = "ok", gid: str = "home") -> Frame:
    return Frame(id=gid, name="Home", type="powerwall", status=status, values=values_by_key,
                 fresh=True, stale=False, at=1.0)


def point(key: str) -> Any:
    return next(p for p in POINTS if p.key == key)


def test_the_table_is_well_formed() -> None:
    keys = [p.key for p in POINTS]
    assert len(keys) == len(set(keys))
    for p in POINTS:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", p.key), p.key
        assert p.unit in UNITS, p.key
        assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", metric_name(p)), p.key
        assert (p.kind is Kind.STATE) == bool(p.states), p.key
        assert all(s in POINT_SOURCES for s in p.sources), p.key
    assert {p.key for p in POINTS} >= {
        "site_power", "solar_power", "battery_power", "load_power", "grid_power", "battery_level",
        "battery_reserve", "battery_remaining_energy", "battery_full_energy", "energy_imported",
        "energy_exported", "grid_status", "operation_mode", "battery_time_remaining",
        "battery_temperature", "alerts", "gateway_online", "firmware_version"}


def test_points_read_a_full_frame() -> None:
    f = frame(FULL)
    got = {p.key: values(p, f) for p in POINTS}
    assert got["battery_power"] == {"": -800.0}
    assert got["grid_power"] == got["site_power"] == {"": -120.0}
    assert got["battery_level"] == {"": 81.5}
    assert got["battery_reserve"] == {"": 20.0}
    assert got["battery_remaining_energy"] == {"": 11000.0}
    assert got["energy_imported"] == {"site": 1000.5, "solar": 2001.0, "battery": 3001.5, "load": 4002.0}
    assert got["battery_temperature"] == {"TEPOD--1--TG1": 25.5}
    assert got["grid_status"] == {"": "UP"}
    assert got["operation_mode"] == {"": "self_consumption"}
    assert got["alerts"] == {"": 2.0}
    assert got["gateway_online"] == {"": True}
    assert got["firmware_version"] == {"": "25.10.2"}
    assert got["battery_time_remaining"] == {"": 12.5}


def test_missing_or_odd_data_is_absent_not_zero() -> None:
    empty = frame({}, status="degraded")
    for p in POINTS:
        expected = {"": False} if p.key == "gateway_online" else {}
        assert values(p, empty) == expected, p.key
    odd = frame({AGGREGATES.key: {"battery": {"instant_power": True, "energy_imported": "12"}},
                 SOE.key: {"percentage": None}, GRID_STATUS.key: "MAYBE", TEMPS.key: [],
                 ALERTS.key: "none", SYSTEM_STATUS.key: "<html>"})
    for key in ("battery_power", "battery_level", "grid_status", "alerts", "battery_full_energy"):
        assert values(point(key), odd) == {}, key
    assert values(point("energy_imported"), odd) == {}
    assert values(point("battery_temperature"), odd) == {}


def test_labelled_points_are_bounded() -> None:
    many = frame({TEMPS.key: {f"TEPOD--x--TG{i}": 20.0 + i for i in range(MAX_LABELS + 10)}})
    assert len(values(point("battery_temperature"), many)) == MAX_LABELS


def test_state_payloads() -> None:
    assert [payload_of(v) for v in (4.0, 0.1, -800.0, True, False, "UP", 1e20)] == [
        "4", "0.1", "-800", "ON", "OFF", "UP", "1e+20"]
    assert expire_after(1) == expire_after(5) == 30 and expire_after(60) == 360


def test_discovery_configs_follow_home_assistant_rules() -> None:
    configs, states = gateway_messages(SETTINGS, frame(FULL), "25.10.2", 5.0, (), control=True)
    by_topic = {m.topic: json.loads(m.payload) for m in configs}
    assert len(by_topic) == len(configs)
    state_of = {m.topic: m.payload for m in states}
    for topic, config in by_topic.items():
        component = check_config(topic, config)
        assert config["device"] == {"identifiers": ["pypowerwall_home"], "name": "Home",
                                    "manufacturer": "Tesla", "model": "Powerwall gateway",
                                    "sw_version": "25.10.2"}
        if component in ("sensor", "binary_sensor"):
            check_state(component, config, state_of[config["state_topic"]])
    assert all(m.retain and m.qos == 1 for m in configs)
    ids = {c["unique_id"] for c in by_topic.values()}
    assert "pypowerwall_home_battery_temperature_tepod--1--tg1" in ids
    assert {"pypowerwall_home_reserve_setting", "pypowerwall_home_mode_setting"} <= ids
    again, _ = gateway_messages(SETTINGS, frame(FULL), "25.10.2", 5.0, (), control=True)
    assert [m.topic for m in again] == [m.topic for m in configs]  # stable ids
    without, _ = gateway_messages(SETTINGS, frame(FULL), "25.10.2", 5.0, (), control=False)
    assert not any("setting" in m.topic for m in without)
    online = by_topic["homeassistant/binary_sensor/pypowerwall_home_gateway_online/config"]
    assert online["availability"] == [{"topic": "pypowerwall/status"}]  # shows OFF in an outage


def test_a_point_that_loses_its_value_says_none() -> None:
    configs, _ = gateway_messages(SETTINGS, frame(FULL), None, 5.0, ())
    announced = [m.topic for m in configs]
    partial = {k: v for k, v in FULL.items() if k != SOE.key}
    configs, states = gateway_messages(SETTINGS, frame(partial), None, 5.0, announced)
    assert {m.topic: m.payload for m in states}["pypowerwall/home/battery_level"] == "None"
    assert not any(m.topic.endswith("_battery_level/config") for m in configs)
    _, fresh_states = gateway_messages(SETTINGS, frame(partial), None, 5.0, ())
    assert not any(m.topic == "pypowerwall/home/battery_level" for m in fresh_states)
    assert online_message(SETTINGS, frame({}, status="degraded")).payload == "OFF"


def test_aggregate_device() -> None:
    snaps = [numbers_frame(g, power={"site": 1.0, "battery": 2.0, "load": 3.0, "solar": 4.0},
                           percent=50.0, full=10000.0, remaining=5000.0, grid="UP")
             for g in ("a", "b")]
    configs, states = aggregate_messages(SETTINGS, aggregate(snaps, 0.0), 5.0)
    by_state = {m.topic: m.payload for m in states}
    assert by_state["pypowerwall/aggregate/battery_power"] == "4"
    assert by_state["pypowerwall/aggregate/battery_level"] == "50"
    assert by_state["pypowerwall/aggregate/gateways_online"] == "2"
    for m in configs:
        config = json.loads(m.payload)
        check_config(m.topic, config)
        assert config["device"]["identifiers"] == ["pypowerwall_aggregate"]


class _Families:
    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> list[Any]:
        return self.families


@pytest.mark.parametrize("key", [p.key for p in POINTS])
def test_metric_families_in_base_units(key: str) -> None:
    p = point(key)
    f = frame(FULL)
    text = generate_latest(_Families([point_family(p, [f])])).decode()  # type: ignore[arg-type]
    (family,) = text_string_to_metric_families(text)
    got = {tuple(sorted(s.labels.items())): s.value for s in family.samples}
    raw = values(p, f)
    if p.kind is Kind.STATE:
        assert got[(("gateway", "home"), ("state", raw[""]))] == 1.0
        assert sum(got.values()) == 1.0 and len(got) >= len(p.states)
    elif p.kind is Kind.TEXT:
        assert got == {(("gateway", "home"), ("version", "25.10.2")): 1.0}
    else:
        factor = UNITS[p.unit][1]
        for label, value in raw.items():
            labels = {"gateway": "home", **({p.label: label} if p.label else {})}
            assert got[tuple(sorted(labels.items()))] == pytest.approx(float(value) * factor)
    if p.kind is Kind.TOTAL:
        assert all(s.name.endswith("_total") for s in family.samples)


def test_an_unknown_state_is_exported_too() -> None:
    f = frame({MODE.key: "scheduler"})
    text = generate_latest(_Families([point_family(point("operation_mode"), [f])])).decode()  # type: ignore[arg-type]
    assert 'powerwall_operation_mode{gateway="home",state="scheduler"} 1.0' in text
    assert 'powerwall_operation_mode{gateway="home",state="backup"} 0.0' in text


# ---- the publisher's bound on what waits for the broker (a stand-in paho client) ---------

class _Info:
    def __init__(self) -> None:
        self.rc, self.done = 0, False

    def is_published(self) -> bool:
        return self.done

    def wait_for_publish(self, timeout: float | None = None) -> None:
        self.done = True


class _Reason:
    is_failure = False


class _StuckBroker:
    """A paho stand-in whose broker never takes anything: every message stays unwritten."""

    made: list[_StuckBroker] = []

    def __init__(self, **kwargs: Any) -> None:
        self.published: list[_Info] = []
        self.connect_timeout = 0.0
        _StuckBroker.made.append(self)

    def publish(self, topic: str, payload: str, qos: int = 0, retain: bool = False) -> _Info:
        info = _Info()
        self.published.append(info)
        return info

    def is_connected(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:  # setup calls: username_pw_set, will_set, ...
        return lambda *args, **kwargs: None


def test_the_publisher_drops_rather_than_queues_without_end(tmp_path: Any) -> None:
    from proxy.config import GatewayConfig
    from proxy.gateway import Gateway
    from proxy.mqtt.discovery import Message
    from proxy.mqtt.publisher import MAX_IN_FLIGHT, Publisher
    from proxy.site.hub import Hub
    from proxy.site.site import Site, Sites

    sites = Sites([Site(Gateway(GatewayConfig(host="127.0.0.1:9", cache_file=str(tmp_path / "c"))),
                        cache_ttl=0)])
    publisher = Publisher(SETTINGS, sites, Hub(sites), client_factory=_StuckBroker)
    publisher.start()
    try:
        client = _StuckBroker.made[-1]
        publisher._on_connect(client, None, {}, _Reason(), None)
        taken = publisher._send([Message(f"t/{i}", "x") for i in range(MAX_IN_FLIGHT + 50)])
        status = publisher.status()
        # (the publisher thread may have sent an availability message of its own meanwhile)
        assert MAX_IN_FLIGHT - 5 <= taken <= MAX_IN_FLIGHT and status["in_flight"] == MAX_IN_FLIGHT
        assert status["dropped"] >= 50
        for info in client.published:
            info.done = True  # the broker catches up
        assert publisher._send([Message("t/again", "x")]) == 1
        assert publisher.status()["in_flight"] <= 1
    finally:
        publisher.stop()
