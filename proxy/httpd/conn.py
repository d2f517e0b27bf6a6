"""One client connection and the states it goes through, as data.

A connection is owned by exactly one thread at a time: the event loop, or the one worker
answering it. Its life is a small state machine, written down as a table (the way h11's
`_state.py` does it) instead of being spread over flags: every move is an `Event`, and a move
the table does not list is a bug that raises at once rather than a connection in a state
nobody expects. Closing is allowed from every state.

    HANDSHAKE --secured--> READING --quick answer--> READING (keep-alive) | LINGER (close)
                           READING --stalled--> WRITING --written--> READING | LINGER
                           READING --handed--> WORKING --kept--> READING
                                                       --finished--> LINGER
                                                       --streamed--> STREAMING --ended--> LINGER
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from proxy.httpd.wire import ReceiveBuffer

if TYPE_CHECKING:
    from proxy.httpd.streams import Streaming

__all__ = ["TRANSITIONS", "Conn", "Event", "State"]


class State(Enum):
    HANDSHAKE = "handshake"  # TLS handshake under way, driven by the loop
    READING = "reading"  # in the loop, waiting for (the rest of) a request; idle keep-alive too
    WRITING = "writing"  # in the loop, an answer that did not fit into the socket at once
    WORKING = "working"  # a worker has it: the app is answering
    STREAMING = "streaming"  # in the loop, a live stream (server-sent events or WebSocket)
    LINGER = "linger"  # last answer and FIN sent: what the client still sends is discarded
    CLOSED = "closed"


class Event(Enum):
    SECURED = "secured"  # the TLS handshake is done
    HANDED = "handed"  # a complete request (or an error to answer) goes to a worker
    STALLED = "stalled"  # the loop's answer is partly written; the rest when writable
    WRITTEN = "written"  # ... and now all of it, keep-alive
    KEPT = "kept"  # a worker answered, keep-alive
    FINISHED = "finished"  # the last answer is out (and FIN sent)
    STREAMED = "streamed"  # a worker wrote a stream's head
    ENDED = "ended"  # a stream ended cleanly (FIN sent)
    CLOSED = "closed"  # the socket is closed (from any state)


TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.HANDSHAKE, Event.SECURED): State.READING,
    (State.READING, Event.HANDED): State.WORKING,
    (State.READING, Event.STALLED): State.WRITING,
    (State.READING, Event.FINISHED): State.LINGER,
    (State.WRITING, Event.WRITTEN): State.READING,
    (State.WRITING, Event.FINISHED): State.LINGER,
    (State.WORKING, Event.KEPT): State.READING,
    (State.WORKING, Event.FINISHED): State.LINGER,
    (State.WORKING, Event.STREAMED): State.STREAMING,
    (State.STREAMING, Event.ENDED): State.LINGER,
}

IN_LOOP = frozenset({State.HANDSHAKE, State.READING, State.WRITING, State.STREAMING, State.LINGER})


class BadTransition(RuntimeError):
    """A move the state table does not allow: a bug in the server."""


@dataclass(eq=False, slots=True)
class Conn:
    """One client connection: its socket, what it sent, where it is in its life."""

    sock: socket.socket
    client: str  # the peer's IP address
    state: State
    buffer: ReceiveBuffer = field(default_factory=ReceiveBuffer)
    events: int = 0  # what the selector watches for it (0: not registered)
    parked_at: float = 0.0  # when it last started waiting on the client
    head_started: float = 0.0  # when the request under way began to arrive (0: none)
    continue_sent: bool = False
    lingered: int = 0  # bytes discarded while lingering
    out: memoryview | None = None  # WRITING: what is left to send ...
    close_after: bool = False  # ... and whether to close after it
    write_by: float = 0.0  # ... and by when the client must have taken it
    stream: Streaming | None = None

    def to(self, event: Event) -> State:
        """Move on by ``event``; raises BadTransition for a move the table does not list."""
        if event is Event.CLOSED:
            self.state = State.CLOSED
            return self.state
        try:
            self.state = TRANSITIONS[self.state, event]
        except KeyError:
            raise BadTransition(f"{event.value} in state {self.state.value}") from None
        return self.state
