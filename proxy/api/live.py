"""Live push routes and the feeds behind them.

`GET /ws/aggregate` and `GET /ws/gateway/{id}` (WebSocket, pypowerwall-server's paths and
payloads) and `GET /events` / `GET /events?gw=ID` (server-sent events) push the objects of
`/api/aggregate` and `/api/gateways/{id}` whenever a cache window brings new data. The feeds
read through the same window caches as those routes, so listening costs the gateway nothing.
Outages are pushed as they are: `stale: true` while the last good copy is served, then `null`
values with `online: false`, never zeros.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence

from proxy.api.apidoc import Answer, Doc, Param, ref
from proxy.api.app import CORS, App, Call, Route
from proxy.errors import HTTPError
from proxy.httpd.stream import SSE, WEBSOCKET, Push, Sink, Stream
from proxy.httpd.types import Response
from proxy.site import frames as fleet
from proxy.site.hub import AGGREGATE, Hub, Topic, Update, gateway_topic
from proxy.site.site import Reading, Site, Sites, State

GATEWAY_NOT_FOUND = Push(b'{"error": "Gateway not found"}')
SSE_HEADERS = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache"),
               ("X-Accel-Buffering", "no"), CORS]  # no buffering in an nginx in front
WS_PREFIX = "/ws/gateway/"


# ---- feeds: what a topic reads once per window --------------------------------------------

def _mark(reading: Reading | None) -> Hashable:
    """What identifies a reading's data: its time for data, its state otherwise."""
    if reading is None:
        return None
    if reading.state is State.DATA:
        return (reading.at, reading.stale)
    return str(reading.state.value)


def _news(site: Site, snap: fleet.Snapshot, readings: Sequence[Reading | None]) -> Hashable:
    return (site.id, snap.status, snap.error, tuple(_mark(r) for r in readings))


def aggregate_feed(sites: Sites) -> Callable[[], Update]:
    def read() -> Update:
        # Side by side: shared library fetches coalesce in proxy.gateway.library.
        readings = fleet.read_sites(sites, fleet.SNAPSHOT_SOURCES)
        snaps = [fleet.snapshot(site, readings[site.id]) for site in sites]
        news = tuple(_news(site, snap, readings[site.id]) for site, snap in zip(sites, snaps, strict=True))
        return Update(fleet.aggregate(snaps, time.time()), news)
    return read


def gateway_feed(site: Site, default: bool) -> Callable[[], Update]:
    one = Sites([site])

    def read() -> Update:
        readings = fleet.read_sites(one, fleet.SNAPSHOT_SOURCES)[site.id]
        snap = fleet.snapshot(site, readings)
        body = fleet.gateway_detail(site, snap, default)
        return Update(body, _news(site, snap, readings))
    return read


def build_hub(sites: Sites) -> Hub:
    """A topic for the aggregate and one per gateway."""
    listed = list(sites)

    def aggregate_schedule() -> float:
        return min(site.next_window_in() for site in listed)

    default = sites.default()
    topics = [Topic(AGGREGATE, aggregate_feed(sites), aggregate_schedule)]
    topics += [Topic(gateway_topic(site.id), gateway_feed(site, site is default), site.next_window_in)
               for site in listed]
    return Hub(topics)


# ---- routes ---------------------------------------------------------------------------------

def _hub(app: App) -> Hub:
    if app.hub is None:
        raise HTTPError(404, "Not Found")
    return app.hub


def _subscriber(topic: Topic, last_event_id: str = "") -> Callable[[Sink], Callable[[], None]]:
    def open_stream(sink: Sink) -> Callable[[], None]:
        return topic.subscribe(sink, last_event_id)
    return open_stream


def _not_found(sink: Sink) -> Callable[[], None]:
    sink.end(GATEWAY_NOT_FOUND)  # as pypowerwall-server: the error, then a normal close
    return lambda: None


def ws_aggregate(app: App, call: Call) -> Response:
    topic = _hub(app).topic(AGGREGATE)
    assert topic is not None
    return Response(200, [CORS], stream=Stream(WEBSOCKET, _subscriber(topic)))


def ws_gateway(app: App, call: Call) -> Response:
    topic = _hub(app).topic(gateway_topic(call.path[len(WS_PREFIX):]))
    opener = _not_found if topic is None else _subscriber(topic)
    return Response(200, [CORS], stream=Stream(WEBSOCKET, opener))


def events(app: App, call: Call) -> Response:
    """`text/event-stream` of the aggregate, or of one gateway with `?gw=ID`."""
    hub = _hub(app)
    gateway_id = call.param("gw")
    key = gateway_topic(gateway_id) if "gw" in call.query else AGGREGATE
    topic = hub.topic(key)
    if topic is None:
        raise HTTPError(404, "Gateway not found")
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

LIVE_ROUTES: tuple[Route, ...] = (
    Route("/ws/aggregate", ws_aggregate, root_only=True, doc=Doc(
        "Live push over WebSocket: the /api/aggregate object", ref("Aggregate"), tag="live",
        description=_WS_NOTE, answers=_WS_ANSWERS)),
    Route(WS_PREFIX + "*", ws_gateway, root_only=True, doc=Doc(
        "Live push over WebSocket: one gateway's /api/gateways/{id} object", ref("GatewayDetail"),
        tag="live", answers=_WS_ANSWERS,
        description=_WS_NOTE + ' An unknown id gets the message {"error": "Gateway not found"} '
                               "and a normal close (1000).",
        wildcard=Param("id", "A gateway id", {"type": "string", "pattern": "^[a-z0-9_-]{1,32}$"}))),
    Route("/events", events, root_only=True, doc=Doc(
        "Live push as server-sent events: the aggregate, or one gateway with ?gw=ID", _EVENTS_BODY,
        media="text/event-stream", tag="live",
        description="A reconnecting client's Last-Event-ID gets the current snapshot at once "
                    "unless it names that very snapshot. HEAD answers the head alone.",
        answers=(Answer(404, '{"error": "Gateway not found"} (an unknown ?gw)'), _TOO_MANY),
        query=(Param("gw", "A gateway id: that gateway's stream instead of the aggregate"),))),
)
