"""MQTT: every gateway's measurements on a broker, with Home Assistant discovery.

On when PW_MQTT_HOST is set. While connected to the broker, the publisher follows the hub
(`proxy.site.hub`): each time a gateway's cache window brings its frame, the frame is handed
to the publisher thread, which publishes one topic per measurement under `{prefix}/{gateway}/…`
when it holds new data (plus `{prefix}/aggregate/…` with several gateways), and the
discovery configs that are new or changed (`proxy.mqtt.discovery`). The hub reads through
the window caches, so MQTT adds no gateway request. Discovery is sent again whenever Home
Assistant announces itself online.

The broker never holds up HTTP: the paho network thread reconnects with backoff on its own,
the publisher only hands messages to it while connected, with a bounded number in flight
(the rest are dropped and counted), and request handlers only ever read `status()`.

Control over MQTT (`{prefix}/{gateway}/control/{reserve|mode}/set`) is on only when
PW_CONTROL_SECRET is set and the broker login has a user and a password; retained commands
are ignored, so a stale command never replays on connect. A command is a row of the actions
table (`proxy.site.actions`), run on the publisher thread, never on paho's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from proxy.errors import ProxyError, UnknownGateway
from proxy.history.events import Event
from proxy.mqtt.discovery import (
    Message,
    Settings,
    aggregate_messages,
    command_topic,
    event_topic,
    firmware,
    gateway_messages,
    gateway_status_topic,
    online_message,
    result_topic,
)
from proxy.ratelog import RateLog
from proxy.reports import Reports
from proxy.site.actions import Origin, Writes, for_mqtt
from proxy.site.frames import Frame, aggregate
from proxy.site.hub import Hub, Refresh
from proxy.site.points import POINT_SOURCES
from proxy.site.site import Site, Sites

log = logging.getLogger("proxy.mqtt")

ONLINE, OFFLINE = "online", "offline"
KEEPALIVE = 30  # seconds between pings to the broker
RECONNECT_MIN, RECONNECT_MAX = 1, 60  # paho's reconnect backoff, seconds
CONNECT_TIMEOUT = 5.0
MAX_IN_FLIGHT = 1000  # messages handed to paho and not yet written; past it new ones are dropped
COMMAND_QUEUE = 16  # control commands waiting for the publisher thread; past it they are ignored
MAX_ENTITIES = 2048  # discovery configs remembered for re-sending
DEFAULT_INTERVAL = 5.0  # publishing interval when caching is off (PW_CACHE_EXPIRE=0)
MIN_INTERVAL = 0.5
STOP_FLUSH = 2.0  # seconds stop() waits for the "offline" message to leave


def _period(site: Site) -> float:
    """How often a gateway's states are published: its cache window."""
    period = site.gateway.cache.period
    return max(MIN_INTERVAL, period) if period > 0 else DEFAULT_INTERVAL


@dataclass(slots=True)
class _Counts:
    connected: bool = False
    connects: int = 0
    published: int = 0
    dropped: int = 0
    commands: int = 0
    commands_ignored: int = 0
    last_error: str | None = None
    last_connected: float | None = None  # epoch seconds
    last_publish: float | None = None  # epoch seconds of the last state batch


class Publisher:
    """The MQTT side of the proxy: one paho client, one publisher thread that follows the hub."""

    def __init__(self, settings: Settings, sites: Sites, hub: Hub, *, writes: Writes | None = None,
                 reports: Reports | None = None,
                 client_factory: Callable[..., Any] | None = None) -> None:
        self.settings = settings
        self.sites = sites
        self.hub = hub
        self.writes = Writes() if writes is None else writes
        self._factory = client_factory
        self._lock = threading.Lock()  # _counts, _in_flight, _pending, _unfollow
        self._counts = _Counts()
        # What was handed to paho and not yet written (paho's MQTTMessageInfo), oldest first.
        self._in_flight: deque[Any] = deque()
        self._commands: queue.Queue[tuple[str, str, str]] = queue.Queue(maxsize=COMMAND_QUEUE)
        self._pending: Refresh | None = None  # the hub's latest refresh, not yet published
        self._unfollow: Callable[[], None] | None = None  # set while following the hub
        self._wake = threading.Event()
        self._resend = threading.Event()
        self._stop = threading.Event()
        self._client: Any = None
        self._thread: threading.Thread | None = None
        self._ignored_log = RateLog(log)
        # Owned by the publisher thread alone:
        self._announced: dict[str, str] = {}  # discovery topic -> config sent
        self._availability: dict[str, str] = {}  # gateway -> online/offline sent
        self._published_at: dict[str, float] = {}  # gateway -> data time last published
        self._sent_at: dict[str, float] = {}  # gateway -> when its states last went out
        if reports is not None:
            reports.register("mqtt", self.status)

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background and start publishing; returns at once."""
        self._client = self._make_client()
        self._client.connect_async(self.settings.host, self.settings.port, keepalive=KEEPALIVE)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._thread.start()
        control = "on" if self.settings.control else "off"
        log.info("mqtt: publishing to %s:%s under %s/ (discovery %s/, control %s)",
                 self.settings.host, self.settings.port, self.settings.prefix,
                 self.settings.discovery_prefix, control)

    def stop(self) -> None:
        """Say "offline", disconnect and stop both threads."""
        self._stop.set()
        self._follow(False)
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        client = self._client
        if client is None:
            return
        if client.is_connected():
            info = client.publish(self.settings.status_topic, OFFLINE, qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):  # not queued: going anyway
                info.wait_for_publish(timeout=STOP_FLUSH)
        client.disconnect()
        client.loop_stop()

    def _make_client(self) -> Any:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        factory = self._factory or paho.Client
        client = factory(callback_api_version=CallbackAPIVersion.VERSION2,
                         client_id=f"{self.settings.node}-proxy-{secrets.token_hex(4)}",
                         protocol=paho.MQTTv311)
        s = self.settings
        if s.user:
            client.username_pw_set(s.user, s.password.reveal() or None)
        if s.tls:
            client.tls_set()
        client.will_set(s.status_topic, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(RECONNECT_MIN, RECONNECT_MAX)
        client.connect_timeout = CONNECT_TIMEOUT
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.max_queued_messages_set(MAX_IN_FLIGHT)
        return client

    # ---- status (read by /stats and /metrics; never blocks on the broker) -----------------

    def status(self) -> dict[str, Any]:
        with self._lock:
            in_flight = self._unwritten()
            counts = replace(self._counts)
        s = self.settings
        age = None if counts.last_publish is None else round(time.time() - counts.last_publish, 1)
        return {
            "enabled": True, "broker": f"{s.host}:{s.port}", "tls": s.tls, "user": s.user or None,
            "prefix": s.prefix, "discovery_prefix": s.discovery_prefix, "retain": s.retain,
            "control": s.control, "connected": counts.connected, "connects": counts.connects,
            "last_error": counts.last_error, "last_connected": counts.last_connected,
            "published": counts.published, "dropped": counts.dropped, "in_flight": in_flight,
            "commands": counts.commands, "commands_ignored": counts.commands_ignored,
            "last_publish_age_seconds": age,
        }

    # ---- paho callbacks (paho's network thread: quick, no gateway I/O) -------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._note_error(f"the broker refused the connection: {reason}")
            return
        with self._lock:
            first = self._counts.connects == 0
            self._counts.connected = True
            self._counts.connects += 1
            self._counts.last_error = None
            self._counts.last_connected = time.time()
            self._in_flight.clear()
        log.info("mqtt: connected to %s:%s%s", self.settings.host, self.settings.port,
                 "" if first else " again")
        client.publish(self.settings.status_topic, ONLINE, qos=1, retain=True)
        subscriptions = [(self.settings.birth_topic, 0)]
        if self.settings.control:
            subscriptions.append((self.settings.command_filter, 1))
        client.subscribe(subscriptions)
        self._resend.set()
        self._follow(True)  # a newcomer to the hub: every gateway's frame comes at once
        self._wake.set()

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self._note_error("cannot reach the broker")

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        with self._lock:
            was = self._counts.connected
            self._counts.connected = False
            self._in_flight.clear()
        self._follow(False)  # nobody to tell: no reading for MQTT's sake
        if was and not self._stop.is_set():
            self._note_error(f"disconnected: {reason}")

    def _note_error(self, error: str) -> None:
        with self._lock:
            changed = self._counts.last_error != error
            self._counts.last_error = error
        if changed:  # once per kind of trouble, not once per reconnect attempt
            log.warning("mqtt: %s (%s:%s); retrying in the background", error,
                        self.settings.host, self.settings.port)

    def _unwritten(self) -> int:
        """Messages still waiting in paho (call with the lock held). Written ones leave from
        the front; the queue is emptied when the connection drops or comes back."""
        pending = self._in_flight
        while pending and pending[0].is_published():
            pending.popleft()
        return len(pending)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        topic = message.topic
        if topic == self.settings.birth_topic:
            if message.payload.strip() == ONLINE.encode():
                self._resend.set()
                self._wake.set()
            return
        if not self.settings.control:
            return
        parts = topic[len(self.settings.prefix) + 1:].split("/")
        if message.retain or len(parts) != 4 or not message.payload:
            # retained: it would replay on every connect; empty: someone clearing a retained one
            self._ignored(topic, "a retained command" if message.retain else "an empty command")
            return
        try:
            payload = message.payload.decode("ascii")
            self._commands.put_nowait((parts[0], parts[2], payload))
        except (UnicodeDecodeError, queue.Full):
            self._ignored(topic, "not ASCII, or too many commands waiting")
            return
        self._wake.set()

    def _ignored(self, topic: str, why: str) -> None:
        """Counted every time; logged the first time, then once a minute with a count (anyone
        who may publish on the broker can send them)."""
        with self._lock:
            self._counts.commands_ignored += 1
        self._ignored_log.warning("mqtt: ignored a command on %s: %s", topic, why)

    # ---- following the hub ---------------------------------------------------------------

    def _follow(self, on: bool) -> None:
        with self._lock:
            following = self._unfollow is not None
            if on and not following and not self._stop.is_set():
                self._unfollow = self.hub.subscribe(self._on_refresh, POINT_SOURCES, name="mqtt")
                return
            unfollow, self._unfollow = (self._unfollow, None) if not on else (None, self._unfollow)
        if unfollow is not None:
            unfollow()

    def _on_refresh(self, refresh: Refresh) -> None:
        """The hub's thread: leave the refresh for the publisher thread (the latest wins, with
        every gateway read since the last one taken)."""
        with self._lock:
            waiting = self._pending
            read = refresh.read | waiting.read if waiting is not None else refresh.read
            self._pending = Refresh(refresh.frames, read)
        self._wake.set()

    # ---- the publisher thread: woken by the hub, a command or a resend --------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            try:
                self._handle_commands()
                if self._resend.is_set():
                    self._resend.clear()
                    self._resend_all()
                with self._lock:
                    refresh, self._pending = self._pending, None
                if refresh is not None:
                    self._publish(refresh)
            except Exception:  # a bug must not end publishing for good
                log.exception("mqtt: unexpected error while publishing")

    def _connected(self) -> bool:
        with self._lock:
            return self._counts.connected

    def _publish(self, refresh: Refresh) -> None:
        if not self._connected():
            return
        published = [frame for frame in refresh.new() if self._publish_gateway(frame)]
        if published and len(self.sites) > 1:
            slowest = max(_period(site) for site in self.sites)
            configs, states = aggregate_messages(self.settings, aggregate(refresh.frames, time.time()),
                                                 slowest)
            self._announce(configs)
            self._send(states)
        if published:
            with self._lock:
                self._counts.last_publish = time.time()

    def _publish_gateway(self, frame: Frame) -> bool:
        """One gateway's availability and, when its frame holds new data, its states; whether
        states went out."""
        site = self.sites.get(frame.id)
        if site is None or self._too_soon(frame, site):
            return False
        self._set_availability(frame.id, ONLINE if frame.fresh else OFFLINE)
        if not frame.fresh or frame.at is None or frame.at == self._published_at.get(frame.id):
            # No new data this window: only the proxy's own view of the gateway is news
            # (the measurements expire in Home Assistant by themselves).
            self._send([online_message(self.settings, frame)])
            return False
        control = self.settings.control and site.gateway.control_pw is not None
        configs, states = gateway_messages(self.settings, frame, firmware(frame), _period(site),
                                           self._announced, control)
        self._announce(configs)
        self._send(states)
        self._published_at[frame.id] = frame.at
        return True

    def _too_soon(self, frame: Frame, site: Site) -> bool:
        """With caching off every read is new: publish at most once per DEFAULT_INTERVAL."""
        now = time.monotonic()
        if frame.window == -1 and now - self._sent_at.get(site.id, -math.inf) < _period(site):
            return True
        self._sent_at[site.id] = now
        return False

    def _set_availability(self, gateway: str, state: str) -> None:
        message = Message(gateway_status_topic(self.settings, gateway), state, True, 1)
        if self._availability.get(gateway) != state and self._send([message]):
            self._availability[gateway] = state

    def _announce(self, configs: list[Message]) -> None:
        """Send the discovery configs that are new or changed."""
        fresh = [m for m in configs if self._announced.get(m.topic) != m.payload]
        sent = self._send(fresh)
        for message in fresh[:sent]:
            if message.topic in self._announced or len(self._announced) < MAX_ENTITIES:
                self._announced[message.topic] = message.payload

    def _resend_all(self) -> None:
        """After a (re)connect or Home Assistant's birth message: every config and availability,
        and the states again with the next frames."""
        messages = [Message(t, p, True, 1) for t, p in self._announced.items()]
        messages += [Message(gateway_status_topic(self.settings, g), s, True, 1)
                     for g, s in self._availability.items()]
        self._send(messages)
        self._published_at.clear()
        self._sent_at.clear()

    def _send(self, messages: list[Message]) -> int:
        """Hand messages to paho; returns how many it took (the rest are dropped, counted)."""
        client = self._client
        taken = 0
        for message in messages:
            with self._lock:
                room = self._counts.connected and self._unwritten() < MAX_IN_FLIGHT
            if not room or client is None:
                break
            info = client.publish(message.topic, message.payload, qos=message.qos,
                                  retain=message.retain)
            if info.rc != 0:
                break
            with self._lock:
                self._in_flight.append(info)
                self._counts.published += 1
            taken += 1
        if taken < len(messages):
            with self._lock:
                self._counts.dropped += len(messages) - taken
        return taken

    # ---- events (the history's) -------------------------------------------------------------

    def event(self, event: Event) -> None:
        """Publish an event on {prefix}/{gateway}/event (QoS 1, not retained: an event is told
        once, never replayed to a newcomer); dropped, and counted, while not connected."""
        message = Message(event_topic(self.settings, event.gw), json.dumps(event.as_json()), qos=1)
        if self._connected():
            self._send([message])
        else:
            with self._lock:
                self._counts.dropped += 1

    # ---- control commands: rows of the actions table ---------------------------------------

    def _handle_commands(self) -> None:
        while True:
            try:
                gateway, name, payload = self._commands.get_nowait()
            except queue.Empty:
                return
            self._command(gateway, name, payload)

    def _command(self, gateway: str, name: str, payload: str) -> None:
        topic = command_topic(self.settings, gateway, name)
        result = carry_out(self.sites, self.writes, gateway, name, payload)
        if result is None:
            self._ignored(topic, "no such gateway or command")
            return
        if result["ok"]:  # the write moved the gateway's window on: the hub reads it at once
            with self._lock:
                self._counts.commands += 1
        else:
            self._ignored(topic, str(result["error"]))
        self._send([Message(result_topic(self.settings, gateway, name), json.dumps(result))])


def carry_out(sites: Sites, writes: Writes, gateway: str, name: str, payload: str) -> dict[str, Any] | None:
    """Run an MQTT command as its row of the actions table: {"ok": True, "result": …} or
    {"ok": False, "error": …}; None when no gateway or no command has that name."""
    action = for_mqtt(name)
    try:
        site = sites.find(gateway)
    except UnknownGateway:
        return None
    if action is None:
        return None
    try:
        answer = writes.run(site, action, action.parse(_whole(payload)), Origin.MQTT)
    except ProxyError as exc:
        return {"ok": False, "error": exc.message}
    return {"ok": True, "result": answer}


def _whole(raw: str) -> str:
    """"37.0" as "37": Home Assistant's number entity may send an integral value that way."""
    text = raw.strip()
    return re.sub(r"\.0+$", "", text) if re.fullmatch(r"[0-9]{1,3}\.0+", text) else text
