"""The values a setting takes, and the parsers that read them from text.

A parser gets the name to blame (a PW_* variable, or a gateways file, gateway and key)
and the text written, and returns the value or raises a `ConfigError` naming it. Where
the reference accepts a value with a correction, the parser returns it `Corrected`
(the warning is logged once at start). The PW_* variables (`proxy.config`) and a
gateways file's keys (`proxy.configgateways`) share these parsers, so a value reads
alike wherever it is written.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.configfile import ConfigError, Corrected

MASK = "********"  # a fixed mask: never reveals a secret's length
AUTH_MODES = ("cookie", "token")
TEDAPI_VERSIONS = ("V2024_06", "V2026_06")
TEDAPI_AUTH_MODES = ("basic", "bearer")
MAX_CONCURRENCY = 16  # library calls in flight at once to one gateway, at most
RESOURCE_NAME = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")
_TRUE = ("yes", "true", "1", "on")
_FALSE = ("no", "false", "0", "off")

Parser = Callable[[str, str], Any]


@dataclass(frozen=True, slots=True)
class Secret:
    """A value that must never be shown; its repr is the fixed mask."""

    _value: str = ""

    def reveal(self) -> str:
        return self._value

    def masked(self) -> str | None:
        """The mask when set, None when empty (as the reference shows unset secrets)."""
        return MASK if self._value else None

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return f"Secret({self.masked()!r})"

    __str__ = __repr__


def parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be one of yes/true/1/on or no/false/0/off (got {raw!r})")


def int_parser(lo: int, hi: int | None = None) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(f"{name} must be an integer (got {raw!r})") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise ConfigError(f"{name} must be {bound} (got {value})")
        return value

    return parse


def choice(*allowed: str, fold: bool = True) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower() if fold else raw.strip()
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)} (got {raw!r})")
        return value

    return parse


# Parsers a PW_* variable shares with its key in a gateways file: one range, one rule.
CACHE_EXPIRE = int_parser(0, 3600)
TIMEOUT = int_parser(1, 300)
POOL_MAXSIZE = int_parser(0, 1000)
CONCURRENCY = int_parser(1, MAX_CONCURRENCY)
TEDAPI_API_VERSION = choice(*TEDAPI_VERSIONS, fold=False)
AUTH_MODE = choice(*AUTH_MODES)


def comma_items(raw: str) -> list[str]:
    """The items of a comma-separated value, stripped, the empty ones left out."""
    return [item.strip() for item in raw.split(",") if item.strip()]


def text(name: str, raw: str) -> str:
    return raw.strip()


def secret(name: str, raw: str) -> Secret:
    return Secret(raw)


# ---- TEDAPI transport and reconnects: settings the reference accepts with a correction ----

def tedapi_auth_mode(name: str, raw: str) -> Any:
    # The reference (and pypowerwall) fall back to basic with a warning rather than refuse.
    value = raw.strip().lower()
    if value in TEDAPI_AUTH_MODES:
        return value
    return Corrected("basic", f"{name} is {raw.strip()!r}, not basic or bearer: using basic")


def probe_interval(name: str, raw: str) -> Any:
    # The reference raises anything below 5 s to 5 s rather than refusing it.
    value = int_parser(0)(name, raw)
    return value if value >= 5 else Corrected(5, f"{name} is {value}: using the minimum, 5 seconds")


# ---- how hard a gateway is asked: PW_GATEWAY_CONCURRENCY, PW_CACHE_PERIODS -----------------

def periods(name: str, raw: str) -> tuple[tuple[str, int], ...]:
    """"vitals:30,strings:60": resource names as /stats lists them, each with its period in
    seconds (the name may hold colons: the period is after the last one)."""
    found: dict[str, int] = {}
    for entry in comma_items(raw):
        resource, colon, seconds = entry.rpartition(":")
        if not colon or not RESOURCE_NAME.fullmatch(resource):
            raise ConfigError(f"{name} must be resource:seconds pairs joined by commas, "
                              f"e.g. vitals:30,strings:60 (got {entry!r})")
        found[resource] = int_parser(1, 3600)(f"{name} ({resource})", seconds)
    return tuple(sorted(found.items()))


def periods_text(periods: tuple[tuple[str, int], ...]) -> str:
    """The periods as PW_CACHE_PERIODS spells them."""
    return ",".join(f"{resource}:{seconds}" for resource, seconds in periods)


def default_cache_file(auth_path: str) -> str:
    """Where pypowerwall keeps the local login when PW_CACHE_FILE is not set."""
    return f"{auth_path.rstrip('/')}/.powerwall" if auth_path else ".powerwall"
