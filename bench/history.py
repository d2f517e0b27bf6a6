"""The history store over a simulated year: write cost, file size, and /api/history speed.

    python3 bench/history.py [--days 365] [--window 5] [--repeat 20] [--keep DIR]

1. Writes `--days` of one gateway at `--window`-second windows into a fresh store, through
   the same recorder the live feed uses (samples, daily energy, events), with the store's
   clock at the simulated time: a commit and a maintenance turn (downsampling, pruning, the
   size bound, at most 0.25 s of work) every 30 simulated seconds, as the running proxy does
   every PW_HISTORY_COMMIT_SECONDS. The made-up home is proxy/history/synthetic.py. It times
   each window's record() and each commit interval's maintenance and commit.
2. Lets the downsampling finish, then reports the file size and the rows per table.
3. Starts `python3 -m proxy --simulate` on that store and times GET /api/history (default
   points: four powers and the battery level, step chosen by the proxy) for the last day,
   week and year, and /api/history/energy and /api/events for the year, `--repeat` times each
   on one keep-alive connection. Target: each /api/history answer within 100 ms.

Results go to stdout and bench/out/history.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import run  # noqa: E402 (bench/run.py: waiting for a quiet machine)

from proxy.history import synthetic  # noqa: E402 (the repository root first)
from proxy.history.recorder import Recorder  # noqa: E402
from proxy.history.store import Limits, Store  # noqa: E402

TARGET_MS = 100.0
COMMIT_SECONDS = 30
DAY = 86400
QUERIES = (("day", "/api/history?from=-86400"), ("week", "/api/history?from=-604800"),
           ("year", "/api/history?from=-31536000"),
           ("energy, a year by day", "/api/history/energy?from=-31536000"),
           ("events, a year", "/api/events?from=-31536000"))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "p50": percentile(values, 0.5),
            "p99": percentile(values, 0.99), "max": max(values)}


# ---- 1 and 2: a year into the store -----------------------------------------------------

def write_year(folder: Path, days: int, window: int) -> dict[str, Any]:
    clock = {"now": 0.0}
    store = Store(folder / "history.sqlite3", Limits(raw_days=2, commit_seconds=COMMIT_SECONDS),
                  clock=lambda: clock["now"])
    store.open()
    recorder = Recorder(store, {"default": ZoneInfo("America/Los_Angeles")})
    home = synthetic.Home(seed=11, utc_offset=-8 * 3600)
    end = int(time.time()) // window * window
    start = end - days * DAY
    records: list[float] = []
    intervals: list[float] = []
    every = max(1, COMMIT_SECONDS // window)
    began = time.perf_counter()
    for n, one in enumerate(synthetic.windows(home, "default", start, end, window), start=1):
        t0 = time.perf_counter()
        recorder.record(one)
        records.append(time.perf_counter() - t0)
        if n % every == 0:
            clock["now"] = float(one.t)
            t0 = time.perf_counter()
            store.maintain(0.25)
            store.commit()
            intervals.append(time.perf_counter() - t0)
        if n % (30 * DAY // window) == 0:
            print(f"  {n * window // DAY} days written, {time.perf_counter() - began:.0f} s", flush=True)
    wrote = time.perf_counter() - began
    clock["now"] = float(end)
    t0 = time.perf_counter()
    while store.maintain(5.0):
        pass
    store.commit()
    settle = time.perf_counter() - t0
    view = store.describe()
    store.stop()
    return {"windows": len(records), "seconds": round(wrote, 1), "settle_seconds": round(settle, 2),
            "record_us": {k: round(v * 1e6, 1) for k, v in summary(records).items()},
            "interval_ms": {k: round(v * 1e3, 2) for k, v in summary(intervals).items()},
            "per_window_us": round(wrote / len(records) * 1e6, 1),
            "events": recorder.events, "file_bytes": view["file_bytes"], "rows": rows(folder)}


def settle(folder: Path) -> dict[str, Any]:
    """A store written before: opened (migrated in place), rolled up, measured."""
    store = Store(folder / "history.sqlite3", Limits(raw_days=2, commit_seconds=COMMIT_SECONDS))
    store.open()
    t0 = time.perf_counter()
    while store.maintain(5.0):
        pass
    store.commit()
    view = store.describe()
    store.stop()
    return {"reused": str(folder), "settle_seconds": round(time.perf_counter() - t0, 2),
            "migrated_from_schema": view.get("migrated_from_schema"),
            "file_bytes": view["file_bytes"], "rows": rows(folder)}


def rows(folder: Path) -> dict[str, int]:
    import sqlite3

    conn = sqlite3.connect(folder / "history.sqlite3")
    try:
        return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("raw", "minute", "quarter", "hour", "energy", "events")}
    finally:
        conn.close()


# ---- 3: the routes, against the running proxy -----------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()


def settled_proxy(conn: http.client.HTTPConnection, timeout: float = 300.0) -> None:
    """Wait until the proxy's own store has rolled up what it found (the first minutes after
    start it catches up, in small steps between the reads)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = get(conn, "/stats")
        rolled = json.loads(body)["history"]["store"]["rolled_up_to"]["minute"] if status == 200 else 0
        if rolled >= time.time() - 180:
            return
        time.sleep(1.0)


def time_routes(folder: Path, repeat: int, quiet_wait: float) -> dict[str, Any]:
    port = free_port()
    env = {**os.environ, "PW_PORT": str(port), "PW_BIND_ADDRESS": "127.0.0.1", "PW_AUTH_PATH": str(folder),
           "PW_DATA_DIR": str(folder), "PW_CACHE_EXPIRE": "5", "PW_FIRMWARE_CHECK_INTERVAL": "0"}
    proxy = subprocess.Popen([sys.executable, "-m", "proxy", "--simulate"], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results: dict[str, Any] = {}
    try:
        conn = ready(port)
        settled_proxy(conn)
        for name, path in QUERIES:
            others = run.wait_quiet([proxy.pid], quiet_wait)
            conn.close()  # a fresh connection: the wait may have outlasted the idle timeout
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            status, body = get(conn, path)  # once unrecorded (page cache, imports)
            assert status == 200, (path, status, body[:200])
            watch = run.CpuWatch([proxy.pid])
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                status, body = get(conn, path)
                times.append((time.perf_counter() - t0) * 1000)
                assert status == 200, (path, status)
            answer = json.loads(body)
            count = len(answer.get("rows", answer.get("events", [])))
            results[name] = {"path": path, "rows": count, "step": answer.get("step"), "bytes": len(body),
                             "other_cpu_before": round(others, 1),
                             "other_cpu": round(watch.other_percent(), 1),
                             **{k: round(v, 2) for k, v in summary(times).items()}}
    finally:
        proxy.terminate()
        proxy.wait(20)
    return results


def ready(port: int, timeout: float = 60.0) -> http.client.HTTPConnection:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            if get(conn, "/api/history?from=-60")[0] == 200:
                return conn
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the proxy never answered /api/history")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--wait-quiet", type=float, default=120.0,
                        help="seconds to wait for other processes to go quiet before each route")
    parser.add_argument("--keep", help="write the store into this folder and keep it")
    parser.add_argument("--reuse", help="time the routes on a store written before into this folder "
                                        "(migrated and rolled up first), instead of writing one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pwproxy-history-") as tmp:
        folder = Path(args.reuse or args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        if args.reuse:
            written = settle(folder)
        else:
            print(f"writing {args.days} days of one gateway at {args.window}-s windows into {folder}")
            written = write_year(folder, args.days, args.window)
        print(json.dumps(written, indent=2))
        print("timing the routes")
        routes = time_routes(folder, args.repeat, args.wait_quiet)
    report = {"days": args.days, "window": args.window, "written": written, "routes": routes,
              "target_ms": TARGET_MS}
    for name, r in routes.items():
        timed = name in ("day", "week", "year")
        verdict = ("PASS" if r["max"] <= TARGET_MS else "FAIL") if timed else ""
        print(f"  {name:24} {r['rows']:>6} rows, step {r['step']}: median {r['p50']:.1f} ms, "
              f"p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms (others {r['other_cpu']:.0f} % of a "
              f"core)  {verdict}")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "history.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
