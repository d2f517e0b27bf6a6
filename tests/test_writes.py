"""Writes in order and never lost, whichever front door they came through.

A reserve and a mode sent at the same moment, over HTTP (/control/*), OpenC2 and MQTT,
both end up on the gateway (the library's local write fills the field it was not given
from the gateway's settings; it must read them after the other write, not before). Each
answer shows the state after its own write; a write the gateway refused is reported so.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.brokers import MOSQUITTO, MOSQUITTO_PASSWD, Listener, Mosquitto, wait_for
from tests.conftest import Factory, ProxyHandle
from tests.ha_rules import PREFIX
from tests.sim_helpers import quiet
from tests.test_openc2 import SECRET, ask, set_cmd

needs_mosquitto = pytest.mark.skipif(
    MOSQUITTO is None or MOSQUITTO_PASSWD is None,
    reason="mosquitto not found; install Debian's mosquitto (tests/run.sh does as root)")

CONTROL = f"{PREFIX}/default/control"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def doors(proxy_factory: Factory) -> Iterator[tuple[ProxyHandle, Listener]]:
    """A proxy taking writes over HTTP, OpenC2 and MQTT (a real Mosquitto), and a listener."""
    broker = Mosquitto().start()
    try:
        h = proxy_factory({"PW_CONTROL_SECRET": SECRET, "PW_OPENC2_TOKEN": "oc2-query-token",
                           **broker.env()})
        listener = Listener(broker, (f"{CONTROL}/#",))
        try:
            yield h, listener
        finally:
            listener.close()
    finally:
        broker.close()


def at_once(*writes: Callable[[], Any]) -> list[Any]:
    """Start every write at the same moment; their results in order."""
    gate = threading.Barrier(len(writes))
    results: list[Any] = [None] * len(writes)

    def run(i: int) -> None:
        gate.wait(10)
        results[i] = writes[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(writes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def http(h: ProxyHandle, name: str, value: Any) -> Any:
    reply = h.post(f"/control/{name}", f"value={value}&token={SECRET}", headers=FORM)
    assert reply.status == 200, (name, value, reply.body)
    return reply.json()


def openc2(h: ProxyHandle, name: str, value: Any) -> Any:
    reply, response = ask(h, set_cmd(name, value), token=SECRET)
    assert reply.status == 200, (name, value, reply.body)
    return response.results


def mqtt(listener: Listener, name: str, value: Any) -> dict[str, Any]:
    before = listener.count(f"{CONTROL}/{name}/result")
    listener.publish(f"{CONTROL}/{name}/set", str(value))
    wait_for(lambda: listener.count(f"{CONTROL}/{name}/result") > before, what=f"the {name} result")
    result: dict[str, Any] = json.loads(listener.last(f"{CONTROL}/{name}/result") or "{}")
    assert result.get("ok") is True, result
    return result


def on_gateway(h: ProxyHandle) -> tuple[float, str]:
    state = h.sim.state()
    return round(state["reserve_app"]), state["mode"]


@needs_mosquitto
def test_a_reserve_and_a_mode_from_three_front_doors_all_end_up_on_the_gateway(
        doors: tuple[ProxyHandle, Listener]) -> None:
    h, listener = doors
    rounds = [
        (lambda: http(h, "reserve", 37), lambda: openc2(h, "operation_mode", "backup"),
         lambda: mqtt(listener, "mode", "backup"), (37, "backup")),
        (lambda: mqtt(listener, "reserve", 52), lambda: http(h, "mode", "self_consumption"),
         lambda: openc2(h, "backup_reserve", 52), (52, "self_consumption")),
        (lambda: openc2(h, "backup_reserve", 23), lambda: mqtt(listener, "mode", "autonomous"),
         lambda: http(h, "mode", "autonomous"), (23, "autonomous")),
    ]
    for *writes, expected in rounds:
        answers = at_once(*writes)
        assert on_gateway(h) == expected, (answers, on_gateway(h))
        bearer = {"Authorization": f"Bearer {SECRET}"}
        assert h.get("/control/reserve", headers=bearer).json()["reserve"] == pytest.approx(expected[0])
        assert h.get("/control/mode", headers=bearer).json() == {"mode": expected[1]}
    # The writes woke the hub (MQTT follows it): its reads may still be on their way.
    wait_for(lambda: quiet(h), what="no gateway call in flight")


@needs_mosquitto
def test_each_answer_shows_the_state_after_its_own_write(doors: tuple[ProxyHandle, Listener]) -> None:
    h, _ = doors
    http(h, "mode", "self_consumption")
    old_reserve = on_gateway(h)[0]
    assert old_reserve != 41
    reserve, mode = at_once(lambda: http(h, "reserve", 41), lambda: http(h, "mode", "backup"))
    assert reserve["backup_reserve_percent"] == 41 and mode["real_mode"] == "backup"
    # One went first; the other's answer shows the first one's effect, the first's does not.
    if mode["backup_reserve_percent"] == pytest.approx(41):
        assert reserve["real_mode"] == "self_consumption"
    else:
        assert mode["backup_reserve_percent"] == pytest.approx(old_reserve)
        assert reserve["real_mode"] == "backup"
    assert on_gateway(h) == (41, "backup")


@needs_mosquitto
def test_a_write_the_gateway_refuses_is_reported_refused(doors: tuple[ProxyHandle, Listener],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    h, listener = doors
    caplog.set_level(logging.INFO, logger="proxy.control")
    before = on_gateway(h)
    h.sim.set_fault("status", paths=["/api/operation"], status=400)
    try:
        reply = h.post("/control/reserve", f"value=61&mode=backup&token={SECRET}", headers=FORM)
        assert reply.status == 502 and "Failed to set" in reply.json()["error"], reply.body
        listener.publish(f"{CONTROL}/reserve/set", "61")
        result = json.loads(wait_for(lambda: listener.last(f"{CONTROL}/reserve/result"), what="result"))
        assert result["ok"] is False, result
    finally:
        h.sim.clear_faults()
    assert on_gateway(h) == before
    lines = [r.getMessage() for r in caplog.records if r.name == "proxy.control"]
    assert any("reserve=61 mode=backup failed" in line for line in lines), lines
    assert not any("accepted" in line for line in lines), lines


@pytest.mark.parametrize("profile", ["pw2-legacy", "http10"])
def test_writes_sent_together_to_a_slow_gateway_of_another_kind_both_land(
        proxy_factory: Factory, profile: str) -> None:
    """Customer-login gateways (a Powerwall 2, an HTTP/1.0 one), 0.3 s an answer: a reserve and
    a mode from two front doors at once, while reads are in flight, both end up on the gateway."""
    h = proxy_factory({"PW_CONTROL_SECRET": SECRET, "PW_OPENC2_TOKEN": "oc2-query-token"},
                      simulate_profile=profile)
    http(h, "mode", "self_consumption")
    h.sim.set_fault("slow", delay=0.3)
    reserve, mode, _ = at_once(lambda: http(h, "reserve", 44), lambda: openc2(h, "operation_mode", "backup"),
                               lambda: h.get("/aggregates", timeout=30))
    assert reserve["backup_reserve_percent"] == 44 and mode, (reserve, mode)
    assert on_gateway(h) == (44, "backup")
    wait_for(lambda: quiet(h), what="no gateway call in flight")
    assert h.sim.stats()["most_in_flight"] <= 2, h.sim.stats()  # what the gateway saw at once
