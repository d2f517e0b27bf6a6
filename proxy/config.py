"""Configuration: every PW_* variable parsed once into a frozen dataclass.

`load_config(environ)` takes any mapping (tests pass a dict), applies the
reference's defaults and fails at start with a message naming the variable.
A gateways file is read by `proxy.configfile`, and its entries (or PW_GATEWAYS)
become gateways' settings in `proxy.configgateways`; the value parsers both share
are in `proxy.configvalues`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

from proxy.configfile import ConfigError as ConfigError
from proxy.configfile import accept, read_gateways_file
from proxy.configgateways import gateway_cache_file, gateway_entries, server_values
from proxy.configvalues import (
    AUTH_MODE,
    CACHE_EXPIRE,
    CONCURRENCY,
    POOL_MAXSIZE,
    TEDAPI_API_VERSION,
    TIMEOUT,
    comma_items,
    default_cache_file,
    parse_bool,
    periods_text,
)
from proxy.configvalues import Secret as Secret

# The parsers (shared with a gateways file's keys) by the names the variable tables use.
from proxy.configvalues import choice as _choice
from proxy.configvalues import int_parser as _int_parser
from proxy.configvalues import periods as _periods
from proxy.configvalues import probe_interval as _probe_interval
from proxy.configvalues import secret as _secret
from proxy.configvalues import tedapi_auth_mode as _tedapi_auth_mode
from proxy.configvalues import text as _text

STYLES = ("clear", "black", "white", "grafana", "grafana-dark", "dakboard", "solar")
HTTPS_MODES = ("no", "http", "yes")

T = TypeVar("T")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """One gateway: how to reach it and how often to ask it."""

    id: str = "default"
    name: str = ""
    type: str = "powerwall"  # "inverter": a solar-only gateway, left out of battery figures
    host: str = ""
    password: Secret = Secret()
    email: str = "email@example.com"
    timezone: str = "America/Los_Angeles"
    gw_pwd: Secret = Secret()
    rsa_key_path: str = ""
    wifi_host: str = ""
    tedapi_api_version: str = "V2024_06"
    tedapi_auth_mode: str = "basic"  # "bearer": /api/login/Basic and AuthEnvelope (solar-only)
    probe_interval: int = 30  # seconds between reconnect attempts, at most (PW_TEDAPI_PROBE_INTERVAL)
    siteid: str = ""
    auth_path: str = ""
    auth_mode: str = "cookie"
    cache_file: str = ".powerwall"
    cloud_mode: bool = False
    fleetapi: bool = False
    cache_expire: int = 5
    timeout: int = 5
    pool_maxsize: int = 15
    concurrency: int = 2  # library calls in flight at once (PW_GATEWAY_CONCURRENCY)
    periods: tuple[tuple[str, int], ...] = ()  # (resource, seconds) the owner slowed down
    history: bool = True  # recorded in the history store (when PW_HISTORY is on)

    def secrets(self) -> list[str]:
        return [f.reveal() for f in (self.password, self.gw_pwd) if f]


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the proxy reads from its environment."""

    bind_address: str = ""
    port: int = 8675
    host: str = ""
    password: Secret = Secret()
    email: str = "email@example.com"
    timezone: str = "America/Los_Angeles"
    gw_pwd: Secret = Secret()
    rsa_key_path: str = ""
    wifi_host: str = ""
    tedapi_api_version: str = "V2024_06"
    tedapi_auth_mode: str = "basic"
    debug: bool = False
    cache_expire: int = 5
    browser_cache: int = 0
    timeout: int = 5
    pool_maxsize: int = 15
    https: str = "no"
    style: str = "clear"
    siteid: str = ""
    auth_path: str = ""
    auth_mode: str = "cookie"
    cache_file: str = ".powerwall"
    control_secret: Secret = Secret()
    openc2_token: Secret = Secret()  # enables the OpenC2 endpoints; the bearer token for queries
    neg_solar: bool = True
    site_zero_threshold: int = 0
    base_url: str = "/"
    suppress_network_errors: bool = False
    network_error_rate_limit: int = 5
    fail_fast: bool = False
    graceful_degradation: bool = True
    health_check: bool = True
    cache_ttl: int = 30
    tedapi_recovery: bool = True
    tedapi_probe_interval: int = 30
    tls_cert: str = ""
    tls_key: str = ""
    trusted_proxies: tuple[Network, ...] = ()  # peers whose X-Forwarded-For names the client
    max_streams: int = 1000  # live push listeners (SSE + WebSocket) at once; 503 past it
    simulate: bool = False
    # Several gateways (a config file or PW_GATEWAYS); empty: the PW_* variables are one gateway.
    gateways: tuple[GatewayConfig, ...] = ()
    default_gateway: str = ""
    source: str = "environment"  # where the gateways came from, for the start-up log
    simulate_profile: str = "default"  # --profile: the built-in simulator's gateway personality
    # MQTT with Home Assistant discovery (off while PW_MQTT_HOST is empty).
    mqtt_host: str = ""
    mqtt_port: int = 0  # 0: 1883, or 8883 with PW_MQTT_TLS
    mqtt_user: str = ""
    mqtt_password: Secret = Secret()
    mqtt_tls: bool = False
    mqtt_prefix: str = "pypowerwall"
    mqtt_discovery_prefix: str = "homeassistant"
    mqtt_retain: bool = False
    # Settings that were accepted with a correction (logged once at start), e.g. an unknown
    # PW_TEDAPI_AUTH_MODE read as basic, as the reference does.
    warnings: tuple[str, ...] = ()
    gateway_concurrency: int = 2
    cache_periods: tuple[tuple[str, int], ...] = ()
    # History and events (proxy/history): the embedded store, the firmware watch, the webhooks.
    data_dir: str = ""  # PW_DATA_DIR; unset: ./data (with --simulate: a temporary directory)
    history: bool = True
    history_raw_days: int = 2
    history_commit_seconds: int = 30
    history_max_mb: int = 512
    firmware_check_interval: int = 300  # seconds; 0: no firmware watch
    events_webhook: tuple[Secret, ...] = ()  # URLs that get each event as a JSON POST

    def reference_view(self, gateway: GatewayConfig | None = None) -> dict[str, Any]:
        """The `config` block of /stats, keyed and ordered as the reference, secrets masked;
        with `gateway` (of several), its own connection settings in place of the PW_* ones."""
        g = gateway if gateway is not None and self.gateways else self.gateway()
        return {
            "PW_BIND_ADDRESS": self.bind_address,
            "PW_PASSWORD": g.password.masked(),
            "PW_EMAIL": g.email,
            "PW_HOST": g.host,
            "PW_TIMEZONE": g.timezone,
            "PW_DEBUG": self.debug,
            "PW_CACHE_EXPIRE": g.cache_expire,
            "PW_BROWSER_CACHE": self.browser_cache,
            "PW_TIMEOUT": g.timeout,
            "PW_POOL_MAXSIZE": g.pool_maxsize,
            "PW_HTTPS": self.https,
            "PW_PORT": self.port,
            "PW_STYLE": self.style + ".js",
            "PW_SITEID": g.siteid or None,
            "PW_AUTH_PATH": g.auth_path,
            "PW_AUTH_MODE": g.auth_mode,
            "PW_CACHE_FILE": g.cache_file,
            "PW_CONTROL_SECRET": self.control_secret.masked(),
            "PW_OPENC2_TOKEN": self.openc2_token.masked(),
            "PW_GW_PWD": g.gw_pwd.masked(),
            "PW_RSA_KEY_PATH": g.rsa_key_path or None,
            "PW_WIFI_HOST": g.wifi_host or None,
            "PW_NEG_SOLAR": self.neg_solar,
            "PW_SITE_ZERO_THRESHOLD": self.site_zero_threshold,
            "PW_SUPPRESS_NETWORK_ERRORS": self.suppress_network_errors,
            "PW_NETWORK_ERROR_RATE_LIMIT": self.network_error_rate_limit,
            "PW_FAIL_FAST": self.fail_fast,
            "PW_GRACEFUL_DEGRADATION": self.graceful_degradation,
            "PW_HEALTH_CHECK": self.health_check,
            "PW_CACHE_TTL": self.cache_ttl,
            "PW_TEDAPI_RECOVERY": self.tedapi_recovery,
            "PW_TEDAPI_PROBE_INTERVAL": g.probe_interval,
            "PW_TEDAPI_API_VERSION": g.tedapi_api_version,
            "PW_TEDAPI_AUTH_MODE": g.tedapi_auth_mode,
            "PROXY_BASE_URL": self.base_url,
            "PW_TRUSTED_PROXIES": ",".join(str(n) for n in self.trusted_proxies),
            "PW_MAX_STREAMS": self.max_streams,
            "PW_GATEWAY_CONCURRENCY": g.concurrency,
            "PW_CACHE_PERIODS": periods_text(g.periods),
            "PW_FIRMWARE_CHECK_INTERVAL": self.firmware_check_interval,
        }

    def secrets(self) -> list[str]:
        """Every secret value that is set (for leak checks in logs and tests)."""
        own = [f.reveal() for f in (self.password, self.gw_pwd, self.control_secret,
                                    self.openc2_token, self.mqtt_password, *self.events_webhook) if f]
        return own + [s for g in self.gateways for s in g.secrets()]

    def fleet(self) -> tuple[GatewayConfig, ...]:
        """Every gateway, the default one first."""
        gateways = self.gateways or (self.gateway(),)
        first = [g for g in gateways if g.id == self.default_id(gateways)]
        return (*first, *(g for g in gateways if g.id != first[0].id))

    def default_id(self, gateways: tuple[GatewayConfig, ...] | None = None) -> str:
        gateways = gateways or self.gateways or (self.gateway(),)
        return self.default_gateway or gateways[0].id

    def gateway(self) -> GatewayConfig:
        """The plain PW_* variables as one gateway with id "default"."""
        return GatewayConfig(
            host=self.host, password=self.password, email=self.email, timezone=self.timezone,
            gw_pwd=self.gw_pwd, rsa_key_path=self.rsa_key_path, wifi_host=self.wifi_host,
            tedapi_api_version=self.tedapi_api_version, tedapi_auth_mode=self.tedapi_auth_mode,
            probe_interval=self.tedapi_probe_interval, siteid=self.siteid,
            auth_path=self.auth_path, auth_mode=self.auth_mode, cache_file=self.cache_file,
            cache_expire=self.cache_expire, timeout=self.timeout, pool_maxsize=self.pool_maxsize,
            concurrency=self.gateway_concurrency, periods=self.cache_periods,
        )


def _base_url(name: str, raw: str) -> str:
    value = raw.strip() or "/"
    if not value.startswith("/"):
        value = "/" + value
    if any(c in value for c in "?#\\ ") or "//" in value:
        raise ConfigError(f"{name} must be a plain path such as /pw-proxy (got {raw!r})")
    return value if value.endswith("/") else value + "/"


def _networks(name: str, raw: str) -> tuple[Network, ...]:
    """Comma-separated addresses or CIDR ranges, e.g. "172.17.0.1, 10.0.0.0/8"."""
    found: list[Network] = []
    for text in comma_items(raw):
        try:
            found.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigError(f"{name} must be comma-separated IP addresses or CIDR ranges "
                              f"such as 172.17.0.1,10.0.0.0/8 (got {text!r})") from None
    return tuple(found)


MQTT_TOPIC_LEVEL = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _topic_prefix(name: str, raw: str) -> str:
    """An MQTT topic prefix: levels of letters, digits, _ . - separated by single slashes."""
    value = raw.strip()
    levels = value.split("/")
    if len(levels) > 8 or not all(MQTT_TOPIC_LEVEL.fullmatch(level) for level in levels):
        raise ConfigError(f"{name} must be topic levels of letters, digits, _ . - joined by / "
                          f"(no wildcards, no leading or trailing /), e.g. pypowerwall (got {raw!r})")
    return value


# ---- history and events -----------------------------------------------------------

def _firmware_interval(name: str, raw: str) -> int:
    # 0 turns the watch off; anything else is raised to the reference's minimum of 30 s.
    value = _int_parser(0, 86400)(name, raw)
    return value if value == 0 else max(30, value)


def _webhooks(name: str, raw: str) -> tuple[Secret, ...]:
    """Comma-separated http(s) URLs; kept as secrets (a webhook URL often is one)."""
    found: list[Secret] = []
    for url in comma_items(raw):
        if not re.fullmatch(r"https?://[^\s/?#]+(?::[0-9]{1,5})?(?:[/?#]\S*)?", url, re.IGNORECASE):
            raise ConfigError(f"{name} must be comma-separated http:// or https:// URLs "
                              "(e.g. https://ntfy.sh/my-topic)")
        found.append(Secret(url))
    if len(found) > MAX_WEBHOOKS:
        raise ConfigError(f"{name}: at most {MAX_WEBHOOKS} URLs (got {len(found)})")
    return tuple(found)


MAX_WEBHOOKS = 8


def _check_history(config: Config) -> None:
    """The store cuts days at local midnight: with it on, PW_TIMEZONE (and each gateway's
    timezone) must be a zone this machine knows."""
    if not config.history:
        return
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    for gateway in config.fleet():
        if not gateway.history:
            continue
        try:
            ZoneInfo(gateway.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            where = "PW_TIMEZONE" if not config.gateways else f"gateway {gateway.id!r} timezone"
            raise ConfigError(f"{where} must be a time zone name such as Europe/Berlin (got "
                              f"{gateway.timezone!r}); the history store cuts days at local "
                              "midnight (PW_HISTORY=no to run without it)") from None


# variable -> (field, parser). Defaults come from the dataclass.
_VARIABLES: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "PW_BIND_ADDRESS": ("bind_address", _text),
    "PW_PORT": ("port", _int_parser(0, 65535)),
    "PW_HOST": ("host", _text),
    "PW_PASSWORD": ("password", _secret),
    "PW_EMAIL": ("email", _text),
    "PW_TIMEZONE": ("timezone", _text),
    "PW_GW_PWD": ("gw_pwd", _secret),
    "PW_RSA_KEY_PATH": ("rsa_key_path", _text),
    "PW_WIFI_HOST": ("wifi_host", _text),
    "PW_TEDAPI_API_VERSION": ("tedapi_api_version", TEDAPI_API_VERSION),
    "PW_DEBUG": ("debug", parse_bool),
    "PW_CACHE_EXPIRE": ("cache_expire", CACHE_EXPIRE),
    "PW_BROWSER_CACHE": ("browser_cache", _int_parser(0)),
    "PW_TIMEOUT": ("timeout", TIMEOUT),
    "PW_POOL_MAXSIZE": ("pool_maxsize", POOL_MAXSIZE),
    "PW_HTTPS": ("https", _choice(*HTTPS_MODES)),
    "PW_STYLE": ("style", _choice(*STYLES)),
    "PW_SITEID": ("siteid", _text),
    "PW_AUTH_PATH": ("auth_path", _text),
    "PW_AUTH_MODE": ("auth_mode", AUTH_MODE),
    "PW_CACHE_FILE": ("cache_file", _text),
    "PW_CONTROL_SECRET": ("control_secret", _secret),
    "PW_OPENC2_TOKEN": ("openc2_token", _secret),
    "PW_NEG_SOLAR": ("neg_solar", parse_bool),
    "PW_SITE_ZERO_THRESHOLD": ("site_zero_threshold", _int_parser(0)),
    "PROXY_BASE_URL": ("base_url", _base_url),
    "PW_SUPPRESS_NETWORK_ERRORS": ("suppress_network_errors", parse_bool),
    "PW_NETWORK_ERROR_RATE_LIMIT": ("network_error_rate_limit", _int_parser(0)),
    "PW_FAIL_FAST": ("fail_fast", parse_bool),
    "PW_GRACEFUL_DEGRADATION": ("graceful_degradation", parse_bool),
    "PW_HEALTH_CHECK": ("health_check", parse_bool),
    "PW_CACHE_TTL": ("cache_ttl", _int_parser(0)),
    "PW_TEDAPI_RECOVERY": ("tedapi_recovery", parse_bool),
    "PW_TLS_CERT": ("tls_cert", _text),
    "PW_TLS_KEY": ("tls_key", _text),
    "PW_DEFAULT_GATEWAY": ("default_gateway", _text),
    "PW_TRUSTED_PROXIES": ("trusted_proxies", _networks),
    "PW_MAX_STREAMS": ("max_streams", _int_parser(0, 100_000)),
    "PW_MQTT_HOST": ("mqtt_host", _text),
    "PW_MQTT_PORT": ("mqtt_port", _int_parser(1, 65535)),
    "PW_MQTT_USER": ("mqtt_user", _text),
    "PW_MQTT_PASSWORD": ("mqtt_password", _secret),
    "PW_MQTT_TLS": ("mqtt_tls", parse_bool),
    "PW_MQTT_PREFIX": ("mqtt_prefix", _topic_prefix),
    "PW_MQTT_DISCOVERY_PREFIX": ("mqtt_discovery_prefix", _topic_prefix),
    "PW_MQTT_RETAIN": ("mqtt_retain", parse_bool),
    # TEDAPI transport and reconnects: accepted with a correction, as the reference does
    "PW_TEDAPI_AUTH_MODE": ("tedapi_auth_mode", _tedapi_auth_mode),
    "PW_TEDAPI_PROBE_INTERVAL": ("tedapi_probe_interval", _probe_interval),
    # how hard a gateway is asked
    "PW_GATEWAY_CONCURRENCY": ("gateway_concurrency", CONCURRENCY),
    "PW_CACHE_PERIODS": ("cache_periods", _periods),
    # history and events (proxy/history)
    "PW_DATA_DIR": ("data_dir", _text),
    "PW_HISTORY": ("history", parse_bool),
    "PW_HISTORY_RAW_DAYS": ("history_raw_days", _int_parser(1, 30)),
    "PW_HISTORY_COMMIT_SECONDS": ("history_commit_seconds", _int_parser(1, 3600)),
    "PW_HISTORY_MAX_MB": ("history_max_mb", _int_parser(8, 1_000_000)),
    "PW_FIRMWARE_CHECK_INTERVAL": ("firmware_check_interval", _firmware_interval),
    "PW_EVENTS_WEBHOOK": ("events_webhook", _webhooks),
}


def _bearer_notes(gateways: tuple[GatewayConfig, ...], several: bool) -> list[str]:
    """Bearer needs the signed V2026_06 queries; the library warns too, less plainly."""
    return [f"{f'gateway {g.id!r}: ' if several else ''}TEDAPI auth mode bearer needs "
            f"{'tedapi_api_version' if several else 'PW_TEDAPI_API_VERSION'}=V2026_06 "
            f"(got {g.tedapi_api_version}): the gateway may refuse the queries"
            for g in gateways if g.tedapi_auth_mode == "bearer" and g.tedapi_api_version != "V2026_06"]



def load_config(environ: Mapping[str, str], *, file: str | None = None, **overrides: Any) -> Config:
    """Parse the settings; keyword overrides win (e.g. simulate=True).

    Gateways come from, in this order: a config file (`file`, else PW_CONFIG), whose
    `server:` block also sets proxy-wide values over the PW_* variables; else
    PW_GATEWAYS (a JSON list); else the plain PW_* variables as one gateway "default".
    """
    path = file or environ.get("PW_CONFIG", "").strip() or None
    document = read_gateways_file(path) if path else None
    notes: list[str] = []
    values = _parse_variables(environ, notes)
    if document is not None:
        values.update(server_values(document.get("server"), path or "", environ, notes, _VARIABLES))
    values.update(overrides)
    if "cache_file" not in values:
        values["cache_file"] = default_cache_file(values.get("auth_path", ""))
    known = {f.name for f in fields(Config)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    config = Config(**values)
    config = _with_gateways(config, document, path, environ.get("PW_GATEWAYS", "").strip(), notes)
    _check_tls(config)
    _check_mqtt(config)
    _check_history(config)
    notes += _bearer_notes(config.fleet(), bool(config.gateways))
    return replace(config, warnings=tuple(notes))


def _parse_variables(environ: Mapping[str, str], notes: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, (attr, parse) in _VARIABLES.items():
        raw = environ.get(name)
        if raw is not None and (raw.strip() or attr in _EMPTY_MEANS_EMPTY):
            values[attr] = accept(parse(name, raw), notes)
    return values


# Variables where an explicitly empty value is meaningful rather than "use the default".
_EMPTY_MEANS_EMPTY = {"bind_address", "host", "password", "gw_pwd", "control_secret", "openc2_token",
                      "auth_path"}


def _check_tls(config: Config) -> None:
    if bool(config.tls_cert) != bool(config.tls_key):
        raise ConfigError("PW_TLS_CERT and PW_TLS_KEY must be set together")


# Topic levels under PW_MQTT_PREFIX that are not gateways.
MQTT_RESERVED_IDS = ("aggregate", "status")


def _check_mqtt(config: Config) -> None:
    if not config.mqtt_host:
        return
    if config.mqtt_prefix == config.mqtt_discovery_prefix:
        raise ConfigError("PW_MQTT_PREFIX must differ from PW_MQTT_DISCOVERY_PREFIX")
    for gateway in config.fleet():
        if gateway.id in MQTT_RESERVED_IDS:
            raise ConfigError(f"PW_MQTT_HOST: gateway id {gateway.id!r} is an MQTT topic of its own "
                              f"({config.mqtt_prefix}/{gateway.id}); give that gateway another id")


# ---- several gateways: a config file or PW_GATEWAYS (proxy.configgateways) --------------

def _with_gateways(config: Config, document: dict[str, Any] | None, path: str | None,
                   listed: str, notes: list[str]) -> Config:
    found = gateway_entries(document, path, listed, notes)
    if found is None:
        return _check_default(config, (config.gateway(),))
    source, entries = found
    # What an entry does not say, it takes from the proxy-wide settings (as `gateway()` reads them).
    plain = config.gateway()
    defaults = {name: getattr(plain, name) for name in INHERITED}
    gateways = tuple(_file_gateway(defaults | values) for values in entries)
    return _check_default(replace(config, gateways=gateways, source=source), gateways)


# GatewayConfig fields a gateway of a file or PW_GATEWAYS takes from the PW_* variables.
INHERITED = ("email", "timezone", "auth_path", "cache_expire", "timeout", "pool_maxsize",
             "probe_interval", "concurrency", "periods")


def _file_gateway(values: dict[str, Any]) -> GatewayConfig:
    """A gateway of a file; unless it names one, a cookie file of its own in its auth path
    (PW_AUTH_PATH unless it says `authpath`: the image's data volume, not the read-only app)."""
    gateway = GatewayConfig(**values)
    if "cache_file" in values:
        return gateway
    return replace(gateway, cache_file=gateway_cache_file(gateway.auth_path, gateway.id))


def _check_default(config: Config, gateways: tuple[GatewayConfig, ...]) -> Config:
    if config.default_gateway and config.default_gateway not in {g.id for g in gateways}:
        raise ConfigError(f"PW_DEFAULT_GATEWAY names no configured gateway "
                          f"(got {config.default_gateway!r}; ids: {', '.join(g.id for g in gateways)})")
    return config

