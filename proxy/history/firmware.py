"""The firmware watch: which firmware each gateway runs, checked every few minutes.

Every PW_FIRMWARE_CHECK_INTERVAL seconds (default 300, at least 30; 0: off) it reads each
gateway's version through the window cache, as the reference proxy does, and logs
`Gateway firmware: X` the first time and `Gateway firmware changed: A -> B` on each change.
A gateway in a 429/503 cooldown is skipped silently (the cooldown is there to leave it
alone). The version is cleaned of control characters before it is logged, so a gateway
cannot forge log lines. Listeners (the history store, the event outlets) hear each sighting;
the watch itself needs none of them.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from proxy.errors import ProxyError
from proxy.gateway.sources import VERSION
from proxy.history.loop import Loop
from proxy.site.site import Site, State

log = logging.getLogger("proxy.firmware")

FIRST_RETRY = 5.0  # seconds between tries until a gateway's version was seen once
MAX_VERSION = 64

# (gateway id, old version or None, new version, Unix time)
Listener = Callable[[str, str | None, str, float], None]


def clean(value: Any) -> str | None:
    """A version as it may be logged: no control characters, whitespace collapsed, bounded."""
    if value is None:
        return None
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", str(value))
    text = " ".join(text.split())[:MAX_VERSION]
    return text or None


class FirmwareWatch:
    """One thread that checks every gateway's firmware version every `interval` seconds."""

    def __init__(self, sites: Sequence[Site], interval: float, *,
                 known: Mapping[str, str] | None = None,
                 listeners: Sequence[Listener] = (), clock: Callable[[], float] = time.time) -> None:
        self.sites = list(sites)
        self.interval = interval
        self._listeners = list(listeners)
        self._clock = clock
        self._lock = threading.Lock()
        self._versions: dict[str, str] = {}  # seen by this run
        self._known = dict(known or {})  # remembered from an earlier run (the store)
        self._checks = 0
        self._loop = Loop("firmware-watch", self._tick)

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def _tick(self) -> float:
        self.check_all()
        with self._lock:
            sighted = len(self._versions) == len(self.sites)
        # Until every gateway was seen once, look again soon (it may still be connecting).
        return self.interval if sighted else min(self.interval, FIRST_RETRY)

    def check_all(self) -> None:
        for site in self.sites:
            try:
                self.check(site)
            except Exception:  # one gateway's surprise must not end the watch
                log.exception("firmware watch: checking %s failed", site.id)

    def check(self, site: Site) -> str | None:
        """Read one gateway's version (unless it is cooling down); the version or None."""
        gateway = site.gateway
        if not gateway.connected or gateway.cooldown.remaining() > 0:
            return None
        try:
            reading = site.read(VERSION)
        except ProxyError:
            return None
        if reading.state is not State.DATA or reading.stale:
            return None
        version = clean(reading.value)
        if version is not None:
            self.seen(site.id, version, several=len(self.sites) > 1)
        return version

    def seen(self, gw: str, version: str, several: bool = False) -> None:
        with self._lock:
            self._checks += 1
            old = self._versions.get(gw)
            self._versions[gw] = version
            remembered = self._known.pop(gw, None)
        where = f" ({gw})" if several else ""
        if old is None:
            log.info("Gateway firmware%s: %s", where, version)
            old = remembered  # changed while the proxy was not running?
        elif old != version:
            log.info("Gateway firmware changed%s: %s -> %s", where, old, version)
        if old == version:
            return
        for listener in self._listeners:
            listener(gw, old, version, self._clock())

    def versions(self) -> dict[str, str]:
        with self._lock:
            return dict(self._versions)

    def describe(self) -> dict[str, Any]:
        return {"interval_seconds": self.interval, "checks": self._checks, "versions": self.versions()}
