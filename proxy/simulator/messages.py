"""Transport-free request and response values, so the gateway logic is testable
without sockets and the HTTP layer stays a thin adapter."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from typing import Any


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query string
    query: str
    headers: Mapping[str, str]  # keys lower-cased
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def cookies(self) -> dict[str, str]:
        raw = self.header("cookie")
        if not raw:
            return {}
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw)
        except CookieError:
            return {}
        return {name: morsel.value for name, morsel in jar.items()}

    def bearer_token(self) -> str | None:
        value = self.header("authorization") or ""
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token.strip() or None


PADDING_BLOCK = b" " * 65536  # whitespace keeps a JSON body valid however long it grows


@dataclass(frozen=True)
class Delivery:
    """How the transport writes a body (faults): padding after it, and pacing."""

    padding: int = 0  # whitespace bytes sent after the body, counted in Content-Length
    chunk: int = 0  # bytes per write; 0: the body in one write
    delay: float = 0.0  # seconds between writes

    def pieces(self, body: bytes) -> Iterator[bytes]:
        """The bytes to write, in order; the padding is made as it goes, never held whole."""
        if not self.chunk:
            if body:
                yield body
        else:
            for start in range(0, len(body), self.chunk):
                yield body[start:start + self.chunk]
        left = self.padding
        block = PADDING_BLOCK[:self.chunk] if self.chunk else PADDING_BLOCK
        while left > 0:
            piece = block if left >= len(block) else block[:left]
            left -= len(piece)
            yield piece


AS_IS = Delivery()


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    delivery: Delivery = AS_IS

    @property
    def length(self) -> int:
        """Content-Length: the body plus any padding."""
        return len(self.body) + self.delivery.padding


def dumps(payload: Any) -> bytes:
    """Compact JSON, as the gateway's Go encoder writes it."""
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def json_response(payload: Any, status: int = 200,
                  headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, dumps(payload), "application/json", headers)


def gateway_error(status: int, error: str, message: str,
                  headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """The gateway's error body: {"code": N, "error": ..., "message": ...}."""
    return json_response({"code": status, "error": error, "message": message}, status, headers)


def status_error(status: int, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return gateway_error(status, phrase, "Simulated gateway fault", headers)


def not_found() -> Response:
    # The gateway is a Go server: unknown routes get Go's stock 404 text.
    return Response(404, b"404 page not found\n", "text/plain; charset=utf-8")
