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
        self._issued: OrderedDict[str, float] = OrderedDict()
        self._roles: dict[str, str] = {}  # who logged in, for the tokens still issued

    def issue(self) -> str:
        token = secrets.token_urlsafe(48)
        with self._lock:
            self._issued[token] = self._clock()
            while len(self._issued) > self._limit:
                old, _ = self._issued.popitem(last=False)
                self._roles.pop(old, None)
        return token

    def grant(self, token: str, role: str) -> None:
        """Record who logged in with `token` ("Home_Owner", "Provider_Engineer")."""
        with self._lock:
            if token in self._issued:
                self._roles[token] = role

    def role(self, token: str) -> str | None:
        with self._lock:
            return self._roles.get(token)

    def issued_at(self, token: str) -> float | None:
        """When `token` was issued, or None if it is unknown or revoked."""
        with self._lock:
            return self._issued.get(token)

    def revoke(self, token: str) -> None:
        with self._lock:
            self._issued.pop(token, None)
            self._roles.pop(token, None)

    def clear(self) -> None:
        with self._lock:
            self._issued.clear()
            self._roles.clear()
