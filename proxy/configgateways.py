"""Several gateways: a gateways file's entries and `server:` block, or PW_GATEWAYS, as settings.

`proxy.configfile` reads the document so that nothing in it can mislead; here each
`gateways:` entry becomes the values of one gateway's settings (`GatewayConfig`
fields) by one table of keys, and the `server:` block the values of PW_* variables.
A file value is handed to the variable's own parser as the text a variable would
hold, so a value reads alike wherever it is written; a refusal names the source, the
gateway and the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from proxy.configfile import ConfigError, accept, parse_json
from proxy.configvalues import (
    AUTH_MODE,
    CACHE_EXPIRE,
    CONCURRENCY,
    POOL_MAXSIZE,
    TEDAPI_API_VERSION,
    TIMEOUT,
    Parser,
    choice,
    default_cache_file,
    parse_bool,
    periods,
    probe_interval,
    secret,
    tedapi_auth_mode,
    text,
)

GATEWAY_TYPES = ("powerwall", "inverter")
GATEWAY_ID = re.compile(r"[a-z0-9_-]{1,32}")
MAX_GATEWAYS = 32


def gateway_id(name: str, raw: str) -> str:
    value = raw.strip()
    if not GATEWAY_ID.fullmatch(value):
        raise ConfigError(f"{name} must be 1-32 of a-z, 0-9, _ and - (got {raw!r})")
    return value


# key in a gateway entry -> (GatewayConfig field, parser); the keys are pypowerwall-server's.
GATEWAY_KEYS: dict[str, tuple[str, Parser]] = {
    "id": ("id", gateway_id),
    "name": ("name", text),
    "type": ("type", choice(*GATEWAY_TYPES)),
    "host": ("host", text),
    "gw_pwd": ("gw_pwd", secret),
    "password": ("password", secret),
    "email": ("email", text),
    "authpath": ("auth_path", text),
    "authmode": ("auth_mode", AUTH_MODE),
    "timezone": ("timezone", text),
    "rsa_key_path": ("rsa_key_path", text),
    "wifi_host": ("wifi_host", text),
    "siteid": ("siteid", text),
    "tedapi_api_version": ("tedapi_api_version", TEDAPI_API_VERSION),
    "cloud_mode": ("cloud_mode", parse_bool),
    "fleetapi": ("fleetapi", parse_bool),
    "cache_expire": ("cache_expire", CACHE_EXPIRE),
    "timeout": ("timeout", TIMEOUT),
    "pool_maxsize": ("pool_maxsize", POOL_MAXSIZE),
    # TEDAPI transport and reconnects (accepted with a correction, as the reference does)
    "tedapi_auth_mode": ("tedapi_auth_mode", tedapi_auth_mode),
    "tedapi_probe_interval": ("probe_interval", probe_interval),
    # how hard the gateway is asked
    "concurrency": ("concurrency", CONCURRENCY),
    "periods": ("periods", periods),
    # recorded in the history store (proxy/history) while PW_HISTORY is on
    "history": ("history", parse_bool),
}
MAPPING_KEYS = {"periods"}  # gateway keys whose value may be a mapping (resource: seconds)

# Variables that describe one gateway: in a file they belong in a `gateways:` entry.
GATEWAY_VARIABLES = {"PW_HOST", "PW_PASSWORD", "PW_GW_PWD", "PW_RSA_KEY_PATH", "PW_WIFI_HOST",
                     "PW_SITEID", "PW_TEDAPI_API_VERSION", "PW_CACHE_FILE", "PW_AUTH_MODE",
                     "PW_TEDAPI_AUTH_MODE"}
# `server:` keys are the PW_* variable names without the prefix, lower case, plus these.
SERVER_ALIASES = {"bind": "PW_BIND_ADDRESS", "base_url": "PROXY_BASE_URL"}


def _server_key(key: str, variables: Mapping[str, tuple[str, Parser]]) -> str | None:
    name = SERVER_ALIASES.get(key) or "PW_" + key.upper()
    if name in variables and name not in GATEWAY_VARIABLES:
        return name
    return None


def _scalar(where: str, value: Any) -> str:
    """A file value as the text a variable would hold (so one parser serves both)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float, str)):
        return str(value)
    if value is None:
        return ""
    raise ConfigError(f"{where} must be a single value, not a {type(value).__name__}")


def _pairs(where: str, mapping: dict[Any, Any]) -> str:
    """A file's mapping (periods: {vitals: 30}) as the text its variable would hold."""
    return ",".join(f"{key}:{_scalar(f'{where} entry {key!r}', value)}" for key, value in mapping.items())


def server_values(block: Any, path: str, environ: Mapping[str, str], notes: list[str],
                  variables: Mapping[str, tuple[str, Parser]]) -> dict[str, Any]:
    """The file's `server:` values by `Config` field, parsed as their `variables`; they win
    over the PW_* variables (a warning says which)."""
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise ConfigError(f"config file {path}: 'server' must be a mapping")
    values: dict[str, Any] = {}
    for key, raw in block.items():
        name = _server_key(str(key), variables)
        where = f"config file {path}: server key {key!r}"
        if name is None:
            raise ConfigError(f"{where} is unknown (gateway settings belong in a 'gateways' entry)")
        attr, parse = variables[name]
        values[attr] = accept(parse(where, _scalar(where, raw)), notes)
        if environ.get(name, "").strip():
            notes.append(f"{name} is set, but the config file's server key {key!r} wins")
    return values


def gateway_entries(document: dict[str, Any] | None, path: str | None, listed: str,
                    notes: list[str]) -> tuple[str, list[dict[str, Any]]] | None:
    """(where they came from, each gateway's `GatewayConfig` values) from a file's `gateways:`
    list, else from PW_GATEWAYS (`listed`); None when neither lists any."""
    if document is not None:
        entries, source = document.get("gateways"), f"config file {path}"
    elif listed:
        entries, source = parse_json(listed, "PW_GATEWAYS"), "PW_GATEWAYS"
    else:
        return None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source}: 'gateways' must be a non-empty list of gateways")
    if len(entries) > MAX_GATEWAYS:
        raise ConfigError(f"{source}: at most {MAX_GATEWAYS} gateways (got {len(entries)})")
    gateways = [_gateway_entry(entry, i, source, notes) for i, entry in enumerate(entries)]
    seen: set[str] = set()
    for values in gateways:
        if values["id"] in seen:
            raise ConfigError(f"{source}: gateway {values['id']!r} is listed twice (ids must be unique)")
        seen.add(values["id"])
    return source, gateways


def _gateway_entry(entry: Any, index: int, source: str, notes: list[str]) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ConfigError(f"{source}: gateway #{index + 1} must be a mapping of keys")
    label = f"gateway #{index + 1}"
    if "id" not in entry:
        raise ConfigError(f"{source}: {label} has no 'id' (required)")
    values: dict[str, Any] = {}
    gid = gateway_id(f"{source}: {label} key 'id'", _scalar(f"{source}: {label} key 'id'", entry["id"]))
    for key, raw in entry.items():
        where = f"{source}: gateway {gid!r} key {key!r}"
        if key not in GATEWAY_KEYS:
            raise ConfigError(f"{where} is unknown (known: {', '.join(GATEWAY_KEYS)})")
        attr, parse = GATEWAY_KEYS[key]
        mapping = key in MAPPING_KEYS and isinstance(raw, dict)
        values[attr] = accept(parse(where, _pairs(where, raw) if mapping else _scalar(where, raw)), notes)
    if not (values.get("host") or values.get("cloud_mode") or values.get("fleetapi")):
        raise ConfigError(f"{source}: gateway {gid!r} needs 'host' (or cloud_mode/fleetapi: true)")
    return values


def gateway_cache_file(auth_path: str, gateway_id: str) -> str:
    """Each gateway of a file its own cookie file, even when they share an auth path."""
    return f"{default_cache_file(auth_path)}-{gateway_id}"
