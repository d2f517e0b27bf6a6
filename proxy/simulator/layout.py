"""The simulated site's hardware: which devices exist and what they are called.

Two layouts mirror what the library knows how to read:
- ``pw3``: two Powerwall 3 units (each its own inverter with PV inputs) behind a
  Backup Gateway 2; the leader Powerwall 3 is the site controller.
- ``pw2``: a Powerwall+ and a Powerwall 2 behind a Backup Gateway 2, with the
  Powerwall+ solar inverter (PVAC/PVS) on the esCan bus.
- ``solar``: a solar-only site: a Tesla solar inverter (PVAC/PVS) behind the gateway,
  no Powerwall.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace

MODELS = ("pw2", "pw3", "solar")
FIRMWARE_VERSION = "25.10.2 8a1d7e3f"
GIT_HASH = "8a1d7e3f5c0b9d2e4a6f8b1c3d5e7f9a0b2c4d6e"
SITE_NAME = "Simulated Home"
TIMEZONE = "America/Los_Angeles"
PV_STRING_NAMES = ("A", "B", "C", "D", "E", "F")


@dataclass(frozen=True)
class PowerwallUnit:
    """One battery package (and, on PW3, its built-in solar inverter)."""

    part: str
    serial: str
    module_serial: str  # PW2 battery module behind the package (msa TEPINV component)
    full_pack_wh: int
    max_power_w: int
    pv_strings: tuple[str, ...]  # PV inputs with panels attached (PW3 only)

    @property
    def din(self) -> str:
        return f"{self.part}--{self.serial}"


@dataclass(frozen=True)
class SolarInverter:
    """The Powerwall+ solar inverter (PVAC) and its string switch (PVS)."""

    part: str
    serial: str
    rating_w: int
    pv_strings: tuple[str, ...]  # strings A-D that are connected


@dataclass(frozen=True)
class Layout:
    model: str
    gateway_part: str
    gateway_serial: str
    sync_part: str
    sync_serial: str
    units: tuple[PowerwallUnit, ...]
    pvac: SolarInverter | None
    solar_peak_w: int
    firmware: str = FIRMWARE_VERSION  # "<version> <short git hash>", as /api/status shows it
    git_hash: str = GIT_HASH

    @property
    def din(self) -> str:
        """The DIN the gateway reports (/api/status, /tedapi/din, config vin)."""
        if self.model == "pw3":
            # A Powerwall 3 leader is the site controller, so its DIN is the site's.
            return self.units[0].din
        return f"{self.gateway_part}--{self.gateway_serial}"

    @property
    def full_pack_wh(self) -> int:
        return sum(unit.full_pack_wh for unit in self.units)

    @property
    def max_power_w(self) -> int:
        return sum(unit.max_power_w for unit in self.units)

    @property
    def nominal_power_kw(self) -> float:
        return self.max_power_w / 1000.0

    def unit_by_din(self, din: str) -> PowerwallUnit | None:
        return next((unit for unit in self.units if unit.din == din), None)


def _pw3_layout() -> Layout:
    leader = PowerwallUnit("1707000-11-J", "TG1240000001AA", "TG1240000001AA",
                           13500, 11500, ("A", "B", "C"))
    follower = PowerwallUnit("1707000-11-J", "TG1240000002BB", "TG1240000002BB",
                             13400, 11500, ("A", "B"))
    return Layout("pw3", "1841000-01-B", "GF2400000001GW", "1493315-07-F", "JBL24000000001",
                  (leader, follower), None, 9000)


def _pw2_layout() -> Layout:
    plus = PowerwallUnit("2012170-25-E", "TG1220000001AA", "TG1220000101MA",
                         13900, 5000, ())
    classic = PowerwallUnit("3012170-05-C", "TG1230000002BB", "TG1230000102MB",
                            13700, 5000, ())
    pvac = SolarInverter("1538000-25-E", "TG1220000001PV", 7600, ("A", "B", "C"))
    return Layout("pw2", "1232100-00-E", "TG1210000000GW", "1493315-07-F", "JBL21000000001",
                  (plus, classic), pvac, 7600)


def _solar_layout() -> Layout:
    pvac = SolarInverter("1538100-00-F", "TG1250000001PV", 7600, ("A", "B", "C", "D"))
    return Layout("solar", "1232100-00-E", "TG1250000000GW", "1493315-07-F", "JBL25000000001",
                  (), pvac, 7600)


def layout_for(model: str) -> Layout:
    """The device layout of a simulated `model` ("pw2", "pw3" or "solar")."""
    if model == "pw3":
        return _pw3_layout()
    if model == "pw2":
        return _pw2_layout()
    if model == "solar":
        return _solar_layout()
    raise ValueError(f"model must be one of {', '.join(MODELS)}, not {model!r}")


def with_firmware(layout: Layout, firmware: str, git_hash: str) -> Layout:
    """The same hardware running another firmware release."""
    return replace(layout, firmware=firmware, git_hash=git_hash)


def release(version: str) -> tuple[str, str]:
    """("<release> <short git hash>", full git hash) for a release, with or without its short
    hash; a made-up hash is stable for a given release."""
    text = " ".join(version.split())
    if text == FIRMWARE_VERSION:
        return FIRMWARE_VERSION, GIT_HASH
    name, _, short = text.partition(" ")
    if not re.fullmatch(r"[0-9a-f]{8}", short):
        short = hashlib.sha1(name.encode()).hexdigest()[:8]
    firmware = f"{name} {short}"
    return firmware, (short + hashlib.sha1(firmware.encode()).hexdigest())[:40]


MAX_UNITS = 6


def with_units(layout: Layout, count: int) -> Layout:
    """The same site with `count` Powerwalls (and solar in proportion): a bigger or smaller home."""
    if not 1 <= count <= MAX_UNITS:
        raise ValueError(f"units must be between 1 and {MAX_UNITS}, not {count}")
    base = layout.units
    if not base:
        return layout  # a solar-only site has no Powerwall to multiply
    units = tuple(replace(base[i % len(base)], serial=_nth(base[i % len(base)].serial, i),
                          module_serial=_nth(base[i % len(base)].module_serial, i))
                  if i >= len(base) else base[i] for i in range(count))
    solar = round(layout.solar_peak_w * count / len(base))
    return replace(layout, units=units, solar_peak_w=solar)


def _nth(serial: str, i: int) -> str:
    """A distinct serial for an added unit (same length, last digits changed)."""
    return f"{serial[:-4]}{i:02d}{serial[-2:]}"


def renumbered(layout: Layout, site: int) -> Layout:
    """The same hardware with serial numbers of its own, for one site among several."""
    if site == 0:
        return layout
    tag = f"{site % 100:02d}"
    units = tuple(replace(u, serial=_tagged(u.serial, tag), module_serial=_tagged(u.module_serial, tag))
                  for u in layout.units)
    pvac = layout.pvac and replace(layout.pvac, serial=_tagged(layout.pvac.serial, tag))
    return replace(layout, units=units, pvac=pvac, gateway_serial=_tagged(layout.gateway_serial, tag),
                   sync_serial=_tagged(layout.sync_serial, tag))


def _tagged(serial: str, tag: str) -> str:
    return f"{serial[:5]}{tag}{serial[7:]}"
