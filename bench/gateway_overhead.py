"""Gateway overhead: the same requests sent directly to a fast stub and through the gateway.

Targets run interleaved, round by round, at each concurrency level: non-streaming latency,
streaming time to first chunk, and throughput. Added latency = gateway percentile minus direct
percentile; throughput ratio = gateway / direct. A second gateway with the risk gate off
(`--no-gate-baseline` skips it) shows what the judge adds, in the same run. LiteLLM's proxy
joins as a peer when a Python with `litellm[proxy]` is given (--litellm-python), in front of
the same stub.

    .venv/bin/python bench/gateway_overhead.py [--requests 200] [--concurrency 1,8,32,64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
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

console = Console()


LITELLM_KEY = "sk-bench-" + "7f3a9c1e5b2d4f60" * 2


async def load(url: str, texts: list[str], concurrency: int, *, stream: bool,
               model: str = "stub") -> dict[str, Any]:
    """Send every text once with ``concurrency`` workers; latencies (or TTFB) and wall time."""
    lat: list[float] = []
    errors = 0
    queue = list(reversed(texts))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"authorization": f"Bearer {LITELLM_KEY}"}
    async with httpx.AsyncClient(timeout=60, limits=limits, headers=headers) as client:

        async def worker() -> None:
            nonlocal errors
            while queue:
                text = queue.pop()
                body = {"model": model, "messages": [{"role": "user", "content": text}],
                        "stream": stream}
                t0 = time.perf_counter()
                try:
                    if stream:
                        async with client.stream("POST", f"{url}/chat/completions",
                                                 json=body) as resp:
                            first = None
                            async for line in resp.aiter_lines():
                                if first is None and line.startswith("data:"):
                                    first = time.perf_counter() - t0
                            if resp.status_code != 200 or first is None:
                                errors += 1
                                continue
                            lat.append(first)
                    else:
                        resp = await client.post(f"{url}/chat/completions", json=body)
                        if resp.status_code != 200:
                            errors += 1
                            continue
                        lat.append(time.perf_counter() - t0)
                except httpx.HTTPError:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - t0
    return {"lat": lat, "wall": wall, "errors": errors, "n": len(texts)}


def start_litellm(python: str, stub_url: str, workdir: Path) -> tuple[Any, str]:
    """LiteLLM proxy in front of the stub, from a separate environment."""
    port = free_port()
    cfg = workdir / "litellm.yaml"
    cfg.write_text(
        "model_list:\n  - model_name: stub\n    litellm_params:\n      model: openai/stub\n"
        f"      api_base: {stub_url}\n      api_key: sk-bench\n"
        "litellm_settings:\n  telemetry: false\n  drop_params: true\n"
    )
    bindir = Path(python).parent
    proc = start([str(bindir / "litellm"), "--config", str(cfg), "--port", str(port),
                  "--host", "127.0.0.1", "--num_workers", "1"],
                 env={"LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False",
                      "LITELLM_MASTER_KEY": LITELLM_KEY},
                 log=workdir / "litellm.log")
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", proc, timeout=300)
    return proc, f"http://127.0.0.1:{port}/v1"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200, help="requests per target per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--concurrency", default="1,8,32,64")
    default_litellm = Path("var/litellm-venv/bin/python")
    ap.add_argument("--litellm-python", default=os.environ.get(
        "LITELLM_PYTHON", str(default_litellm) if default_litellm.exists() else ""),
                    help="python of an environment with litellm[proxy] (optional peer)")
    ap.add_argument("--name", default="gateway_overhead")
    ap.add_argument("--gateway-workers", type=int, default=1,
                    help="gateway processes (`guide-align serve --workers N`)")
    ap.add_argument("--no-gate-baseline", action="store_true",
                    help="skip the second gateway with the risk gate off")
    add_out_argument(ap)
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    work = Path("var/bench")
    work.mkdir(parents=True, exist_ok=True)
    stub_port, gw_port = free_port(), free_port()
    stub = start([sys.executable, "-m", "uvicorn", "bench.stub_upstream:app", "--port",
                  str(stub_port), "--log-level", "warning", "--no-access-log"],
                 log=work / "stub.log")
    stub_url = f"http://127.0.0.1:{stub_port}/v1"
    gateway = start([sys.executable, "-m", "cli.main", "serve", "--port", str(gw_port),
                     "--workers", str(args.gateway_workers)],
                    env={"GUIDE_ALIGN_UPSTREAM_BASE_URL": stub_url, "GUIDE_ALIGN_LOG_LEVEL":
                         "warning"}, log=work / "gateway.log")
    procs = [stub, gateway]
    targets = {"direct": stub_url, "gateway": f"http://127.0.0.1:{gw_port}/v1"}
    if not args.no_gate_baseline:
        off_port = free_port()
        procs.append(start([sys.executable, "-m", "cli.main", "serve", "--port", str(off_port),
                            "--workers", str(args.gateway_workers)],
                           env={"GUIDE_ALIGN_UPSTREAM_BASE_URL": stub_url,
                                "GUIDE_ALIGN_LOG_LEVEL": "warning",
                                "GUIDE_ALIGN_RISK_GATE": "false"}, log=work / "gateway_off.log"))
        targets["gateway, no risk gate"] = f"http://127.0.0.1:{off_port}/v1"
    try:
        wait_http(f"{stub_url}/models", stub)
        for proc, url in zip(procs[1:], list(targets.values())[1:], strict=True):
            wait_http(url.removesuffix("/v1") + "/readyz", proc)
        if args.litellm_python:
            proc, url = start_litellm(args.litellm_python, stub_url, work)
            procs.append(proc)
            targets["litellm"] = url
        texts = prompts(args.requests * args.rounds * 2 + 64)
        # warm-up: connections, encoder, JIT paths
        for url in targets.values():
            asyncio.run(load(url, texts[:32], 8, stream=False))
        results: dict[str, Any] = {}
        for c in levels:
            for mode in ("json", "stream"):
                acc: dict[str, dict[str, Any]] = {
                    t: {"lat": [], "wall": 0.0, "errors": 0, "n": 0} for t in targets}
                for r in range(args.rounds):
                    batch = texts[r * args.requests:(r + 1) * args.requests]
                    for t, url in targets.items():
                        out = asyncio.run(load(url, batch, c, stream=mode == "stream"))
                        a = acc[t]
                        a["lat"] += out["lat"]
                        a["wall"] += out["wall"]
                        a["errors"] += out["errors"]
                        a["n"] += out["n"]
                results[f"c{c}_{mode}"] = summarise(acc)
                show(c, mode, results[f"c{c}_{mode}"])
        path = save_results(args.name, {"machine": machine(), "args": vars(args),
                                        "results": results}, args.out)
        console.print(f"results written to {path}")
    finally:
        for p in procs:
            stop(p)


def summarise(acc: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Percentiles, throughput, and the gateway/peer figures against direct."""
    out: dict[str, Any] = {}
    for t, a in acc.items():
        out[t] = {"p50_ms": pct(a["lat"], 50), "p90_ms": pct(a["lat"], 90),
                  "p99_ms": pct(a["lat"], 99), "rps": a["n"] / a["wall"] if a["wall"] else 0,
                  "errors": a["errors"], "n": a["n"]}
    d = out["direct"]
    for t in acc:
        if t == "direct":
            continue
        out[t]["added_p50_ms"] = out[t]["p50_ms"] - d["p50_ms"]
        out[t]["added_p90_ms"] = out[t]["p90_ms"] - d["p90_ms"]
        out[t]["added_p99_ms"] = out[t]["p99_ms"] - d["p99_ms"]
        out[t]["throughput_ratio"] = out[t]["rps"] / d["rps"] if d["rps"] else 0
    return out


def show(c: int, mode: str, res: dict[str, Any]) -> None:
    what = "latency" if mode == "json" else "time to first chunk"
    table = Table(title=f"concurrency {c}, {'non-streaming' if mode == 'json' else 'streaming'}"
                        f" ({what})")
    for col in ("target", "p50 ms", "p90 ms", "p99 ms", "req/s", "added p50", "added p90",
                "added p99", "throughput ÷ direct", "errors"):
        table.add_column(col, justify="right")
    for t, r in res.items():
        table.add_row(t, f"{r['p50_ms']:.1f}", f"{r['p90_ms']:.1f}", f"{r['p99_ms']:.1f}",
                      f"{r['rps']:.0f}", f"{r.get('added_p50_ms', 0):+.1f}",
                      f"{r.get('added_p90_ms', 0):+.1f}", f"{r.get('added_p99_ms', 0):+.1f}",
                      f"{r.get('throughput_ratio', 1):.2f}", str(r["errors"]))
    console.print(table)


if __name__ == "__main__":
    main()
