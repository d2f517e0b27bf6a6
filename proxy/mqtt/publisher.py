"""MQTT: every gateway's measurements on a broker, with Home Assistant discovery.

On when PW_MQTT_HOST is set. A publisher thread reads each gateway through its
window cache once per cache window (so it adds no gateway request beyond the
one per resource per window) and, when the window brought new data, publishes
one topic per measurement under `{prefix}/{gateway}/…`, plus `{prefix}/aggregate/…`
with several gateways. Home Assistant discovery configs are built from the
table of measurements (`proxy.site.points`): one device per gateway, stable unique
ids, an origin block, classes and units from the table, availability from the
proxy's last will (`{prefix}/status`) and each gateway's own topic
(`{prefix}/{gateway}/status`), and `expire_after` so a silent proxy shows
unavailable rather than frozen numbers. Discovery is sent again whenever
Home Assistant announces itself online.

The broker never holds up HTTP: the paho network thread reconnects with
backoff on its own, the publisher only hands messages to it while connected,
with a bounded number in flight (the rest are dropped and counted), and
request handlers only ever read `status()`.

Control over MQTT (`{prefix}/{gateway}/control/{reserve|mode}/set`) is on only
when PW_CONTROL_SECRET is set and the broker login has a user and a password;
retained commands are ignored, so a stale command never replays on connect.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from proxy import __version__
from proxy.api.control import COMMANDS, Command, run_command
from proxy.config import Config, Secret
from proxy.errors import ProxyError
from proxy.site.frames import Frame, aggregate, read_frames
from proxy.site.points import AGGREGATE_POINTS, MODES, POINT_SOURCES, POINTS, Kind, Point, slug, values
from proxy.site.site import Site, Sites

log = logging.getLogger("proxy.mqtt")

ORIGIN = {"name": "Powerwall proxy", "sw_version": __version__}
MANUFACTURER = "Tesla"
ONLINE, OFFLINE = "online", "offline"
KEEPALIVE = 30  # seconds between pings to the broker
RECONNECT_MIN, RECONNECT_MAX = 1, 60  # paho's reconnect backoff, seconds
CONNECT_TIMEOUT = 5.0
MAX_IN_FLIGHT = 1000  # messages handed to paho and not yet written; past it new ones are dropped
COMMAND_QUEUE = 16  # control commands waiting for the publisher thread; past it they are ignored
MAX_ENTITIES = 2048  # discovery configs remembered for re-sending
EXPIRE_WINDOWS = 6  # a state expires in Home Assistant after this many silent windows ...
MIN_EXPIRE = 30  # ... and never sooner than this many seconds
DEFAULT_INTERVAL = 5.0  # publishing interval when caching is off (PW_CACHE_EXPIRE=0)
MIN_INTERVAL = 0.5
STOP_FLUSH = 2.0  # seconds stop() waits for the "offline" message to leave


@dataclass(frozen=True, slots=True)
class Settings:
    """What the publisher needs from the configuration."""

    host: str
    port: int
    user: str = ""
    password: Secret = Secret()
    tls: bool = False
    prefix: str = "pypowerwall"
    discovery_prefix: str = "homeassistant"
    retain: bool = False
    control: bool = False  # commands accepted: control secret set and a broker user + password

    @classmethod
    def from_config(cls, config: Config) -> Settings:
        return cls(
            host=config.mqtt_host, port=config.mqtt_port or (8883 if config.mqtt_tls else 1883),
            user=config.mqtt_user, password=config.mqtt_password, tls=config.mqtt_tls,
            prefix=config.mqtt_prefix, discovery_prefix=config.mqtt_discovery_prefix,
            retain=config.mqtt_retain,
            control=bool(config.control_secret) and bool(config.mqtt_user) and bool(config.mqtt_password),
        )

    @property
    def status_topic(self) -> str:
        """The proxy's availability: "online" while connected, "offline" as its last will."""
        return f"{self.prefix}/status"

    @property
    def birth_topic(self) -> str:
        """Where Home Assistant says it is online (and discovery must be sent again)."""
        return f"{self.discovery_prefix}/status"

    @property
    def command_filter(self) -> str:
        return f"{self.prefix}/+/control/+/set"

    @property
    def node(self) -> str:
        """The prefix as an id part (unique ids and discovery object ids)."""
        return slug(self.prefix.replace("/", "_"))


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: str
    retain: bool = False
    qos: int = 0


# ---- topics and payloads: pure functions ----------------------------------------------

def state_topic(settings: Settings, gateway: str, point: Point, label: str = "") -> str:
    base = f"{settings.prefix}/{gateway}/{point.key}"
    return f"{base}/{slug(label)}" if label else base


def gateway_status_topic(settings: Settings, gateway: str) -> str:
    return f"{settings.prefix}/{gateway}/status"


def command_topic(settings: Settings, gateway: str, command: str) -> str:
    return f"{settings.prefix}/{gateway}/control/{command}/set"


def result_topic(settings: Settings, gateway: str, command: str) -> str:
    return f"{settings.prefix}/{gateway}/control/{command}/result"


def payload_of(value: Any) -> str:
    """A state as its MQTT payload: numbers plain (integral ones without .0), ON/OFF, text."""
    if isinstance(value, bool):
        return "ON" if value else "OFF"
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return str(value)


def expire_after(interval: float) -> int:
    return max(MIN_EXPIRE, math.ceil(EXPIRE_WINDOWS * interval))


def _label_name(point: Point, label: str) -> str:
    if point.label == "meter":
        return f"{label.title()} {point.name}"
    short = label.rsplit("--", 1)[-1]  # a battery's serial number ends its name
    return f"{point.name} {short}"


def device_block(settings: Settings, gateway: str, name: str, firmware: str | None,
                 model: str = "Powerwall gateway") -> dict[str, Any]:
    device: dict[str, Any] = {"identifiers": [f"{settings.node}_{gateway}"], "name": name,
                              "manufacturer": MANUFACTURER, "model": model}
    if firmware:
        device["sw_version"] = firmware
    return device


def entity_config(settings: Settings, point: Point, *, gateway: str, label: str, device: dict[str, Any],
                  availability: list[str], expire: int) -> tuple[str, dict[str, Any]]:
    """(discovery topic, config) of one Home Assistant entity for a point (and label)."""
    object_id = f"{point.key}_{slug(label)}" if label else point.key
    unique_id = f"{settings.node}_{gateway}_{object_id}"
    component = "binary_sensor" if point.kind is Kind.FLAG else "sensor"
    config: dict[str, Any] = {
        "name": _label_name(point, label) if label else point.name,
        "unique_id": unique_id,
        "state_topic": state_topic(settings, gateway, point, label),
        "availability": [{"topic": t} for t in availability],
        "availability_mode": "all",
        "expire_after": expire,
        "device": device,
        "origin": ORIGIN,
    }
    if point.device_class:
        config["device_class"] = point.device_class
    if point.state_class:
        config["state_class"] = point.state_class
    if point.unit:
        config["unit_of_measurement"] = point.unit
    if point.device_class == "enum":
        config["options"] = list(point.states)
    if point.diagnostic:
        config["entity_category"] = "diagnostic"
    if point.icon:
        config["icon"] = point.icon
    return f"{settings.discovery_prefix}/{component}/{unique_id}/config", config


def control_configs(settings: Settings, gateway: str, device: dict[str, Any],
                    availability: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """A number (reserve) and a select (mode) entity, when MQTT control is on."""
    by_key = {p.key: p for p in POINTS}
    common = {"availability": [{"topic": t} for t in availability], "availability_mode": "all",
              "device": device, "origin": ORIGIN}
    reserve_id = f"{settings.node}_{gateway}_reserve_setting"
    mode_id = f"{settings.node}_{gateway}_mode_setting"
    return [
        (f"{settings.discovery_prefix}/number/{reserve_id}/config", {
            "name": "Backup reserve setting", "unique_id": reserve_id,
            "command_topic": command_topic(settings, gateway, "reserve"),
            "state_topic": state_topic(settings, gateway, by_key["battery_reserve"]),
            "min": 0, "max": 100, "step": 1, "mode": "box", "unit_of_measurement": "%",
            "entity_category": "config", "icon": "mdi:battery-lock", **common}),
        (f"{settings.discovery_prefix}/select/{mode_id}/config", {
            "name": "Operation mode setting", "unique_id": mode_id,
            "command_topic": command_topic(settings, gateway, "mode"),
            "state_topic": state_topic(settings, gateway, by_key["operation_mode"]),
            "options": list(MODES), "entity_category": "config", "icon": "mdi:home-battery",
            **common}),
    ]


def gateway_messages(settings: Settings, frame: Frame, firmware: str | None, interval: float,
                     announced: Iterable[str],
                     control: bool = False) -> tuple[list[Message], list[Message]]:
    """(discovery configs, states) of one gateway's frame, with the control entities when
    `control`. A point without a value gets no new entity; one announced before gets "None"
    (Home Assistant's unknown), never a 0."""
    known = set(announced)
    device = device_block(settings, frame.id, frame.label, firmware)
    proxy_only = [settings.status_topic]
    both = [settings.status_topic, gateway_status_topic(settings, frame.id)]
    expire = expire_after(interval)
    configs: list[Message] = []
    states: list[Message] = []
    for point in POINTS:
        found = values(point, frame)
        availability = proxy_only if point.kind is Kind.FLAG else both
        for label, value in found.items():
            topic, config = entity_config(settings, point, gateway=frame.id, label=label,
                                          device=device, availability=availability, expire=expire)
            configs.append(Message(topic, json.dumps(config), retain=True, qos=1))
            states.append(Message(state_topic(settings, frame.id, point, label), payload_of(value),
                                  retain=settings.retain))
        if not point.label and not found:
            topic, _ = entity_config(settings, point, gateway=frame.id, label="", device=device,
                                     availability=availability, expire=expire)
            if topic in known:
                states.append(Message(state_topic(settings, frame.id, point), "None",
                                      retain=settings.retain))
    if control:
        for topic, config in control_configs(settings, frame.id, device, both):
            configs.append(Message(topic, json.dumps(config), retain=True, qos=1))
    return configs, states


def aggregate_messages(settings: Settings, body: dict[str, Any],
                       interval: float) -> tuple[list[Message], list[Message]]:
    """(discovery configs, states) of the aggregate device (several gateways)."""
    device = device_block(settings, "aggregate", "Powerwall aggregate", None, model="All gateways")
    configs: list[Message] = []
    states: list[Message] = []
    for point in AGGREGATE_POINTS:
        for label, value in values(point, body).items():
            topic, config = entity_config(settings, point, gateway="aggregate", label=label,
                                          device=device, availability=[settings.status_topic],
                                          expire=expire_after(interval))
            configs.append(Message(topic, json.dumps(config), retain=True, qos=1))
            states.append(Message(state_topic(settings, "aggregate", point, label),
                                  payload_of(value), retain=settings.retain))
    return configs, states


def online_message(settings: Settings, frame: Frame) -> Message:
    """The gateway_online state, which is the proxy's to tell even when the gateway is silent."""
    point = next(p for p in POINTS if p.kind is Kind.FLAG)
    return Message(state_topic(settings, frame.id, point), payload_of(frame.online),
                   retain=settings.retain)


def _firmware(frame: Frame) -> str | None:
    point = next(p for p in POINTS if p.key == "firmware_version")
    found = values(point, frame)
    return str(found[""]) if found else None


def _period(site: Site) -> float:
    """How often a gateway's states are published: its cache window."""
    period = site.gateway.cache.period
    return max(MIN_INTERVAL, period) if period > 0 else DEFAULT_INTERVAL


# ---- the publisher ------------------------------------------------------------------------

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
    """The MQTT side of the proxy: one paho client, one publisher thread."""

    def __init__(self, settings: Settings, sites: Sites, *,
                 client_factory: Callable[..., Any] | None = None) -> None:
        self.settings = settings
        self.sites = sites
        self._factory = client_factory
        self._lock = threading.Lock()  # _counts and _in_flight
        self._counts = _Counts()
        # What was handed to paho and not yet written (paho's MQTTMessageInfo), oldest first.
        self._in_flight: deque[Any] = deque()
        self._commands: queue.Queue[tuple[str, str, str]] = queue.Queue(maxsize=COMMAND_QUEUE)
        self._wake = threading.Event()
        self._resend = threading.Event()
        self._stop = threading.Event()
        self._client: Any = None
        self._thread: threading.Thread | None = None
        # Owned by the publisher thread alone:
        self._announced: dict[str, str] = {}  # discovery topic -> config sent
        self._availability: dict[str, str] = {}  # gateway -> online/offline sent
        self._published_at: dict[str, float] = {}  # gateway -> data time last published
        self._windows: dict[str, int | None] = {}  # gateway -> window last read

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
        self._wake.set()

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self._note_error("cannot reach the broker")

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        with self._lock:
            was = self._counts.connected
            self._counts.connected = False
            self._in_flight.clear()
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
        with self._lock:
            self._counts.commands_ignored += 1
        log.warning("mqtt: ignored a command on %s: %s", topic, why)

    # ---- the publisher thread ------------------------------------------------------------

    def interval(self) -> float:
        """The publisher's tick: the shortest cache window of any gateway."""
        return min(_period(site) for site in self.sites)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._publish_due()
            except Exception:  # a bug must not end publishing for good
                log.exception("mqtt: unexpected error while publishing")
            deadline = self._next_tick()
            while not self._stop.is_set():
                self._handle_commands()
                if self._resend.is_set():
                    self._resend.clear()
                    self._resend_all()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.wait(remaining)
                self._wake.clear()

    def _next_tick(self) -> float:
        """Just after the next window boundary of the fastest gateway."""
        interval = self.interval()
        now = time.monotonic()
        return (math.floor(now / interval) + 1) * interval + 0.05

    def _connected(self) -> bool:
        with self._lock:
            return self._counts.connected

    def _publish_due(self) -> None:
        if not self._connected():
            return  # nobody to tell: no reading, so no gateway request for nothing
        due = [site.id for site in self.sites
               if site.window() == -1 or self._windows.get(site.id) != site.window()]
        if not due:
            return
        published = False
        frames = read_frames(self.sites, POINT_SOURCES)
        for site, frame in zip(self.sites, frames, strict=True):
            if site.id not in due:
                continue
            self._windows[site.id] = site.window()
            self._set_availability(frame.id, ONLINE if frame.fresh else OFFLINE)
            if not frame.fresh or frame.at is None or frame.at == self._published_at.get(frame.id):
                # No new data this window: only the proxy's own view of the gateway is news
                # (the measurements expire in Home Assistant by themselves).
                self._send([online_message(self.settings, frame)])
                continue
            control = self.settings.control and site.gateway.control_pw is not None
            configs, states = gateway_messages(self.settings, frame, _firmware(frame),
                                               _period(site), self._announced, control)
            self._announce(configs)
            self._send(states)
            self._published_at[frame.id] = frame.at
            published = True
        if published and len(self.sites) > 1:
            slowest = max(_period(site) for site in self.sites)
            configs, states = aggregate_messages(self.settings, aggregate(frames, time.time()),
                                                 slowest)
            self._announce(configs)
            self._send(states)
        if published:
            with self._lock:
                self._counts.last_publish = time.time()

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
        """After a (re)connect or Home Assistant's birth message: every config and availability."""
        messages = [Message(t, p, True, 1) for t, p in self._announced.items()]
        messages += [Message(gateway_status_topic(self.settings, g), s, True, 1)
                     for g, s in self._availability.items()]
        self._send(messages)
        self._published_at.clear()  # and the states again at the next window
        self._windows.clear()

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

    # ---- control commands ----------------------------------------------------------------

    def _handle_commands(self) -> None:
        while True:
            try:
                gateway, name, payload = self._commands.get_nowait()
            except queue.Empty:
                return
            self._command(gateway, name, payload)

    def _command(self, gateway: str, name: str, payload: str) -> None:
        site = self.sites.get(gateway)
        command = next((c for c in COMMANDS if c.name == name), None)
        if site is None or command is None:
            self._ignored(command_topic(self.settings, gateway, name), "no such gateway or command")
            return
        result = self._carry_out(site.id, command, payload)
        self._send([Message(result_topic(self.settings, gateway, name), json.dumps(result))])
        if result["ok"]:
            with self._lock:
                self._counts.commands += 1
            self._windows.pop(site.id, None)  # publish the new setting at once
            self._wake.set()
        else:
            self._ignored(command_topic(self.settings, gateway, name), str(result["error"]))

    def _carry_out(self, gateway: str, command: Command, payload: str) -> dict[str, Any]:
        site = self.sites.get(gateway)
        assert site is not None
        try:
            answer = run_command(site, command, payload, "mqtt")
        except ProxyError as exc:
            return {"ok": False, "error": exc.message}
        return {"ok": True, "result": answer}
