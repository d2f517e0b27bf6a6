"""What one library call produced, judged: data, absent, or a kind of failure.

A pure function of three things: the value pypowerwall returned (or the
exception it raised), what its HTTP traffic showed, and the contract of the
resource asked for. No I/O, no library: tested without a network.

The rules, in one place:
- the gateway asked for calm (429/503)                   -> BUSY (cooldown)
- it refused our login (401/403 on a login or TEDAPI),
  or a data path said 401 again after a fresh login      -> AUTH (auth backoff)
- no answer: connect error, timeout, deadline, 5xx       -> NO_ANSWER (health failure)
- the library cannot ask this in this mode               -> NOT_SUPPORTED (404)
- a 200 that is not the resource: a web page, text or a
  list where an object belongs, garbage, an answer too big -> NOT_DATA (that resource only)
- an answer with nothing in it: empty body, null, 404    -> ABSENT (served as null)
- otherwise, an empty list [] or object {} included      -> DATA (no faults, no entries)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = ["Contract", "Exchange", "Kind", "Shape", "Verdict", "judge", "refused_twice"]


class Shape(Enum):
    """What kind of JSON value a resource is."""

    OBJECT = "object"
    LIST = "list"
    JSON = "json"  # an object or a list (mirrored /api/* paths)
    NUMBER = "number"
    TEXT = "text"
    BOOL = "bool"
    ANY = "any"  # whatever the library makes of it (reads through the control client)


@dataclass(frozen=True, slots=True)
class Contract:
    """What a source promises: the shape of its value (an empty one is an answer too: no
    alerts is [], a gateway without string data {})."""

    shape: Shape


class Kind(Enum):
    DATA = "data"
    ABSENT = "absent"
    NOT_SUPPORTED = "not_supported"
    NOT_DATA = "not_data"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    AUTH = "auth"
    STARTING = "starting"  # not connected yet: never judged, never cached

    @property
    def answered(self) -> bool:
        """The gateway answered (alive), whatever the answer was worth."""
        return self in (Kind.DATA, Kind.ABSENT, Kind.NOT_DATA)


@dataclass(frozen=True, slots=True)
class Exchange:
    """One HTTP exchange the library made during a call."""

    method: str
    path: str
    status: int | None  # None: no answer
    error: str | None = None  # transport error, "deadline" or "too large"
    content_type: str = ""
    length: int = 0
    retry_after: float | None = None
    shared: bool = False  # another call's answer to the same request, handed on (no new news)

    @property
    def failed(self) -> bool:
        """No answer at all, or a server error."""
        if self.error == TOO_LARGE:
            return False  # an answer, just not one we will hold
        return self.status is None or self.status >= 500 and self.status != 503

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def is_login(self) -> bool:
        """A login, or a TEDAPI exchange (its Basic auth is a login on every request)."""
        return self.path.startswith(("/api/login", "/tedapi"))

    @property
    def logs_in(self) -> bool:
        """The login request itself (TEDAPI's own paths also carry data)."""
        return self.path.startswith("/api/login")


TOO_LARGE = "too large"
DEADLINE = "deadline"


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: Kind
    value: Any = None
    reason: str = ""
    retry_after: float | None = None


_NOT_IN_THIS_MODE = "TIMEOUT!"  # what pypowerwall's TEDAPI mode returns for APIs it lacks


def judge(value: Any, raised: BaseException | None, exchanges: Sequence[Exchange],
          library_errors: int, contract: Contract, *, pieced: bool = False) -> Verdict:
    """The verdict on one library call.

    `pieced`: the library filled part of the value with defaults because one of its
    requests came back unusable (e.g. TEDAPI aggregates without the energy counters).
    """
    for check in (_busy, _auth, _no_answer):
        verdict = check(exchanges)
        if verdict is not None:
            return verdict
    if raised is not None:
        return _raised(raised, exchanges)
    unsupported = _not_supported(value)
    if unsupported is not None:
        return unsupported
    if pieced:
        return Verdict(Kind.NOT_DATA, reason="the gateway's local API failed part way through an answer")
    if any(x.error == TOO_LARGE for x in exchanges):
        return Verdict(Kind.NOT_DATA, reason="the gateway's answer was too large")
    value = _decode_text(value, contract)
    if (library_errors and _is_empty(value) and any(x.status == 200 for x in exchanges)
            and not any(x.status in _LACKS for x in exchanges)):
        # The library logged an error and handed back nothing: it could not read the answer.
        return Verdict(Kind.NOT_DATA, reason="the gateway sent no usable data")
    if value is None:
        if library_errors and not exchanges:
            # The library gave up before asking (its lock on a call stuck with a slow gateway,
            # its own cooldown): nothing is known, which is not "the gateway had nothing".
            return Verdict(Kind.NOT_DATA, reason="the gateway is busy with another call")
        return _nothing(exchanges)
    if _is_empty(value) and _web_page(exchanges):
        # The library made "nothing" of a web page (a login portal in front of the gateway).
        return Verdict(Kind.NOT_DATA, reason=_PAGE)
    if not _fits(value, contract.shape):
        what = f"the gateway sent {_describe(value)}, not {contract.shape.value}"
        return Verdict(Kind.NOT_DATA, reason=what)
    return Verdict(Kind.DATA, value)


# The gateway lacks the path (this model or firmware): its nothing is an answer, not a fault.
_LACKS = (403, 404, 410)


def _busy(exchanges: Sequence[Exchange]) -> Verdict | None:
    for x in exchanges:
        if x.status in (429, 503):
            return Verdict(Kind.BUSY, reason=f"gateway answered HTTP {x.status}", retry_after=x.retry_after)
    return None


def _auth(exchanges: Sequence[Exchange]) -> Verdict | None:
    for x in exchanges:
        if x.is_login and x.status in (401, 403):
            return Verdict(Kind.AUTH, reason=f"login refused with HTTP {x.status}")
    path = refused_twice(exchanges)
    if path is not None:
        return Verdict(Kind.AUTH, reason=f"HTTP 401 on {path} after a fresh login")
    return None


def refused_twice(exchanges: Sequence[Exchange]) -> str | None:
    """A data path that answered 401 twice in one call, or None.

    The library logs in again after a 401 and asks once more: a second 401 on the same
    path means the gateway takes the password but not the session, and another login
    (a login storm) would not help.
    """
    seen: set[str] = set()
    for x in exchanges:
        if not x.is_login and x.status == 401:
            if x.path in seen:
                return x.path
            seen.add(x.path)
    return None


def _no_answer(exchanges: Sequence[Exchange]) -> Verdict | None:
    for x in exchanges:
        if x.failed:
            if x.status is None:
                what = "timed out" if x.error == DEADLINE else x.error or "no answer"
                return Verdict(Kind.NO_ANSWER, reason=f"gateway unreachable ({what})")
            return Verdict(Kind.NO_ANSWER, reason=f"gateway answered HTTP {x.status}")
    return None


def _raised(raised: BaseException, exchanges: Sequence[Exchange]) -> Verdict:
    name = type(raised).__name__
    if any(x.status is not None for x in exchanges) or (not exchanges and _data_error(raised)):
        # The gateway answered (now, or earlier in this window from the library's own cache)
        # and the library choked on the answer: it was not data.
        return Verdict(Kind.NOT_DATA, reason=f"the library could not read the gateway's answer ({name})")
    return Verdict(Kind.NO_ANSWER, reason=f"gateway error ({name})")


# What a library raises when it meets an unexpected value, as opposed to a failed exchange.
_DATA_ERRORS = (AttributeError, TypeError, KeyError, IndexError, ValueError)


def _data_error(raised: BaseException) -> bool:
    # requests' errors subclass OSError or IOError, never these; JSON decode errors are
    # ValueErrors but only arise from an answer, which shows as an exchange.
    return isinstance(raised, _DATA_ERRORS) and not isinstance(raised, OSError)


def _not_supported(value: Any) -> Verdict | None:
    if isinstance(value, str) and value == _NOT_IN_THIS_MODE:
        return Verdict(Kind.NOT_SUPPORTED, reason="not available from the gateway in this mode")
    if isinstance(value, dict) and len(value) == 1 and "ERROR" in value:
        return Verdict(Kind.NOT_SUPPORTED, reason=str(value["ERROR"]))
    return None


def _decode_text(value: Any, contract: Contract) -> Any:
    """pypowerwall hands back a body without a JSON content type as text: read it if it is JSON."""
    if isinstance(value, str) and contract.shape is not Shape.TEXT:
        text = value.strip()
        if text in ("", "null"):
            return None
        if text[:1] in ("{", "["):
            try:
                return json.loads(text)
            except ValueError:
                return value
    return value


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, (dict, list)) and not value)


_PAGE = "the gateway answered with a web page, not data"


def _web_page(exchanges: Sequence[Exchange]) -> bool:
    return any(x.status == 200 and x.length > 0 and "html" in x.content_type.lower()
               for x in exchanges)


def _nothing(exchanges: Sequence[Exchange]) -> Verdict:
    """No value: the gateway had nothing to say, or said something that was not data."""
    if _web_page(exchanges):
        return Verdict(Kind.NOT_DATA, reason=_PAGE)
    status = next((x.status for x in reversed(exchanges) if x.status is not None), None)
    what = f"HTTP {status}" if status not in (None, 200) else "nothing"
    return Verdict(Kind.ABSENT, reason=f"the gateway answered {what}")


def _fits(value: Any, shape: Shape) -> bool:
    if shape is Shape.OBJECT:
        return isinstance(value, dict)
    if shape is Shape.LIST:
        return isinstance(value, list)
    if shape is Shape.JSON:
        return isinstance(value, (dict, list))
    if shape is Shape.NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if shape is Shape.BOOL:
        return isinstance(value, bool)
    if shape is Shape.ANY:
        return True
    return isinstance(value, str) and not value.lstrip().startswith("<")


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return "a web page" if value.lstrip().startswith("<") else "text"
    return {dict: "an object", list: "a list", bool: "a boolean"}.get(type(value), type(value).__name__)
