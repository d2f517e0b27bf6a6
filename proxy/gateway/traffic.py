"""Every HTTP exchange pypowerwall makes, watched: a deadline, a size bound, a record.

The library swallows network errors and returns None or {}, so a value alone
cannot tell "the gateway has nothing" from "the gateway did not answer". We wrap
`send` of every requests adapter the library uses. While a call runs in a thread
with a `Traffic` (see `watching`), each exchange is recorded there, the call's
deadline bounds the whole exchange (connect, headers and a drip-fed body, across
the library's own retries), and a body over the size limit is cut off while it is
being read, so a 50 MB answer never sits in memory.

With a `book` (`proxy.gateway.book`), a request another call already sent in this
window, or is sending right now, is not sent again: its answer is handed on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import urlsplit

import requests
import requests.adapters
import urllib3.exceptions
from urllib3.util.retry import Retry

from proxy.gateway.book import Answer, AnswerBook, Flight, request_key
from proxy.gateway.connection import transport_problem
from proxy.gateway.outcome import DEADLINE, TOO_LARGE, Exchange

__all__ = ["AnswerTooLarge", "DeadlineExceeded", "Traffic", "install", "watching"]

MAX_ANSWER = 4 * 1024 * 1024  # bytes of one gateway answer; real ones are a few KiB
_CHUNK = 65536


class DeadlineExceeded(requests.exceptions.Timeout):
    """The call's deadline passed: the exchange is abandoned."""


class AnswerTooLarge(requests.exceptions.RequestException):
    """The gateway's answer grew past the size limit while being read."""


@dataclass
class Traffic:
    """What one library call did on the wire; owned by the thread running the call."""

    timeout: float
    limit: int = MAX_ANSWER
    close_connections: bool = False  # PW_POOL_MAXSIZE=0: no keep-alive with the gateway
    book: AnswerBook | None = None  # shared answers of this window (None: every request is sent)
    clock: Callable[[], float] = time.monotonic
    exchanges: list[Exchange] = field(default_factory=list)
    library_errors: int = 0
    deadline: float = 0.0

    def __post_init__(self) -> None:
        self.deadline = self.clock() + self.timeout

    def remaining(self) -> float:
        return self.deadline - self.clock()

    @property
    def started(self) -> float:
        return self.deadline - self.timeout

    def record(self, exchange: Exchange) -> None:
        if len(self.exchanges) < 64:  # a library loop must not grow this without bound
            self.exchanges.append(exchange)


_current = threading.local()


@contextmanager
def watching(traffic: Traffic) -> Iterator[Traffic]:
    """Record (and bound) the exchanges made by this thread while the block runs."""
    previous = getattr(_current, "traffic", None)
    _current.traffic = traffic
    try:
        yield traffic
    finally:
        _current.traffic = previous


def _traffic() -> Traffic | None:
    return getattr(_current, "traffic", None)


def current() -> Traffic | None:
    """The Traffic of the call running in this thread, if any."""
    return _traffic()


_patch_lock = threading.Lock()
_patched: list[Callable[..., Any]] = []


def install() -> None:
    """Watch every requests adapter in this process (once).

    Patched on the class, so sessions the library makes later (a reconnect
    replaces them) are watched too. Outside `watching` an exchange passes untouched.
    """
    with _patch_lock:
        if _patched:
            return
        send = requests.adapters.HTTPAdapter.send
        _patched.append(send)

        def watched_send(adapter: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            traffic = _traffic()
            if traffic is None:
                return send(adapter, request, *args, **kwargs)
            _no_retries(adapter)
            return _exchange(lambda *a, **k: send(adapter, *a, **k), request, traffic, args, kwargs)

        requests.adapters.HTTPAdapter.send = watched_send  # type: ignore[method-assign,assignment]
        logging.getLogger("pypowerwall").addHandler(_LibraryErrors(logging.ERROR))


def _no_retries(adapter: Any) -> None:
    """One exchange, one request: the call's deadline bounds it, and urllib3's own retries
    (TEDAPI sessions retry five times with backoff, even while the library is still being
    built) would wait past that deadline in a silent gateway's sockets."""
    retries = getattr(adapter, "max_retries", None)
    if isinstance(retries, Retry) and (retries.total or retries.connect or retries.read):
        adapter.max_retries = Retry(0, read=False)


def _exchange(send: Callable[..., Any], request: Any, traffic: Traffic,
              args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    key = request_key(request) if traffic.book is not None else None
    if traffic.book is None or key is None:
        return _send(send, request, traffic, args, kwargs)[0]
    found, lead = traffic.book.claim(key)
    if isinstance(found, Answer):
        return _replay(found, request, traffic)
    if not lead:
        answer = _wait_for(found, request, traffic)
        if answer is not None:
            return _replay(answer, request, traffic)
        return _send(send, request, traffic, args, kwargs)[0]  # a 401/403 was not ours to reuse
    answer = Answer(None, error="no answer")
    try:
        response, answer = _send(send, request, traffic, args, kwargs)
        return response
    except Exception as exc:
        answer = _failure(exc)
        raise
    finally:
        traffic.book.settle(key, found, answer)


def _send(send: Callable[..., Any], request: Any, traffic: Traffic,
          args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Answer]:
    """Send the request under the deadline and size bound; the response and what it was."""
    method, path = str(request.method or "GET"), urlsplit(str(request.url)).path
    remaining = traffic.remaining()
    if remaining <= 0:
        traffic.record(Exchange(method, path, None, DEADLINE))
        raise DeadlineExceeded("the gateway call's deadline passed")
    kwargs["timeout"] = _bounded(kwargs.get("timeout"), remaining)
    kwargs["stream"] = True  # we read the body ourselves, bounded
    if traffic.close_connections:
        request.headers["Connection"] = "close"
    try:
        response = send(request, *args, **kwargs)
    except Exception as exc:
        _failed(traffic, method, path, exc, None)
    try:
        body = _read_body(response, traffic)
    except (AnswerTooLarge, requests.exceptions.RequestException) as exc:
        response.close()
        _failed(traffic, method, path, exc, response.status_code)
    _keep_body(response, body)
    headers = response.headers
    traffic.record(Exchange(method, path, response.status_code, None,
                            str(headers.get("Content-Type", "")), len(body),
                            _retry_after(headers.get("Retry-After"))))
    answer = Answer(response.status_code, str(response.reason or ""),
                    tuple((str(k), str(v)) for k, v in headers.items()), body)
    return response, answer


def _failed(traffic: Traffic, method: str, path: str, exc: BaseException,
            status: int | None) -> NoReturn:
    """Record a failed exchange and re-raise its error."""
    error = _failure(exc).error
    traffic.record(Exchange(method, path, status if error == TOO_LARGE else None, error))
    raise exc


def _failure(exc: BaseException) -> Answer:
    """What a request that raised `exc` tells the callers waiting for the same request."""
    if isinstance(exc, AnswerTooLarge):
        return Answer(200, error=TOO_LARGE)
    return Answer(None, error=_error_name(exc))


def _wait_for(flight: Flight, request: Any, traffic: Traffic) -> Answer | None:
    """The answer of the same request in flight for another call; None when it was a 401/403."""
    if not flight.done.wait(max(0.0, traffic.remaining())) or flight.answer is None:
        method, path = str(request.method or "GET"), urlsplit(str(request.url)).path
        # The request in flight will tell health what happened; this call only waited.
        traffic.record(Exchange(method, path, None, DEADLINE, shared=True))
        raise DeadlineExceeded("the same request to the gateway did not finish in time")
    return flight.answer if flight.answer.replayable else None


def _replay(answer: Answer, request: Any, traffic: Traffic) -> Any:
    """Another call's answer to this very request, as if it had just arrived."""
    method, path = str(request.method or "GET"), urlsplit(str(request.url)).path
    if answer.error is not None:
        traffic.record(Exchange(method, path, answer.status, answer.error, shared=True))
        if answer.error == TOO_LARGE:
            raise AnswerTooLarge("the gateway's answer is too large")
        if answer.error == DEADLINE:
            raise DeadlineExceeded("the gateway did not answer in time")
        raise requests.exceptions.ConnectionError(f"the gateway did not answer ({answer.error})")
    headers = requests.structures.CaseInsensitiveDict(dict(answer.headers))
    traffic.record(Exchange(method, path, answer.status, None, str(headers.get("Content-Type", "")),
                            len(answer.body), _retry_after(headers.get("Retry-After")), shared=True))
    response = requests.Response()
    response.status_code = answer.status or 0
    response.reason = answer.reason
    response.headers = headers
    response.url = str(request.url)
    response.request = request
    response.encoding = requests.utils.get_encoding_from_headers(headers)
    _keep_body(response, answer.body)
    return response


def _bounded(timeout: Any, remaining: float) -> tuple[float, float]:
    if isinstance(timeout, tuple):
        connect, read = timeout
    else:
        connect = read = timeout
    return (min(float(connect or remaining), remaining), min(float(read or remaining), remaining))


def _read_body(response: Any, traffic: Traffic) -> bytes:
    raw = response.raw
    chunks: list[bytes] = []
    size = 0
    while True:
        remaining = traffic.remaining()
        if remaining <= 0:
            raise DeadlineExceeded("the gateway's answer did not arrive in time")
        _socket_timeout(raw, remaining)
        try:
            chunk = raw.read1(_CHUNK, decode_content=True)
        except (TimeoutError, urllib3.exceptions.ReadTimeoutError):
            raise DeadlineExceeded("the gateway's answer did not arrive in time") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise requests.exceptions.ConnectionError(f"answer cut off ({type(exc).__name__})") from None
        if not chunk:
            break
        size += len(chunk)
        if size > traffic.limit:
            raise AnswerTooLarge(f"the gateway's answer is over {traffic.limit} bytes")
        chunks.append(chunk)
    raw.release_conn()
    return b"".join(chunks)


def _socket_timeout(raw: Any, seconds: float) -> None:
    """Each read waits no longer than what is left of the call's deadline."""
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is not None:
        with suppress(OSError):
            sock.settimeout(max(0.01, seconds))


class _ReadBody:
    """Stands in for urllib3's response once we have read the body: the library may
    still ask for `.data` (vitals) or `.read()`; cookies come from the original."""

    def __init__(self, body: bytes, original: Any) -> None:
        self.data = body
        self._original_response = getattr(original, "_original_response", None)
        self.headers = getattr(original, "headers", {})
        self.status = getattr(original, "status", None)
        self.closed = False
        self._offset = 0

    def read(self, amt: int | None = None, decode_content: bool | None = None, **_: Any) -> bytes:
        end = len(self.data) if amt is None else self._offset + amt
        chunk = self.data[self._offset:end]
        self._offset += len(chunk)
        return chunk

    def stream(self, amt: int | None = 65536, decode_content: bool | None = None) -> Iterator[bytes]:
        while chunk := self.read(amt):
            yield chunk

    def release_conn(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def _keep_body(response: Any, body: bytes) -> None:
    response._content = body
    response._content_consumed = True
    response.raw = _ReadBody(body, response.raw)


def _retry_after(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None  # an HTTP-date: rare from a gateway; our own backoff applies


def _error_name(exc: BaseException) -> str:
    return DEADLINE if isinstance(exc, requests.exceptions.Timeout) else transport_problem(exc)


class _LibraryErrors(logging.Handler):
    """Counts the errors pypowerwall logs while a watched call runs in this thread.

    The library swallows a garbled answer (a protobuf or JSON it cannot parse),
    logs it at ERROR and returns {} as if the gateway had nothing to say.
    """

    def emit(self, record: logging.LogRecord) -> None:
        traffic = _traffic()
        if traffic is not None:
            traffic.library_errors += 1
