"""Gateway personalities ("profiles"): how real gateways differ from one another.

Real gateways vary with hardware and firmware: a Powerwall 2 on old firmware
still serves protobuf vitals and has no TEDAPI, a Powerwall 3 refuses much of the
local API, some firmware answers `200` with an empty body for what it does not
implement, some network paths speak HTTP/1.0 or put a captive portal in front.
Each profile is one frozen row; `Simulator(profile=NAME)` and
`python3 -m proxy.simulator --profile NAME` pick one. `default` is the simulator
as it always was.

A row also says how a client must connect (`tedapi`): with the gateway password
(TEDAPI) or with the customer password (local API); `Simulator.credentials()`
hands out the matching secret.

Path entries ending in "*" match by prefix. Special answers win over the normal
route, need no login and apply to every method; faults still come first.
"""

from __future__ import annotations

from dataclasses import dataclass

from .layout import FIRMWARE_VERSION, release

# Special answers a profile can give in place of a route.
MISSING = "missing"  # 404 with Go's "404 page not found" text
FORBIDDEN = "forbidden"  # 403 with the gateway's access-rights error
EMPTY = "empty"  # 200 with an empty body
PORTAL = "portal"  # 200 with an HTML login page (text/html)
VITALS = "vitals"  # the pre-23.44 protobuf vitals (needs a login)
VITALS_PATH = "/api/devices/vitals"


def matches(patterns: tuple[str, ...], path: str) -> bool:
    """Whether `path` is one of `patterns` (an entry ending in "*" matches by prefix)."""
    return any(path.startswith(p[:-1]) if p.endswith("*") else path == p for p in patterns)


@dataclass(frozen=True)
class Profile:
    name: str
    summary: str
    model: str  # hardware layout: "pw2" or "pw3"
    firmware: str  # "<release> <short git hash>", as /api/status reports it
    tedapi: bool  # clients connect with the gateway password (TEDAPI), else the customer password
    # TEDAPI only through the bearer login (/api/login/Basic as installer with the gateway
    # password) and AuthEnvelope bodies carrying the V2026_06 signed queries; Basic is refused.
    bearer: bool = False
    http10: bool = False  # HTTP/1.0 without keep-alive: "Connection: close" on every answer
    vitals: bool = False  # /api/devices/vitals serves protobuf (firmware before 23.44)
    missing: tuple[str, ...] = ()  # paths answering 404
    forbidden: tuple[str, ...] = ()  # paths answering 403
    empty: tuple[str, ...] = ()  # paths answering 200 with an empty body
    portal: tuple[str, ...] = ()  # paths answering 200 with an HTML login page

    @property
    def git_hash(self) -> str:
        """The firmware's full git hash: its short hash, then a stable made-up rest."""
        return release(self.firmware)[1]

    def answer(self, path: str) -> str | None:
        """The special answer this gateway gives for `path`, or None for the normal route."""
        for kind, patterns in ((MISSING, self.missing), (FORBIDDEN, self.forbidden),
                               (EMPTY, self.empty), (PORTAL, self.portal)):
            if matches(patterns, path):
                return kind
        if self.vitals and path == VITALS_PATH:
            return VITALS
        return None


# Local API paths a Powerwall 3 does not serve: the vitals and registration routes are
# gone (404); the Powerwall 2-era device views refuse even a logged-in customer (403).
PW3_MISSING = ("/api/devices/vitals", "/api/customer/registration")
PW3_FORBIDDEN = ("/api/solar_powerwall", "/api/powerwalls", "/api/meters/readings",
                 "/api/installer", "/api/networks", "/api/system/networks",
                 "/api/synchrometer/ct_voltage_references")
# What the sparse firmware leaves unimplemented (empty 200). Kept working: login,
# /api/status, /api/meters/aggregates, /api/system_status/soe and grid_status, site info.
SPARSE_EMPTY = ("/api/system_status", "/api/system_status/grid_faults", "/api/operation",
                "/api/devices/vitals", "/api/troubleshooting/problems", "/api/solar_powerwall",
                "/api/powerwalls", "/api/meters", "/api/meters/site", "/api/meters/solar",
                "/api/meters/readings")
# Data paths the captive portal intercepts; the rest reach the gateway.
PORTAL_PATHS = ("/api/system_status", "/api/site_info/site_name", "/api/operation")

PROFILES: tuple[Profile, ...] = (
    Profile("default", "the simulator as always: a Powerwall 3 site with the local API and "
            "TEDAPI", model="pw3", firmware=FIRMWARE_VERSION, tedapi=True),
    Profile("pw2-legacy", "Powerwall 2 on firmware 23.28: local API with protobuf vitals, "
            "no TEDAPI (/tedapi/* 404)", model="pw2", firmware="23.28.2 b0fb1e23",
            tedapi=False, vitals=True, missing=("/tedapi/*",)),
    Profile("pw3", "Powerwall 3 on firmware 25.x: TEDAPI; local paths it lacks answer 404 "
            "(vitals, registration) or 403 (solar_powerwall, powerwalls, meters/readings, "
            "installer, networks, ct_voltage_references)", model="pw3",
            firmware="25.18.1 4c2e9a71", tedapi=True, missing=PW3_MISSING,
            forbidden=PW3_FORBIDDEN),
    Profile("sparse", "firmware answering 200 with an empty body for system_status, "
            "grid_faults, operation, vitals, troubleshooting, solar_powerwall, powerwalls and "
            "the meters except aggregates", model="pw3", firmware="24.36.2 61d9e0c3",
            tedapi=False, empty=SPARSE_EMPTY),
    Profile("http10", "an HTTP/1.0 server: no keep-alive, Connection: close on every answer "
            "(Content-Length kept)", model="pw3", firmware=FIRMWARE_VERSION, tedapi=False,
            http10=True),
    Profile("portal", "a captive portal answering system_status, site_name and operation with "
            "an HTML login page (200 text/html)", model="pw3", firmware=FIRMWARE_VERSION,
            tedapi=False, portal=PORTAL_PATHS),
    Profile("solar-only", "a solar-only gateway (Tesla solar inverter, no Powerwall) on firmware "
            "25.26: TEDAPI only with the bearer login (/api/login/Basic as installer with the "
            "gateway password) and authenticated envelopes carrying the V2026_06 signed queries "
            "(PW_TEDAPI_AUTH_MODE=bearer, PW_TEDAPI_API_VERSION=V2026_06); HTTP Basic is refused",
            model="solar", firmware="25.26.2 7c3b1e94", tedapi=True, bearer=True),
)
NAMES: tuple[str, ...] = tuple(profile.name for profile in PROFILES)
DEFAULT = PROFILES[0]


def profile_named(name: str) -> Profile:
    """The profile called `name`; ValueError listing the names if there is none."""
    for profile in PROFILES:
        if profile.name == name:
            return profile
    raise ValueError(f"unknown simulator profile {name!r}; choose one of {', '.join(NAMES)}")
