"""Everything a route handler may use: the hardware, the home and the logins."""

from __future__ import annotations

import base64
import hmac
import threading
from dataclasses import dataclass

from .layout import Layout, release, with_firmware
from .model import HomeModel
from .sessions import SessionStore

TEDAPI_USER = "Tesla_Energy_Device"


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


class Hardware:
    """The site's devices and the firmware they run, which an update can change
    (POST /sim/firmware); every answer reads the release current at that moment."""

    def __init__(self, layout: Layout) -> None:
        self._lock = threading.Lock()
        self._layout = layout

    @property
    def layout(self) -> Layout:
        return self._layout  # one reference, replaced whole: no torn reads

    def update(self, version: str) -> Layout:
        """Run another release: "25.18.1" or "25.18.1 4c2e9a71" (a short git hash is made up
        when none is given)."""
        firmware, git_hash = release(version)
        with self._lock:
            self._layout = with_firmware(self._layout, firmware, git_hash)
            return self._layout


@dataclass(frozen=True)
class Site:
    hardware: Hardware
    model: HomeModel
    sessions: SessionStore
    password: str  # customer password (local API)
    gw_pwd: str  # gateway password from the QR sticker (TEDAPI)

    @property
    def layout(self) -> Layout:
        return self.hardware.layout

    def customer_password_ok(self, given: str) -> bool:
        # Out of the box a gateway's customer password is the last five characters
        # of its gateway password (pypowerwall's TEDAPI mode relies on that); the
        # owner's chosen password works as well.
        candidates = [self.password]
        if len(self.gw_pwd) >= 5:
            candidates.append(self.gw_pwd[-5:])
        return any(_same(given, candidate) for candidate in candidates)

    def installer_password_ok(self, given: str) -> bool:
        return _same(given, self.gw_pwd)

    def tedapi_auth_ok(self, authorization: str | None) -> bool:
        """HTTP Basic check for TEDAPI: user Tesla_Energy_Device, the gateway password."""
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return False
        user, _, password = decoded.partition(":")
        return _same(user, TEDAPI_USER) and _same(password, self.gw_pwd)
