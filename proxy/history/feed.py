"""The one place where the history meets the per-window feed: a subscriber of the hub.

Each cache window the hub hands over every gateway's frame; the history asks it for exactly
what a poller of `/api/meters/aggregates`, `/api/system_status/soe`, the grid status and
`/api/operation` causes: the meter aggregates, the state of energy, the grid status and the
reserve (`core=False`: the system status is read only when another subscriber wants it).
The mode comes from the same `/api/operation` answer: the history's own thread reads it once
the frame is in, so the library answers it from that very request. The slow ones (system
status, time remaining, temperatures, alerts) are read by that thread at most once a minute.
All of it through the window caches. A frame becomes a `recorder.Window` of the points'
values (the table in `proxy.site.points`); after that nothing knows how it was read.

A gateway's values are recorded only when they are fresh gateway data of this window: a last
good copy served during an outage is not recorded again at a new time.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

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
from proxy.history.schema import Sample
from proxy.site import points
from proxy.site.frames import Frame, read_one
from proxy.site.hub import Hub, Refresh
from proxy.site.points import MODE, POINTS, Kind, Point
from proxy.site.site import Site, Sites, State

FROM_HUB: tuple[Source, ...] = (AGGREGATES, SOE, GRID_STATUS, RESERVE)
AFTER_THE_FRAME: tuple[Source, ...] = (MODE,)  # /api/operation again: answered by the library
SLOW: tuple[Source, ...] = (SYSTEM_STATUS, TIME_REMAINING, TEMPS, ALERTS)
LIVE = (*FROM_HUB, *AFTER_THE_FRAME)  # what says whether the gateway gave data this window
SLOW_EVERY = 60.0  # seconds between reads of the slow sources, at least
IDLE_WAIT = 1.0  # the history thread looks at its stop flag this often while nothing comes
# Points the feed records: every row of the table except the firmware version, which the
# firmware watch reads every few minutes (and hands to the recorder itself).
RECORDED = tuple(p for p in POINTS if p.key != "firmware_version")


def agg_of(point: Point) -> int:
    """Means for measurements that go up and down; the last value for the rest."""
    return schema.MEAN if point.kind is Kind.GAUGE else schema.LAST


def samples(frame: Frame) -> tuple[Sample, ...]:
    """The frame's values of the recorded points (absent values are left out, never 0)."""
    out: list[Sample] = []
    for point in RECORDED:
        for label, value in points.values(point, frame).items():
            stored: float | str = (1.0 if value else 0.0) if isinstance(value, bool) else value
            out.append(Sample(point.key, label, stored, agg_of(point)))
    return tuple(out)


def fresh_values(frame: Frame) -> dict[str, Any]:
    """The frame's values that are gateway data of its window (no last good copies: a data
    reading's mark is its (time, stale))."""
    def stale(key: str) -> bool:
        mark = frame.marks.get(key)
        return isinstance(mark, tuple) and bool(mark[1])
    return {key: value for key, value in frame.values.items() if not stale(key)}


def window_of(frame: Frame, more: dict[str, Any], t: int) -> Window:
    """One gateway's window: its frame's fresh values and what the history read after it."""
    values = {**fresh_values(frame), **more}
    kept = dataclasses.replace(frame, values=values)
    alerts = values.get(ALERTS.key)
    return Window(frame.id, t, any(s.key in values for s in LIVE), samples(kept),
                  tuple(str(a) for a in alerts) if isinstance(alerts, list) else None, frame.error)


class Feed:
    """Follows the hub; its own thread reads what comes after a frame and records it."""

    def __init__(self, sites: Sites, hub: Hub, recorder: Recorder, *,
                 clock: Callable[[], float] = time.time, slow_every: float = SLOW_EVERY) -> None:
        self.sites = {site.id: site for site in sites if site.config.history}
        self.hub = hub
        self.recorder = recorder
        self._clock = clock
        self._slow_every = slow_every
        self._lock = threading.Lock()
        self._pending: dict[str, Frame] = {}  # the newest frame per gateway not yet recorded
        self._wake = threading.Event()
        self._slow_at: dict[str, float] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._loop = Loop("history-feed", self._tick)
        self.reads = 0
        self.slow_reads = 0

    def start(self) -> None:
        if self.sites:
            self._loop.start()
            self._unsubscribe = self.hub.subscribe(self._on_refresh, FROM_HUB, name="history",
                                                   core=False)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._wake.set()
        self._loop.stop(2.0)

    def _on_refresh(self, refresh: Refresh) -> None:
        """The hub's thread: leave the new frames for the history thread (the newest wins)."""
        with self._lock:
            for frame in refresh.new():
                if frame.id in self.sites:
                    self._pending[frame.id] = frame
        self._wake.set()

    def _tick(self) -> float:
        self._wake.wait(IDLE_WAIT)
        self._wake.clear()
        with self._lock:
            frames, self._pending = list(self._pending.values()), {}
        if frames:
            self.record(frames)
        return 0.0

    def record(self, frames: Sequence[Frame]) -> None:
        """Read what comes after these frames and record one window per gateway."""
        plan = {f.id: self._after(self.sites[f.id], f) for f in frames}
        for frame in frames:  # every gateway's slow fetches at once
            slow = [s for s in plan[frame.id] if s not in AFTER_THE_FRAME]
            if slow:
                self.sites[frame.id].gateway.prefetch(slow)
        t = int(self._clock())
        for frame in frames:
            more = self._read(self.sites[frame.id], plan[frame.id])
            self.recorder.record(window_of(frame, more, t))
        self.reads += 1

    def _after(self, site: Site, frame: Frame) -> tuple[Source, ...]:
        """What to read after this frame: the mode, and once a minute the slow ones."""
        if not site.gateway.connected or not frame.values:
            return ()
        now = time.monotonic()
        if now - self._slow_at.get(site.id, -math.inf) < self._slow_every:
            return AFTER_THE_FRAME
        self._slow_at[site.id] = now
        self.slow_reads += 1
        return AFTER_THE_FRAME + SLOW

    def _read(self, site: Site, sources: Sequence[Source]) -> dict[str, Any]:
        """Fresh values of these sources, by source key (through the window cache)."""
        out: dict[str, Any] = {}
        for source in sources:
            reading = read_one(site, source)
            if reading is not None and reading.state is State.DATA and not reading.stale \
                    and reading.value is not None:
                out[source.key] = reading.value
        return out

    def describe(self) -> dict[str, int]:
        return {"gateways": len(self.sites), "reads": self.reads, "slow_reads": self.slow_reads}
