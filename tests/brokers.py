"""Real outside parts for the integration tests: a Mosquitto broker, an MQTT listener, and a
Prometheus server, each on a free loopback port (Debian's `mosquitto` and `prometheus`,
installed by tests/run.sh when missing)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists()
                                          else None)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
USER, PASSWORD = "pwproxy", "broker-secret-9"
WAIT = 30.0  # seconds any wait for an outside part may take before the test fails


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float = WAIT, what: str = "condition") -> Any:
    """Poll until check() returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Mosquitto:
    """A broker on a free loopback port that wants a user and password."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pwproxy-mqtt-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        assert MOSQUITTO and MOSQUITTO_PASSWD
        subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", str(self.dir / "passwd"), USER, PASSWORD],
                       check=True, capture_output=True)
        # As root, mosquitto would switch to its own user, who cannot read our private files.
        user = "user root\n" if os.geteuid() == 0 else ""
        (self.dir / "mosquitto.conf").write_text(
            f"{user}listener {self.port} 127.0.0.1\nallow_anonymous false\n"
            f"password_file {self.dir / 'passwd'}\npersistence false\n")

    def start(self) -> Mosquitto:
        assert MOSQUITTO
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.dir / "mosquitto.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._listening, what="mosquitto to listen")
        return self

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def env(self, **extra: str) -> dict[str, str]:
        """The proxy's PW_MQTT_* variables for this broker."""
        return {"PW_MQTT_HOST": "127.0.0.1", "PW_MQTT_PORT": str(self.port), "PW_MQTT_USER": USER,
                "PW_MQTT_PASSWORD": PASSWORD, **extra}


@dataclass(frozen=True)
class Received:
    topic: str
    payload: str
    retain: bool
    at: float  # monotonic


class Listener:
    """A paho client subscribed to some filters, keeping every message it gets."""

    def __init__(self, broker: Mosquitto, filters: tuple[str, ...],
                 on_message: Callable[[Received], None] | None = None) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self._lock = threading.Lock()
        self.messages: list[Received] = []
        self._hook = on_message
        self._ready = threading.Event()
        self.client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=f"test-listener-{free_port()}")
        self.client.username_pw_set(USER, PASSWORD)
        self.client.on_connect = lambda c, u, f, rc, p: (
            c.subscribe([(t, 1) for t in filters]), self._ready.set())
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        wait_for(self._ready.is_set, what="the listener to connect")
        time.sleep(0.2)  # the SUBACK

    def _message(self, client: Any, userdata: Any, message: Any) -> None:
        received = Received(message.topic, message.payload.decode(), bool(message.retain),
                            time.monotonic())
        with self._lock:
            self.messages.append(received)
        if self._hook is not None:
            self._hook(received)

    def all(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def latest(self) -> dict[str, Received]:
        return {m.topic: m for m in self.all()}

    def last(self, topic: str) -> str | None:
        found = self.latest().get(topic)
        return None if found is None else found.payload

    def count(self, topic_part: str) -> int:
        return sum(1 for m in self.all() if topic_part in m.topic)

    def publish(self, topic: str, payload: str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Prometheus:
    """A Prometheus server on loopback scraping one target every second."""

    def __init__(self, target: str, path: str = "/metrics") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pwproxy-prom-"))
        self.port = free_port()
        (self.dir / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: powerwall\n"
            f"    metrics_path: {path}\n    static_configs:\n      - targets: ['{target}']\n")
        assert PROMETHEUS
        with (self.dir / "prometheus.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={self.dir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.dir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=subprocess.DEVNULL, stderr=log)

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                body = json.load(reply)
        except OSError:
            return []
        return list(body["data"]["result"]) if body.get("status") == "success" else []

    def log(self) -> str:
        return (self.dir / "prometheus.log").read_text(errors="replace")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)
