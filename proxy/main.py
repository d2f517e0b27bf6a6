"""The composition root: config -> gateways -> sites -> hub -> reports -> app -> server ->
subscribers. Nothing runs at import; every part is built here and passed in."""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from proxy.api.app import App
from proxy.api.live import Topics, build_topics
from proxy.api.passthrough import Passthrough
from proxy.api.tokens import TokenThrottle
from proxy.api.web import WebFiles, style_tags
from proxy.config import Config, ConfigError, GatewayConfig, Secret, load_config
from proxy.gateway import Gateway
from proxy.gateway.registry import Gateways
from proxy.process import connection_cap, open_file_limit, raise_open_file_limit
from proxy.reports import Reports
from proxy.site.actions import Writes
from proxy.site.hub import Hub
from proxy.site.site import Shaping, Site, Sites

log = logging.getLogger("proxy")


class SecretFilter(logging.Filter):
    """Last line of defence: no log line may carry a password, token or cookie value."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 3]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            if any(s in text for s in self.secrets):
                for s in self.secrets:
                    text = text.replace(s, "********")
                record.msg, record.args = text, None
        return True


@dataclass
class Running:
    """A started proxy: stop() brings everything down."""

    config: Config
    gateways: Gateways
    app: App
    server: Any
    hub: Hub
    topics: Topics
    simulators: list[Any] = field(default_factory=list)
    _tmp: Any = None
    mqtt: Any = None  # proxy.mqtt.Publisher when PW_MQTT_HOST is set
    history: Any = None  # proxy.history.service.History
    stopped: threading.Event = field(default_factory=threading.Event)  # stop() began
    finished: threading.Event = field(default_factory=threading.Event)  # stop() is done

    @property
    def gateway(self) -> Gateway:
        """The default gateway."""
        return self.gateways.default()

    @property
    def simulator(self) -> Any:
        """The default gateway's simulator (--simulate), else None."""
        return self.simulators[0] if self.simulators else None

    @property
    def url(self) -> str:
        scheme = "https" if self.config.https == "yes" else "http"
        return f"{scheme}://127.0.0.1:{self.server.port}/"

    def stop(self) -> None:
        if self.stopped.is_set():
            return
        self.stopped.set()
        if self.mqtt is not None:
            self.mqtt.stop()  # first: "offline" goes out while the broker connection is up
        self.server.stop()  # ends every stream cleanly first
        self.topics.stop()
        self.hub.stop()
        if self.history is not None:
            self.history.stop()  # its last commit before the gateways and files go
        self.gateways.stop()
        for simulator in self.simulators:
            simulator.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
        self.finished.set()


# --simulate N: gateways of different sizes and personalities, so aggregates have
# something to add up: (profile, Powerwall count) per gateway, in turn.
_FLEET = (("default", 2), ("pw2-legacy", 1), ("pw3", 3), ("http10", 1), ("default", 4),
          ("pw3", 1))


def _fleet_member(i: int, profile: str) -> dict[str, Any]:
    """The simulator arguments of the i-th simulated gateway; a chosen --profile for all."""
    member_profile, units = _FLEET[i % len(_FLEET)]
    return {"profile": member_profile if profile == "default" else profile, "units": units,
            "site": i + 1}


def _credentials(simulator: Any) -> dict[str, Any]:
    """How to log in to a simulator: its profile says which of the two passwords a client
    uses (the gateway password means full TEDAPI mode, the customer password local mode),
    and a bearer-only gateway needs the bearer login with the V2026_06 queries."""
    given = simulator.credentials()
    found: dict[str, Any] = {"password": Secret(given.get("password", "")),
                             "gw_pwd": Secret(given.get("gw_pwd", ""))}
    if simulator.profile.bearer:
        found.update(tedapi_auth_mode="bearer", tedapi_api_version="V2026_06")
    return found


def _simulated(config: Config, count: int) -> tuple[Config, list[Any], Any, str]:
    """Start the built-in gateway simulator(s), with the --profile personality, and point
    the config at them."""
    from proxy.simulator import DEFAULT_PASSWORD, Simulator

    profile = config.simulate_profile
    tmp = tempfile.TemporaryDirectory(prefix="pwproxy-sim-")
    cache_file = os.path.join(tmp.name, ".powerwall")
    if count <= 1:
        simulator = Simulator(port=0, profile=profile).start()
        config = dataclasses.replace(
            config, host=simulator.host, **_credentials(simulator),
            cache_file=cache_file, gateways=(), source="simulator",
        )
        return config, [simulator], tmp, DEFAULT_PASSWORD
    simulators, gateways = [], []
    for i in range(count):
        simulator = Simulator(port=0, seed=1000 + i, **_fleet_member(i, profile)).start()
        simulators.append(simulator)
        gateways.append(GatewayConfig(
            id=f"sim{i + 1}", name=f"Simulated gateway {i + 1}", host=simulator.host,
            **_credentials(simulator), timezone=config.timezone,
            cache_file=f"{cache_file}-sim{i + 1}",  # a cookie file each
            cache_expire=config.cache_expire, timeout=config.timeout, pool_maxsize=config.pool_maxsize,
        ))
    config = dataclasses.replace(config, gateways=tuple(gateways), source=f"{count} simulators",
                                 default_gateway="")
    return config, simulators, tmp, DEFAULT_PASSWORD


def _tame_malloc() -> None:
    """Keep glibc's allocator from holding memory we no longer use.

    glibc gives each thread that allocates its own malloc arena; with a worker
    pool that is several MiB of RSS for nothing, since the GIL serialises the
    allocations anyway. On a Raspberry Pi that matters. Other C libraries: no-op.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, 1)


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (import-time garbage, finished fetches)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


_M_ARENA_MAX = -8
TRIM_INTERVAL = 60.0
STOP_WAIT = 15.0  # seconds the main thread waits for stop() to finish before exiting


def _glibc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _trust_gateway_certificate(config: Config) -> None:
    """Let pypowerwall's verify=False stand against a self-signed gateway certificate.

    requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's
    verify=False, which makes every TEDAPI call fail on machines that set them.
    """
    if any(g.host for g in config.fleet()):
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            if os.environ.pop(name, None) is not None:
                log.info("ignoring %s: the gateway's certificate is self-signed", name)


SERVER_WORKERS = 24
# Workers no gateway may hold: /health, /stats, files and cached answers always find one.
RESERVED_WORKERS = 4
# Workers that may wait on one gateway; with several gateways each gets its own share, and the
# pool grows so that every gateway stalled at once still leaves the reserved workers free.
MIN_WAITERS = 4


def worker_plan(gateways: int) -> tuple[int, int]:
    """(server workers, waiters per gateway) for this many gateways."""
    waiters = max(MIN_WAITERS, (SERVER_WORKERS - RESERVED_WORKERS) // max(1, gateways))
    return max(SERVER_WORKERS, RESERVED_WORKERS + waiters * gateways), waiters


MQTT_FDS = 4  # the broker connection and the MQTT client's wake-up socket pair


def _gateway_fds(config: Config) -> int:
    """Descriptors the gateway side may hold: per gateway two pooled sessions (local API and
    TEDAPI), and with built-in simulators their end of each of those connections too; plus
    the MQTT client's."""
    pooled = sum(2 * g.pool_maxsize for g in config.fleet())
    mqtt = MQTT_FDS if config.mqtt_host else 0
    return pooled * (2 if config.simulate else 1) + mqtt


def start(config: Config, *, wait_connected: float = 0.0, client_factory: Any = None,
          simulate: int = 0, max_connections: int | None = None,
          server_options: Mapping[str, Any] | None = None, openc2_budgets: Any = None,
          gateway_options: Mapping[str, Any] | None = None) -> Running:
    """Build and start everything; the HTTP server answers before the gateways connect.

    `client_factory` replaces pypowerwall.Powerwall (tests use spec'd fakes for cloud modes).
    `simulate` N starts N simulated gateways (`config.simulate` alone means one).
    `max_connections` defaults to what the current open-file limit leaves room for.
    `server_options` are further HTTPServer arguments (tests shorten its deadlines).
    `openc2_budgets` (proxy.api.openc2.Budgets) replace OpenC2's per-minute budgets.
    `gateway_options` are further Gateway arguments (tests shorten its backoffs).
    """
    from proxy.api.mounts import mounts
    from proxy.api.openc2 import Budgets
    from proxy.history.service import build_history

    config, simulators, tmp, control_password = _prepared(config, simulate)
    reports = Reports()
    gateways = _gateways(config, control_password, client_factory, gateway_options)
    shaping = Shaping(config.neg_solar, config.site_zero_threshold)
    sites = Sites([Site(g, cache_ttl=config.cache_ttl, graceful=config.graceful_degradation,
                        shaping=shaping) for g in gateways], reports)
    hub = Hub(sites, reports)
    topics = build_topics(hub, sites, reports)
    writes = Writes(reports)
    writes.subscribe(lambda _: hub.wake())  # a write moved its gateway's window on: read it now
    mqtt = _mqtt(config, sites, hub, writes, reports)
    outlets = [topics.announce] + ([mqtt.event] if mqtt is not None else [])
    history = build_history(config, sites, hub, writes=writes, reports=reports, outlets=outlets,
                            simulated_dir=tmp.name if tmp is not None else None)
    # The gateway web UI passed through is the default gateway's.
    passthrough = Passthrough(gateways.default(), tags=style_tags(config),
                              browser_cache=config.browser_cache)
    app = App(config, sites, web=WebFiles(config), passthrough=passthrough,
              mounts=mounts(openc2_budgets or Budgets(), reports, history), reports=reports,
              topics=topics, writes=writes, throttle=TokenThrottle(reports=reports))
    server = _server(config, app, max_connections, server_options)
    reports.register("server", server.stats)
    running = Running(config, gateways, app, server, hub, topics, simulators, tmp, mqtt=mqtt,
                      history=history)
    server.start()
    gateways.start()
    history.start()
    if mqtt is not None:
        mqtt.start()
    if wait_connected:
        gateways.wait_connected(wait_connected)
    return running


def _prepared(config: Config, simulate: int) -> tuple[Config, list[Any], Any, str]:
    """The config to run: pointed at built-in simulators when asked (with them, their temp
    folder and the control password), and the gateway's self-signed certificate trusted."""
    simulators: list[Any] = []
    tmp = None
    control_password = ""
    if config.simulate or simulate:
        config, simulators, tmp, control_password = _simulated(config, max(1, simulate))
        config = dataclasses.replace(config, simulate=True)
    _trust_gateway_certificate(config)
    return config, simulators, tmp, control_password


def _gateways(config: Config, control_password: str, client_factory: Any,
              options: Mapping[str, Any] | None) -> Gateways:
    fleet = config.fleet()
    _, waiters = worker_plan(len(fleet))
    return Gateways([
        Gateway(g, simulated=config.simulate, control_password=control_password,
                control_enabled=bool(config.control_secret), factory=client_factory,
                waiters=waiters, name=_gateway_name(g, len(fleet)), **dict(options or {}))
        for g in fleet
    ])


def _server(config: Config, app: App, max_connections: int | None,
            options: Mapping[str, Any] | None) -> Any:
    from proxy.httpd.server import HTTPServer

    workers, _ = worker_plan(len(config.fleet()))
    if max_connections is None:
        max_connections = connection_cap(open_file_limit()[0], reserved=_gateway_fds(config))
    return HTTPServer(app, config.bind_address, config.port, ssl_context=_tls(config),
                      access_log=config.debug, workers=workers, max_connections=max_connections,
                      max_streams=config.max_streams, **dict(options or {}))


def _mqtt(config: Config, sites: Sites, hub: Hub, writes: Writes, reports: Reports) -> Any:
    """The MQTT publisher (not started), or None while PW_MQTT_HOST is empty."""
    if not config.mqtt_host:
        return None
    from proxy.mqtt.discovery import Settings
    from proxy.mqtt.publisher import Publisher

    return Publisher(Settings.from_config(config), sites, hub, writes=writes, reports=reports)


def _gateway_name(gateway: GatewayConfig, count: int) -> str | None:
    """The name in log lines: "gateway" alone, "gateway cabin" among several."""
    return "gateway" if count == 1 else None


def _describe_gateways(config: Config) -> str:
    fleet = config.fleet()
    if len(fleet) == 1:
        return f"gateway {fleet[0].host or 'cloud'}"
    listed = ", ".join(f"{g.id}={g.host or 'cloud'}" for g in fleet)
    return f"{len(fleet)} gateways from {config.source}: {listed}; default {fleet[0].id}"


def _tls(config: Config) -> Any:
    if config.https != "yes":
        return None
    from proxy.httpd.tls import server_context

    return server_context(config.tls_cert, config.tls_key, config.auth_path)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m proxy",
                                     description="Caching HTTP proxy for Tesla Powerwall gateways. "
                                                 "Settings come from PW_* environment variables.")
    parser.add_argument("--simulate", nargs="?", type=_count, const=1, default=0, metavar="N",
                        help="run against the built-in gateway simulator instead of PW_HOST; "
                             "with N, against N simulated gateways of different sizes")
    parser.add_argument("--config", metavar="FILE",
                        help="a YAML or JSON file with a 'gateways:' list (else PW_CONFIG)")
    parser.add_argument("--profile", metavar="NAME", default=None,
                        help="with --simulate: the simulated gateway's personality (default, "
                             "pw2-legacy, pw3, sparse, http10, portal, solar-only; see HELP.md)")
    parser.add_argument("--check", action="store_true",
                        help="check the settings, try each gateway's login once, print one line "
                             "per gateway with its state and exit: 0 when every gateway is ok, "
                             "else 2")
    return parser.parse_args(argv)


def _count(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 16:
        raise argparse.ArgumentTypeError("N must be between 1 and 16")
    return value


def _profile_error(args: argparse.Namespace) -> str | None:
    """Why --profile cannot be used as given, or None."""
    if args.profile is None:
        return None
    if not args.simulate:
        return "--profile needs --simulate"
    from proxy.simulator.profiles import profile_named

    try:
        profile_named(args.profile)
    except ValueError as exc:
        return str(exc)
    return None


def _setup_logging(config: Config) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretFilter(config.secrets()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if config.debug else logging.INFO)
    if not config.debug:
        # pypowerwall logs every failed gateway call at ERROR; our gateway adapter
        # already reports outages once, so keep the library to real surprises.
        # A filter on our output, not the library logger's level: the gateway
        # adapter still hears those errors (they reveal answers it swallowed).
        handler.addFilter(_only_library_surprises)
        logging.getLogger("urllib3").setLevel(logging.ERROR)


def _only_library_surprises(record: logging.LogRecord) -> bool:
    return not record.name.startswith("pypowerwall") or record.levelno >= logging.CRITICAL


def _install_signals(running: Running) -> None:
    def stop(signum: int, frame: Any) -> None:
        log.info("signal %s: stopping", signum)
        threading.Thread(target=running.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if os.getpid() == 1 and hasattr(signal, "SIGCHLD"):
        signal.signal(signal.SIGCHLD, _reap_children)


def _reap_children(signum: int, frame: Any) -> None:
    """As PID 1 without an init, collect exited children so no zombies pile up."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def check(config: Config, *, simulate: int = 0, out: Any = None) -> int:
    """--check: one login attempt per gateway (side by side), one line each; 0 if all are ok."""
    out = out or sys.stdout
    simulators: list[Any] = []
    tmp = None
    if config.simulate or simulate:
        config, simulators, tmp, _ = _simulated(config, max(1, simulate))
    _trust_gateway_certificate(config)
    logging.getLogger("proxy").setLevel(logging.WARNING)  # the lines below say it all
    fleet = config.fleet()
    gateways = [Gateway(g, simulated=bool(simulators), name=_gateway_name(g, len(fleet)))
                for g in fleet]
    try:
        with ThreadPoolExecutor(max_workers=len(gateways)) as pool:
            conditions = list(pool.map(lambda g: g.check(), gateways))
    finally:
        for gateway in gateways:
            gateway.stop()
        for simulator in simulators:
            simulator.stop()
        if tmp is not None:
            tmp.cleanup()
    for gateway, condition in zip(gateways, conditions, strict=True):
        print(_check_line(gateway, condition), file=out)
    return 0 if all(c.state == "ok" for c in conditions) else 2


def _check_line(gateway: Gateway, condition: Any) -> str:
    """'gateway home (192.168.91.1): ok: connected, mode Local (full), site "Home"'."""
    where = gateway.config.host or "cloud"
    text = condition.text()
    if condition.state == "ok":
        site = f', site "{gateway.site_name}"' if gateway.site_name else ""
        text = f"ok: connected, mode {gateway.info.mode}{site}"
    return f"gateway {gateway.id} ({where}): {text}"


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = _parse_args(argv)
    problem = _profile_error(args)
    if problem is not None:
        print(f"configuration error: {problem}", file=sys.stderr)
        return 2
    try:
        config = load_config(os.environ if environ is None else environ, file=args.config,
                             simulate=bool(args.simulate),
                             simulate_profile=args.profile or "default")
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config)
    for warning in config.warnings:
        log.warning("configuration: %s", warning)
    if args.check:
        return check(config, simulate=args.simulate)
    _tame_malloc()
    raise_open_file_limit()  # before the server sizes its connection cap from it
    try:
        running = start(config, simulate=args.simulate)
    except ConfigError as exc:  # a setting only the gateway package can judge (PW_CACHE_PERIODS)
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        log.error("cannot listen on port %s: %s", config.port, exc)
        return 1
    _install_signals(running)
    simulated = ""
    if running.config.simulate:
        profile = running.config.simulate_profile
        simulated = ", simulated" if profile == "default" else f", simulated, profile {profile}"
    served = running.server.stats()
    log.info("listening on %s (%s%s; at most %d client connections, %d of them live streams)",
             running.url.replace("127.0.0.1", config.bind_address or "0.0.0.0"),
             _describe_gateways(running.config), simulated, served["max_connections"], served["max_streams"])
    if served["max_streams"] < config.max_streams:
        log.info("live streams: at most %d, not PW_MAX_STREAMS %d: streams may hold 3/4 of the "
                 "connections, so polling and /health always find one", served["max_streams"],
                 config.max_streams)
    # The main thread has nothing else to do: once a minute, return freed heap
    # pages (start-up scratch, replaced cache entries) so RSS stays flat for months.
    while not running.stopped.wait(TRIM_INTERVAL):
        release_free_memory()
    running.finished.wait(STOP_WAIT)  # e.g. MQTT's "offline" on its way out
    log.info("stopped")
    return 0
