"""A saved gateway login only for the credentials that made it.

pypowerwall keeps the local login's cookie (or bearer token) in a file
(PW_CACHE_FILE) and uses it at the next start without logging in. A cookie left
by another run would let a wrong or changed password "work" until the gateway
drops the session. So the file gets a fingerprint beside it: an HMAC of host,
auth mode and password under a random key kept next to it (never the password
itself). Before the library reads the file, one whose fingerprint is missing or
does not match is removed; after each login (the library logs in when it first
needs to, and again when the gateway forgets the session) the file is stamped. The cloud and
FleetAPI auth files are not touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("proxy.gateway")

KEY_SUFFIX = ".key"
FINGERPRINT_SUFFIX = ".fingerprint"


def applies(kwargs: Mapping[str, Any]) -> bool:
    """Does a client made with these arguments keep a saved login in a file?"""
    return _applies(kwargs) is not None


def _applies(kwargs: Mapping[str, Any]) -> str | None:
    """The cookie file of a client that logs in to a gateway with a password, else None."""
    path = str(kwargs.get("cachefile") or "")
    return path if path and kwargs.get("host") and kwargs.get("password") else None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read(256).strip()
    except (OSError, UnicodeError):
        return None


def _write_private(path: str, text: str) -> None:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="ascii") as f:
        f.write(text)


def _key(cookie_file: str) -> bytes | None:
    """The HMAC key beside the cookie file, made on first use; None where it cannot be kept."""
    path = cookie_file + KEY_SUFFIX
    text = _read(path)
    if text is None:
        text = secrets.token_hex(32)
        try:
            _write_private(path, text)
        except OSError:
            return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def fingerprint(key: bytes, kwargs: Mapping[str, Any]) -> str:
    """HMAC-SHA256 of what a login depends on."""
    made_of = "\n".join(str(kwargs.get(name) or "") for name in ("host", "authmode", "password"))
    return hmac.new(key, made_of.encode("utf-8"), hashlib.sha256).hexdigest()


def vouch(kwargs: Mapping[str, Any]) -> None:
    """Before the library reads the cookie file: remove it unless these credentials made it."""
    path = _applies(kwargs)
    if path is None or not os.path.exists(path):
        return
    key = _key(path)
    stamp = _read(path + FINGERPRINT_SUFFIX)
    if key is not None and stamp is not None and hmac.compare_digest(stamp, fingerprint(key, kwargs)):
        return
    for stale in (path, path + FINGERPRINT_SUFFIX):
        with contextlib.suppress(OSError):
            os.remove(stale)
    log.info("discarded the saved gateway login in %s: other credentials made it", path)


def stamp(kwargs: Mapping[str, Any]) -> None:
    """After a login: mark the cookie file as made by these credentials."""
    path = _applies(kwargs)
    if path is None or not os.path.exists(path):
        return
    key = _key(path)
    if key is None:
        return
    with contextlib.suppress(OSError):
        _write_private(path + FINGERPRINT_SUFFIX, fingerprint(key, kwargs))
