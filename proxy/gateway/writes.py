"""Control writes to one gateway: one at a time, in order, and never lost.

Whichever front door a write came through (/control/*, OpenC2, MQTT), it ends in
`Gateway.control`, which runs it here:

- in a write lane (`proxy.gateway.lanes`): after the writes before it, ahead of the
  waiting reads, with no read in flight, so nothing else moves the gateway's
  settings or the library's caches while it runs;
- reading the gateway's settings afresh: pypowerwall's local write fills the field
  it was not given (the mode of a reserve write, the reserve of a mode write) from
  its own cache, which is emptied first, and no shared answer of the window is used;
- judged by the gateway's answer to the write itself: one it refused is reported
  refused (None), whatever the library made of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from proxy.errors import GatewayBusy, GatewayUnavailable
from proxy.gateway import library
from proxy.gateway.lanes import Lanes
from proxy.gateway.outcome import Exchange
from proxy.gateway.traffic import Traffic, watching

WRITES_AHEAD = 8  # a write waits for at most this many calls' deadlines before it is refused


class Writes:
    """The write path of one gateway; `done` runs after every write (the caches it changed)."""

    def __init__(self, lanes: Lanes, timeout: float, pool_maxsize: int,
                 done: Callable[[Traffic], None]) -> None:
        self._lanes, self._timeout, self._pool_maxsize, self._done = lanes, timeout, pool_maxsize, done

    def run(self, pw: Any, action: Callable[[Any], Any]) -> Any:
        """The action's result on `pw`, or None when the gateway refused the write."""
        with self._lanes.turn(write=True, timeout=self._timeout * WRITES_AHEAD) as admitted:
            if not admitted:
                raise GatewayBusy("too many control writes are waiting for the gateway",
                                  retry_after=self._timeout)
            traffic = Traffic(self._timeout)  # no shared answers: what it reads is read now
            try:
                result = self._write(pw, action, traffic)
            finally:
                self._done(traffic)
        return None if refused(traffic.exchanges) else result

    def _write(self, pw: Any, action: Callable[[Any], Any], traffic: Traffic) -> Any:
        library.prepare(pw, self._pool_maxsize)
        library.empty_caches(pw, keep_native_backoff=True)
        with watching(traffic):
            try:
                return action(pw)
            except (ValueError, TypeError):
                raise
            except Exception as exc:
                raise GatewayUnavailable(f"gateway error ({type(exc).__name__})") from None


def refused(exchanges: list[Exchange]) -> bool:
    """Did the gateway answer the write (its last request that is not a GET or a login) with an
    error status? (An earlier 401 the library answered with a login and a retry is no refusal.)"""
    writes = [x for x in exchanges if x.method != "GET" and not x.is_login]
    return bool(writes) and writes[-1].status is not None and writes[-1].status >= 400
