"""MQTT with Home Assistant discovery, against a real Mosquitto broker with a password file.

A listener subscribes to `homeassistant/#` and `pypowerwall/#`; every discovery config is
checked against Home Assistant's rules (topic form, ids, device, origin, device and state
classes with their units, availability, expire_after) and every state against the API.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from proxy.config import ConfigError, load_config
from proxy.main import start
from proxy.site.points import POINTS, slug
from tests.brokers import MOSQUITTO, MOSQUITTO_PASSWD, Listener, Mosquitto, Received, free_port, wait_for
from tests.conftest import CONNECT_WAIT, DEFAULT_ENV, Factory, ProxyHandle, settled
from tests.expected import EDGE, requests_per_window, same_window
from tests.ha_rules import DISCOVERY, PREFIX, check_config, check_state

pytestmark = pytest.mark.skipif(
    MOSQUITTO is None or MOSQUITTO_PASSWD is None,
    reason="mosquitto not found; install Debian's mosquitto (tests/run.sh does as root)")

FILTERS = (f"{DISCOVERY}/#", f"{PREFIX}/#")

# ---- fixtures -----------------------------------------------------------------------------

@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    mosquitto = Mosquitto().start()
    try:
        yield mosquitto
    finally:
        mosquitto.close()


class Windows:
    """A listener that notes, for each state, the gateway window it arrived in."""

    def __init__(self, broker: Mosquitto) -> None:
        self.handle: ProxyHandle | None = None
        self._lock = threading.Lock()
        self.seen: dict[str, tuple[str, int]] = {}
        self.listener = Listener(broker, FILTERS, self._note)

    def _note(self, message: Received) -> None:
        handle = self.handle
        if handle is None:
            return
        parts = message.topic.split("/")
        site = handle.app.sites.get(parts[1]) if len(parts) > 2 else None
        if site is not None:
            with self._lock:
                self.seen[message.topic] = (message.payload, site.window())

    def states_of(self, gateway: str, topics: set[str]) -> dict[str, str]:
        """Every topic's payload published in the current window (wait up to a window)."""
        assert self.handle is not None
        site = self.handle.app.sites.get(gateway)
        assert site is not None
        window = site.window()
        deadline = time.monotonic() + 3 * site.gateway.cache.period

        def complete() -> dict[str, str] | None:
            with self._lock:
                got = {t: self.seen[t][0] for t in topics
                       if t in self.seen and self.seen[t][1] == window}
            return got if len(got) == len(topics) else None

        while time.monotonic() < deadline and site.window() == window:
            found = complete()
            if found:
                return found
            time.sleep(0.02)
        return {}


def _configs(listener: Listener) -> dict[str, dict[str, Any]]:
    return {m.topic: json.loads(m.payload) for m in listener.all()
            if m.topic.startswith(DISCOVERY + "/") and m.topic.endswith("/config") and m.payload}


def _expected_entities(gateway: str) -> set[str]:
    """unique ids every simulated gateway must have (labelled points checked separately)."""
    return {f"{PREFIX}_{gateway}_{p.key}" for p in POINTS if not p.label}


def _mqtt_proxy(factory: Factory, broker: Mosquitto, **env: str) -> ProxyHandle:
    return factory({"PW_CACHE_EXPIRE": "2", "PW_CACHE_TTL": "4", **broker.env(), **env})


# ---- the tests ----------------------------------------------------------------------------

def test_discovery_follows_home_assistant_rules_and_states_equal_the_api(
        proxy_factory: Factory, broker: Mosquitto) -> None:
    watch = Windows(broker)
    try:
        h = _mqtt_proxy(proxy_factory, broker, PW_CONTROL_SECRET="mqtt-control")
        watch.handle = h
        gateway = h.app.sites.default().id
        wanted = _expected_entities(gateway)
        configs = wait_for(lambda: (c := _configs(watch.listener))
                           and wanted <= {v["unique_id"] for v in c.values()} and c,
                           what="discovery configs for every measurement")
        time.sleep(0.5)  # the rest of the batch
        configs = _configs(watch.listener)
        ids = [c["unique_id"] for c in configs.values()]
        assert len(ids) == len(set(ids)), "unique_ids repeat"
        components = {topic: check_config(topic, c) for topic, c in configs.items()}
        assert {c["device"]["identifiers"][0] for c in configs.values()} == {f"{PREFIX}_{gateway}"}
        assert all(c["origin"]["name"] == "Powerwall proxy" for c in configs.values())
        by_id = {c["unique_id"]: c for c in configs.values()}
        # classes and units come from the table
        for point in POINTS:
            if point.label:
                continue
            config = by_id[f"{PREFIX}_{gateway}_{point.key}"]
            assert config.get("device_class") == point.device_class, point.key
            assert config.get("state_class") == point.state_class, point.key
            assert config.get("unit_of_measurement") == point.unit, point.key
        # labelled points: a meter each (once it has counted something), a battery each
        agg = h.get("/aggregates").json()
        for direction in ("imported", "exported"):
            for meter in ("site", "solar", "battery", "load"):
                counted = agg[meter][f"energy_{direction}"] != 0  # counters only grow
                entity = f"{PREFIX}_{gateway}_energy_{direction}_{meter}" in by_id
                assert entity == counted, (direction, meter, agg[meter][f"energy_{direction}"])
        # the simulator's solar meter never imports and its home never exports: no entities
        assert not {f"{PREFIX}_{gateway}_energy_imported_solar",
                    f"{PREFIX}_{gateway}_energy_exported_load"} & set(by_id)
        temps = [i for i in by_id if i.startswith(f"{PREFIX}_{gateway}_battery_temperature_")]
        assert len(temps) == len(h.get("/temps").json()) >= 1
        # control entities, since control is on and the broker needs a password
        assert {f"{PREFIX}_{gateway}_reserve_setting", f"{PREFIX}_{gateway}_mode_setting"} <= set(by_id)
        # availability topics say online; every state topic has a state HA can take
        latest = watch.listener.latest()
        assert latest[f"{PREFIX}/status"].payload == "online"
        assert latest[f"{PREFIX}/{gateway}/status"].payload == "online"
        for topic, config in configs.items():
            state = wait_for(lambda t=config["state_topic"]: watch.listener.last(t),
                             what=f"a state on {config['state_topic']}")
            check_state(components[topic], config, state)

        # states equal the API within one cache window
        topics = {c["state_topic"]: c for c in configs.values()
                  if components[next(t for t in configs if configs[t] is c)] in ("sensor", "binary_sensor")}
        states, api = same_window(h, gateway, lambda: watch.states_of(gateway, set(topics)))
        assert states, "no complete batch of states within a window"
        compared = 0
        for (key, label), value in api.items():
            topic = f"{PREFIX}/{gateway}/{key}" + (f"/{slug(label)}" if label else "")
            if key.startswith("energy_") and value == 0:
                assert topic not in topics and watch.listener.last(topic) is None, topic
                continue
            payload = states[topic]
            if isinstance(value, bool):
                assert payload == ("ON" if value else "OFF"), key
            elif isinstance(value, (int, float)):
                assert float(payload) == pytest.approx(float(value)), (key, label, payload, value)
            else:
                assert payload == value, (key, payload, value)
            compared += 1
        assert compared == len(topics)
        assert h.get("/stats").json()["mqtt"]["connected"] is True
    finally:
        watch.listener.close()


def test_birth_message_resends_discovery_and_stop_says_offline(
        proxy_factory: Factory, broker: Mosquitto) -> None:
    listener = Listener(broker, FILTERS)
    try:
        h = _mqtt_proxy(proxy_factory, broker)
        gateway = h.app.sites.default().id
        config_topic = f"{DISCOVERY}/sensor/{PREFIX}_{gateway}_battery_power/config"
        wait_for(lambda: listener.count(config_topic), what="discovery")
        before = listener.count(config_topic)
        listener.publish(f"{DISCOVERY}/status", "online")
        wait_for(lambda: listener.count(config_topic) > before, what="discovery sent again on HA birth")
        listener.publish(f"{DISCOVERY}/status", "offline")  # HA going away asks for nothing
        h.stop()
        wait_for(lambda: listener.last(f"{PREFIX}/status") == "offline", what="offline on stop")
        # ... and the broker keeps that for whoever subscribes next
        late = Listener(broker, (f"{PREFIX}/status",))
        try:
            found = wait_for(lambda: late.latest().get(f"{PREFIX}/status"), what="retained status")
            assert found.payload == "offline" and found.retain
        finally:
            late.close()
    finally:
        listener.close()


def test_gateway_outage_turns_its_availability_offline(proxy_factory: Factory, broker: Mosquitto) -> None:
    listener = Listener(broker, FILTERS)
    try:
        h = _mqtt_proxy(proxy_factory, broker, PW_CACHE_TTL="0")
        topic = f"{PREFIX}/{h.app.sites.default().id}/status"
        wait_for(lambda: listener.last(topic) == "online", what="gateway online")
        h.sim.set_fault("down")
        wait_for(lambda: listener.last(topic) == "offline", what="gateway offline in an outage")
        assert listener.last(f"{PREFIX}/status") == "online"  # the proxy itself is still there
        flag = f"{PREFIX}/{h.app.sites.default().id}/gateway_online"
        wait_for(lambda: listener.last(flag) == "OFF", what="gateway_online OFF in an outage")
        h.sim.clear_faults()
        wait_for(lambda: listener.last(topic) == "online", what="gateway online again")
        wait_for(lambda: listener.last(flag) == "ON", what="gateway_online ON again")
    finally:
        listener.close()


def test_several_gateways_one_device_each_and_an_aggregate(tmp_path: Any, broker: Mosquitto) -> None:
    listener = Listener(broker, FILTERS)
    env = {**DEFAULT_ENV, "PW_CACHE_EXPIRE": "2", "PW_AUTH_PATH": str(tmp_path), **broker.env()}
    running = start(load_config(env, simulate=True), simulate=2, wait_connected=CONNECT_WAIT)
    try:
        h = settled(ProxyHandle(running))
        ids = [s.id for s in h.app.sites]
        assert len(ids) == 2
        wanted = {f"{PREFIX}_aggregate_battery_level", *_expected_entities(ids[0]),
                  *_expected_entities(ids[1])}
        configs = wait_for(lambda: wanted <= {c["unique_id"] for c in _configs(listener).values()}
                           and _configs(listener), what="configs of both gateways and the aggregate")
        devices = {c["device"]["identifiers"][0] for c in configs.values()}
        assert devices == {f"{PREFIX}_{ids[0]}", f"{PREFIX}_{ids[1]}", f"{PREFIX}_aggregate"}
        for topic, config in configs.items():
            check_config(topic, config)
        level = float(wait_for(lambda: listener.last(f"{PREFIX}/aggregate/battery_level"),
                               what="the aggregate level"))
        assert 0 < level <= 100
        online = wait_for(lambda: listener.last(f"{PREFIX}/aggregate/gateways_online"), what="count")
        assert online == "2"
    finally:
        running.stop()
        listener.close()


def test_control_over_mqtt_uses_the_control_actions(proxy_factory: Factory, broker: Mosquitto) -> None:
    listener = Listener(broker, FILTERS)
    base = f"{PREFIX}/default/control"
    # A retained command waits on the broker; the proxy gets it on subscribing (retain flag
    # set) and must not carry it out: it would replay on every reconnect.
    listener.publish(f"{base}/reserve/set", "55", retain=True)
    try:
        h = _mqtt_proxy(proxy_factory, broker, PW_CONTROL_SECRET="mqtt-control")
        assert h.app.sites.default().id == "default"
        wait_for(lambda: h.get("/stats").json()["mqtt"]["commands_ignored"] >= 1,
                 what="the retained command ignored")
        listener.publish(f"{base}/reserve/set", "", retain=True)  # clear it from the broker
        assert h.get("/control/reserve").json() != {"reserve": 55}
        listener.publish(f"{base}/reserve/set", "41.0")  # as Home Assistant's number may send it
        result = json.loads(wait_for(lambda: listener.last(f"{base}/reserve/result"), what="result"))
        assert result["ok"] is True
        assert h.get("/control/reserve").json() == {"reserve": 41}
        # As the app shows it: 41, not the 41.00000000000001 the gateway's scale gives back.
        wait_for(lambda: listener.last(f"{PREFIX}/default/battery_reserve") == "41",
                 what="the new reserve published")
        assert h.get("/stats").json()["mqtt"]["commands"] == 1
        # a bad value answers an error and changes nothing
        listener.publish(f"{base}/mode/set", "turbo")
        result = json.loads(wait_for(lambda: listener.last(f"{base}/mode/result"), what="mode result"))
        assert result["ok"] is False and "Invalid" in result["error"]
        listener.publish(f"{base}/mode/set", "backup")
        wait_for(lambda: json.loads(listener.last(f"{base}/mode/result") or "{}").get("ok"),
                 what="mode set")
        assert h.get("/control/mode").json() == {"mode": "backup"}
    finally:
        listener.close()


def test_refused_commands_are_counted_each_and_logged_once_a_minute(
        proxy_factory: Factory, broker: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    """Anyone who may publish on the broker can send commands: each refusal is counted, the
    log gets the first line and holds the rest (a count goes out with the next, a minute on)."""
    caplog.set_level(logging.INFO, logger="proxy")
    listener = Listener(broker, FILTERS)
    try:
        h = _mqtt_proxy(proxy_factory, broker, PW_CONTROL_SECRET="mqtt-control")
        gateway = h.app.sites.default().id
        # States go out after the command subscription: once one is seen, commands are heard.
        wait_for(lambda: listener.last(f"{PREFIX}/{gateway}/battery_reserve"), what="states")
        for i in range(20):
            listener.publish(f"{PREFIX}/{gateway}/control/nope/set", str(i))
        wait_for(lambda: h.get("/stats").json()["mqtt"]["commands_ignored"] == 20,
                 what="twenty refusals counted")
    finally:
        listener.close()
    lines = [r.getMessage() for r in caplog.records if "ignored a command" in r.getMessage()]
    assert len(lines) == 1 and "no such gateway or command" in lines[0], lines


def test_no_control_without_secret_or_broker_password(proxy_factory: Factory, broker: Mosquitto) -> None:
    listener = Listener(broker, FILTERS)
    try:
        h = _mqtt_proxy(proxy_factory, broker)  # no PW_CONTROL_SECRET
        gateway = h.app.sites.default().id
        wait_for(lambda: listener.last(f"{PREFIX}/{gateway}/battery_reserve"), what="states")
        before = h.get("/pw/get_reserve").json()
        listener.publish(f"{PREFIX}/{gateway}/control/reserve/set", "61")
        time.sleep(1.0)  # a command would have been carried out by now; none may be
        assert listener.last(f"{PREFIX}/{gateway}/control/reserve/result") is None
        assert h.get("/pw/get_reserve").json() == before
        assert not any("reserve_setting" in c["unique_id"] for c in _configs(listener).values())
        assert h.get("/stats").json()["mqtt"]["control"] is False
    finally:
        listener.close()
    with_secret = load_config({"PW_MQTT_HOST": "h", "PW_CONTROL_SECRET": "x", "PW_MQTT_USER": "u"})
    from proxy.mqtt.discovery import Settings

    assert Settings.from_config(with_secret).control is False  # a user without a password


def test_broker_down_or_gone_never_holds_up_http(proxy_factory: Factory, broker: Mosquitto) -> None:
    h = _mqtt_proxy(proxy_factory, broker)
    wait_for(lambda: h.get("/stats").json()["mqtt"]["connected"], what="connected")
    broker.stop()  # the broker goes away
    mqtt = wait_for(lambda: (m := h.get("/stats").json()["mqtt"]) and not m["connected"] and m,
                    what="the proxy noticing")
    assert mqtt["last_error"]
    for path in ("/aggregates", "/soe", "/health", "/metrics"):
        assert h.get(path, timeout=5).status == 200, path
    listener_broker = broker.start()  # back on the same port: the proxy reconnects by itself
    listener = Listener(listener_broker, FILTERS)
    try:
        wait_for(lambda: h.get("/stats").json()["mqtt"]["connects"] >= 2, what="reconnected")
        wait_for(lambda: listener.last(f"{PREFIX}/status") == "online", what="online again")
        wait_for(lambda: listener.count(f"{DISCOVERY}/sensor/"), what="discovery after reconnect")
    finally:
        listener.close()


def test_a_broker_that_never_answers_leaves_the_proxy_serving(proxy_factory: Factory) -> None:
    env = {"PW_MQTT_HOST": "127.0.0.1", "PW_MQTT_PORT": str(free_port())}  # nobody listens
    h = proxy_factory(env)
    mqtt = wait_for(lambda: (m := h.get("/stats").json()["mqtt"])["last_error"] and m,
                    what="an error in /stats")
    assert mqtt["connected"] is False and mqtt["published"] == 0
    assert h.get("/aggregates").status == 200
    body = h.get("/metrics").text
    assert "powerwall_proxy_mqtt_connected 0.0" in body


def test_a_wrong_broker_password_is_reported_not_fatal(proxy_factory: Factory,
                                                      broker: Mosquitto) -> None:
    h = proxy_factory(broker.env(PW_MQTT_PASSWORD="not-the-password"))
    mqtt = wait_for(lambda: (m := h.get("/stats").json()["mqtt"])["last_error"] and m,
                    what="the refusal in /stats")
    assert mqtt["connected"] is False and "refused" in mqtt["last_error"]
    assert "not-the-password" not in h.get("/stats").text
    assert h.get("/soe").status == 200


def test_mqtt_adds_no_gateway_requests(proxy_factory: Factory, broker: Mosquitto) -> None:
    """The publisher reads like any poller: MQTT alone, and MQTT with many scrapes, make the
    same gateway requests per window as one /metrics scrape per window without MQTT."""
    plain = proxy_factory({"PW_CACHE_EXPIRE": "1"})
    baseline = requests_per_window(plain, scrapes=1)
    plain.stop()
    h = proxy_factory({"PW_CACHE_EXPIRE": "1", **broker.env()})
    wait_for(lambda: h.get("/stats").json()["mqtt"]["published"] > 0, what="publishing")
    alone = requests_per_window(h, scrapes=0)
    busy = requests_per_window(h, scrapes=25)
    assert baseline > 0 and alone > 0, (baseline, alone)  # everyone reads each window
    # Never more than one poller's requests per window, however many read.
    assert alone <= baseline * EDGE and busy <= baseline * EDGE, (baseline, alone, busy)


def test_mqtt_and_the_live_streams_follow_one_hub(proxy_factory: Factory, broker: Mosquitto) -> None:
    """MQTT and a live stream are subscribers of the same refresher, not loops of their own."""
    import http.client

    h = _mqtt_proxy(proxy_factory, broker)
    wait_for(lambda: h.get("/stats").json()["mqtt"]["published"] > 0, what="publishing")
    conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=20)
    try:
        conn.request("GET", "/events")
        response = conn.getresponse()
        assert response.status == 200
        hub = wait_for(lambda: (s := h.get("/stats").json()["hub"])["subscribers"] == [
            "mqtt", "live aggregate"] and s, what="both following the hub")
        assert hub["running"] is True
        response.close()
    finally:
        conn.close()
    wait_for(lambda: h.get("/stats").json()["hub"]["subscribers"] == ["mqtt"], what="the stream gone")


@pytest.mark.parametrize(("env", "message"), [
    ({"PW_MQTT_PORT": "x"}, "PW_MQTT_PORT must be an integer"),
    ({"PW_MQTT_PORT": "70000"}, "PW_MQTT_PORT must be between 1 and 65535"),
    ({"PW_MQTT_TLS": "maybe"}, "PW_MQTT_TLS must be one of"),
    ({"PW_MQTT_RETAIN": "2"}, "PW_MQTT_RETAIN must be one of"),
    ({"PW_MQTT_PREFIX": "pw/#"}, "PW_MQTT_PREFIX must be topic levels"),
    ({"PW_MQTT_PREFIX": "/pw"}, "PW_MQTT_PREFIX must be topic levels"),
    ({"PW_MQTT_DISCOVERY_PREFIX": "ha/+"}, "PW_MQTT_DISCOVERY_PREFIX must be topic levels"),
    ({"PW_MQTT_HOST": "b", "PW_MQTT_PREFIX": "x", "PW_MQTT_DISCOVERY_PREFIX": "x"},
     "PW_MQTT_PREFIX must differ"),
    ({"PW_MQTT_HOST": "b", "PW_GATEWAYS": '[{"id": "aggregate", "host": "h"}]'},
     "gateway id 'aggregate' is an MQTT topic of its own"),
])
def test_mqtt_settings_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(env)


def test_mqtt_settings_defaults_and_secret() -> None:
    from proxy.mqtt.discovery import Settings

    config = load_config({"PW_MQTT_HOST": "broker", "PW_MQTT_PASSWORD": "pw-secret-1",
                          "PW_MQTT_TLS": "yes"})
    settings = Settings.from_config(config)
    assert (settings.port, settings.prefix, settings.discovery_prefix, settings.retain) == (
        8883, "pypowerwall", "homeassistant", False)
    assert "pw-secret-1" in config.secrets() and "pw-secret-1" not in repr(config)
    assert Settings.from_config(load_config({"PW_MQTT_HOST": "b"})).port == 1883


def test_last_will_marks_a_vanished_proxy_offline(broker: Mosquitto, tmp_path: Any) -> None:
    """A proxy killed outright says nothing; the broker publishes its last will for it."""
    import os
    import signal
    import subprocess
    import sys

    listener = Listener(broker, (f"{PREFIX}/status",))
    env = {**os.environ, **DEFAULT_ENV, **broker.env(), "PW_AUTH_PATH": str(tmp_path)}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proxy = subprocess.Popen([sys.executable, "-m", "proxy", "--simulate"], env=env, cwd=root,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: listener.last(f"{PREFIX}/status") == "online", what="the proxy online")
        proxy.send_signal(signal.SIGKILL)
        proxy.wait(10)
        wait_for(lambda: listener.last(f"{PREFIX}/status") == "offline", what="the last will")
    finally:
        if proxy.poll() is None:
            proxy.kill()
            proxy.wait(10)
        listener.close()
