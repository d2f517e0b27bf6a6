"""The server's two uses of the clock: the Date header line, and log lines rate-limited."""

from __future__ import annotations

import email.utils
import time

__all__ = ["DateLine", "Throttle"]

LOG_INTERVAL = 5.0  # at most one traceback/warning of a kind per interval


class DateLine:
    """The Date header line, formatted at most once per second."""

    def __init__(self) -> None:
        self._cached = (0, "")  # one tuple, so readers never see a torn update

    def __call__(self) -> str:
        now = int(time.time())
        second, text = self._cached
        if second != now:
            text = f"Date: {email.utils.formatdate(now, usegmt=True)}\r\n"
            self._cached = (now, text)
        return text


class Throttle:
    """Lets one log message of a kind through per interval; a hot failure can't flood logs."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self._interval = interval
        self._next = 0.0
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            self.suppressed += 1
            return False
        self._next = now + self._interval
        return True
