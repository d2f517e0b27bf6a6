"""The history as main() builds it: store, recorder, feed, firmware watch and webhooks.

`build_history` makes the parts from the configuration; `History` starts and stops them and
describes them for /health and /stats. Off (`PW_HISTORY=no`): no store and no feed, so an
idle proxy makes no gateway requests for it; the firmware watch runs either way (unless
PW_FIRMWARE_CHECK_INTERVAL=0), and firmware changes still go to the webhooks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from proxy.config import Config
from proxy.history.feed import Feed
from proxy.history.firmware import FirmwareWatch
from proxy.history.recorder import Origins, Outlet, Recorder
from proxy.history.webhook import Webhooks
from proxy.reports import HEALTH, STATS, Reports
from proxy.site.actions import Writes
from proxy.site.frames import display_name
from proxy.site.hub import Hub
from proxy.site.site import Site, Sites

if TYPE_CHECKING:  # the store (and sqlite3) is loaded only when the history is on
    from proxy.history.store import Store

DEFAULT_DIR = "data"


@dataclass(frozen=True, slots=True)
class Settings:
    """What the history routes need to know besides the store."""

    enabled: bool
    raw_days: int
    zone: ZoneInfo | None  # PW_TIMEZONE: ISO times without an offset are read in it


class History:
    """Every part of the history; each may be missing (off, or not configured)."""

    def __init__(self, settings: Settings, sites: Sites, *, store: Store | None,
                 recorder: Recorder, feed: Feed | None, watch: FirmwareWatch | None,
                 webhooks: Webhooks) -> None:
        self.settings = settings
        self.sites = sites
        self.store = store
        self.recorder = recorder
        self.feed = feed
        self.watch = watch
        self.webhooks = webhooks

    def start(self) -> None:
        self.webhooks.start()
        if self.store is not None:
            self.store.start()
        if self.feed is not None:
            self.feed.start()
        if self.watch is not None:
            self.watch.start()

    def stop(self) -> None:
        """Feed and watch first, then the store's last commit, then the webhooks."""
        for part in (self.feed, self.watch, self.store):
            if part is not None:
                part.stop()
        self.webhooks.stop()

    def recorded(self) -> list[Site]:
        """The gateways whose history is kept."""
        return [site for site in self.sites if site.config.history] if self.settings.enabled else []

    def describe(self) -> dict[str, Any]:
        """/stats' and /health's `history` (the document names its first four keys): whether
        the store works and why not, its size, then the store, the feed, the firmware watch,
        the webhooks."""
        store = None if self.store is None else self.store.describe()
        view: dict[str, Any] = {
            "status": "off" if store is None else store["status"],
            "error": None if store is None else store["error"],
            "path": None if store is None else store["path"],
            "file_bytes": None if store is None else store["file_bytes"],
            "enabled": self.settings.enabled,
        }
        view["store"] = store
        view["feed"] = None if self.feed is None else self.feed.describe()
        view["events"] = self.recorder.events
        view["firmware"] = None if self.watch is None else self.watch.describe()
        view["webhooks"] = self.webhooks.describe()
        return view


def data_dir(config: Config, simulated_dir: str | None) -> str:
    """PW_DATA_DIR; unset: ./data, or the simulator's temporary folder with --simulate (so a
    simulated history never mixes with a real one)."""
    if config.data_dir:
        return config.data_dir
    return simulated_dir if simulated_dir and config.simulate else DEFAULT_DIR


def build_history(config: Config, sites: Sites, hub: Hub, *, writes: Writes | None = None,
                  reports: Reports | None = None, outlets: Sequence[Outlet] = (),
                  simulated_dir: str | None = None) -> History:
    """The history parts for this configuration (not started): a hub subscriber, told of every
    control write (who changed a setting), reporting in `reports`, sending events to the
    webhooks and `outlets` (live streams, MQTT)."""
    recorded = [site for site in sites if site.config.history] if config.history else []
    store = None
    if recorded:
        from proxy.history.store import Limits, open_store

        limits = Limits(raw_days=config.history_raw_days, max_bytes=config.history_max_mb << 20,
                        commit_seconds=float(config.history_commit_seconds))
        store = open_store(os.path.abspath(data_dir(config, simulated_dir)), limits)
    names = _names(sites)
    webhooks = Webhooks(config.events_webhook, names)
    zones = {site.id: ZoneInfo(site.config.timezone) for site in recorded}
    origins = Origins()
    if writes is not None:
        writes.subscribe(lambda a: origins.heard(a.gateway, a.action, a.origin.value, a.accepted))
    recorder = Recorder(store, zones, outlets=[webhooks, *outlets], origin=origins)
    feed = Feed(sites, hub, recorder) if recorded else None
    watch = None
    if config.firmware_check_interval > 0:
        watch = FirmwareWatch(list(sites), config.firmware_check_interval,
                              known=recorder.known_firmware([s.id for s in recorded]),
                              listeners=[recorder.firmware_seen])
    zone = ZoneInfo(config.timezone) if config.history else None
    settings = Settings(config.history, config.history_raw_days, zone)
    history = History(settings, sites, store=store, recorder=recorder, feed=feed, watch=watch,
                      webhooks=webhooks)
    if reports is not None:
        reports.register("history", history.describe, pages=(STATS, HEALTH))
    return history


def _names(sites: Sites) -> Callable[[str], str]:
    def name(gw: str) -> str:
        site = sites.get(gw)
        return gw if site is None else display_name(site)
    return name
