"""Command line: python3 -m proxy.simulator [--bind ...] [--port ...] [...]."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from .layout import MODELS
from .profiles import NAMES, PROFILES
from .simulator import DEFAULT_GW_PWD, DEFAULT_PASSWORD, Simulator

_EPILOG = "\n".join([
    "passwords (what a client configures: PW_PASSWORD, PW_GW_PWD or a gateways file's",
    "password / gw_pwd):",
    f"  customer password  {DEFAULT_PASSWORD!r} (--password), or the last five characters of",
    f"                     the gateway password ({DEFAULT_GW_PWD[-5:]!r}), as on a real gateway",
    f"  gateway password   {DEFAULT_GW_PWD!r} (--gw-pwd): TEDAPI (HTTP Basic), and the installer",
    "                     login of the bearer profile (solar-only)",
    "  a profile's clients use the gateway password (TEDAPI) or the customer password;",
    "  see gateways.sim.yaml for three simulators behind one proxy",
    "",
    "profiles:",
    *(f"  {p.name}: {p.summary}" for p in PROFILES),
])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m proxy.simulator", description="Simulated Tesla Powerwall gateway (HTTPS).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG)
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8443, help="port (0 = any free port)")
    parser.add_argument("--password", default=DEFAULT_PASSWORD,
                        help="customer password for the local API (default: %(default)s)")
    parser.add_argument("--gw-pwd", default=DEFAULT_GW_PWD,
                        help="gateway (QR sticker) password for TEDAPI (default: %(default)s)")
    parser.add_argument("--model", choices=MODELS, default=None,
                        help="Powerwall generation (default: the profile's, pw3 for default)")
    parser.add_argument("--profile", choices=NAMES, default="default",
                        help="gateway personality: " + ", ".join(NAMES))
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible numbers")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sim = Simulator(bind=args.bind, port=args.port, password=args.password,
                    gw_pwd=args.gw_pwd, model=args.model, seed=args.seed, profile=args.profile)
    try:
        sim.start()
    except OSError as exc:
        print(f"cannot listen on {args.bind}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"Simulated Powerwall gateway listening on {sim.url}", flush=True)
    if sim.profile.name != "default":
        # stderr, so the one stdout line scripts read stays the same
        mode = "gateway password (TEDAPI)" if sim.profile.tedapi else "customer password"
        if sim.profile.bearer:
            mode += " and the bearer login (PW_TEDAPI_AUTH_MODE=bearer, PW_TEDAPI_API_VERSION=V2026_06)"
        print(f"profile {sim.profile.name}: {sim.profile.summary}; clients connect with the "
              f"{mode}", file=sys.stderr, flush=True)
    try:
        while not done.wait(1.0):
            pass  # a timed wait keeps the main thread responsive to signals
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
