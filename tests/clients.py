"""Clients at addresses of their own: every 127.x.y.z is this machine's loopback."""

from __future__ import annotations

import itertools
import threading

_next = itertools.count()
_lock = threading.Lock()


def fresh_address() -> str:
    """A loopback address no earlier call returned: a client with no history in the proxy
    (its bad-token record, for one, starts empty)."""
    with _lock:
        n = next(_next) % (250 * 250 * 200)
    return f"127.{n // 62500 + 20}.{n // 250 % 250 + 1}.{n % 250 + 1}"
