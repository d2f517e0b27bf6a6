"""The one place where the history meets the per-window feed of gateway readings.

Each cache window (just after it starts) this reads, per gateway whose history is on, only
what its live measurements need, through the window caches, exactly what a poller of
`/api/meters/aggregates`, `/api/system_status/soe`, the grid status and `/api/operation`
causes: the meter aggregates, the state of energy, the grid status, the reserve and the
mode. The slow ones (system status, time remaining, temperatures, alerts) are read at most
once a minute. The readings become a `recorder.Window` of the points' values (the table in
`proxy.site.points`); everything after that knows nothing of how they were read.

A gateway's values are recorded only when they are fresh gateway data of this window: a last
good copy served during an outage is not recorded again at a new time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from proxy.gateway.sources import (
    AGGREGATES,
    ALERTS,
    GRID_STATUS,
    RESERVE,
    SOE,
    SYSTEM_STATUS,
    TEMPS,
    TIME_REMAINING,
    Source,
)
from proxy.history import schema
from proxy.history.loop import Loop
from proxy.history.recorder import Recorder, Window
from proxy.history.store import Sample
from proxy.site import points
from proxy.site.frames import read_one
from proxy.site.points import MODE, POINTS, Kind, Point
from proxy.site.site import Reading, Site, Sites, State

FAST: tuple[Source, ...] = (AGGREGATES, SOE, GRID_STATUS, RESERVE, MODE)
SLOW: tuple[Source, ...] = (SYSTEM_STATUS, TIME_REMAINING, TEMPS, ALERTS)
SLOW_EVERY = 60.0  # seconds between reads of the slow sources, at least
# Read only once the sources before them are in: the mode comes from /api/operation like the
# reserve, and asked after it the library answers it from that very request.
AFTER_THE_REST: tuple[Source, ...] = (MODE,)
NO_CACHE_PERIOD = 5.0  # how often to read when caching is off (PW_CACHE_EXPIRE=0)
AFTER_WINDOW = 0.05  # read this long after a window starts
# Points the feed records: every row of the table except the firmware version, which the
# firmware watch reads every few minutes (and hands to the recorder itself).
RECORDED = tuple(p for p in POINTS if p.key != "firmware_version")


def agg_of(point: Point) -> int:
    """Means for measurements that go up and down; the last value for the rest."""
    return schema.MEAN if point.kind is Kind.GAUGE else schema.LAST


def samples(frame: points.Frame) -> tuple[Sample, ...]:
    """The frame's values of the recorded points (absent values are left out, never 0)."""
    out: list[Sample] = []
    for point in RECORDED:
        for label, value in points.values(point, frame).items():
            stored: float | str = (1.0 if value else 0.0) if isinstance(value, bool) else value
            out.append(Sample(point.key, label, stored, agg_of(point)))
    return tuple(out)


def _fresh(readings: Sequence[Reading | None]) -> list[Reading | None]:
    """Only this window's gateway data: stale copies and failures count as nothing."""
    return [r if r is not None and r.state is State.DATA and not r.stale else None for r in readings]


def _error(readings: Sequence[Reading | None]) -> str | None:
    return next((r.error.message for r in readings if r is not None and r.error is not None), None)


def window_of(site: Site, sources: Sequence[Source], readings: Sequence[Reading | None],
              t: int) -> Window:
    """One gateway's window from its readings of `sources`."""
    fresh = _fresh(readings)
    frame = points.frame(site, sources, fresh)
    alerts = None
    if ALERTS in sources:
        value = frame.get(ALERTS)
        alerts = tuple(str(a) for a in value) if isinstance(value, list) else None
    got_data = any(fresh[i] is not None for i, s in enumerate(sources) if s in FAST)
    return Window(site.id, t, got_data, samples(frame), alerts, _error(readings))


class Feed:
    """One thread: read every recorded gateway once per window and hand it to the recorder."""

    def __init__(self, sites: Sites, recorder: Recorder, *, clock: Callable[[], float] = time.time,
                 slow_every: float = SLOW_EVERY) -> None:
        self.sites = [site for site in sites if site.config.history]
        self.recorder = recorder
        self._clock = clock
        self._slow_every = slow_every
        self._windows: dict[str, int] = {}
        self._slow_at: dict[str, float] = {}
        self._loop = Loop("history-feed", self._tick)
        self.reads = 0
        self.slow_reads = 0

    def start(self) -> None:
        if self.sites:
            self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def _tick(self) -> float:
        self.read_due()
        return self._until_next_window()

    def _until_next_window(self) -> float:
        waits = [site.next_window_in() if site.window() != -1 else NO_CACHE_PERIOD
                 for site in self.sites]
        return min(waits) + AFTER_WINDOW

    def read_due(self) -> list[Window]:
        """Read each gateway whose window has not been read yet; the windows recorded."""
        due = [site for site in self.sites
               if site.window() == -1 or self._windows.get(site.id) != site.window()]
        plan = {site.id: self._sources(site) for site in due}
        for site in due:  # every gateway's fetches at once; a gateway not connected: none
            self._windows[site.id] = site.window()
            first = [s for s in plan[site.id] if s not in AFTER_THE_REST]
            if first:
                site.gateway.prefetch(first)
        t = int(self._clock())
        recorded = []
        for site in due:
            sources = plan[site.id]
            readings = [read_one(site, source) for source in sources]
            window = window_of(site, sources, readings, t)
            self.recorder.record(window)
            recorded.append(window)
        if due:
            self.reads += 1
        return recorded

    def _sources(self, site: Site) -> tuple[Source, ...]:
        if not site.gateway.connected:
            return ()
        now = time.monotonic()
        last = self._slow_at.get(site.id, -math.inf)
        if now - last < self._slow_every:
            return FAST
        self._slow_at[site.id] = now
        self.slow_reads += 1
        return FAST + SLOW

    def describe(self) -> dict[str, int]:
        return {"gateways": len(self.sites), "reads": self.reads, "slow_reads": self.slow_reads}
