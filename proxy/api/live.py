"""Live push routes and the topics behind them.

`GET /ws/aggregate` and `GET /ws/gateway/{id}` (WebSocket, pypowerwall-server's paths and
payloads) and `GET /events` / `GET /events?gw=ID` (server-sent events) push the objects of
`/api/aggregate` and `/api/gateways/{id}` whenever a cache window brings new data. A topic
follows the hub (`proxy.site.hub`) while it has listeners, and the hub reads through the same
window caches as those routes, so listening costs the gateway nothing.
Outages are pushed as they are: `stale: true` while the last good copy is served, then `null`
values with `online: false`, never zeros.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from proxy.api.apidoc import Answer, Doc, Param, ref
from proxy.api.app import CORS, App
from proxy.api.routing import Call, Route
from proxy.errors import HTTPError, UnknownGateway
from proxy.history.events import Event
from proxy.httpd.stream import SSE, WEBSOCKET, Push, Sink, Stream
from proxy.httpd.types import Response
from proxy.reports import Reports
from proxy.site import frames
from proxy.site.hub import Hub, Refresh
from proxy.site.site import Site, Sites

AGGREGATE = "aggregate"
GATEWAY_NOT_FOUND = Push(b'{"error": "Gateway not found"}')
SSE_HEADERS = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache"),
               ("X-Accel-Buffering", "no"), CORS]  # no buffering in an nginx in front
WS_PREFIX = "/ws/gateway/"


def gateway_topic(gateway_id: str) -> str:
    return "gateway:" + gateway_id


# ---- topics: hub subscribers while someone listens ------------------------------------------

@dataclass(frozen=True, slots=True)
class Update:
    """A topic's message for one refresh: the payload, and what it is made of (`news`).

    A topic publishes when `news` differs from what it last published: new gateway data
    (a reading's time), a reading turning stale or unavailable, a gateway's status changing.
    """

    body: Any
    news: Hashable


Message = Callable[[Refresh], "Update | None"]  # None: this refresh brought the topic nothing


class Topic:
    """One stream of pushes: its listeners and its last push; it follows the hub while listened.

    A push is encoded once (JSON, then once per protocol) and offered to every listener's
    sink. Sinks are bounded by the HTTP server's out-buffers; a sink that refuses a push (its
    listener is gone or too slow) is dropped from the topic.
    """

    def __init__(self, key: str, hub: Hub, message: Message, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.key = key
        self._hub = hub
        self._message = message
        self._clock = clock
        self._lock = threading.Lock()
        self._sinks: dict[int, Sink] = {}
        self._next_sink = 0
        self._last: Push | None = None  # the current snapshot while listened
        self._news: Hashable = None
        self._last_id = 0
        self._unsubscribe: Callable[[], None] | None = None  # set while following the hub
        self.published = 0
        self.refreshes = 0

    def subscribe(self, sink: Sink, last_event_id: str = "") -> Callable[[], None]:
        """Add a listener; it gets the current snapshot at once (unless `last_event_id` says it
        has it already). Returns the unsubscribe. Never blocks."""
        with self._lock:
            token = self._next_sink
            self._next_sink += 1
            self._sinks[token] = sink
            current = self._last
            if self._unsubscribe is None:  # the first listener: follow the hub
                self._unsubscribe = self._hub.subscribe(self._receive, name=f"live {self.key}")
        if current is not None and current.event_id != last_event_id and not sink.offer(current):
            self._remove(token)
        return lambda: self._remove(token)

    def _remove(self, token: int) -> None:
        with self._lock:
            self._sinks.pop(token, None)
            if self._sinks or self._unsubscribe is None:
                return
            unsubscribe, self._unsubscribe = self._unsubscribe, None
            # Nobody listens: forget the snapshot, so a later listener is sent a fresh one.
            self._last, self._news = None, None
        unsubscribe()

    def listeners(self) -> int:
        return len(self._sinks)

    def running(self) -> bool:
        return self._unsubscribe is not None

    def _receive(self, refresh: Refresh) -> None:
        update = self._message(refresh)
        if update is None:
            return
        with self._lock:
            if self._unsubscribe is None:  # the last listener left while this was read
                return
            self.refreshes += 1
            if update.news == self._news:
                return
        self.publish(update)

    def publish(self, update: Update) -> Push:
        """Encode once and offer to every listener; drop the ones that refuse."""
        data = json.dumps(update.body).encode()
        with self._lock:
            push = Push(data, self._next_id())
            self._last, self._news = push, update.news
            sinks = list(self._sinks.items())  # with the snapshot: a newcomer gets it once
            self.published += 1
        self._offer(push, sinks)
        return push

    def _next_id(self) -> str:
        """The publish time in milliseconds since the epoch, strictly increasing per topic."""
        now = int(self._clock() * 1000)
        self._last_id = max(now, self._last_id + 1)
        return str(self._last_id)

    def announce(self, push: Push) -> None:
        """Offer a push of its own (an event) to every listener now; the snapshot stays."""
        with self._lock:
            sinks = list(self._sinks.items())
        self._offer(push, sinks)

    def _offer(self, push: Push, sinks: list[tuple[int, Sink]]) -> None:
        """To these listeners; the ones that refuse it are dropped."""
        refused = [token for token, sink in sinks if not sink.offer(push)]
        for token in refused:
            self._remove(token)

    def stop(self) -> None:
        with self._lock:
            self._sinks.clear()
            unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()


class Topics:
    """Every topic by key: `AGGREGATE` and `gateway_topic(id)` per gateway; fixed once built."""

    def __init__(self, topics: Iterable[Topic], reports: Reports | None = None) -> None:
        self._topics = {t.key: t for t in topics}
        if reports is not None:
            reports.register("streams", self.stats)

    def topic(self, key: str) -> Topic | None:
        return self._topics.get(key)

    def listeners(self) -> int:
        return sum(t.listeners() for t in self._topics.values())

    def stop(self) -> None:
        for topic in self._topics.values():
            topic.stop()

    def announce(self, event: Event) -> None:
        """An event to the aggregate's listeners and its gateway's, encoded once: server-sent
        as `event: event` (a listener tells it from the snapshots, which are unnamed messages),
        without an id so a reconnecting client's Last-Event-ID keeps naming its snapshot; over
        WebSocket the same JSON, whose `"type": "event"` tells it apart."""
        push = Push(json.dumps({"type": "event", **event.as_json()}).encode(), event="event")
        for key in (AGGREGATE, gateway_topic(event.gw)):
            topic = self._topics.get(key)
            if topic is not None:
                topic.announce(push)

    def stats(self) -> dict[str, Any]:
        """Listeners and pushes per topic, for /stats ("streams") and /metrics."""
        topics = {t.key: {"listeners": t.listeners(), "refreshing": t.running(),
                          "pushes": t.published, "reads": t.refreshes} for t in self._topics.values()}
        return {"listeners": sum(t["listeners"] for t in topics.values()), "topics": topics}


# ---- what each topic pushes: the polled routes' objects -------------------------------------

def aggregate_message(refresh: Refresh) -> Update:
    """/api/aggregate, whenever any gateway's window brought a frame."""
    body = frames.aggregate(refresh.frames, time.time())
    return Update(body, tuple(f.news() for f in refresh.frames))


def gateway_message(site: Site, default: bool) -> Message:
    """/api/gateways/{id}, when that gateway's window brought its frame."""
    def message(refresh: Refresh) -> Update | None:
        frame = refresh.frame(site.id) if site.id in refresh.read else None
        if frame is None:
            return None
        return Update(frames.gateway_detail(site, frame, default), frame.news())
    return message


def build_topics(hub: Hub, sites: Sites, reports: Reports | None = None) -> Topics:
    """A topic for the aggregate and one per gateway."""
    default = sites.default()
    topics = [Topic(AGGREGATE, hub, aggregate_message)]
    topics += [Topic(gateway_topic(site.id), hub, gateway_message(site, site is default))
               for site in sites]
    return Topics(topics, reports)


# ---- routes ---------------------------------------------------------------------------------

def _topics(app: App) -> Topics:
    topics = app.topics
    if not isinstance(topics, Topics):
        raise HTTPError(404, "Not Found")
    return topics


def _subscriber(topic: Topic, last_event_id: str = "") -> Callable[[Sink], Callable[[], None]]:
    def open_stream(sink: Sink) -> Callable[[], None]:
        return topic.subscribe(sink, last_event_id)
    return open_stream


def _not_found(sink: Sink) -> Callable[[], None]:
    sink.end(GATEWAY_NOT_FOUND)  # as pypowerwall-server: the error, then a normal close
    return lambda: None


def ws_aggregate(app: App, call: Call) -> Response:
    topic = _topics(app).topic(AGGREGATE)
    assert topic is not None
    return Response(200, [CORS], stream=Stream(WEBSOCKET, _subscriber(topic)))


def _gateway(app: App, gateway_id: str) -> Topic:
    """The topic of the gateway an outside id names (UnknownGateway: "Gateway not found")."""
    topic = _topics(app).topic(gateway_topic(app.sites.find(gateway_id).id))
    assert topic is not None  # one per gateway, built with the sites
    return topic


def ws_gateway(app: App, call: Call) -> Response:
    try:
        opener = _subscriber(_gateway(app, call.path[len(WS_PREFIX):]))
    except UnknownGateway:
        opener = _not_found  # the 101 goes out, then the error message and a normal close
    return Response(200, [CORS], stream=Stream(WEBSOCKET, opener))


def events(app: App, call: Call) -> Response:
    """`text/event-stream` of the aggregate, or of one gateway with `?gw=ID`."""
    topic = _gateway(app, call.param("gw")) if "gw" in call.query else _topics(app).topic(AGGREGATE)
    assert topic is not None
    last = (call.request.headers.get("Last-Event-ID") or "").strip()
    return Response(200, list(SSE_HEADERS), stream=Stream(SSE, _subscriber(topic, last)))


# ---- the table ------------------------------------------------------------------------------

_TOO_MANY = Answer(503, "Too many streams open (PW_MAX_STREAMS); polling is not limited",
                   retry_after=True)
_WS_ANSWERS = (
    Answer(101, "Switching Protocols: the WebSocket is open; each text message carries the "
                "object described as the 200 body", body=None),
    Answer(400, "Not a WebSocket opening handshake (Upgrade, Connection, a 16-byte "
                "Sec-WebSocket-Key), not HTTP/1.1 (RFC 6455 4.2.1), or not a GET"),
    Answer(426, "Another WebSocket version: this server speaks Sec-WebSocket-Version 13"),
    _TOO_MANY,
)
_WS_NOTE = ("WebSocket (RFC 6455). The HTTP answer is 101; the 200 body shown is the payload of "
            "each text message, sent when a cache window brings new data (never a resend). "
            "Client messages over 64 KiB close with 1009, unmasked frames with 1002; pings are "
            "answered; the server pings after 15 s of silence and closes with 1001 on shutdown.")
_EVENTS_BODY = {"type": "string", "description": "text/event-stream: `retry: 3000`, then per snapshot "
                "`id:` (publish time, ms since the epoch) and `data:` (one line of JSON: the "
                "/api/aggregate object, or with ?gw the /api/gateways/{id} object); `: keep-alive` "
                "comments after 15 s of silence. The stream does not end by itself."}

ROUTES: tuple[Route, ...] = (
    Route("/ws/aggregate", ws_aggregate, doc=Doc(
        "Live push over WebSocket: the /api/aggregate object", ref("Aggregate"), tag="live",
        description=_WS_NOTE, answers=_WS_ANSWERS)),
    Route(WS_PREFIX + "*", ws_gateway, doc=Doc(
        "Live push over WebSocket: one gateway's /api/gateways/{id} object", ref("GatewayDetail"),
        tag="live", answers=_WS_ANSWERS,
        description=_WS_NOTE + ' An unknown id gets the message {"error": "Gateway not found"} '
                               "and a normal close (1000).",
        wildcard=Param("id", "A gateway id", {"type": "string", "pattern": "^[a-z0-9_-]{1,32}$"}))),
    Route("/events", events, doc=Doc(
        "Live push as server-sent events: the aggregate, or one gateway with ?gw=ID", _EVENTS_BODY,
        media="text/event-stream", tag="live",
        description="A reconnecting client's Last-Event-ID gets the current snapshot at once "
                    "unless it names that very snapshot. HEAD answers the head alone.",
        answers=(Answer(404, '{"error": "Gateway not found"} (an unknown ?gw)'), _TOO_MANY),
        query=(Param("gw", "A gateway id: that gateway's stream instead of the aggregate"),))),
)
