"""The Date header line, formatted at most once a second."""

from __future__ import annotations

import email.utils
import time

__all__ = ["DateLine"]


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
