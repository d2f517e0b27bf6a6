"""The reports registry (pure), and the rate-limited log helper."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from proxy.ratelog import RateLog
from proxy.reports import HEALTH, STATS, DuplicateReport, Reports


def test_parts_register_once_and_show_where_they_say() -> None:
    reports = Reports()
    reports.register("server", lambda: {"open": 1})
    reports.register("history", lambda: {"rows": 5}, pages=(STATS, HEALTH))
    reports.register("gateways", lambda: {"a": {}}, pages=())
    with pytest.raises(DuplicateReport):
        reports.register("server", lambda: {"open": 2})
    assert reports.collect(STATS) == {"server": {"open": 1}, "history": {"rows": 5}}
    assert reports.collect(HEALTH) == {"history": {"rows": 5}}
    assert reports.get("gateways") == {"a": {}} and reports.get("nope") is None
    assert reports.names() == ["server", "history", "gateways"]


def test_a_failing_part_is_reported_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    reports = Reports()

    def broken() -> dict[str, Any]:
        raise RuntimeError("bug")

    reports.register("broken", broken)
    reports.register("fine", lambda: {"ok": True})
    assert reports.collect() == {"broken": {"error": "report failed (RuntimeError)"}, "fine": {"ok": True}}


def test_parts_are_called_outside_the_lock() -> None:
    """A part that registers another one while it is described does not deadlock."""
    reports = Reports()
    done = threading.Event()

    def describe() -> dict[str, Any]:
        if not done.is_set():
            done.set()
            reports.register("late", lambda: {})
        return {}

    reports.register("first", describe)
    worker = threading.Thread(target=reports.collect)
    worker.start()
    worker.join(5)
    assert not worker.is_alive() and "late" in reports.names()


def test_rate_log_lets_one_line_through_a_minute_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    logger = logging.getLogger("proxy.test.ratelog")
    limited = RateLog(logger, 60.0, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="proxy.test.ratelog")
    assert limited.warning("refused %s", "a") is True
    for i in range(100):
        now[0] = i * 0.5
        assert limited.warning("refused %s", i) is False
    now[0] = 61.0
    assert limited.warning("refused %s", "b") is True
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["refused a", "refused b (+100 more in the last minute)"]
