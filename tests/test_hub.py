"""The hub: one frame per gateway per window for every subscriber, newcomers served at once,
and nothing read once nobody follows."""

from __future__ import annotations

import threading
from pathlib import Path

from proxy.config import load_config
from proxy.gateway.sources import TEMPS
from proxy.main import start
from proxy.site.hub import Refresh
from proxy.site.points import POINT_SOURCES
from tests.brokers import wait_for
from tests.conftest import CONNECT_WAIT, DEFAULT_ENV


def test_a_subscriber_gets_one_frame_per_gateway_per_window(tmp_path: Path) -> None:
    env = {**DEFAULT_ENV, "PW_AUTH_PATH": str(tmp_path), "PW_CACHE_FILE": str(tmp_path / ".powerwall")}
    running = start(load_config(env, simulate=True), simulate=2, wait_connected=CONNECT_WAIT)
    try:
        refreshes: list[Refresh] = []
        lock = threading.Lock()

        def receive(refresh: Refresh) -> None:
            with lock:
                refreshes.append(refresh)

        unsubscribe = running.hub.subscribe(receive, POINT_SOURCES, name="test")
        wait_for(lambda: len(refreshes) >= 4, what="four refreshes")
        unsubscribe()
        with lock:
            got = list(refreshes)
        first = got[0]
        assert first.read == {"sim1", "sim2"}, "a newcomer gets every gateway's frame at once"
        assert [f.id for f in first.frames] == ["sim1", "sim2"]
        assert all(TEMPS.key in f.values for f in first.frames), "the sources it asked for"
        seen = [(f.id, f.window) for refresh in got for f in refresh.new()]
        assert len(seen) == len(set(seen)), "never the same gateway's window twice"
        assert all(f.online and f.power is not None for refresh in got for f in refresh.new())
        wait_for(lambda: not running.hub.running(), what="the refresher to stop")
        assert running.hub.stats()["subscribers"] == []
    finally:
        running.stop()
