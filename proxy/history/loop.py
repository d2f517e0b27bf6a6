"""A background loop: one daemon thread that runs a step, waits what the step says, and stops
when told (waking from its wait at once)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("proxy.history")

ERROR_PAUSE = 1.0  # a step that raised is tried again after this


class Loop:
    """Runs `step` (which returns the seconds to wait before the next) until `stop`."""

    def __init__(self, name: str, step: Callable[[], float]) -> None:
        self.name = name
        self._step = step
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def stopped(self) -> bool:
        return self._stop.is_set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                pause = self._step()
            except Exception:  # a bug must not end the loop for good
                log.exception("%s: unexpected error", self.name)
                pause = ERROR_PAUSE
            self._stop.wait(max(0.0, pause))
