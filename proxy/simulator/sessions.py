"""Local-API login sessions (AuthCookie / Bearer token), as the gateway keeps them."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

MAX_SESSIONS = 256  # like a gateway, old sessions fall out when many clients log in


class SessionStore:
    """Issued tokens and when they were issued; thread-safe and bounded."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 limit: int = MAX_SESSIONS) -> None:
        self._clock = clock
        self._limit = limit
        self._lock = threading.Lock()
        self._issued: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def issue(self, role: str = "") -> str:
        token = secrets.token_urlsafe(48)
        with self._lock:
            self._issued[token] = (self._clock(), role)
            while len(self._issued) > self._limit:
                self._issued.popitem(last=False)
        return token

    def issued_at(self, token: str) -> float | None:
        """When `token` was issued, or None if it is unknown or revoked."""
        with self._lock:
            found = self._issued.get(token)
        return found[0] if found else None

    def role(self, token: str) -> str | None:
        """Who logged in with `token` ("Home_Owner", "Provider_Engineer"), or None."""
        with self._lock:
            found = self._issued.get(token)
        return found[1] if found else None

    def revoke(self, token: str) -> None:
        with self._lock:
            self._issued.pop(token, None)

    def clear(self) -> None:
        with self._lock:
            self._issued.clear()
