"""How a gateway's connection stands, in one word and one sentence.

The word is one of `STATES`; the sentence says what is wrong and what to change:
the host and port with "connection refused" or "timed out", or which password the
gateway refused and where it is set (`PW_PASSWORD`, `PW_GW_PWD`, or a gateway's key in
the gateways file). The same text goes into the log line, `/health` and the 503 bodies
clients get, so an owner meets one explanation wherever they look.

Pure functions of what the library's traffic showed, plus `Reconnects`, the record of the
background connect loop (the reference's `fallback_mode` block).
"""

from __future__ import annotations

import errno
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from proxy.config import GatewayConfig
from proxy.gateway.outcome import DEADLINE, Exchange, Kind, Verdict, refused_twice

STARTING, UNREACHABLE, REFUSED, COOLING_DOWN, OK = (
    "starting", "unreachable", "refused", "cooling_down", "ok")
STATES = (STARTING, UNREACHABLE, REFUSED, COOLING_DOWN, OK)
WIFI_ONLY_HOST = "192.168.91.1"  # the gateway's own access point


@dataclass(frozen=True, slots=True)
class Condition:
    """A connection state and, unless it is ok, what is wrong."""

    state: str
    message: str | None = None
    refused: str = ""  # refused: which password, "customer" or "gateway"
    retry_after: float | None = None  # cooling_down: the wait the gateway asked for

    def text(self) -> str:
        """"refused: the gateway refused ..." (the word first, as in every log line)."""
        return f"{self.state}: {self.message}" if self.message else self.state


@dataclass(frozen=True, slots=True)
class Passwords:
    """Where each password of one gateway is set, and which one its login sends."""

    customer: str  # "PW_PASSWORD", or "gateway 'cabin' key 'password'"
    gateway: str  # "PW_GW_PWD", or "gateway 'cabin' key 'gw_pwd'"
    login: str  # the password /api/login/Basic carries: "customer" or "gateway"
    bearer: bool = False  # TEDAPI authenticates with the login's token, not the password

    def named(self, which: str) -> str:
        """'the customer password (PW_PASSWORD)'."""
        return f"the {which} password ({self.customer if which == 'customer' else self.gateway})"


def passwords(config: GatewayConfig) -> Passwords:
    """The plain PW_* variables are gateway "default"; other ids come from a file or PW_GATEWAYS."""
    plain = config.id == "default"
    customer = "PW_PASSWORD" if plain else f"gateway {config.id!r} key 'password'"
    gateway = "PW_GW_PWD" if plain else f"gateway {config.id!r} key 'gw_pwd'"
    # Without a customer password the library logs in with the gateway password: as the
    # installer (bearer), or as the customer with its last five characters (TEDAPI, v1r).
    login = "customer" if config.password else "gateway"
    return Passwords(customer, gateway, login, bearer=config.tedapi_auth_mode == "bearer")


# ---- what went wrong on the wire --------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and every one behind it (causes, contexts, urllib3's reasons)."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo and len(seen) < 16:
        e = todo.pop(0)
        if any(e is s for s in seen):
            continue
        seen.append(e)
        yield e
        nested = [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]
        todo.extend(n for n in nested if isinstance(n, BaseException))


_UNROUTABLE = {errno.ENETUNREACH: "network unreachable", errno.EHOSTUNREACH: "no route to the host"}


def transport_problem(exc: BaseException) -> str:
    """Why an exchange got no answer, in a few words: "connection refused", "timed out", ..."""
    for e in _chain(exc):
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, socket.gaierror):
            return "host name not found"
        if isinstance(e, ssl.SSLError):
            return "TLS handshake failed"
        if isinstance(e, ConnectionResetError):
            return "connection reset"
        if isinstance(e, TimeoutError):
            return "timed out"
        if isinstance(e, OSError) and e.errno in _UNROUTABLE:
            return _UNROUTABLE[e.errno]
    return type(exc).__name__


def unreachable(host: str, problem: str) -> str:
    """'cannot reach the gateway at 10.0.0.2 (connection refused)' (+ the Wi-Fi hint)."""
    text = f"cannot reach the gateway at {host or 'its address'} ({problem})"
    if host.split(":")[0] == WIFI_ONLY_HOST:
        text += (f"; {WIFI_ONLY_HOST} answers only on the gateway's own Wi-Fi network (TEG-…): "
                 "join it, or route to it through the gateway's LAN address")
    return text


def _silent(exchanges: Sequence[Exchange]) -> Exchange | None:
    """The first exchange that got no answer at all."""
    return next((x for x in exchanges if x.status is None and x.error is not None), None)


def refusal(exchanges: Sequence[Exchange], who: Passwords) -> Condition | None:
    """Which password the gateway refused, and where it is set; None if it refused none."""
    refused = [x for x in exchanges if x.is_login and x.status in (401, 403)]
    login = next((x for x in refused if not x.path.startswith("/tedapi")), None)
    if login is not None:
        return _login_refused(who, who.login, login.status)
    tedapi = next(iter(refused), None)
    if tedapi is not None and not who.bearer:  # HTTP Basic: the password itself was refused
        return _login_refused(who, "gateway", tedapi.status)
    path = tedapi.path if tedapi is not None else refused_twice(exchanges)
    if path is not None:
        return Condition(REFUSED, f"the gateway accepts {who.named(who.login)} but answers HTTP 401 "
                                  f"to {path} even after a fresh login", refused=who.login)
    return None


def _login_refused(who: Passwords, which: str, status: int | None) -> Condition:
    return Condition(REFUSED, f"the gateway refused the login with {who.named(which)}: HTTP {status}",
                     refused=which)


def condition_of(verdict: Verdict, exchanges: Sequence[Exchange], who: Passwords,
                 host: str) -> Condition | None:
    """The connection state a failed call shows (None: it says nothing about the connection)."""
    kind = verdict.kind
    if kind is Kind.AUTH:
        return refusal(exchanges, who) or Condition(REFUSED, verdict.reason)
    if kind is Kind.BUSY:
        return Condition(COOLING_DOWN, f"the gateway asked for calm ({verdict.reason})",
                         retry_after=verdict.retry_after)
    silent = _silent(exchanges)
    if kind is Kind.NO_ANSWER and silent is not None:
        problem = "timed out" if silent.error == DEADLINE else str(silent.error)
        return Condition(UNREACHABLE, unreachable(host, problem))
    return None


def explain(verdict: Verdict, exchanges: Sequence[Exchange], who: Passwords, host: str) -> Verdict:
    """The verdict with a reason that starts with its connection state and names the fix."""
    condition = condition_of(verdict, exchanges, who, host)
    return verdict if condition is None else replace(verdict, reason=condition.text())


def after_connect(verdict: Verdict, exchanges: Sequence[Exchange], who: Passwords, host: str,
                  raised: BaseException | None, has_client: bool) -> Condition | None:
    """How a connect attempt ended: None when the gateway answered a call that needs the login."""
    if has_client and verdict.kind in (Kind.DATA, Kind.ABSENT, Kind.NOT_DATA, Kind.NOT_SUPPORTED):
        return None
    condition = condition_of(verdict, exchanges, who, host)
    if condition is not None:
        return condition
    if verdict.kind is Kind.NO_ANSWER:
        return Condition(STARTING, verdict.reason)
    if raised is not None:
        return Condition(STARTING, f"the library could not connect ({type(raised).__name__}: {raised})")
    return Condition(STARTING, "the library could not connect to the gateway")


# ---- the background connect loop, as the reference's fallback_mode block --------------


class Reconnects:
    """Attempts of the connect loop: since when it has been failing, when it tries next."""

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._attempts = 0
        self._since: float | None = None
        self._last: float | None = None
        self._next: float | None = None

    def attempt(self) -> None:
        with self._lock:
            self._last = self._clock()
            self._next = None

    def failures(self) -> int:
        """Failed attempts since the last success."""
        with self._lock:
            return self._attempts

    def failed(self, wait: float) -> None:
        with self._lock:
            self._attempts += 1
            now = self._clock()
            self._since = self._since or now
            self._next = now + wait

    def succeeded(self) -> None:
        with self._lock:
            self._attempts, self._since, self._next = 0, None, None

    def next_in(self) -> float:
        """Seconds until the next attempt (0 when none is scheduled)."""
        with self._lock:
            return max(0.0, self._next - self._clock()) if self._next is not None else 0.0

    def view(self, loop_alive: bool | None) -> dict[str, Any]:
        """The reference's fallback_mode keys: "fallback" is the gateway not connected."""
        with self._lock:
            since, last, attempts, next_at = self._since, self._last, self._attempts, self._next
        now = self._clock()
        return {"is_fallback_mode": since is not None, "fallback_since": since,
                "fallback_duration_seconds": round(now - since, 1) if since is not None else None,
                "recovery_attempts": attempts,
                "last_recovery_attempt": last if since is not None else None,
                "recovery_enabled": True,
                "next_attempt_at": round(next_at, 3) if next_at is not None else None,
                "recovery_thread_alive": loop_alive}
