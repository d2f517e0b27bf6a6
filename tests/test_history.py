"""History and events end to end: a real proxy with its store in a temporary folder, the real
pypowerwall library against the simulator, short cache windows and commits every second.

What the store costs the gateway is measured with the simulator's request counts, on several
gateway personalities and a slow gateway; a kill -9 and a read-only folder run the proxy as
a separate process.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from proxy.config import load_config
from proxy.main import start
from tests.brokers import MOSQUITTO, MOSQUITTO_PASSWD, Listener, Mosquitto, free_port, wait_for
from tests.conftest import CONNECT_WAIT, DEFAULT_ENV, Factory, ProxyHandle, settled
from tests.expected import EDGE, requests_by_path
from tests.ha_rules import check_config
from tests.test_openapi import _report as report
from tests.test_openapi import schemathesis
from tests.test_push import SSEReader, open_sse, ws_url
from tests.webhooks import Hook

ROOT = Path(__file__).resolve().parent.parent
HISTORY = {"PW_HISTORY": "yes", "PW_HISTORY_COMMIT_SECONDS": "1", "PW_CACHE_EXPIRE": "1"}
POWERS = ("site_power", "solar_power", "battery_power", "load_power")


@pytest.fixture
def hook() -> Iterator[Hook]:
    receiver = Hook()
    yield receiver
    receiver.close()


def history(h: ProxyHandle, query: str) -> Any:
    reply = h.get("/api/history?" + query)
    assert reply.status == 200, reply.body[:300]
    return reply.json()


def events_of(h: ProxyHandle, query: str = "") -> list[dict[str, Any]]:
    reply = h.get("/api/events?" + query)
    assert reply.status == 200, reply.body[:300]
    found: list[dict[str, Any]] = reply.json()["events"]
    return found


def exactly(count: int, found: list[Any]) -> list[Any] | None:
    return found if len(found) == count else None


def feed_reads(h: ProxyHandle) -> int:
    return int(h.get("/stats").json()["history"]["feed"]["reads"])


# ---- samples, energy -------------------------------------------------------------------------

def test_each_window_is_recorded_as_the_api_showed_it(proxy_factory: Factory) -> None:
    h = proxy_factory({**HISTORY, "PW_CACHE_EXPIRE": "2"})
    site = h.app.sites.default()
    began = int(time.time())
    for _ in range(10):
        reads = feed_reads(h)
        wait_for(lambda reads=reads: feed_reads(h) > reads, what="the next window's read")
        window = site.window()
        rows = history(h, f"points={','.join(POWERS)}&from=-6&step=1")["rows"]
        agg = h.get("/api/meters/aggregates").json()
        if site.window() == window:
            break
    else:
        pytest.fail("never read the history and the aggregates within one window")
    assert rows[-1][1:] == [agg[meter]["instant_power"] for meter in ("site", "solar", "battery", "load")]
    windows_seen = {t // 2 for t, *_ in history(h, f"points=site_power&from={began - 1}&step=1")["rows"]}
    assert len(windows_seen) >= (int(time.time()) - began) // 2 - 1  # a row every window
    body = history(h, "points=grid_status,gateway_online,energy_imported&from=-10")
    assert body["columns"][:3] == ["time", "grid_status", "gateway_online"]
    assert {"energy_imported/site", "energy_imported/solar"} <= set(body["columns"])
    assert body["rows"][-1][1:3] == ["UP", True]


def test_daily_energy_adds_up_to_the_counters_difference(proxy_factory: Factory) -> None:
    h = proxy_factory(HISTORY)
    wait_for(lambda: len(history(h, "points=energy_exported/solar&from=-60&step=1")["rows"]) >= 4,
             what="a few windows of counters")
    query = "points=energy_exported/solar,energy_imported/load&from=-600&step=1"
    counters = history(h, query)["rows"]
    energy = h.get("/api/history/energy").json()
    later = history(h, query)["rows"]  # the energy was read between these two readings
    assert energy["unit"] == "kWh" and energy["columns"][0] == "date"
    col = {name: i for i, name in enumerate(energy["columns"])}
    for point, column in ((1, "solar_exported"), (2, "load_imported")):
        values = [row[point] for row in counters if row[point] is not None]
        after = [row[point] for row in later if row[point] is not None]
        total = sum(row[col[column]] or 0.0 for row in energy["rows"])
        # Rows written after the counters were read may have added a little more.
        assert (values[-1] - values[0]) / 1000 - 0.002 <= total, (column, values, total)
        assert total <= (after[-1] - after[0]) / 1000 + 0.002, (column, after, total)
    month = h.get("/api/history/energy?period=month").json()
    assert month["rows"] and len(month["rows"][-1][0]) == 7  # "YYYY-MM"


# ---- events ------------------------------------------------------------------------------------

class Streams:
    """An SSE listener on /events and a WebSocket on /ws/gateway/default, keeping the events."""

    def __init__(self, h: ProxyHandle) -> None:
        self.lock = threading.Lock()
        self.sse: list[dict[str, Any]] = []
        self.ws: list[dict[str, Any]] = []
        self.listening = open_sse(h, "/events")
        self._stack = contextlib.ExitStack()
        self.socket = self._stack.enter_context(connect(ws_url(h, "/ws/gateway/default")))
        for target in (self._read_sse, self._read_ws):
            threading.Thread(target=target, daemon=True).start()

    def _read_sse(self) -> None:
        reader = SSEReader(self.listening.response)
        with contextlib.suppress(Exception):
            while True:
                fields = reader.next()
                if fields.get("event") == "event":
                    assert "id" not in fields  # a snapshot's id stays the Last-Event-ID
                    with self.lock:
                        self.sse.append(json.loads(fields["data"]))

    def _read_ws(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                message = json.loads(self.socket.recv())
                if message.get("type") == "event":
                    with self.lock:
                        self.ws.append(message)

    def kinds(self) -> tuple[list[str], list[str]]:
        with self.lock:
            return [e["kind"] for e in self.sse], [e["kind"] for e in self.ws]

    def close(self) -> None:
        self._stack.close()
        self.listening.close()


def test_a_grid_outage_is_one_down_and_one_up_event_with_its_duration(proxy_factory: Factory,
                                                                      hook: Hook) -> None:
    h = proxy_factory({**HISTORY, "PW_EVENTS_WEBHOOK": hook.url()})
    wait_for(lambda: feed_reads(h) >= 2, what="the first windows")
    streams = Streams(h)
    try:
        wait_for(lambda: h.app.topics.listeners() == 2, what="both listeners")
        h.sim.set_fault("grid_outage")
        down = wait_for(lambda: events_of(h, "kind=grid"), what="grid_down")
        began = time.monotonic()
        time.sleep(3)
        h.sim.clear_faults()
        ended = time.monotonic()
        found = wait_for(lambda: exactly(2, events_of(h, "kind=grid")), what="grid_up")
        wanted = ["grid_down", "grid_up"]
        assert [e["kind"] for e in found] == wanted and found[0] == down[0]
        duration = found[1]["detail"]["duration_seconds"]
        assert abs(duration - (found[1]["time"] - found[0]["time"])) <= 1
        assert ended - began - 2 <= duration <= ended - began + 4  # within a window or two of it
        wait_for(lambda: streams.kinds() == (wanted, wanted), what="the events on both streams")
        assert streams.sse[1] == {"type": "event", **found[1]} == streams.ws[1]
    finally:
        streams.close()
    posted = wait_for(lambda: exactly(2, hook.received()), what="both webhooks")
    assert [p["kind"] for p in posted] == wanted
    assert posted[1]["detail"] == found[1]["detail"] and posted[0]["message"].startswith("Grid down at")
    # The receiver has the second body before the sender has read the answer and counted it.
    stats = wait_for(lambda: (s := h.get("/stats").json()["history"])["webhooks"][0]["sent"] == 2 and s,
                     what="both webhooks counted as sent")
    assert "secret-id" not in json.dumps(stats)
    time.sleep(2)
    assert len(events_of(h, "kind=grid")) == 2  # and no more


@pytest.mark.skipif(MOSQUITTO is None or MOSQUITTO_PASSWD is None, reason="mosquitto not found")
def test_a_grid_outage_reaches_mqtt_and_home_assistant(proxy_factory: Factory) -> None:
    broker = Mosquitto().start()
    try:
        listener = Listener(broker, ("pypowerwall/#", "homeassistant/#"))
        h = proxy_factory({**HISTORY, **broker.env()})
        topic = "homeassistant/event/pypowerwall_default_grid_event/config"
        config = json.loads(wait_for(lambda: listener.last(topic), what="the grid event entity"))
        assert check_config(topic, config) == "event"  # as Home Assistant takes it
        assert config["state_topic"] == "pypowerwall/default/event"
        assert config["event_types"] == ["grid_down", "grid_up"] and config["device"]["identifiers"]
        h.sim.set_fault("grid_outage")
        wait_for(lambda: events_of(h, "kind=grid_down"), what="grid_down")
        h.sim.clear_faults()
        told = wait_for(lambda: exactly(2, [json.loads(m.payload) for m in listener.all()
                                            if m.topic == "pypowerwall/default/event"]), what="both")
        assert [e["kind"] for e in told] == ["grid_down", "grid_up"]
        assert told == events_of(h, "kind=grid")
        assert not any(m.retain for m in listener.all() if m.topic.endswith("/event"))
        listener.client.loop_stop()
    finally:
        broker.close()


@pytest.mark.slow
def test_schemathesis_finds_nothing_in_the_history_routes(proxy_factory: Factory) -> None:
    """The routes as /openapi.json documents them, with the store on (the other tests of the
    document run with it off, where these routes answer 404)."""
    h = proxy_factory(HISTORY)
    wait_for(lambda: feed_reads(h) >= 2, what="a few windows")
    run = schemathesis(h.url + "openapi.json", "--include-tag", "history")
    assert run.returncode == 0, report(run)
    assert "12 selected /" in run.stdout and " passed" in run.stdout  # 4 routes: GET, HEAD, OPTIONS


def test_who_changed_a_setting_comes_from_the_control_writes(proxy_factory: Factory) -> None:
    h = proxy_factory({**HISTORY, "PW_CONTROL_SECRET": "s3cret"})
    wait_for(lambda: [r for r in history(h, "points=operation_mode,battery_reserve&from=-60&step=1")
                      ["rows"] if None not in r], what="the settings as they were")
    assert h.post("/control/mode", "value=backup&token=s3cret").status == 200
    changed = wait_for(lambda: events_of(h, "kind=mode"), what="mode_changed")
    assert changed[0]["detail"] == {"old": "self_consumption", "new": "backup", "by": "http"}
    assert h.post("/control/reserve", "value=40&token=s3cret").status == 200
    reserve = wait_for(lambda: events_of(h, "kind=reserve"), what="reserve_changed")
    assert reserve[0]["detail"]["by"] == "http" and abs(reserve[0]["detail"]["new"] - 40) < 0.01


def test_a_firmware_change_is_one_event_and_one_log_line(proxy_factory: Factory,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxy.firmware")
    h = proxy_factory({**HISTORY, "PW_FIRMWARE_CHECK_INTERVAL": "30"})
    watch = h.running.history.watch
    first = wait_for(watch.versions, what="the first firmware check")["default"]
    h.sim.set_firmware("26.2.1")
    site = h.app.sites.default()
    window = site.window()
    wait_for(lambda: site.window() != window, what="the next window")  # the old version's window ends
    watch.check_all()  # what the watch does every PW_FIRMWARE_CHECK_INTERVAL seconds
    watch.check_all()
    changed = events_of(h, "kind=firmware")
    new = h.sim.site.layout.firmware
    assert [(e["kind"], e["detail"]) for e in changed] == [
        ("firmware_changed", {"old": first, "new": new})]
    lines = [r.getMessage() for r in caplog.records if r.name == "proxy.firmware"]
    assert lines == [f"Gateway firmware: {first}", f"Gateway firmware changed: {first} -> {new}"]
    assert history(h, "points=firmware_version&from=-60")["rows"][-1][1] == new


# ---- restarts, crashes, a folder that cannot be written ------------------------------------------

def test_a_restart_keeps_everything(proxy_factory: Factory) -> None:
    first = proxy_factory(HISTORY)
    wait_for(lambda: feed_reads(first) >= 3, what="a few windows")
    first.sim.set_fault("grid_outage")
    wait_for(lambda: events_of(first, "kind=grid"), what="grid_down")
    before = history(first, "points=site_power&from=-120&step=1")["rows"]
    energy = first.get("/api/history/energy").json()["rows"]
    first.stop()  # a clean stop commits what is buffered
    second = proxy_factory(HISTORY)  # the same PW_DATA_DIR
    kept = history(second, "points=site_power&from=-120&step=1")["rows"]
    assert kept[:len(before)] == before
    assert events_of(second, "kind=grid")[0]["kind"] == "grid_down"
    later = second.get("/api/history/energy").json()["rows"]
    assert later[0][0] == energy[0][0]
    # The outage that spanned the restart ends once, with its whole duration.
    second.sim.clear_faults()  # a new simulator: its grid is up
    up = wait_for(lambda: [e for e in events_of(second, "kind=grid_up")], what="grid_up")
    assert len(up) == 1 and len(events_of(second, "kind=grid_down")) == 1


def test_the_backup_is_a_whole_database_sent_as_a_file(proxy_factory: Factory, tmp_path: Path) -> None:
    h = proxy_factory(HISTORY)
    wait_for(lambda: feed_reads(h) >= 2, what="a couple of windows")
    conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=30)
    conn.request("HEAD", "/api/history/backup")
    head = conn.getresponse()
    assert head.status == 200 and head.read() == b""
    conn.request("GET", "/api/history/backup")
    reply = conn.getresponse()
    body = reply.read()
    conn.close()
    assert reply.status == 200 and reply.getheader("Content-Length") == str(len(body))
    assert reply.getheader("Content-Type") == "application/vnd.sqlite3"
    assert "attachment" in (reply.getheader("Content-Disposition") or "")
    copy = tmp_path / "copy.sqlite3"
    copy.write_bytes(body)
    with contextlib.closing(sqlite3.connect(copy)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables, "the copy has the store's tables"
    assert not list(Path(tempfile.gettempdir()).glob("pwproxy-backup-*")), "no copy left behind"


def _subprocess_proxy(tmp_path: Path, data: Path,
                      wrap: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], int]:
    """`python3 -m proxy --simulate` with its store in `data` (run under `wrap`, if any)."""
    port = free_port()
    env = {**os.environ, "PW_PORT": str(port), "PW_BIND_ADDRESS": "127.0.0.1",
           "PW_AUTH_PATH": str(tmp_path), "PW_DATA_DIR": str(data), "PW_FIRMWARE_CHECK_INTERVAL": "0",
           **HISTORY}
    proc = subprocess.Popen([*wrap, sys.executable, "-m", "proxy", "--simulate"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, port


def _get(port: int, path: str) -> tuple[int, Any]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    except (OSError, ValueError):
        return 0, None
    finally:
        conn.close()


def test_kill_9_while_writing_leaves_an_intact_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc, port = _subprocess_proxy(tmp_path, data)
    try:
        wait_for(lambda: (_get(port, "/stats")[1] or {}).get("history", {}).get("store", {})
                 .get("commits", 0) >= 3, what="three commits")
        committed = sqlite3.connect(data / "history.sqlite3")  # sees only what is committed
        newest = committed.execute("SELECT MAX(t) FROM raw").fetchone()[0]
        committed.close()
        assert newest is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    conn = sqlite3.connect(data / "history.sqlite3")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT MAX(t) FROM raw").fetchone()[0] >= newest  # nothing committed lost
    conn.close()
    from proxy.history.store import Store

    reopened = Store(data / "history.sqlite3")
    reopened.open()  # and the store takes it up again
    assert reopened.describe()["status"] == "ok"
    reopened.stop()


def _read_only(data: Path) -> tuple[str, ...]:
    """How to run a child process that finds `data` read-only: chmod where that binds us, else
    (as root) a read-only tmpfs in the child's own mount namespace."""
    if os.geteuid() != 0:
        data.chmod(0o555)
        return ()
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot make a read-only folder here (root, but no mount namespace)")
    return ("unshare", "--mount", "--propagation", "private", "sh", "-c",
            f"mount -t tmpfs -o ro tmpfs '{data}' && exec \"$0\" \"$@\"")


def test_a_full_disk_degrades_honestly(tmp_path: Path) -> None:
    if os.geteuid() != 0 or subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode:
        pytest.skip("a small file system of its own needs root in a mount namespace")
    data = tmp_path / "data"
    data.mkdir()
    tiny = ("unshare", "--mount", "--propagation", "private", "sh", "-c",
            f"mount -t tmpfs -o size=96k tmpfs '{data}' && exec \"$0\" \"$@\"")
    proc, port = _subprocess_proxy(tmp_path, data, tiny)
    try:
        store = wait_for(lambda: (r := _get(port, "/health"))[0] == 200 and r[1]["history"]["error"]
                         and r[1]["history"], what="the store to fill the disk", timeout=60)
        assert store["status"] == "error" and "full" in store["error"], store
        assert _get(port, "/aggregates")[0] == 200  # the proxy serves on
        status, body = _get(port, "/api/history?from=-60")
        assert status in (200, 503), body  # what was kept can still be read, or an honest 503
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert b"Traceback" not in err, err.decode(errors="replace")[-2000:]


def test_a_read_only_data_folder_degrades_honestly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    proc, port = _subprocess_proxy(tmp_path, data, _read_only(data))
    try:
        health = wait_for(lambda: (r := _get(port, "/health"))[0] == 200 and r[1], what="ok")
        assert health["status"] == "ok"  # the proxy's own health is unaffected ...
        store = health["history"]
        assert store["status"] == "error" and "read-only" in store["error"].lower(), store
        status, body = _get(port, "/api/history")
        assert status == 503 and body["error"].startswith("History unavailable"), body
        assert _get(port, "/aggregates")[0] == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert b"Traceback" not in err, err.decode(errors="replace")[-2000:]


# ---- what the store costs the gateway ------------------------------------------------------------

POLLED = ("/api/meters/aggregates", "/api/system_status/soe", "/api/system_status/grid_status",
          "/api/operation")


def _proxy(tmp_path: Path, profile: str, **env: str) -> ProxyHandle:
    merged = {**DEFAULT_ENV, "PW_AUTH_PATH": str(tmp_path), "PW_DATA_DIR": str(tmp_path / "data"), **env}
    config = load_config(merged, simulate=True, simulate_profile=profile)
    return settled(ProxyHandle(start(config, wait_connected=CONNECT_WAIT)))


# TEDAPI (default), the local API (pw2-legacy: every resource a path of its own), a slow gateway.
@pytest.mark.parametrize(("profile", "slow"), [("default", 0.0), ("pw2-legacy", 0.0), ("default", 0.4)])
def test_the_store_asks_the_gateway_what_a_poller_of_four_routes_would(
        tmp_path: Path, profile: str, slow: float) -> None:
    off = _proxy(tmp_path / "off", profile, PW_CACHE_EXPIRE="1")
    try:
        if slow:
            off.sim.set_fault("slow", delay=slow)
        if profile == "default" and not slow:
            assert requests_by_path(off, 3) == {}  # PW_HISTORY=no: an idle proxy asks nothing
        poller = requests_by_path(off, 3, lambda window: [off.get(path) for path in POLLED] and None)
    finally:
        off.stop()
    on = _proxy(tmp_path / "on", profile, **HISTORY)
    try:
        if slow:
            on.sim.set_fault("slow", delay=slow)
        feed = on.running.history.feed
        wait_for(lambda: feed.reads >= 2, what="the first reads (the slow ones among them)")
        recorded = requests_by_path(on, 3)
        assert feed.slow_reads == 1  # temperatures, alerts, system status: once a minute
    finally:
        on.stop()
    assert recorded and set(recorded) <= set(poller), (recorded, poller)
    for path, count in recorded.items():
        assert count <= poller[path] * EDGE, (path, recorded, poller)
