"""The project's gateway simulator, plus a per-resource request count for the benchmark.

    python3 bench/simtap.py --port 0

Runs `proxy.simulator.Simulator` exactly as `python3 -m proxy.simulator` does and
prints the same "listening on https://HOST:PORT" line. The only addition: in full
TEDAPI mode every data query is a `POST /tedapi/v1`, so the simulator's per-path
count cannot tell a status query from a config query. This wrapper decodes each
TEDAPI body with the simulator's own parser and adds a `"resources"` map to
`GET /sim/stats`:

    {"total": N, "paths": {...}, "resources": {"/tedapi/v1 query:DeviceControllerQuery#587a": n,
                                               "/tedapi/v1 config:config.json": n,
                                               "/api/meters/aggregates": n, ...}}

A resource is the path for every plain request and path + message kind + query
name + a digest of the query text (+ the recipient when it is neither the gateway
itself nor already in the path) for TEDAPI posts.
`POST /sim/reset` zeroes it along with the simulator's own counters. Nothing in
the simulator is modified on disk; if its internals change so that the tap
cannot attach, the simulator still runs and only `"paths"` is reported.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MAX_RESOURCES = 500


class ResourceCounter:
    """Bounded, thread-safe count per resource key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def count(self, key: str) -> None:
        with self._lock:
            if key not in self._counts and len(self._counts) >= MAX_RESOURCES:
                key = "other"
            self._counts[key] = self._counts.get(key, 0) + 1

    def reset(self) -> None:
        with self._lock:
            self._counts = {}

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def resource_key(request: Any, parse: Callable[[bytes], Any] | None, gateway_din: str) -> str:
    """What one gateway request asked for (see the module docstring)."""
    path = str(request.path)
    if parse is None or request.method != "POST" or not path.startswith("/tedapi/") or not request.body:
        return path
    try:
        message = parse(request.body)
    except Exception:  # not a TEDAPI message: the simulator answers 400, count it by path
        return path
    what = message.query_name or message.file or ""
    if message.query:
        # One operation name can carry different documents (pypowerwall's basic and
        # full DeviceControllerQuery): tell them apart by a digest of the query.
        digest = zlib.crc32(message.query.encode()) & 0xFFFF
        what += f"#{digest:04x}"
    key = f"{path} {message.kind}:{what}" if what else f"{path} {message.kind}"
    recipient = str(message.recipient or "")
    if recipient and recipient != gateway_din and recipient not in path:
        key += f" @{recipient}"
    return key


def attach(sim: Any) -> bool:
    """Wrap the simulator's request handler and stats; False if its shape is not as expected."""
    try:
        wire = importlib.import_module("proxy.simulator.tedapi_wire")
        parse: Callable[[bytes], Any] | None = wire.parse_request
        gateway, counter = sim.gateway, sim.counter
        din = str(sim.site.layout.din)
        handle, snapshot, reset = gateway.handle, counter.snapshot, counter.reset
        control = importlib.import_module("proxy.simulator.gateway").is_control
    except Exception as exc:
        print(f"simtap: per-resource counting unavailable ({type(exc).__name__}: {exc})",
              file=sys.stderr, flush=True)
        return False
    resources = ResourceCounter()

    def tapped_handle(request: Any) -> Any:
        if not control(request.path):
            resources.count(resource_key(request, parse, din))
        return handle(request)

    def tapped_snapshot() -> dict[str, Any]:
        data = dict(snapshot())
        data["resources"] = resources.snapshot()
        return data

    def tapped_reset() -> None:
        reset()
        resources.reset()

    gateway.handle = tapped_handle
    counter.snapshot = tapped_snapshot
    counter.reset = tapped_reset
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 bench/simtap.py", description=__doc__.split("\n")[0])
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", default="pw3")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    simulator_cls = importlib.import_module("proxy.simulator").Simulator
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sim = simulator_cls(bind=args.bind, port=args.port, model=args.model, seed=args.seed)
    tapped = attach(sim)
    try:
        sim.start()
    except OSError as exc:
        print(f"cannot listen on {args.bind}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"Simulated Powerwall gateway listening on {sim.url} (resource tap: {'on' if tapped else 'off'})",
          flush=True)
    try:
        while not done.wait(1.0):
            pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
