"""Side by side in one run: this tree's proxy, another tree's, and nginx serving the same body.

    git worktree add /tmp/before <commit>          # the proxy to compare with
    python3 bench/compare.py --baseline /tmp/before [--rounds 5] [--duration 10] [--conns 64]

One simulator (bench/simtap.py) serves both proxies, each in local mode (the customer
password) with the same PW_CACHE_EXPIRE. nginx (one worker process, no access log) serves the
body the proxy answered on the route as a static file, with the same Content-Type and CORS
header. Rounds interleave the three, in a rotating order, so that a busy moment on a shared
machine hits all of them alike; each cell records the CPU that processes outside the benchmark
used. The report gives, per target, the median req/s and the median p99 over the rounds, the
ratios, and RSS and threads of both proxies; it is written to compare.md and compare.json in
--out. Both proxies run under this Python (run this script with a venv's python to measure
them with only requirements.txt installed, as the Docker image has it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402 - the benchmark's own helpers, next to this file

TARGET_SPEEDUP = 1.5  # req/s against the baseline proxy
TARGET_NGINX_SHARE = 0.25  # req/s against nginx
TARGET_P99_MS = 25.0  # median p99 of this tree's proxy
SIM_PASSWORD = "password"  # the simulator's customer password (local mode)
NGINX_CONF = """worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    server {{
        listen 127.0.0.1:{port};
        root {prefix}/www;
        location = {route} {{
            default_type {content_type};
            add_header Access-Control-Allow-Origin *;
        }}
    }}
}}
"""


@dataclass
class Target:
    name: str
    base: str
    proc: subprocess.Popen[Any]
    pids: list[int] = field(default_factory=list)  # whose CPU is not "other"
    samples: dict[str, run.ProcSample | None] = field(default_factory=dict)


@dataclass
class Result:
    round: int
    target: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    non_2xx: int
    other_cpu_pct: float


def start_proxy(tree: Path, name: str, sim_netloc: str, expire: int, tmp: Path, out: Path) -> Target:
    port = run.free_port()
    auth = tmp / name
    auth.mkdir()
    env = run.proxy_env({"PW_HOST": sim_netloc, "PW_PASSWORD": SIM_PASSWORD, "PW_PORT": str(port),
                         "PW_CACHE_EXPIRE": str(expire), "PW_BIND_ADDRESS": "127.0.0.1",
                         "PW_AUTH_PATH": str(auth), "PW_CACHE_FILE": str(auth / ".powerwall"),
                         "PW_DATA_DIR": str(auth / "data")})  # the history store, on by default
    log_file = (out / f"compare-{name}.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "proxy"], cwd=tree, env=env, stdout=log_file,
                            stderr=subprocess.STDOUT, start_new_session=True)
    return Target(name, f"http://127.0.0.1:{port}", proc, [proc.pid])


def start_nginx(nginx: str, route: str, body: bytes, content_type: str, tmp: Path) -> Target:
    prefix = tmp / "nginx"
    (prefix / "www" / Path(route).parent.relative_to("/")).mkdir(parents=True)
    (prefix / "www" / route.lstrip("/")).write_bytes(body)
    for path in [prefix, *prefix.rglob("*")]:  # nginx's worker runs as nobody
        path.chmod(0o755 if path.is_dir() else 0o644)
    tmp.chmod(0o755)
    port = run.free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, route=route, content_type=content_type))
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(prefix)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    return Target("nginx", f"http://127.0.0.1:{port}", proc, [proc.pid])


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _find_nginx() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def ensure_nginx(explicit: str | None) -> str:
    found = explicit or _find_nginx()
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        run.log("nginx not found; installing the Debian package (apt-get install -y nginx) ...")
        subprocess.run(["apt-get", "install", "-y", "-q", "nginx"], check=False, stdout=subprocess.DEVNULL)
        found = _find_nginx()
        if found:
            return found
    run.log("This comparison needs nginx (Debian: apt-get install nginx), or --nginx PATH.")
    sys.exit(2)


def measure(wrk: str, target: Target, others: list[int], args: argparse.Namespace, rnd: int) -> Result:
    watch = run.CpuWatch(others)
    cmd = run.wrk_command(wrk, target.base, args.route, args.conns, args.duration)
    out = run.run_wrk(cmd, args.duration)
    return Result(rnd, target.name, out.rps, out.p50_ms, out.p99_ms, out.socket_errors, out.non_2xx,
                  watch.other_percent())


def summary(results: list[Result], names: list[str]) -> dict[str, dict[str, float]]:
    table = {}
    for name in names:
        mine = [r for r in results if r.target == name]
        table[name] = {"rps": statistics.median(r.rps for r in mine),
                       "p99_ms": statistics.median(r.p99_ms for r in mine),
                       "p50_ms": statistics.median(r.p50_ms for r in mine),
                       "errors": sum(r.errors + r.non_2xx for r in mine),
                       "other_cpu_pct_max": max(r.other_cpu_pct for r in mine)}
    return table


def report(args: argparse.Namespace, results: list[Result], targets: list[Target], out: Path) -> int:
    names = [t.name for t in targets]
    med = summary(results, names)
    ours, base, nginx = (med[n] for n in names)
    speedup, share = ours["rps"] / base["rps"], ours["rps"] / nginx["rps"]
    p99 = ours["p99_ms"]
    checks = [(f"≥ {TARGET_SPEEDUP:g}× the baseline's req/s", speedup >= TARGET_SPEEDUP, f"{speedup:.2f}×"),
              (f"≥ {TARGET_NGINX_SHARE:g} of nginx's req/s", share >= TARGET_NGINX_SHARE, f"{share:.2f}"),
              (f"median p99 ≤ {TARGET_P99_MS:g} ms", p99 <= TARGET_P99_MS, f"{p99:.2f} ms")]
    lines = [f"# Side by side: {args.route} at {args.conns} keep-alive connections", "",
             f"{run.machine()['date']}; {args.rounds} rounds of {args.duration} s per target, interleaved; "
             f"this tree {run.machine()['commit']}; baseline {args.baseline}", "",
             "| round | target | req/s | p50 ms | p99 ms | errors | non-2xx | other CPU % |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.round} | {r.target} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} | "
              f"{r.non_2xx} | {r.other_cpu_pct:.0f} |" for r in results]
    lines += ["", "| target | median req/s | median p50 ms | median p99 ms | errors | most other CPU % |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {n} | {m['rps']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['errors']} | "
              f"{m['other_cpu_pct_max']:.0f} |" for n, m in med.items()]
    lines += ["", "| proxy | RSS MiB before → after | threads before → after |", "|---|---|---|"]
    for t in targets[:2]:
        a, b = t.samples.get("before"), t.samples.get("after")
        if a and b:
            lines.append(f"| {t.name} | {a.rss_mib:.1f} → {b.rss_mib:.1f} | {a.threads} → {b.threads} |")
    lines += ["", "| target | result | measured |", "|---|---|---|"]
    lines += [f"| {what} | {'PASS' if ok else 'FAIL'} | {shown} |" for what, ok, shown in checks]
    text = "\n".join(lines) + "\n"
    (out / "compare.md").write_text(text)
    (out / "compare.json").write_text(json.dumps({"results": [asdict(r) for r in results], "median": med,
                                                  "machine": run.machine()}, indent=1))
    print(text)
    return 0 if all(ok for _, ok, _ in checks) else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 bench/compare.py", description=__doc__.split("\n")[0])
    p.add_argument("--baseline", required=True, type=Path, help="a checkout of the proxy to compare with")
    p.add_argument("--route", default="/aggregates", help="a cached route (default /aggregates)")
    p.add_argument("--conns", type=int, default=64, help="keep-alive connections (default 64)")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--rounds", type=int, default=5, help="rounds over the three targets (default 5)")
    p.add_argument("--cache-expire", type=int, default=5, help="PW_CACHE_EXPIRE of both proxies")
    p.add_argument("--warmup", type=int, default=3, help="unrecorded seconds per target first")
    p.add_argument("--wait-quiet", type=int, default=120, metavar="SECONDS",
                   help="first wait up to SECONDS for other processes to go idle (0 = don't)")
    p.add_argument("--wrk", help="path to wrk")
    p.add_argument("--nginx", help="path to nginx")
    p.add_argument("--out", type=Path, default=run.BENCH / "out")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    wrk, nginx = run.ensure_wrk(args.wrk), ensure_nginx(args.nginx)
    started: list[run.Started] = []
    with run.owned(started), tempfile.TemporaryDirectory(prefix="pwcompare-") as tmp_name:
        tmp = Path(tmp_name)
        sim, sim_url = run.start_simulator(args.out, plain=False)
        started.append(sim)
        netloc = urllib.parse.urlsplit(sim_url).netloc
        proxies = [start_proxy(run.REPO, "this tree", netloc, args.cache_expire, tmp, args.out),
                   start_proxy(args.baseline.resolve(), "baseline", netloc, args.cache_expire, tmp, args.out)]
        started += [run.Started(t.proc, open(os.devnull, "w")) for t in proxies]  # noqa: SIM115
        for t in proxies:
            if run.wait_status(t.base + args.route, 90, 0.05, t.proc) is None:
                run.log(f"{t.name} never answered 200 on {args.route}; see {args.out}")
                return 2
        status, body = run.http_request(proxies[0].base + args.route)
        kind = "application/json" if body[:1] in (b"{", b"[") else "text/plain"
        ngx = start_nginx(nginx, args.route, body, kind, tmp)
        started.append(run.Started(ngx.proc, open(os.devnull, "w")))  # noqa: SIM115
        if run.wait_status(ngx.base + args.route, 30, 0.05, ngx.proc) is None:
            run.log("nginx never answered 200")
            return 2
        ngx.pids += children(ngx.proc.pid)
        targets = [*proxies, ngx]
        ours = [sim.proc.pid] + [p for t in targets for p in t.pids]
        if args.wait_quiet:
            run.log(f"waiting up to {args.wait_quiet} s for the machine to be quiet ...")
            run.log(f"others use {run.wait_quiet(ours, args.wait_quiet):.0f}% of a core")
        for t in targets:
            run.run_wrk(run.wrk_command(wrk, t.base, args.route, args.conns, args.warmup), args.warmup)
            t.samples["before"] = run.proc_sample(t.proc.pid)
        results = []
        for rnd in range(1, args.rounds + 1):
            order = targets[rnd % 3:] + targets[:rnd % 3]
            for t in order:
                cell = measure(wrk, t, ours, args, rnd)
                results.append(cell)
                run.log(f"round {rnd} {t.name}: {cell.rps:.0f} req/s, p99 {cell.p99_ms:.2f} ms, "
                        f"others {cell.other_cpu_pct:.0f}%")
        time.sleep(1.0)
        for t in targets:
            t.samples["after"] = run.proc_sample(t.proc.pid)
        return report(args, results, targets, args.out)


if __name__ == "__main__":
    sys.exit(main())
