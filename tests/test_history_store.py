"""The history store on a real file, and its pure parts: energy days, events, steps, webhooks.

No proxy and no gateway here (tests/test_history.py runs those): a `Store` in a temporary
folder, fed samples with chosen times, read back through the same functions the routes use.
"""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from proxy.config import Secret
from proxy.history import answers, energy, events, query, rollup, schema
from proxy.history.events import Event, Observation, State, watch
from proxy.history.recorder import Origins, Recorder, Window
from proxy.history.store import Limits, Sample, Store, StoreError
from proxy.history.webhook import Receiver, Webhooks
from tests.brokers import wait_for
from tests.webhooks import Hook

LA = ZoneInfo("America/Los_Angeles")
T0 = 1_780_000_000  # 2026-05-28, a Thursday


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "history.sqlite3", Limits(raw_days=1, commit_seconds=1))
    s.open()
    yield s
    s.stop()


def power(value: float) -> Sample:
    return Sample("site_power", "", value, schema.MEAN)


def rows_of(store: Store, point: str, begin: int, end: int, step: int, gw: str = "default") -> list[Any]:
    gateway = answers.Gateway(gw, 5, True)
    cols = answers.columns(store, [gateway], [point])
    return answers.history(store, [gateway], cols, begin, end, step)


# ---- the file -------------------------------------------------------------------------------

def test_a_new_file_is_wal_incremental_and_marked_as_ours(tmp_path: Path) -> None:
    path = tmp_path / "data" / "history.sqlite3"  # the folder is made too
    s = Store(path)
    s.open()
    s.stop()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.VERSION
    assert conn.execute("PRAGMA application_id").fetchone()[0] == schema.APPLICATION_ID
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_reads_include_what_is_not_committed_and_a_commit_makes_it_durable(store: Store) -> None:
    store.add_samples("default", T0, [power(100.0)])
    store.add_samples("default", T0 + 5, [power(300.0)])
    assert rows_of(store, "site_power", T0, T0 + 10, 5) == [[T0, 100.0], [T0 + 5, 300.0]]
    outside = sqlite3.connect(store.path)  # another connection sees only what is committed
    assert outside.execute("SELECT count(*) FROM raw").fetchone()[0] == 0
    assert store.commit()
    assert outside.execute("SELECT count(*) FROM raw").fetchone()[0] == 2


def test_an_older_file_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("PRAGMA auto_vacuum = INCREMENTAL")
    for statement in schema.CREATE_V1:
        old.execute(statement)
    old.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
    old.execute("PRAGMA user_version = 1")
    old.execute("INSERT INTO events (t, gw, kind, detail) VALUES (?, 'default', 'grid_down', '{}')", (T0,))
    old.close()
    s = Store(path)
    s.open()
    assert s.describe()["migrated_from_schema"] == 1
    assert answers.events(s, ["default"], None, 0, T0 + 1) == [
        {"time": T0, "gw": "default", "kind": "grid_down", "detail": {}}]
    s.stop()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.VERSION
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'events_gateway'").fetchone()
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'hour'").fetchone()


def test_a_newer_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    newer = sqlite3.connect(path)
    newer.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
    newer.execute("PRAGMA user_version = 99")
    newer.execute("CREATE TABLE future (x)")
    newer.commit()
    newer.close()
    before = path.read_bytes()
    s = Store(path)
    with pytest.raises(StoreError, match="newer version of the proxy .*schema 99"):
        s.open()
    assert not s.available() and "newer version" in s.describe()["error"]
    assert path.read_bytes() == before


def test_a_file_of_another_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE photos (name TEXT)")
    other.commit()
    other.close()
    with pytest.raises(StoreError, match="another program"):
        Store(path).open()


def test_a_folder_that_cannot_be_made_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    s = Store(blocker / "history.sqlite3")
    with pytest.raises(StoreError, match="cannot open"):
        s.open()
    assert s.describe()["status"] == "error"
    s.add_samples("default", T0, [power(1.0)])  # a store that is not open takes writes quietly
    assert not s.commit()


def test_a_backup_is_a_consistent_copy_of_what_is_committed(store: Store, tmp_path: Path) -> None:
    store.add_samples("default", T0, [power(42.0)])
    store.add_event(T0, "default", "grid_down", {})
    target = tmp_path / "copy.sqlite3"
    store.backup(str(target))  # commits first
    copy = sqlite3.connect(target)
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert copy.execute("SELECT value FROM raw").fetchall() == [(42.0,)]
    assert copy.execute("SELECT kind FROM events").fetchall() == [("grid_down",)]


# ---- downsampling, pruning, the size bound ----------------------------------------------------

def _fill(store: Store, start: int, seconds: int, step: int = 5) -> None:
    for t in range(start, start + seconds, step):
        store.add_samples("default", t, [power(float(t % 120)),
                                         Sample("grid_status", "", "DOWN" if t % 900 == 0 else "UP",
                                                schema.LAST)])


def _maintain(store: Store) -> None:
    while store.maintain(5.0):
        pass
    store.commit()


def test_three_days_are_rolled_up_and_raw_rows_pruned(tmp_path: Path) -> None:
    clock = Clock(T0 + 3 * 86400)
    s = Store(tmp_path / "h.sqlite3", Limits(raw_days=1, commit_seconds=1), clock=clock)
    s.open()
    _fill(s, T0, 3 * 86400)
    _maintain(s)
    conn = sqlite3.connect(s.path)
    oldest_raw = conn.execute("SELECT MIN(t) FROM raw").fetchone()[0]
    assert oldest_raw >= clock.now - 86400 - 60  # raw for PW_HISTORY_RAW_DAYS ...
    assert conn.execute("SELECT MIN(t) FROM minute").fetchone()[0] == T0 // 60 * 60  # ... minutes
    assert conn.execute("SELECT MIN(t) FROM quarter").fetchone()[0] == T0 // 900 * 900
    assert conn.execute("SELECT MIN(t) FROM hour").fetchone()[0] == T0 // 3600 * 3600
    # A minute's mean is the mean of its samples; a state keeps the minute's last value.
    minute = (T0 // 60 + 10) * 60
    expected = sum(float(t % 120) for t in range(minute, minute + 60, 5)) / 12
    assert conn.execute("SELECT value FROM minute m JOIN series s ON s.id = m.series "
                        "WHERE s.point = 'site_power' AND t = ?", (minute,)).fetchone()[0] == expected
    # Read over everything: quarters, then minutes, then raw, never overlapping.
    hourly = rows_of(s, "site_power", T0, int(clock.now), 3600)
    assert len(hourly) == 72 or len(hourly) == 73
    assert all(abs(v - 57.5) < 0.01 for _, v in hourly[1:-1]), hourly[:3]  # mean of 0, 5 … 115
    states = rows_of(s, "grid_status", T0, int(clock.now), 3600)
    assert {v for _, v in states} <= {"UP", "DOWN"}
    s.stop()


def test_the_size_bound_drops_the_oldest_fine_rows_first(tmp_path: Path) -> None:
    clock = Clock(T0 + 2 * 86400)
    s = Store(tmp_path / "h.sqlite3", Limits(raw_days=30, max_bytes=600_000, commit_seconds=1),
              clock=clock)
    s.open()
    _fill(s, T0, 2 * 86400)
    _maintain(s)
    conn = sqlite3.connect(s.path)
    assert rollup.used_bytes(conn) <= 600_000
    oldest_raw = conn.execute("SELECT MIN(t) FROM raw").fetchone()[0]
    assert oldest_raw > T0 + 86400  # raw went first (kept for 30 days otherwise) ...
    assert conn.execute("SELECT MIN(t) FROM minute").fetchone()[0] == T0 // 60 * 60  # ... minutes stay
    s.stop()


# ---- daily energy -------------------------------------------------------------------------------

def test_energy_is_split_at_local_midnight_including_dst() -> None:
    spring = datetime.date(2026, 3, 8)  # 23 hours long in Los Angeles
    start = energy.day_start(spring, LA)
    assert energy.day_start(spring + datetime.timedelta(days=1), LA) - start == 23 * 3600
    fall = datetime.date(2026, 11, 1)  # 25 hours long
    assert energy.day_start(fall + datetime.timedelta(days=1), LA) - energy.day_start(fall, LA) == 25 * 3600
    # 2 kWh over the two hours around midnight: half to each day.
    parts = energy.split(start - 3600, start + 3600, 2000.0, LA)
    assert parts == [(spring - datetime.timedelta(days=1), 1000.0), (spring, 1000.0)]


def test_a_counter_that_goes_down_starts_a_new_segment() -> None:
    a = energy.Reading(5000.0, T0)
    assert energy.gain(None, a, LA) == []
    assert energy.gain(a, energy.Reading(5100.0, T0 + 60), LA)[0][1] == 100.0
    assert energy.gain(a, energy.Reading(10.0, T0 + 60), LA) == []  # reset: the drop is no energy


def _window(t: int, imported: float, exported: float = 0.0, **more: Any) -> Window:
    samples = (Sample("energy_imported", "site", imported, schema.LAST),
               Sample("energy_exported", "site", exported, schema.LAST))
    return Window("default", t, True, samples, **more)


def test_daily_energy_equals_the_counters_difference_across_a_reset_and_midnight(tmp_path: Path) -> None:
    s = Store(tmp_path / "h.sqlite3")
    s.open()
    recorder = Recorder(s, {"default": LA})
    midnight = int(energy.day_start(datetime.date(2026, 6, 2), LA))
    readings = [(midnight - 600, 1000.0), (midnight - 300, 1500.0), (midnight + 300, 2500.0),
                (midnight + 600, 40.0),  # the meter was reset: a new segment from 40
                (midnight + 900, 240.0)]
    for t, value in readings:
        recorder.record(_window(t, value))
    first_day = 500.0 + 1000.0 / 2  # 1000 -> 1500, then half of 1500 -> 2500
    second_day = 1000.0 / 2 + 200.0  # the other half, then 40 -> 240
    table = answers.energy(s, ["default"], datetime.date(2026, 6, 1), datetime.date(2026, 6, 2), False)
    assert table[0][:3] == ["2026-06-01", first_day / 1000, 0.0]
    assert table[1][:3] == ["2026-06-02", second_day / 1000, 0.0]
    s.stop()
    # A restart continues from the stored counter: nothing is counted twice, nothing lost.
    s = Store(tmp_path / "h.sqlite3")
    s.open()
    Recorder(s, {"default": LA}).record(_window(midnight + 1200, 340.0))
    again = answers.energy(s, ["default"], datetime.date(2026, 6, 2), datetime.date(2026, 6, 2), False)
    assert again[0][1] == (second_day + 100.0) / 1000
    by_month = answers.energy(s, ["default"], datetime.date(2026, 6, 1), datetime.date(2026, 6, 30), True)
    assert by_month == [["2026-06", (first_day + second_day + 100.0) / 1000, 0.0, *[None] * 6]]
    s.stop()


# ---- events ---------------------------------------------------------------------------------------

def _run(observations: list[Observation], state: State | None = None,
         origin: events.Origin = lambda setting: None) -> tuple[State, list[Event]]:
    state = state or State()
    found: list[Event] = []
    for obs in observations:
        state, new = watch(state, obs, "default", origin)
        found += new
    return state, found


def test_grid_down_then_up_with_the_outage_duration() -> None:
    obs = [Observation(T0, True, grid="UP"), Observation(T0 + 5, True, grid="DOWN"),
           Observation(T0 + 10, True, grid="DOWN"), Observation(T0 + 15, True, grid="SYNCING"),
           Observation(T0 + 125, True, grid="UP"), Observation(T0 + 130, True, grid="UP")]
    _, found = _run(obs)
    assert [(e.kind, e.time, dict(e.detail)) for e in found] == [
        ("grid_down", T0 + 5, {}), ("grid_up", T0 + 125, {"duration_seconds": 120})]


def test_an_outage_that_spans_a_restart_is_told_once() -> None:
    state, found = _run([Observation(T0, True, grid="DOWN")])
    kept = State.from_json(json.loads(json.dumps(state.as_json())))  # through the store
    _, more = _run([Observation(T0 + 300, True, grid="DOWN"), Observation(T0 + 600, True, grid="UP")], kept)
    assert [e.kind for e in found + more] == ["grid_down", "grid_up"]
    assert more[0].detail["duration_seconds"] == 600


def test_alerts_must_hold_for_two_readings_and_grid_alerts_are_left_out() -> None:
    standing = ("FWUpdateSucceeded", "SystemConnectedToGrid")
    obs = [Observation(T0, True, alerts=standing),  # baseline: nothing told
           Observation(T0 + 60, True, alerts=(*standing, "BatteryFault")),  # once: a flicker?
           Observation(T0 + 120, True, alerts=(*standing, "BatteryFault")),  # twice: raised
           Observation(T0 + 180, True, alerts=("FWUpdateSucceeded", "SystemIslandedActive")),
           Observation(T0 + 240, True, alerts=("FWUpdateSucceeded", "SystemIslandedActive")),
           Observation(T0 + 250, True, alerts=None)]  # not read this window: no change
    _, found = _run(obs)
    assert [(e.kind, e.time, dict(e.detail)) for e in found] == [
        ("alert_raised", T0 + 120, {"alert": "BatteryFault"}),
        ("alert_cleared", T0 + 240, {"alert": "BatteryFault"})]


def test_settings_changes_say_who_changed_them() -> None:
    obs = [Observation(T0, True, mode="self_consumption", reserve=20.0),
           Observation(T0 + 5, True, mode="backup", reserve=20.0),
           Observation(T0 + 10, True, mode="backup", reserve=35.0)]
    _, found = _run(obs, origin=lambda setting: "mqtt" if setting == "reserve" else None)
    assert [(e.kind, dict(e.detail)) for e in found] == [
        ("mode_changed", {"old": "self_consumption", "new": "backup", "by": "gateway"}),
        ("reserve_changed", {"old": 20.0, "new": 35.0, "by": "mqtt"})]


def test_a_change_soon_after_a_write_is_that_front_doors_once() -> None:
    clock = Clock(T0)
    origins = Origins(clock)
    origins.heard("default", "operation", "openc2", accepted=True)  # reserve and mode at once
    origins.heard("default", "reserve", "mqtt", accepted=False)  # refused: no change to explain
    assert origins("default", "mode") == "openc2"
    assert origins("default", "mode") is None  # told once: a later change is the gateway's
    clock.now += 61
    assert origins("default", "reserve") is None  # too long ago to be the cause
    assert origins("cabin", "mode") is None


def test_unreachable_after_60_seconds_and_back() -> None:
    obs = [Observation(T0, True, grid="UP"),
           *(Observation(T0 + s, False, error="gateway unavailable") for s in range(5, 70, 5)),
           Observation(T0 + 70, True, grid="UP")]
    _, found = _run(obs)
    assert [(e.kind, e.time) for e in found] == [("gateway_unreachable", T0 + 65),
                                                 ("gateway_back", T0 + 70)]
    assert found[0].detail == {"since": T0 + 5, "error": "gateway unavailable"}
    assert found[1].detail == {"duration_seconds": 65}
    _, brief = _run([Observation(T0, False), Observation(T0 + 30, False), Observation(T0 + 35, True)])
    assert brief == []


def test_event_kinds_and_groups() -> None:
    assert events.kinds_matching("grid") == ("grid_down", "grid_up")
    assert events.kinds_matching("grid_up,alert") == ("grid_up", "alert_raised", "alert_cleared")
    with pytest.raises(ValueError, match="unknown event kind 'weather'"):
        events.kinds_matching("weather")


# ---- reading: times and steps --------------------------------------------------------------------

def test_times_as_iso_relative_or_unix() -> None:
    now = float(T0)
    assert query.parse_time("-3600", "from", now, LA) == now - 3600
    assert query.parse_time("1780000000", "from", now, LA) == T0
    assert query.parse_time("2026-05-28T00:00", "from", now, LA) == energy.day_start(
        datetime.date(2026, 5, 28), LA)
    assert query.parse_time("2026-05-28T07:00:00Z", "from", now, LA) == energy.day_start(
        datetime.date(2026, 5, 28), LA)
    with pytest.raises(query.QueryError, match="ISO 8601"):
        query.parse_time("yesterday", "from", now, LA)
    with pytest.raises(query.QueryError, match="from must be before to"):
        query.time_range("-10", "-20", now, LA, 3600)


def test_steps_keep_answers_within_ten_thousand_rows() -> None:
    now = float(T0)
    assert query.choose_step(now - 3600, now, now, 5, 2) == 5  # each window
    assert query.choose_step(now - 86400, now, now, 5, 2) == 60  # 17,280 windows: minutes
    assert query.choose_step(now - 5 * 86400, now, now, 1, 2) == 60  # older than raw: minutes
    assert query.choose_step(now - 8 * 86400, now, now, 5, 2) == 900  # 10,000 rows at most
    assert query.choose_step(now - 365 * 86400, now, now, 5, 2) == 3600  # quarters, summed up
    assert query.check_step("60", now - 86400, now) == 60
    with pytest.raises(query.QueryError, match="smallest step that fits is 9"):
        query.check_step("5", now - 86400, now)
    with pytest.raises(query.QueryError, match="whole number of seconds"):
        query.check_step("1.5", now - 60, now)


def test_several_gateways_are_added_up_as_the_aggregate_does(store: Store) -> None:
    for gw, power_w, level, full in (("a", 1000.0, 50.0, 10000.0), ("b", 500.0, 100.0, 30000.0)):
        store.add_samples(gw, T0, [power(power_w), Sample("battery_level", "", level, schema.MEAN),
                                   Sample("battery_full_energy", "", full, schema.MEAN),
                                   Sample("grid_status", "", "UP" if gw == "a" else "DOWN", schema.LAST)])
    both = [answers.Gateway("a", 5, True), answers.Gateway("b", 5, True)]
    cols = answers.columns(store, both, ["site_power", "battery_level", "grid_status"])
    assert answers.history(store, both, cols, T0, T0 + 5, 5) == [[T0, 1500.0, 87.5, "DOWN"]]
    with pytest.raises(query.QueryError, match="cannot be added up"):
        answers.columns(store, both, ["operation_mode"])


# ---- webhooks ------------------------------------------------------------------------------------

@pytest.fixture
def hook() -> Iterator[Hook]:
    receiver = Hook()
    yield receiver
    receiver.close()


def test_a_webhook_is_retried_until_it_takes_the_event(hook: Hook) -> None:
    hook.failures.extend([500, 503])
    hooks = Webhooks([Secret(hook.url())], lambda gw: "Home", first_delay=0.01)
    hooks.start()
    hooks(Event(T0, "default", "grid_up", {"duration_seconds": 3720}))
    # The receiver has the body before the sender has read the answer and counted it.
    wait_for(lambda: hook.received() and hooks.describe()[0]["sent"] == 1, what="the event sent")
    assert hook.received() == [{"time": T0, "gw": "default", "kind": "grid_up",
                               "detail": {"duration_seconds": 3720},
                               "message": "Grid back at Home after 1 h 2 min"}]
    view = hooks.describe()[0]
    assert view["sent"] == 1 and view["retries"] == 2 and "secret-id" not in json.dumps(view)
    hooks.stop()


def test_a_webhook_that_refuses_is_given_up_and_a_full_queue_drops_the_oldest() -> None:
    sent: list[bytes] = []
    entered, gate = threading.Event(), threading.Event()

    def slow(url: str, body: bytes, timeout: float) -> int:
        entered.set()
        gate.wait(10)
        sent.append(body)
        return 404 if b"grid_down" in body else 200

    receiver = Receiver(Secret("http://127.0.0.1:9/x"), send=slow, queue=2, first_delay=0.01)
    receiver.start()
    receiver.offer(b'{"kind": "grid_down"}')
    entered.wait(10)  # being sent; now two may wait, and the oldest of four is dropped twice
    for i in range(4):
        receiver.offer(json.dumps({"kind": f"n{i}"}).encode())
    gate.set()
    wait_for(lambda: receiver.describe()["queued"] == 0 and len(sent) == 3, what="three sends")
    view = receiver.describe()
    assert view["failed"] == 1 and view["retries"] == 0 and view["dropped"] == 2
    assert [json.loads(b)["kind"] for b in sent] == ["grid_down", "n2", "n3"]
    receiver.stop()


def test_unusable_store_paths_are_reported_not_raised(tmp_path: Path) -> None:
    from proxy.history.store import open_store

    blocker = tmp_path / "file"
    blocker.write_text("x")
    s = open_store(str(blocker), Limits())
    assert not s.available() and s.describe()["status"] == "error"
    assert os.path.exists(blocker)
