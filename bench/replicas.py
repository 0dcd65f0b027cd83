"""Gateway replicas: 1, 2 and 4 processes sharing one port, with Redis-backed limits on.

Each setting starts `guide-align serve --workers N` in front of a fast stub upstream, with
`REDIS_URL` pointing at a real `redis-server` started here and a per-caller requests-per-minute
limit high enough never to refuse, so every request still counts against Redis (the limit path
replicas share). The processes share nothing else but the library files and the index on disk.
Reported per setting: throughput, p50 / p99 latency (JSON answers; time to the first chunk for
streamed ones), and memory per process (RSS and PSS, which counts shared pages once) after the load.

On this machine (2 cores) more processes than cores cannot add throughput: the figures show the
cost of replicas here, and the scaling a machine with more cores would get is bounded by it.

    .venv/bin/python bench/replicas.py [--processes 1,2,4] [--requests 400] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (
    add_out_argument,
    free_port,
    machine,
    pct,
    prompts,
    save_results,
    start,
    stop,
    wait_http,
)
from bench.gateway_overhead import load

console = Console()


def start_redis(port: int, log: Path) -> subprocess.Popen[bytes]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server not found (make install puts Debian's redis-server in)")
    proc = start([exe, "--port", str(port), "--save", "", "--appendonly", "no"], log=log)
    for _ in range(100):
        try:
            import redis
            redis.Redis(port=port).ping()
            return proc
        except Exception:  # not up yet
            time.sleep(0.1)
    stop(proc)
    raise SystemExit("redis-server did not start")


def memory(root: subprocess.Popen[bytes]) -> list[dict[str, float]]:
    """RSS and PSS (MiB) of every gateway process: the workers, or the one server process."""
    parent = psutil.Process(root.pid)
    # uvicorn's workers are spawned interpreters; its resource tracker is not a worker
    kids = [p for p in parent.children(recursive=True)
            if "spawn_main" in " ".join(p.cmdline())]
    procs = kids or [parent]
    out = []
    for p in procs:
        try:
            info = p.memory_full_info()
        except (psutil.Error, OSError):
            continue
        out.append({"rss_mib": info.rss / 2**20, "pss_mib": getattr(info, "pss", 0) / 2**20})
    return out


def measure(url: str, texts: list[str], requests: int, concurrency: int) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for mode in ("json", "stream"):
        out = asyncio.run(load(url, texts[:requests], concurrency, stream=mode == "stream"))
        lat = out["lat"]
        res[mode] = {"n": out["n"], "errors": out["errors"],
                     "throughput_rps": out["n"] / out["wall"] if out["wall"] else 0.0,
                     "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", default="1,2,4")
    ap.add_argument("--requests", type=int, default=400, help="requests per mode and setting")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rpm", type=int, default=10_000_000,
                    help="per-caller limit: high, so it counts in Redis but never refuses")
    add_out_argument(ap)
    args = ap.parse_args()
    counts = [int(n) for n in args.processes.split(",")]

    work = Path("var/bench")
    work.mkdir(parents=True, exist_ok=True)
    stub_port, redis_port = free_port(), free_port()
    stub = start([sys.executable, "-m", "uvicorn", "bench.stub_upstream:app", "--port",
                  str(stub_port), "--log-level", "warning", "--no-access-log"],
                 log=work / "stub.log")
    stub_url = f"http://127.0.0.1:{stub_port}/v1"
    redis_proc = start_redis(redis_port, work / "redis.log")
    texts = prompts(args.requests + 64)
    results: dict[str, Any] = {}
    try:
        wait_http(f"{stub_url}/models", stub)
        for n in counts:
            port = free_port()
            gateway = start([sys.executable, "-m", "cli.main", "serve", "--port", str(port),
                             "--workers", str(n)],
                            env={"GUIDE_ALIGN_UPSTREAM_BASE_URL": stub_url,
                                 "GUIDE_ALIGN_LOG_LEVEL": "warning",
                                 "GUIDE_ALIGN_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                                 "GUIDE_ALIGN_RPM": str(args.rpm)},
                            log=work / f"gateway_replicas_{n}.log")
            try:
                url = f"http://127.0.0.1:{port}/v1"
                wait_http(f"http://127.0.0.1:{port}/readyz", gateway)
                asyncio.run(load(url, texts[-64:], 8, stream=False))  # warm every worker
                res = measure(url, texts, args.requests, args.concurrency)
                mem = memory(gateway)
                res["memory"] = {
                    "processes": len(mem),
                    "rss_mib_per_process": sum(m["rss_mib"] for m in mem) / max(len(mem), 1),
                    "pss_mib_per_process": sum(m["pss_mib"] for m in mem) / max(len(mem), 1),
                    "pss_mib_total": sum(m["pss_mib"] for m in mem)}
                results[str(n)] = res
                console.print(f"{n} process(es): {res['json']['throughput_rps']:.0f} req/s json, "
                              f"{res['stream']['throughput_rps']:.0f} req/s stream")
            finally:
                stop(gateway)
        show(results)
        path = save_results("replicas", {"machine": machine(), "args": vars(args),
                                         "load_average": os.getloadavg(),
                                         "results": results}, args.out)
        console.print(f"results written to {path}")
    finally:
        stop(stub)
        stop(redis_proc)


def show(results: dict[str, Any]) -> None:
    base = results.get("1", {}).get("json", {}).get("throughput_rps") or None
    table = Table(title="gateway replicas (Redis-backed limits on)")
    for col in ("processes", "json req/s", "vs 1", "json p50 ms", "json p99 ms",
                "stream req/s", "stream TTFB p99 ms", "RSS MiB / proc", "PSS MiB / proc", "errors"):
        table.add_column(col, justify="right")
    for n, r in results.items():
        j, s, m = r["json"], r["stream"], r["memory"]
        table.add_row(n, f"{j['throughput_rps']:.0f}",
                      f"{j['throughput_rps'] / base:.2f}x" if base else "",
                      f"{j['p50_ms']:.1f}", f"{j['p99_ms']:.1f}", f"{s['throughput_rps']:.0f}",
                      f"{s['p99_ms']:.1f}", f"{m['rss_mib_per_process']:.0f}",
                      f"{m['pss_mib_per_process']:.0f}", str(j["errors"] + s["errors"]))
    console.print(table)


if __name__ == "__main__":
    main()
