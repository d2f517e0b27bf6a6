"""The server's pure parts without a network: the receive buffer and the connection states."""

from __future__ import annotations

import socket

import pytest

from proxy.httpd.conn import TRANSITIONS, BadTransition, Conn, Event, State
from proxy.httpd.wire import ReceiveBuffer, WireError

# Two pipelined requests: CRLF with a body, then bare LF line ends (RFC 9112 2.2).
PIPELINED = (b"POST /split?x=1 HTTP/1.1\r\nHost: proxy\r\nContent-Length: 3\r\n\r\nabc"
             b"GET /next HTTP/1.1\nX-Test: 1\n\n")
EXPECTED = [("POST", "/split?x=1", {"host": "proxy", "content-length": "3"}, b"abc"),
            ("GET", "/next", {"x-test": "1"}, b"")]


def fed(pieces: list[bytes]) -> list[tuple[str, str, dict[str, str], bytes]]:
    """Feed the pieces one after another; every request cut off the buffer on the way."""
    buffer = ReceiveBuffer()
    framed: list[tuple[str, str, dict[str, str], bytes]] = []
    for piece in pieces:
        buffer.feed(piece)
        while (request := buffer.next_request(max_head=1024, max_body=64)) is not None:
            assert not isinstance(request, WireError), request
            head, body = request
            framed.append((head.method, head.target, dict(head.headers), body))
    assert not buffer.pending
    return framed


def test_requests_split_at_every_byte_are_framed_alike() -> None:
    """The buffer resumes its search where it stopped: a terminator split over two reads
    (CR LF | CR LF, LF | LF, ...) is still found, and nothing is framed twice."""
    assert fed([PIPELINED]) == EXPECTED
    for cut in range(1, len(PIPELINED)):
        assert fed([PIPELINED[:cut], PIPELINED[cut:]]) == EXPECTED, cut
    assert fed([PIPELINED[i:i + 1] for i in range(len(PIPELINED))]) == EXPECTED


def test_a_head_over_the_limit_is_refused_however_it_trickles_in() -> None:
    buffer = ReceiveBuffer()
    answer: object = None
    for _ in range(200):
        buffer.feed(b"GET / HTTP/1.1\r\nX-Long: " + b"x" * 10)
        answer = buffer.next_request(max_head=1024, max_body=64)
        if answer is not None:
            break
    assert answer == WireError(431, "Request Header Fields Too Large")


def test_every_state_may_close_and_an_unlisted_move_raises() -> None:
    with socket.socket() as sock:
        for state in State:
            conn = Conn(sock, "127.0.0.1", state)
            assert conn.to(Event.CLOSED) is State.CLOSED
        conn = Conn(sock, "127.0.0.1", State.READING)
        assert conn.to(Event.HANDED) is State.WORKING and conn.to(Event.KEPT) is State.READING
        assert (State.READING, Event.STREAMED) not in TRANSITIONS
        with pytest.raises(BadTransition):
            conn.to(Event.STREAMED)  # only a worker's answer becomes a stream
        assert conn.state is State.READING
