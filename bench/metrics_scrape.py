"""How much a GET /metrics scrape costs: N scrapes on one keep-alive connection.

    python3 bench/metrics_scrape.py [--scrapes 500] [--gateways 1]

Starts `python3 -m proxy --simulate [N]` on a free loopback port, waits for data, scrapes
a few times unrecorded, then times each of N scrapes (request sent to last byte read) and
prints the median, p95, p99 and mean in ms, the body size, and the gateway calls the proxy
made during the timed scrapes (from /metrics itself: they come from the cache windows that
passed, not from the scrapes). Target: a scrape under 5 ms.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway_calls(body: str) -> float:
    return sum(float(v) for v in re.findall(r"^powerwall_proxy_gateway_requests_total\{[^}]*\} (\S+)$",
                                             body, re.M))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scrapes", type=int, default=500)
    parser.add_argument("--gateways", type=int, default=1)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pwproxy-bench-") as tmp:
        env = {**os.environ, "PW_PORT": str(port), "PW_BIND_ADDRESS": "127.0.0.1",
               "PW_AUTH_PATH": tmp, "PW_CACHE_EXPIRE": "5"}
        command = [sys.executable, "-m", "proxy", "--simulate", str(args.gateways)]
        proxy = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        try:
            conn = _ready(port)
            for _ in range(20):  # warm: imports, first gateway reads
                _scrape(conn)
            before = gateway_calls(_scrape(conn)[1])
            times = []
            size = 0
            for _ in range(args.scrapes):
                started = time.perf_counter()
                status, body = _scrape(conn)
                times.append((time.perf_counter() - started) * 1000)
                assert status == 200, status
                size = len(body)
            after = gateway_calls(_scrape(conn)[1])
        finally:
            proxy.terminate()
            proxy.wait(20)
    times.sort()
    p95 = times[int(0.95 * (len(times) - 1))]
    p99 = times[int(0.99 * (len(times) - 1))]
    median = statistics.median(times)
    print(f"GET /metrics, {args.gateways} gateway(s), {args.scrapes} scrapes on one keep-alive "
          f"connection, {size} bytes each")
    print(f"  median {median:.2f} ms   p95 {p95:.2f} ms   p99 {p99:.2f} ms   "
          f"mean {statistics.fmean(times):.2f} ms   max {times[-1]:.2f} ms")
    print(f"  gateway calls during the scrapes: {after - before:.0f} (the windows that passed)")
    verdict = "PASS" if median < TARGET_MS else "FAIL"
    print(f"  target: median under {TARGET_MS:.0f} ms: {verdict}")
    return 0 if verdict == "PASS" else 1


def _ready(port: int) -> http.client.HTTPConnection:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/soe")
            reply = conn.getresponse()
            reply.read()
            if reply.status == 200:
                return conn
            conn.close()
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("the proxy never answered /soe with 200")


def _scrape(conn: http.client.HTTPConnection) -> tuple[int, str]:
    conn.request("GET", "/metrics")
    reply = conn.getresponse()
    return reply.status, reply.read().decode()


if __name__ == "__main__":
    sys.exit(main())
