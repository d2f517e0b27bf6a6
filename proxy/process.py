"""The process's open-file limit, and how many client connections fit under it.

Every client connection costs a file descriptor, and so does every gateway socket, static file
read, cache file and log. A proxy that lets clients take every descriptor can no longer reach
its gateway, so the server gets a connection cap well below the limit; at start the soft limit
is raised as far as the hard limit allows, which is all an unprivileged process may do.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["MAX_CONNECTIONS", "connection_cap", "open_file_limit", "raise_open_file_limit"]

log = logging.getLogger("proxy.fdlimit")

UNLIMITED = -1  # how an unlimited (or unknown) limit is reported
# Idle connections are cheap but not free (a TLS one holds tens of KiB): the ceiling a small
# board can afford whatever the descriptor limit says.
MAX_CONNECTIONS = 4096
# Descriptors that are never a client's: std streams, listener, selector, wake-up pair, files
# being served, the cache file, the simulator when built in, a margin for surprises ...
RESERVED_FDS = 64
# ... plus a share of the limit for what grows with load (gateway sockets, TLS sessions).
RESERVED_SHARE = 10
# Where the hard limit is "unlimited" (macOS) the kernel still refuses a soft limit past its
# own ceiling: ask for these in turn.
_UNLIMITED_ASKS = (65536, 10240)


def _resource() -> Any:
    try:
        import resource
    except ImportError:  # not a POSIX system
        return None
    return resource


def _plain(value: int, infinity: int) -> int:
    return UNLIMITED if value == infinity or value < 0 else value


def open_file_limit() -> tuple[int, int]:
    """The (soft, hard) limit on open files; UNLIMITED (-1) where there is none or it is unknown."""
    res = _resource()
    if res is None:
        return UNLIMITED, UNLIMITED
    soft, hard = res.getrlimit(res.RLIMIT_NOFILE)
    return _plain(soft, res.RLIM_INFINITY), _plain(hard, res.RLIM_INFINITY)


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft open-file limit to the hard one; the (soft, hard) limit now in force.

    Never fails: where raising is not permitted or not possible the limit stays as it was, and
    the log says so.
    """
    res = _resource()
    if res is None:
        log.info("open file limit: unknown on this platform, left as it is")
        return UNLIMITED, UNLIMITED
    soft, hard = open_file_limit()
    if soft == UNLIMITED or (hard != UNLIMITED and soft >= hard):
        log.info("open file limit: %s (the hard limit)", _shown(soft))
        return soft, hard
    asks = [hard] if hard != UNLIMITED else [a for a in _UNLIMITED_ASKS if a > soft]
    for ask in asks:
        try:
            res.setrlimit(res.RLIMIT_NOFILE, (ask, res.RLIM_INFINITY if hard == UNLIMITED else hard))
        except (ValueError, OSError) as exc:
            log.debug("open file limit: %d refused (%s)", ask, exc)
            continue
        log.info("open file limit: raised from %d to %d (hard limit %s)", soft, ask, _shown(hard))
        return ask, hard
    log.warning("open file limit: could not raise it from %d (hard limit %s); keeping %d",
                soft, _shown(hard), soft)
    return soft, hard


def _shown(limit: int) -> str:
    return "unlimited" if limit == UNLIMITED else str(limit)


def connection_cap(limit: int, *, reserved: int = 0) -> int:
    """How many client connections to allow when the process may open ``limit`` files.

    Leaves ``RESERVED_FDS`` plus a tenth of the limit plus ``reserved`` (e.g. the gateway
    connection pool) for everything else, but gives clients at least half of a small limit;
    never more than ``MAX_CONNECTIONS``, never less than 1. ``limit`` UNLIMITED (or any
    negative value): ``MAX_CONNECTIONS``.
    """
    if limit < 0:
        return MAX_CONNECTIONS
    headroom = RESERVED_FDS + limit // RESERVED_SHARE + max(0, reserved)
    return max(1, min(MAX_CONNECTIONS, max(limit - headroom, limit // 2)))
