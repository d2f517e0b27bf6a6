"""Benchmark live push: 1,000 SSE + 100 WebSocket listeners on one gateway while wrk polls.

    python3 bench/push.py                      # defaults: 1000 SSE, 100 WS, 64 wrk connections, 30 s
    python3 bench/push.py --sse 200 --ws 20 --duration 20

Starts the simulator (bench/simtap.py) and the proxy (PW_CACHE_EXPIRE=5, PW_MAX_STREAMS large
enough for the listeners), then:

1. wrk polls /aggregates at 64 keep-alive connections with no listener (the baseline);
2. a listener process opens the SSE (/events) and WebSocket (/ws/aggregate) connections with
   plain non-blocking sockets in one selector loop, stamps every read with the wall clock
   before parsing anything, and keeps them open;
3. wrk polls /aggregates again at 64 connections while everyone listens; meanwhile the
   simulator's request counts are sampled every 100 ms.

Push delay is the receive time minus the event id, which the proxy sets to its publish time
(milliseconds since the epoch, taken right after the cache refresh the push carries). A
WebSocket frame is matched to its event by its payload. "To the last listener" is, per push,
the delay of the listener that got it last. Results go to bench/out/push.json and .md.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import run  # bench/run.py: processes, wrk, /proc and simulator sampling

BENCH = Path(__file__).resolve().parent
TARGET_P99_MS = 100.0
TARGET_RSS_MB = 70.0
TARGET_RPS_LOSS = 0.20


# --------------------------------------------------------------------------- the listeners

def _connect(port: int, request: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(request)
    return sock


def listen(port: int, sse: int, ws: int, seconds: float, out: Path) -> None:
    """Child process: open the listeners, read for `seconds`, write what arrived when."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, sse + ws + 256)), hard))
    sel = selectors.DefaultSelector()
    reads: dict[int, list[tuple[float, bytes]]] = {}
    kinds: dict[int, str] = {}
    failed = 0
    for i in range(sse + ws):
        if i < sse:
            request = b"GET /events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"
            kind = "sse"
        else:
            key = base64.b64encode(os.urandom(16))
            request = (b"GET /ws/aggregate HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
                       b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
                       + key + b"\r\n\r\n")
            kind = "ws"
        try:
            sock = _connect(port, request)
        except OSError:
            failed += 1
            continue
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, i)
        reads[i], kinds[i] = [], kind
        if i % 100 == 99:
            time.sleep(0.05)  # let the accept queue drain
    print(f"READY {len(reads)} {failed}", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            stamp = time.time()  # before any work on this socket
            try:
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
            except OSError:
                data = b""
            if not data:
                sel.unregister(key.fileobj)
                continue
            reads[key.data].append((stamp, data))
    out.write_text(json.dumps({"failed": failed, "listeners": [
        {"kind": kinds[i], "reads": [(t, d.hex()) for t, d in reads[i]]} for i in reads]}))


def _sse_events(reads: list[tuple[float, bytes]]) -> list[tuple[float, str, bytes]]:
    """(receive time, id, data) of each event, timed by the read that completed it."""
    buf = b""
    events = []
    for stamp, data in reads:
        buf += data
        if b"\r\n\r\n" in buf and buf.startswith(b"HTTP/"):
            buf = buf.split(b"\r\n\r\n", 1)[1]
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            fields = dict(line.split(b": ", 1) for line in block.split(b"\n") if b": " in line
                          and not line.startswith(b":"))
            if b"data" in fields and b"id" in fields:
                events.append((stamp, fields[b"id"].decode(), fields[b"data"]))
    return events


def _ws_messages(reads: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
    """(receive time, payload) of each text frame the server sent."""
    buf = b""
    out = []
    upgraded = False
    for stamp, data in reads:
        buf += data
        if not upgraded:
            if b"\r\n\r\n" not in buf:
                continue
            buf = buf.split(b"\r\n\r\n", 1)[1]
            upgraded = True
        while len(buf) >= 2:
            size, offset = buf[1] & 0x7F, 2
            if size == 126:
                if len(buf) < 4:
                    break
                size, offset = int.from_bytes(buf[2:4], "big"), 4
            elif size == 127:
                if len(buf) < 10:
                    break
                size, offset = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < offset + size:
                break
            if buf[0] & 0x0F == 0x1:
                out.append((stamp, buf[offset:offset + size]))
            buf = buf[offset + size:]
    return out


def push_delays(raw: dict[str, Any], since: float, until: float) -> dict[str, Any]:
    """Delays of every delivery of the pushes published between `since` and `until` (wall
    clock), and per push to its last listener."""
    by_data: dict[bytes, str] = {}
    deliveries: dict[str, list[float]] = {}
    parsed = []
    for listener in raw["listeners"]:
        reads = [(t, bytes.fromhex(h)) for t, h in listener["reads"]]
        if listener["kind"] == "sse":
            events = _sse_events(reads)
            for _, event_id, data in events:
                by_data[data] = event_id
            parsed.append([(t, event_id) for t, event_id, _ in events])
        else:
            parsed.append([(t, data) for t, data in _ws_messages(reads)])  # type: ignore[misc]
    unmatched = 0
    for items in parsed:
        for t, key in items:
            event_id = key if isinstance(key, str) else by_data.get(key)
            if event_id is None:
                unmatched += 1
                continue
            if since <= int(event_id) / 1000 <= until:
                deliveries.setdefault(event_id, []).append((t - int(event_id) / 1000) * 1000)
    every = sorted(d for ds in deliveries.values() for d in ds)
    last = sorted(max(ds) for ds in deliveries.values())
    counts = [len(ds) for ds in deliveries.values()]
    return {
        "pushes": len(deliveries),
        "deliveries": len(every),
        "listeners_per_push_min": min(counts) if counts else 0,
        "listeners_per_push_max": max(counts) if counts else 0,
        "unmatched_ws_frames": unmatched,
        "all_p50_ms": _pct(every, 50), "all_p99_ms": _pct(every, 99), "all_max_ms": max(every, default=None),
        "last_p50_ms": _pct(last, 50), "last_p99_ms": _pct(last, 99), "last_max_ms": max(last, default=None),
    }


def _pct(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]


# --------------------------------------------------------------------------- the run

def _wrk(wrk: str, base: str, conns: int, duration: int, pid: int) -> dict[str, Any]:
    before = run.proc_sample(pid)
    result = run.run_wrk(run.wrk_command(wrk, base, "/aggregates", conns, duration), duration)
    after = run.proc_sample(pid)
    cpu = (after.cpu_s - before.cpu_s) if before and after else None
    return {"rps": result.rps, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
            "errors": result.socket_errors, "non_2xx": result.non_2xx,
            "cpu_s": cpu, "cpu_pct": None if cpu is None else 100 * cpu / duration,
            "rss_mib": after.rss_mib if after else None, "threads": after.threads if after else None}


def _snapshot(pid: int) -> dict[str, Any]:
    s = run.proc_sample(pid)
    return {"rss_mib": s.rss_mib, "threads": s.threads, "fds": s.fds} if s else {}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 bench/push.py", description=__doc__.split("\n")[0])
    p.add_argument("--sse", type=int, default=1000)
    p.add_argument("--ws", type=int, default=100)
    p.add_argument("--conns", type=int, default=64, help="wrk connections polling /aggregates")
    p.add_argument("--duration", type=int, default=30, help="seconds per wrk run (default 30: 6 windows)")
    p.add_argument("--cache-expire", type=int, default=5)
    p.add_argument("--out", default=str(BENCH / "out"))
    p.add_argument("--listen", nargs=4, metavar=("PORT", "SSE", "WS", "SECONDS"), help=argparse.SUPPRESS)
    p.add_argument("--listen-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.listen:
        port, sse, ws, seconds = args.listen
        listen(int(port), int(sse), int(ws), float(seconds), Path(args.listen_out))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wrk = run.ensure_wrk(None)
    started: list[run.Started] = []
    with run.owned(started), tempfile.TemporaryDirectory(prefix="pwbench-push-") as tmp:
        sim, sim_url = run.start_simulator(out, plain=False)
        started.append(sim)
        port = run.free_port()
        env = run.proxy_env({
            "PW_HOST": sim_url.split("://", 1)[1], "PW_GW_PWD": run.SIM_GW_PWD, "PW_PORT": str(port),
            "PW_BIND_ADDRESS": "127.0.0.1", "PW_CACHE_EXPIRE": str(args.cache_expire),
            "PW_AUTH_PATH": tmp, "PW_CACHE_FILE": os.path.join(tmp, ".powerwall"),
            "PW_MAX_STREAMS": str(args.sse + args.ws + 100)})
        proxy = run.start_proxy(out, env, name="proxy-push")
        started.append(proxy)
        base = f"http://127.0.0.1:{port}"
        if run.wait_status(base + "/soe", 60, proc=proxy.proc) is None:
            raise SystemExit("the proxy never answered /soe with 200")
        pid = proxy.proc.pid
        run.run_wrk(run.wrk_command(wrk, base, "/aggregates", args.conns, 3), 3)  # warm-up
        idle = _snapshot(pid)
        run.log(f"baseline: wrk /aggregates at {args.conns} connections, {args.duration} s, no listener")
        baseline = _wrk(wrk, base, args.conns, args.duration, pid)
        run.log(f"  {baseline['rps']:.0f} req/s")

        listen_for = args.duration + 25
        raw_path = out / "push-listeners.json"
        child = subprocess.Popen(
            [sys.executable, str(Path(__file__)), "--listen", str(port), str(args.sse), str(args.ws),
             str(listen_for), "--listen-out", str(raw_path)],
            stdout=subprocess.PIPE, text=True, start_new_session=True)
        started.append(run.Started(child, (out / "push-listeners.log").open("w")))
        assert child.stdout is not None
        ready = child.stdout.readline().split()
        run.log(f"listeners connected: {ready[1:]} (connected, failed)")
        time.sleep(args.cache_expire + 1)  # everyone has had a first push
        listening = _snapshot(pid)
        since = time.time()
        sampler = run.Sampler(sim_url, args.duration + 30)
        sampler.start()
        run.log(f"with listeners: wrk /aggregates at {args.conns} connections, {args.duration} s")
        loaded = _wrk(wrk, base, args.conns, args.duration, pid)
        until = time.time()
        sampler.stop()
        run.log(f"  {loaded['rps']:.0f} req/s")
        child.wait(timeout=listen_for + 60)
        time.sleep(2)
        run.log("baseline again, the listeners gone")
        after = _wrk(wrk, base, args.conns, args.duration, pid)
        run.log(f"  {after['rps']:.0f} req/s")
        stats = json.loads(run.http_request(base + "/stats")[1])
        gateway = run.analyse_gateway(sampler.samples, float(args.cache_expire), float(args.duration))
        delays = push_delays(json.loads(raw_path.read_text()), since, until)
        raw_path.unlink()
    result = {
        "machine": run.machine(), "sse": args.sse, "ws": args.ws, "conns": args.conns,
        "duration_s": args.duration, "cache_expire_s": args.cache_expire,
        "connected": ready[1:], "idle": idle, "listening": listening,
        "baseline": baseline, "with_listeners": loaded, "baseline_after": after, "push": delays,
        "server": stats.get("server"), "streams": stats.get("streams"),
        "gateway": {"max_per_resource_per_window": gateway.max_per_window,
                    "max_per_resource_at_expiry": gateway.at_expiry,
                    "windows": gateway.windows, "full_windows": gateway.full_windows},
    }
    (out / "push.json").write_text(json.dumps(result, indent=2))
    report = summary(result)
    (out / "push.md").write_text(report)
    print(report)
    return 0


def summary(r: dict[str, Any]) -> str:
    d, b, w, a = r["push"], r["baseline"], r["with_listeners"], r["baseline_after"]
    reference = (b["rps"] + a["rps"]) / 2  # before and after: the machine drifts
    loss = 1 - w["rps"] / reference if reference else None
    gw_max = max(r["gateway"]["max_per_resource_per_window"].values(), default=None)
    rss_mb = w["rss_mib"] * 1.048576 if w["rss_mib"] else None
    idle_threads, listening_threads = r["idle"].get("threads", 0), r["listening"].get("threads", 99)

    def f(x: Any, spec: str = ".1f") -> str:
        return "-" if x is None else format(x, spec)

    lines = [
        f"{r['sse']} SSE + {r['ws']} WebSocket listeners on one gateway, wrk /aggregates at "
        f"{r['conns']} connections for {r['duration_s']} s, PW_CACHE_EXPIRE={r['cache_expire_s']}",
        "",
        "| measure | no listeners (before) | with listeners | no listeners (after) |",
        "|---|---|---|---|",
        f"| /aggregates req/s | {f(b['rps'], '.0f')} | {f(w['rps'], '.0f')} | {f(a['rps'], '.0f')} |",
        f"| /aggregates p50 / p99 ms | {f(b['p50_ms'], '.2f')} / {f(b['p99_ms'], '.2f')} | "
        f"{f(w['p50_ms'], '.2f')} / {f(w['p99_ms'], '.2f')} | "
        f"{f(a['p50_ms'], '.2f')} / {f(a['p99_ms'], '.2f')} |",
        f"| proxy CPU % of one core | {f(b['cpu_pct'], '.0f')} | {f(w['cpu_pct'], '.0f')} | "
        f"{f(a['cpu_pct'], '.0f')} |",
        f"| proxy RSS MiB (after the run) | {f(b['rss_mib'])} | {f(w['rss_mib'])} | {f(a['rss_mib'])} |",
        f"| proxy threads (idle before: {r['idle'].get('threads')}; listening, before load: "
        f"{r['listening'].get('threads')}) | {b['threads']} | {w['threads']} | {a['threads']} |",
        "",
        f"Pushes during the loaded run: {d['pushes']}, deliveries {d['deliveries']} "
        f"({d['listeners_per_push_min']}–{d['listeners_per_push_max']} listeners per push).",
        f"Push delay, every delivery: p50 {f(d['all_p50_ms'])} ms, p99 {f(d['all_p99_ms'])} ms, "
        f"max {f(d['all_max_ms'])} ms.",
        f"Push delay to the last listener of each push: p50 {f(d['last_p50_ms'])} ms, "
        f"p99 {f(d['last_p99_ms'])} ms, max {f(d['last_max_ms'])} ms.",
        f"Gateway: most requests for one resource in one window {f(gw_max, 'd')}; per resource: "
        + ", ".join(f"{k} {v}" for k, v in sorted(r["gateway"]["max_per_resource_per_window"].items())),
        "",
        "| target | result | |",
        "|---|---|---|",
        f"| p99 push delay to the last listener <= {TARGET_P99_MS:.0f} ms | {f(d['last_p99_ms'])} ms | "
        f"{_verdict(d['last_p99_ms'], TARGET_P99_MS)} |",
        f"| RSS <= {TARGET_RSS_MB:.0f} MB | {f(rss_mb)} MB | {_verdict(rss_mb, TARGET_RSS_MB)} |",
        f"| threads flat (listening before load -> after load) | {listening_threads} -> {w['threads']} "
        f"(idle {idle_threads}) | {'PASS' if w['threads'] == listening_threads else 'FAIL'} |",
        f"| polling within 20 % of no listeners | {f(None if loss is None else 100 * loss, '.1f')} % fewer | "
        f"{_verdict(loss, TARGET_RPS_LOSS)} |",
        f"| one gateway request per resource per window | max {f(gw_max, 'd')} | "
        f"{'PASS' if gw_max == 1 else 'FAIL'} |",
    ]
    return "\n".join(lines) + "\n"


def _verdict(value: float | None, limit: float) -> str:
    return "-" if value is None else ("PASS" if value <= limit else "FAIL")


if __name__ == "__main__":
    sys.exit(main())
