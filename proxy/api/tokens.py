"""Tokens: the constant-time compare, and the bad-token throttle per client.

Wrong tokens are slowed per client (per IPv6 /64), and the right token is never refused for
someone else's guesses (or the same client's earlier ones): a lock-out would let anyone who
can reach the proxy switch off the owner's automations. Every interface that takes a token
(/control/*, OpenC2) shares the one throttle built in main.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from proxy.ratelog import INTERVAL, RateLog
from proxy.reports import Reports

log = logging.getLogger("proxy.control")

FREE_BAD_TOKENS = 3  # wrong tokens a client may send (typos) before it is slowed down
PENALTY_START = 1.0  # seconds; doubles with every further wrong token ...
PENALTY_CAP = 300.0  # ... up to this
FORGET_AFTER = 900.0  # a client quiet this long starts again with a clean record
MAX_TRACKED_CLIENTS = 1024
LOG_INTERVAL = INTERVAL  # refused tokens are logged once per interval, with a count


def bearer_token(headers: Mapping[str, str]) -> str:
    """The token of an `Authorization: Bearer <token>` header (the scheme in any case), or ""."""
    auth = headers.get("Authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""


def same_secret(given: str, expected: str) -> bool:
    """Constant time in the content and in the length: both sides are hashed first,
    and compare_digest compares the digests (a raw compare_digest reveals the length)."""
    try:
        given_bytes = given.encode("utf-8")
    except UnicodeError:  # a lone surrogate can come from a header decoded as latin-1
        given_bytes = b""
    given_digest = hashlib.sha256(given_bytes).digest()
    expected_digest = hashlib.sha256(expected.encode("utf-8")).digest()
    return hmac.compare_digest(given_digest, expected_digest) and bool(given_bytes)


@dataclass(slots=True)
class _Record:
    strikes: int = 0
    last: float = 0.0


class TokenThrottle:
    """Wrong tokens per client; after a few, each further one is answered 429 with a
    Retry-After that doubles. It never refuses a right token: it is asked only after
    the token was found wrong. Bounded: the least recently seen client is forgotten."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 capacity: int = MAX_TRACKED_CLIENTS, reports: Reports | None = None) -> None:
        self._clock = clock
        self._capacity = capacity
        self._lock = threading.Lock()
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._refusals = RateLog(log, LOG_INTERVAL, clock)
        self._refused = 0
        if reports is not None:
            reports.register("bad_tokens", self.stats)

    def wrong(self, key: str) -> float:
        """Count a wrong token from `key`; the seconds it is asked to wait (0: a plain 401)."""
        with self._lock:
            now = self._clock()
            record = self._records.pop(key, None)
            if record is None or now - record.last > FORGET_AFTER:
                record = _Record()
            record.strikes += 1
            self._refused += 1
            record.last = now
            self._records[key] = record  # the most recently seen at the end
            while len(self._records) > self._capacity:
                self._records.popitem(last=False)
            over = record.strikes - FREE_BAD_TOKENS
            if over <= 0:
                return 0.0
            return min(PENALTY_CAP, PENALTY_START * 2.0 ** min(over - 1, 32))

    def strikes(self, key: str) -> int:
        with self._lock:
            record = self._records.get(key)
            if record is None or self._clock() - record.last > FORGET_AFTER:
                return 0
            return record.strikes

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def stats(self) -> dict[str, int]:
        """For /stats: wrong tokens refused since start, clients remembered now."""
        with self._lock:
            return {"refused": self._refused, "clients": len(self._records)}

    def log_refused(self, client: str, wait: float) -> None:
        """One warning per interval however many wrong tokens arrive, with a count."""
        slowed = f"; slowed down for {wait:.0f} s" if wait > 0 else ""
        self._refusals.warning("control: refused a bad or missing token from %s%s", client, slowed)
