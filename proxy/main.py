"""The composition root: config -> gateway -> app -> server. Nothing runs at import."""

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
from dataclasses import dataclass, field
from typing import Any

from proxy.app import App
from proxy.config import Config, ConfigError, Secret, load_config
from proxy.gateway import Gateway
from proxy.site import Shaping, Site
from proxy.web import WebFiles

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
    gateway: Gateway
    app: App
    server: Any
    simulator: Any = None
    _tmp: Any = None
    stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        scheme = "https" if self.config.https == "yes" else "http"
        return f"{scheme}://127.0.0.1:{self.server.port}/"

    def stop(self) -> None:
        if self.stopped.is_set():
            return
        self.stopped.set()
        self.server.stop()
        self.gateway.stop()
        if self.simulator is not None:
            self.simulator.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


def _simulated(config: Config) -> tuple[Config, Any, Any, str]:
    """Start the built-in gateway simulator and point the config at it (full TEDAPI mode)."""
    from proxy.simulator import DEFAULT_GW_PWD, DEFAULT_PASSWORD, Simulator

    simulator = Simulator(port=0).start()
    tmp = tempfile.TemporaryDirectory(prefix="pwproxy-sim-")
    config = dataclasses.replace(
        config, host=simulator.host, gw_pwd=Secret(DEFAULT_GW_PWD), password=Secret(""),
        cache_file=os.path.join(tmp.name, ".powerwall"),
    )
    return config, simulator, tmp, DEFAULT_PASSWORD


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
    if config.host:
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            if os.environ.pop(name, None) is not None:
                log.info("ignoring %s: the gateway's certificate is self-signed", name)


SERVER_WORKERS = 16
# Workers no gateway may hold: /health, /stats, files and cached answers always find one.
RESERVED_WORKERS = 4


def start(config: Config, *, wait_connected: float = 0.0, client_factory: Any = None) -> Running:
    """Build and start everything; the HTTP server answers before the gateway connects.

    `client_factory` replaces pypowerwall.Powerwall (tests use spec'd fakes for cloud modes).
    """
    from proxy.routes import ROUTES
    from proxy.server import HTTPServer

    simulator = tmp = None
    control_password = ""
    if config.simulate:
        config, simulator, tmp, control_password = _simulated(config)
    _trust_gateway_certificate(config)
    gateway = Gateway(config.gateway(), simulated=config.simulate, control_password=control_password,
                      control_enabled=bool(config.control_secret), factory=client_factory,
                      waiters=SERVER_WORKERS - RESERVED_WORKERS)
    site = Site(gateway, cache_ttl=config.cache_ttl, graceful=config.graceful_degradation,
                shaping=Shaping(config.neg_solar, config.site_zero_threshold))
    app = App(config, site, web=WebFiles(config), routes=ROUTES)
    server = HTTPServer(app, config.bind_address, config.port, ssl_context=_tls(config),
                        access_log=config.debug, workers=SERVER_WORKERS)
    app.server_stats = server.stats
    running = Running(config, gateway, app, server, simulator, tmp)
    server.start()
    gateway.start()
    if wait_connected:
        gateway.wait_connected(wait_connected)
    return running


def _tls(config: Config) -> Any:
    if config.https != "yes":
        return None
    from proxy.tls import server_context

    return server_context(config.tls_cert, config.tls_key, config.auth_path)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m proxy",
                                     description="Caching HTTP proxy for Tesla Powerwall gateways. "
                                                 "Settings come from PW_* environment variables.")
    parser.add_argument("--simulate", action="store_true",
                        help="run against the built-in gateway simulator instead of PW_HOST")
    return parser.parse_args(argv)


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


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        config = load_config(os.environ if environ is None else environ, simulate=args.simulate)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config)
    _tame_malloc()
    try:
        running = start(config)
    except OSError as exc:
        log.error("cannot listen on port %s: %s", config.port, exc)
        return 1
    _install_signals(running)
    where = running.config.host or "cloud"
    log.info("listening on %s (gateway %s%s)", running.url.replace("127.0.0.1", config.bind_address
             or "0.0.0.0"), where, ", simulated" if config.simulate else "")
    # The main thread has nothing else to do: once a minute, return freed heap
    # pages (start-up scratch, replaced cache entries) so RSS stays flat for months.
    while not running.stopped.wait(TRIM_INTERVAL):
        release_free_memory()
    log.info("stopped")
    return 0
