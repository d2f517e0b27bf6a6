"""Log lines a client can cause, rate-limited: the first, then at most one a minute with a count.

A client that sends a thousand bad tokens, refused commands or malformed requests a second
must not fill the owner's disk or bury the lines that matter. Each kind of line has its own
`RateLog`: the first line goes out at once; the ones that follow within the interval are
counted, and the next one let through says how many were held back.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

INTERVAL = 60.0  # seconds between two lines of one kind


class RateLog:
    """One kind of client-caused log line, let through once per `interval` with a count."""

    def __init__(self, logger: logging.Logger, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last = -math.inf
        self._held = 0

    def _allow(self) -> int | None:
        """None while lines are held back; otherwise how many were held since the last one."""
        with self._lock:
            now = self._clock()
            if now - self._last < self._interval:
                self._held += 1
                return None
            held, self._last, self._held = self._held, now, 0
            return held

    def log(self, level: int, message: str, *args: Any, exc_info: bool = False) -> bool:
        """Log it, or count it; True when it went out."""
        held = self._allow()
        if held is None:
            return False
        more = f" (+{held} more in the last minute)" if held else ""
        self._logger.log(level, message + "%s", *args, more, exc_info=exc_info)
        return True

    def warning(self, message: str, *args: Any) -> bool:
        return self.log(logging.WARNING, message, *args)

    def info(self, message: str, *args: Any) -> bool:
        return self.log(logging.INFO, message, *args)

    def exception(self, message: str, *args: Any) -> bool:
        """An unexpected error a client's input set off: once a minute with its trace."""
        return self.log(logging.ERROR, message, *args, exc_info=True)
