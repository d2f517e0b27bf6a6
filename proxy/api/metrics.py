"""GET /metrics: every measurement and the proxy's own counters for Prometheus.

The families are built per scrape from the table of measurements
(`proxy.site.points.POINTS`), each sample with a `gateway` label, and encoded by
the `prometheus_client` library in the format the scraper asks for (the text
format, or OpenMetrics). Units are in the names and in base units: watts,
ratio (a percentage / 100), joules (Wh x 3600), seconds (h x 3600), celsius.
A scrape reads each gateway through its window cache: scraping adds no
gateway request beyond the one per resource per window the cache allows.

prometheus_client is imported on the first scrape, so a proxy nobody scrapes
does not carry it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from proxy import __version__
from proxy.api.apidoc import Answer, Doc
from proxy.api.app import App
from proxy.api.routing import Call, Route
from proxy.api.status import library_version
from proxy.httpd.types import Response
from proxy.site.frames import Frame, read_frames
from proxy.site.points import POINT_SOURCES, POINTS, Kind, Point, values

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

NAMESPACE = "powerwall"
PROXY = f"{NAMESPACE}_proxy"
# A point's unit -> (name suffix, factor to the base unit).
UNITS: dict[str | None, tuple[str, float]] = {
    "W": ("watts", 1.0),
    "%": ("ratio", 0.01),
    "Wh": ("joules", 3600.0),
    "h": ("seconds", 3600.0),
    "°C": ("celsius", 1.0),
    None: ("", 1.0),
}


def metric_name(point: Point) -> str:
    """The family name: powerwall_<key>_<unit> (a counter's samples add _total)."""
    suffix = UNITS[point.unit][0]
    return f"{NAMESPACE}_{point.key}" + (f"_{suffix}" if suffix else "")


def text_label(point: Point) -> str:
    """The label that carries a TEXT point's value: the key's last word (firmware_version: version)."""
    return point.key.rsplit("_", 1)[-1]


def _help(point: Point) -> str:
    name = point.name[0].upper() + point.name[1:]
    if point.label:
        name = f"{name}, per {point.label}"
    unit = UNITS[point.unit][0]
    return f"{name} ({unit})" if unit else name


# ---- families from the table -------------------------------------------------------------

def point_family(point: Point, frames: list[Frame]) -> Metric:
    """One family for a point, a sample (or a few) per gateway that has a value."""
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        InfoMetricFamily,
    )

    name, doc = metric_name(point), _help(point)
    labels = ["gateway", point.label] if point.label else ["gateway"]
    factor = UNITS[point.unit][1]
    if point.kind is Kind.TEXT:
        info = InfoMetricFamily(name, doc, labels=["gateway"])
        for frame in frames:
            for value in values(point, frame).values():
                info.add_metric([frame.id], {text_label(point): str(value)})
        return info
    if point.kind is Kind.STATE:
        states = GaugeMetricFamily(name, doc + " (1 for the current state)", labels=["gateway", "state"])
        for frame in frames:
            for value in values(point, frame).values():
                current = str(value)
                for state in dict.fromkeys((*point.states, current)):
                    states.add_metric([frame.id, state], 1.0 if state == current else 0.0)
        return states
    family: CounterMetricFamily | GaugeMetricFamily
    if point.kind is Kind.TOTAL:
        family = CounterMetricFamily(name, doc, labels=labels)
    else:
        family = GaugeMetricFamily(name, doc, labels=labels)
    for frame in frames:
        for label, value in values(point, frame).items():
            number = (1.0 if value else 0.0) if isinstance(value, bool) else float(value)
            family.add_metric([frame.id, label] if point.label else [frame.id], number * factor)
    return family


# ---- the proxy's own numbers -------------------------------------------------------------

# The "gateways" report's counters, as families: (report key, name, counter?, HELP).
GATEWAY_FAMILIES = (
    ("requests", "gateway_requests", True,
     "Gateway calls that got a verdict (cache hits and skipped calls are not counted)"),
    ("failures", "gateway_failures", True, "Gateway calls that failed"),
    ("cooldown_seconds", "gateway_cooldown_seconds", False,
     "Seconds left until a gateway that refused requests is asked again"),
    ("login_backoff_seconds", "gateway_login_backoff_seconds", False,
     "Seconds left until a refused login is tried again"),
    ("cache_hits", "cache_hits", True, "Reads answered from the window cache"),
    ("cache_misses", "cache_misses", True,
     "Reads that waited for a gateway fetch (their own or one already in flight)"),
    ("calls_in_flight", "gateway_calls_in_flight", False,
     "Library calls the gateway is answering now (at most PW_GATEWAY_CONCURRENCY)"),
    ("calls_waiting", "gateway_calls_waiting", False, "Library calls waiting for their turn at the gateway"),
)


def proxy_families(app: App, frames: list[Frame]) -> Iterator[Metric]:
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        InfoMetricFamily,
    )

    yield InfoMetricFamily(PROXY, "The proxy's version and the pypowerwall library's",
                           value={"version": __version__, "pypowerwall": library_version()})
    yield GaugeMetricFamily(f"{PROXY}_start_time_seconds", "When the proxy started (Unix time)",
                            value=app.started)
    requests = CounterMetricFamily(f"{PROXY}_requests", "HTTP requests answered, by route and status",
                                   labels=["route", "status"])
    for (route, status), count in sorted(app.requests.snapshot().items()):
        requests.add_metric([route, status], count)
    yield requests
    yield from gateway_families(app.reports.get("gateways") or {})
    stale = CounterMetricFamily(f"{PROXY}_stale_answers", "Answers served from the last good "
                                "copy while the gateway failed (X-Cache: STALE)", labels=["gateway"])
    age = GaugeMetricFamily(f"{PROXY}_data_age_seconds", "Age of the newest gateway data "
                            "behind the measurements", labels=["gateway"])
    for site, frame in zip(app.sites, frames, strict=True):
        stale.add_metric([site.id], app.stale_answers.get((site.id,)))
        if frame.at is not None:
            age.add_metric([site.id], site.age(frame.at))
    yield from (stale, age)
    streams = app.reports.get("streams") or {}
    yield GaugeMetricFamily(f"{PROXY}_stream_listeners", "Live stream listeners connected",
                            value=float(streams.get("listeners", 0)))
    mqtt = app.reports.get("mqtt")
    if mqtt is not None:
        yield from mqtt_families(mqtt)
    history = app.reports.get("history")
    if history is not None:
        yield from history_families(history)


def history_families(view: dict[str, Any]) -> Iterator[Metric]:
    from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

    yield GaugeMetricFamily(f"{PROXY}_history_ok", "1 while the history store works (0: off or "
                            "failing; /health says why)", value=1.0 if view.get("status") == "ok" else 0.0)
    if view.get("file_bytes") is not None:
        yield GaugeMetricFamily(f"{PROXY}_history_file_bytes", "Size of the history file and its "
                                "write-ahead log", value=float(view["file_bytes"]))
    yield CounterMetricFamily(f"{PROXY}_history_events", "Events found since the proxy started",
                              value=float(view.get("events", 0)))


def gateway_families(report: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    """Each gateway's counters from the "gateways" report, a sample per gateway."""
    from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

    for key, name, counter, doc in GATEWAY_FAMILIES:
        kind = CounterMetricFamily if counter else GaugeMetricFamily
        family = kind(f"{PROXY}_{name}", doc, labels=["gateway"])
        for gateway_id, counters in report.items():
            family.add_metric([gateway_id], float(counters.get(key, 0)))
        yield family


def mqtt_families(status: dict[str, Any]) -> Iterator[Metric]:
    from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

    yield GaugeMetricFamily(f"{PROXY}_mqtt_connected", "1 while connected to the MQTT broker",
                            value=1.0 if status.get("connected") else 0.0)
    for key, doc in (("connects", "Connections made to the MQTT broker"),
                     ("published", "MQTT messages handed to the broker connection"),
                     ("dropped", "MQTT messages dropped (not connected, or the queue was full)"),
                     ("commands", "MQTT control commands carried out"),
                     ("commands_ignored", "MQTT control commands ignored (retained, refused or "
                                          "invalid)")):
        yield CounterMetricFamily(f"{PROXY}_mqtt_{key}", doc, value=float(status.get(key, 0)))


class Scrape:
    """What prometheus_client's encoders read: collect() yields this scrape's families."""

    def __init__(self, app: App) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        frames = read_frames(self.app.sites, POINT_SOURCES)
        for point in POINTS:
            yield point_family(point, frames)
        yield from proxy_families(self.app, frames)


def get_metrics(app: App, call: Call) -> Response:
    from prometheus_client.exposition import choose_encoder

    encode, content_type = choose_encoder(call.request.headers.get("Accept", ""))
    body = encode(Scrape(app))
    return Response(200, [("Content-Type", content_type), ("Cache-Control", "no-cache")], body)


ROUTES: tuple[Route, ...] = (
    Route("/metrics", get_metrics,
          doc=Doc("Prometheus metrics: every measurement per gateway, and the proxy's own counters",
                  {"type": "string"}, "text/plain", tag="metrics",
                  description="The Prometheus text exposition format (0.0.4), or OpenMetrics when "
                              "the Accept header asks for it. Read from the window cache only.",
                  answers=(Answer(200, "OpenMetrics text, when the Accept header asks for it",
                                  {"type": "string"}, media="application/openmetrics-text"),))),
)
