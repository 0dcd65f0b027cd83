"""Soak: a live gateway over a fast stub upstream under mixed traffic for a while, sampling the
gateway's resident memory and counting answers by kind and status.

Traffic, from ``--concurrency`` clients: chat JSON and streams, guideline searches,
moderations, malformed requests (bad JSON, wrong types, empty messages, a text/plain body, a
search `k` out of range) and clients that hang up (a stream closed after its first chunk, a
JSON call to a slow upstream abandoned after 0.3 s). Nothing is written unless ``--out``.

    .venv/bin/python bench/soak.py [--minutes 10] [--concurrency 8] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import stub_upstream
from bench.common import free_port, machine, prompts, start, stop, wait_http

console = Console()

# kind -> weight in the mix
MIX = {"json": 30, "stream": 25, "search": 15, "moderation": 10, "malformed": 10,
       "hang-up": 10}
MALFORMED: list[tuple[str, bytes, str]] = [
    ("/v1/chat/completions", b'{"messages": [', "application/json"),
    ("/v1/chat/completions", b'{"messages": [], "model": "stub"}', "application/json"),
    ("/v1/chat/completions", b'{"model": "stub", "max_tokens": "lots", "messages": '
                             b'[{"role": "user", "content": "hi"}]}', "application/json"),
    ("/v1/chat/completions", b'{"model": "stub", "messages": [{"role": "user", '
                             b'"content": "hi"}]}', "text/plain"),
    ("/v1/guidelines/search", b'{"input": "hello", "k": 5000}', "application/json"),
    ("/v1/moderations", b'{"input": 42}', "application/json"),
]


async def upstream(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The bench stub, plus a model "slow" that answers after 2 s (for clients that hang up)."""
    if scope["type"] == "http" and scope["path"].endswith("/chat/completions"):
        msgs: list[dict[str, Any]] = []
        more = True
        while more:
            msg = await receive()
            msgs.append(msg)
            more = msg.get("more_body", False)
        body = b"".join(m.get("body", b"") for m in msgs)
        if b'"slow"' in body:
            await asyncio.sleep(2.0)
        replayed = iter(msgs)

        async def replay() -> Any:
            return next(replayed, {"type": "http.disconnect"})

        await stub_upstream.app(scope, replay, send)
        return
    await stub_upstream.app(scope, receive, send)


def rss_mib(pid: int) -> float | None:
    """Resident memory of ``pid`` in MiB (None once it has gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def one(client: httpx.AsyncClient, kind: str, text: str) -> str:
    """Send one request of ``kind``; the outcome as a status code or a short word."""
    chat = {"model": "stub", "messages": [{"role": "user", "content": text}]}
    try:
        if kind == "json":
            return str((await client.post("/v1/chat/completions", json=chat)).status_code)
        if kind == "stream":
            async with client.stream("POST", "/v1/chat/completions",
                                     json={**chat, "stream": True}) as resp:
                lines = [line async for line in resp.aiter_lines() if line.startswith("data:")]
            ok = resp.status_code == 200 and lines and lines[-1] == "data: [DONE]"
            return str(resp.status_code) if ok else f"{resp.status_code}-incomplete"
        if kind == "search":
            return str((await client.post("/v1/guidelines/search",
                                          json={"input": text, "k": 4})).status_code)
        if kind == "moderation":
            return str((await client.post("/v1/moderations", json={"input": text})).status_code)
        if kind == "malformed":
            path, raw, ctype = random.choice(MALFORMED)
            return str((await client.post(path, content=raw,
                                          headers={"content-type": ctype})).status_code)
        # hang-up: half streams closed after the first chunk, half slow JSON calls abandoned
        if random.random() < 0.5:
            async with client.stream("POST", "/v1/chat/completions",
                                     json={**chat, "stream": True}) as resp:
                async for line in resp.aiter_lines():
                    if line.startswith("data:"):
                        break
            return "hung-up"
        try:
            await client.post("/v1/chat/completions", json={**chat, "model": "slow"},
                              timeout=0.3)
        except httpx.TimeoutException:
            return "hung-up"
        return "answered-before-hang-up"
    except httpx.HTTPError as exc:
        return type(exc).__name__


async def drive(url: str, pid: int, *, seconds: float, concurrency: int, sample: float)\
        -> dict[str, Any]:
    """Mixed traffic until ``seconds`` pass; outcome counts and RSS samples."""
    counts: dict[str, Counter[str]] = {k: Counter() for k in MIX}
    samples: list[tuple[float, float]] = []
    texts = prompts(500)
    kinds, weights = list(MIX), list(MIX.values())
    started = time.monotonic()
    end = started + seconds
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def worker(seed: int) -> None:
            rnd = random.Random(seed)
            while time.monotonic() < end:
                kind = rnd.choices(kinds, weights)[0]
                counts[kind][await one(client, kind, rnd.choice(texts))] += 1

        async def sampler() -> None:
            while time.monotonic() < end:
                mib = rss_mib(pid)
                if mib is not None:
                    samples.append((round(time.monotonic() - started, 1), round(mib, 1)))
                await asyncio.sleep(sample)

        await asyncio.gather(sampler(), *(worker(i) for i in range(concurrency)))
    mib = rss_mib(pid)
    if mib is not None:
        samples.append((round(time.monotonic() - started, 1), round(mib, 1)))
    return {"seconds": round(time.monotonic() - started, 1),
            "counts": {k: dict(v) for k, v in counts.items()}, "rss_mib": samples}


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """RSS after warm-up (a tenth of the run), at its peak and at the end; totals by outcome."""
    rss = [m for _, m in result["rss_mib"]]
    warm = rss[max(0, len(rss) // 10)] if rss else float("nan")
    total = sum(sum(c.values()) for c in result["counts"].values())
    fives = sum(n for c in result["counts"].values() for s, n in c.items() if s.startswith("5"))
    return {"requests": total, "per_second": round(total / result["seconds"], 1),
            "status_5xx": fives, "rss_first_mib": rss[0] if rss else None,
            "rss_after_warmup_mib": warm, "rss_peak_mib": max(rss) if rss else None,
            "rss_end_mib": rss[-1] if rss else None,
            "rss_growth_after_warmup_mib": round(rss[-1] - warm, 1) if rss else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    up_port, gw_port = free_port(), free_port()
    stub = start([sys.executable, "-m", "uvicorn", "bench.soak:upstream", "--port", str(up_port),
                  "--log-level", "warning", "--no-access-log"], log=work / "upstream.log")
    gateway = start([sys.executable, "-m", "cli.main", "serve", "--port", str(gw_port),
                     "--no-train"], log=work / "gateway.log",
                    env={"GUIDE_ALIGN_UPSTREAM_BASE_URL": f"http://127.0.0.1:{up_port}/v1",
                         "GUIDE_ALIGN_LOG_LEVEL": "warning"})
    url = f"http://127.0.0.1:{gw_port}"
    try:
        wait_http(f"http://127.0.0.1:{up_port}/v1/models", stub)
        wait_http(f"{url}/healthz", gateway)
        console.print(f"soaking {url} for {args.minutes:g} min with {args.concurrency} clients "
                      f"(logs in {work})")
        result = asyncio.run(drive(url, gateway.pid, seconds=args.minutes * 60,
                                   concurrency=args.concurrency, sample=args.sample))
    finally:
        stop(gateway)
        stop(stub)
    result["summary"] = summary(result)
    result["machine"] = machine()
    result["args"] = {"minutes": args.minutes, "concurrency": args.concurrency}

    table = Table(title=f"soak: {result['seconds']:.0f} s, {args.concurrency} clients")
    table.add_column("kind")
    table.add_column("outcomes (status or what happened: count)")
    for kind, outcome in result["counts"].items():
        table.add_row(kind, ", ".join(f"{s}: {n}" for s, n in sorted(outcome.items())))
    console.print(table)
    s = result["summary"]
    console.print(f"{s['requests']} requests ({s['per_second']}/s), {s['status_5xx']} answered "
                  f"5xx; gateway RSS MiB: first {s['rss_first_mib']}, after warm-up "
                  f"{s['rss_after_warmup_mib']}, peak {s['rss_peak_mib']}, end "
                  f"{s['rss_end_mib']} (growth after warm-up {s['rss_growth_after_warmup_mib']})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
