"""The hub: one refresher reads every gateway's frame once per window and hands it to whoever
follows the gateways (live push topics, MQTT, the history store).

Subscribing is one line; the subscriber gets a `Refresh` each time a gateway's cache window
brings its frame, and once at once with every gateway's current frame:

    unsubscribe = hub.subscribe(on_refresh, POINT_SOURCES, name="history")

    def on_refresh(refresh: Refresh) -> None:
        for frame in refresh.new():  # one frame per gateway per window
            ...

The refresher thread runs only while someone subscribes. It wakes just after the next
window of any gateway starts, reads the gateways whose window changed (the union of the
sources the subscribers asked for, through the window caches: subscribers never add gateway
requests), and calls every subscriber in turn. A newcomer is served at once from a read of
every gateway in its current window (cache hits), without the others hearing of it again.

`receive` runs on the refresher thread: it must return quickly (offer to a bounded queue,
hand to another thread); a subscriber that raises is logged and kept. The hub knows frames
only: it never renders, encodes or sends.

The gateways due in one turn are fetched at once (each in its own bulkhead) and waited for
with one deadline, so a refresh is as late as its slowest gateway: a stalled one delays the
others' frames of that window by at most its wait (about PW_TIMEOUT), and its failure is
then remembered for the rest of its window. A write anywhere (`Writes.run`) wakes the hub,
whose next turn reads that gateway again (its window moved on).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.gateway.sources import Source
from proxy.reports import Reports
from proxy.site.frames import CORE_SOURCES, Frame, read_frames, with_core
from proxy.site.site import Site, Sites

log = logging.getLogger("proxy.hub")

AFTER_WINDOW = 0.02  # read this long after a window starts, so its first fetch is under way
MIN_WAIT = 0.05  # never spin, whatever a schedule says
ERROR_PAUSE = 1.0  # a read that raised is tried again after this
MAX_SUBSCRIBERS = 64  # parts of the proxy, not clients: live topics, MQTT, history, ...


@dataclass(frozen=True, slots=True)
class Refresh:
    """What one refresh gives a subscriber: every gateway's latest frame, and which were read."""

    frames: tuple[Frame, ...]  # every gateway, the default one first
    read: frozenset[str]  # ids of the gateways whose frame is new to this subscriber

    def new(self) -> list[Frame]:
        """The frames read for this refresh: one per gateway per window."""
        return [f for f in self.frames if f.id in self.read]

    def frame(self, gateway_id: str) -> Frame | None:
        return next((f for f in self.frames if f.id == gateway_id), None)


Receive = Callable[[Refresh], None]


@dataclass(eq=False, slots=True)
class _Subscriber:
    name: str
    receive: Receive
    sources: tuple[Source, ...]
    served: bool = False  # has had its first refresh


class Hub:
    """Subscribers by registration; one refresher thread while there are any."""

    def __init__(self, sites: Sites, reports: Reports | None = None) -> None:
        self._sites = list(sites)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._subscribers: list[_Subscriber] = []
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._nudged = False  # something to do before the next window: don't sleep
        self._latest: dict[str, Frame] = {}  # owned by the refresher thread
        self._windows: dict[str, int] = {}  # gateway -> window last read (refresher thread)
        self.refreshes = 0  # reads made (each of the due gateways, at once)
        if reports is not None:
            reports.register("hub", self.stats)

    # --- subscribers ---

    def subscribe(self, receive: Receive, sources: Iterable[Source] = CORE_SOURCES,
                  name: str = "", *, core: bool = True) -> Callable[[], None]:
        """Follow every gateway's frames; returns the unsubscribe. Never blocks.

        `core=False`: these sources are all this subscriber needs, the core ones (the system
        status among them) are read only when another subscriber asks for them. The history
        uses it: its cost to the gateway is bounded to exactly what it reads."""
        wanted = with_core(sources) if core else tuple({s.key: s for s in sources}.values())
        subscriber = _Subscriber(name or getattr(receive, "__qualname__", "subscriber"), receive,
                                 wanted)
        with self._lock:
            if self._stopped:
                return lambda: None
            if len(self._subscribers) >= MAX_SUBSCRIBERS:
                raise RuntimeError(f"more than {MAX_SUBSCRIBERS} hub subscribers")
            self._subscribers.append(subscriber)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hub-refresher", daemon=True)
                self._thread.start()
            self._nudge()
        return lambda: self._remove(subscriber)

    def _remove(self, subscriber: _Subscriber) -> None:
        with self._lock:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)
            self._nudge()  # the refresher ends without waiting for its next window

    def wake(self) -> None:
        """Look again now rather than at the next window: a write moved a gateway's window on
        (its cache was emptied), so its frame is read at once and everyone hears of it."""
        with self._lock:
            self._nudge()

    def _nudge(self) -> None:
        """Under the lock: the refresher's next wait is skipped (or cut short)."""
        self._nudged = True
        self._wake.notify()

    def running(self) -> bool:
        return self._thread is not None

    def stats(self) -> dict[str, Any]:
        """For /stats: whether the refresher runs, who follows, how many reads it made."""
        with self._lock:
            names = [s.name for s in self._subscribers]
        return {"running": self.running(), "subscribers": names, "refreshes": self.refreshes}

    def stop(self, timeout: float = 1.0) -> None:
        with self._lock:
            self._stopped = True
            self._subscribers.clear()
            thread = self._thread
            self._nudge()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # --- the refresher ---

    def _run(self) -> None:
        pause = 0.0
        while True:
            with self._lock:
                if pause > 0 and not self._nudged:
                    self._wake.wait(pause)
                self._nudged = False
                subscribers = list(self._subscribers)
                if not subscribers:
                    # Nobody follows: forget what was read, so a later subscriber is sent fresh
                    # frames, not what was current when the last one left.
                    self._thread = None
                    self._latest.clear()
                    self._windows.clear()
                    return
            pause = self._refresh(subscribers)

    def _refresh(self, subscribers: Sequence[_Subscriber]) -> float:
        """One turn: read what is due, deliver; the seconds until the next turn."""
        newcomers = [s for s in subscribers if not s.served]
        due = [site for site in self._sites if self._due(site)]
        if due or newcomers:
            wanted = tuple({src.key: src for s in subscribers for src in s.sources}.values())
            try:
                frames = read_frames(self._sites if newcomers else due, wanted, core=False)
            except Exception:
                log.exception("hub: reading the gateways failed")
                return ERROR_PAUSE
            self.refreshes += 1
            for frame in frames:
                self._latest[frame.id] = frame
                self._windows[frame.id] = frame.window
            self._deliver(subscribers, frozenset(site.id for site in due))
        return max(MIN_WAIT, min(site.next_window_in() for site in self._sites) + AFTER_WINDOW)

    def _due(self, site: Site) -> bool:
        window = site.window()
        return window == -1 or self._windows.get(site.id) != window  # -1: caching is off

    def _deliver(self, subscribers: Sequence[_Subscriber], due: frozenset[str]) -> None:
        frames = tuple(self._latest[site.id] for site in self._sites)
        everyone = frozenset(f.id for f in frames)
        for subscriber in subscribers:
            read = due if subscriber.served else everyone
            if not read:
                continue
            subscriber.served = True
            try:
                subscriber.receive(Refresh(frames, read))
            except Exception:  # one subscriber's bug must not starve the others
                log.exception("hub: subscriber %s failed", subscriber.name)
