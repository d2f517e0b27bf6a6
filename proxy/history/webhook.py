"""Events to webhooks (PW_EVENTS_WEBHOOK): a JSON POST per event, retried, never blocking.

Each URL has its own thread and a bounded queue, so a receiver that is down delays only its
own deliveries. A failed POST (no answer, a 5xx, 408 or 429) is tried again after 2, 4, 8 …
seconds (at most five minutes apart, at most MAX_ATTEMPTS times); another 4xx is given up at
once (it will not heal by itself). When a queue is full the oldest waiting event is dropped
and counted. `offer` never waits. The URL is a secret (it often is one: a webhook id, a
topic name): logs name only its host.

The body is the event as /api/events lists it plus `message`, a sentence for a phone
notification, so ntfy (which shows the body) and Home Assistant (`trigger.json`) take it.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from proxy import __version__
from proxy.config import Secret
from proxy.history.events import Event

log = logging.getLogger("proxy.webhook")

QUEUE = 256
TIMEOUT = 10.0
MAX_ATTEMPTS = 10
FIRST_DELAY, MAX_DELAY = 2.0, 300.0
RETRY_STATUSES = (408, 429)

Post = Callable[[str, bytes, float], int]  # (url, body, timeout) -> HTTP status; OSError: no answer


def post(url: str, body: bytes, timeout: float) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": f"powerwall-proxy/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) only)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def message(event: Event, name: str) -> str:
    """A sentence about the event for a notification."""
    d = event.detail
    texts = {
        "grid_down": f"Grid down at {name}",
        "grid_up": f"Grid back at {name} after {_duration(d.get('duration_seconds'))}",
        "firmware_changed": f"{name} firmware changed: {d.get('old')} -> {d.get('new')}",
        "alert_raised": f"{name} alert: {d.get('alert')}",
        "alert_cleared": f"{name} alert cleared: {d.get('alert')}",
        "mode_changed": f"{name} mode changed to {d.get('new')} (by {d.get('by')})",
        "reserve_changed": f"{name} reserve changed to {d.get('new')}% (by {d.get('by')})",
        "gateway_unreachable": f"{name} gateway unreachable",
        "gateway_back": f"{name} gateway reachable again after {_duration(d.get('duration_seconds'))}",
    }
    return texts.get(event.kind, f"{name}: {event.kind}")


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "a while"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def body_of(event: Event, name: str) -> bytes:
    return json.dumps({**event.as_json(), "message": message(event, name)}).encode()


@dataclass(slots=True)
class _Counts:
    sent: int = 0
    failed: int = 0  # gave up after retries, or refused for good
    retries: int = 0
    dropped: int = 0
    last_error: str | None = None


class Receiver:
    """One webhook URL: its queue, its thread, its counts."""

    def __init__(self, url: Secret, *, send: Post = post, queue: int = QUEUE,
                 first_delay: float = FIRST_DELAY) -> None:
        self.url = url
        self.host = urllib.parse.urlsplit(url.reveal()).hostname or "?"
        self._send = send
        self._first_delay = first_delay
        self._queue: deque[bytes] = deque(maxlen=queue)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._counts = _Counts()
        self._thread = threading.Thread(target=self._run, name=f"webhook-{self.host}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(2)

    def offer(self, body: bytes) -> None:
        with self._lock:
            if len(self._queue) == self._queue.maxlen:
                self._counts.dropped += 1  # the deque drops the oldest
            self._queue.append(body)
        self._wake.set()

    def _next(self) -> bytes | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def _run(self) -> None:
        while not self._stop.is_set():
            body = self._next()
            if body is None:
                self._wake.wait()
                self._wake.clear()
                continue
            self._deliver(body)

    def _deliver(self, body: bytes) -> None:
        delay = self._first_delay
        for attempt in range(1, MAX_ATTEMPTS + 1):
            error = self._attempt(body)
            if error is None:
                self._count(sent=1)
                return
            if error.startswith("refused") or attempt == MAX_ATTEMPTS:
                self._count(failed=1, error=error)
                log.warning("webhook %s: giving up on an event (%s)", self.host, error)
                return
            self._count(retries=1, error=error)
            if self._stop.wait(delay):
                return
            delay = min(MAX_DELAY, delay * 2)

    def _attempt(self, body: bytes) -> str | None:
        """None when delivered; else why ("refused …" when retrying cannot help)."""
        try:
            status = self._send(self.url.reveal(), body, TIMEOUT)
        except (OSError, ValueError) as exc:
            return f"no answer ({type(exc).__name__})"
        if 200 <= status < 300:
            return None
        if status >= 500 or status in RETRY_STATUSES:
            return f"HTTP {status}"
        return f"refused with HTTP {status}"

    def _count(self, sent: int = 0, failed: int = 0, retries: int = 0, error: str | None = None) -> None:
        with self._lock:
            self._counts.sent += sent
            self._counts.failed += failed
            self._counts.retries += retries
            if error is not None:
                self._counts.last_error = error

    def describe(self) -> dict[str, Any]:
        with self._lock:
            c = self._counts
            return {"host": self.host, "queued": len(self._queue), "sent": c.sent, "failed": c.failed,
                    "retries": c.retries, "dropped": c.dropped, "last_error": c.last_error}


class Webhooks:
    """Every PW_EVENTS_WEBHOOK URL."""

    def __init__(self, urls: Sequence[Secret], names: Callable[[str], str], *,
                 send: Post = post, first_delay: float = FIRST_DELAY) -> None:
        self._names = names
        self.receivers = [Receiver(url, send=send, first_delay=first_delay) for url in urls]

    def start(self) -> None:
        for receiver in self.receivers:
            receiver.start()

    def stop(self) -> None:
        for receiver in self.receivers:
            receiver.stop()

    def __call__(self, event: Event) -> None:
        if self.receivers:
            body = body_of(event, self._names(event.gw))
            for receiver in self.receivers:
                receiver.offer(body)

    def describe(self) -> list[dict[str, Any]]:
        return [r.describe() for r in self.receivers]
