"""Hot reload under load: steady traffic through the gateway while the library is reloaded.

A gateway subprocess (the default workspace's trained encoder and judge; the library and its
index in a scratch directory) sits in front of an in-process stub upstream that answers after a
fixed latency. Workers keep a fixed number of requests in flight (chat, JSON mode and stream,
in turn) while `POST /admin/reload` runs ``--reloads`` times, alternating two library versions
(the starter library, and the starter without its last guidelines) so every reload swaps
something real. Each version's index is built once before the run and put in place with its
library, as `guide-align prepare` on a build machine would ship them; ``--rebuild`` leaves the
index to the reload, which then rebuilds it every time. Printed: requests, failed requests,
latency percentiles of the requests that overlapped a reload against those that did not, and
the reload durations.

    .venv/bin/python bench/reload.py [--concurrency 8] [--reloads 10] [--gap 1.0] [--out]

Results go to var/bench/reload.json, or with ``--out`` to bench/results/reload.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import stub_upstream
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
from guideline_lib.io import atomic_directory, default_library_path, load_library, save_library
from guideline_lib.schema import Library

console = Console()
MASTER = "bench-reload-master-key-0123456789"
ROOT = Path(__file__).resolve().parent.parent


def slow_upstream(latency: float) -> Any:
    """The benchmark stub, answering each chat after ``latency`` seconds."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/chat/completions"):
            await asyncio.sleep(latency)
        await stub_upstream.app(scope, receive, send)

    return app


class UpstreamThread:
    """uvicorn serving the stub in a thread of this process."""

    def __init__(self, app: Any):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> UpstreamThread:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def versions() -> tuple[Library, Library]:
    """The starter library, and a smaller version of it (its last 20 guidelines removed)."""
    a = load_library(default_library_path())
    keep = a.guidelines[:-20]
    ids = {g.id for g in keep}
    examples = [e for e in a.examples if set(e.guideline_ids) <= ids]
    manifest = a.manifest.model_copy(update={"version": f"{a.manifest.version}-smaller"})
    b = Library(manifest=manifest, guidelines=keep, examples=examples).sealed()
    return a, b


@dataclass
class Sample:
    kind: str
    start: float
    end: float
    ok: bool
    error: str = ""


async def traffic(url: str, concurrency: int, stop_at: asyncio.Event,
                  samples: list[Sample]) -> None:
    """``concurrency`` workers, each sending chat, JSON-mode and stream requests in turn."""
    texts = prompts(200)
    headers = {"authorization": f"Bearer {MASTER}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, headers=headers,
                                 limits=limits) as client:

        async def worker(n: int) -> None:
            kinds = ("chat", "json", "stream")
            i = n
            while not stop_at.is_set():
                kind = kinds[i % 3]
                body: dict[str, Any] = {"model": "stub", "stream": kind == "stream",
                                        "messages": [{"role": "user",
                                                      "content": texts[i % len(texts)]}]}
                if kind == "json":
                    body["response_format"] = {"type": "json_object"}
                i += 1
                t0 = time.perf_counter()
                try:
                    if kind == "stream":
                        async with client.stream("POST", "/v1/chat/completions",
                                                 json=body) as r:
                            text = (await r.aread()).decode()
                        ok = r.status_code == 200 and text.rstrip().endswith("[DONE]") \
                            and '"error"' not in text
                        error = "" if ok else f"{r.status_code} {text[-200:]}"
                    else:
                        r = await client.post("/v1/chat/completions", json=body)
                        ok = r.status_code == 200 and "guide_align" in r.json()
                        error = "" if ok else f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, error = False, repr(exc)
                samples.append(Sample(kind, t0, time.perf_counter(), ok, error))

        await asyncio.gather(*(worker(n) for n in range(concurrency)))


def put(version: Path, index: Path | None, work: Path) -> None:
    """Make ``version`` (a library directory) and its prepared ``index`` the served ones."""
    save_library(load_library(version), work / "library")
    if index is not None:
        with atomic_directory(work / "index") as scratch:
            shutil.copytree(index, scratch, dirs_exist_ok=True)


async def drive(url: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Traffic for the whole run; reloads after a warm-up, ``gap`` seconds apart."""
    samples: list[Sample] = []
    windows: list[tuple[float, float]] = []
    reloads: list[dict[str, Any]] = []
    stop_at = asyncio.Event()
    load = asyncio.create_task(traffic(url, args.concurrency, stop_at, samples))
    async with httpx.AsyncClient(base_url=url, timeout=600,
                                 headers={"authorization": f"Bearer {MASTER}"}) as admin:
        await asyncio.sleep(args.warmup)
        for n in range(args.reloads):
            name = "b" if n % 2 == 0 else "a"
            await asyncio.to_thread(put, work / f"library-{name}",
                                    None if args.rebuild else work / f"index-{name}", work)
            t0 = time.perf_counter()
            status = (await admin.post("/admin/reload")).json()
            windows.append((t0, time.perf_counter()))
            reloads.append(status)
            console.print(f"reload {n + 1}: ok={status['ok']} {status.get('library_version')} "
                          f"{status.get('guidelines')} guidelines, {status['seconds']:.2f}s"
                          + (f" error={status['error']}" if status.get("error") else ""))
            await asyncio.sleep(args.gap)
    stop_at.set()
    await load
    return summarise(samples, windows, reloads)


def summarise(samples: list[Sample], windows: list[tuple[float, float]],
              reloads: list[dict[str, Any]]) -> dict[str, Any]:
    def during(s: Sample) -> bool:
        return any(s.start < end and s.end > begin for begin, end in windows)

    out: dict[str, Any] = {"requests": len(samples),
                           "failed": sum(not s.ok for s in samples),
                           "errors": sorted({s.error for s in samples if not s.ok})[:5]}
    for name, pick in (("outside", lambda s: not during(s)), ("during", during)):
        for kind in ("all", "chat", "json", "stream"):
            lat = [s.end - s.start for s in samples
                   if s.ok and pick(s) and kind in ("all", s.kind)]
            out[f"{name}_{kind}"] = {"n": len(lat), "p50_ms": round(pct(lat, 50), 1),
                                     "p99_ms": round(pct(lat, 99), 1)}
    secs = sorted(r["seconds"] for r in reloads)
    out["reloads"] = {"n": len(reloads), "ok": sum(r["ok"] for r in reloads),
                      "seconds": secs,
                      "median_s": secs[len(secs) // 2] if secs else None,
                      "max_s": secs[-1] if secs else None}
    return out


def report(res: dict[str, Any], args: argparse.Namespace) -> None:
    table = Table(title=f"reload under load: {args.concurrency} in flight, upstream "
                        f"{args.upstream_ms:.0f} ms, {args.reloads} reloads")
    for col in ("requests", "n", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right" if col != "requests" else "left")
    for name in ("outside", "during"):
        for kind in ("all", "chat", "json", "stream"):
            row = res[f"{name}_{kind}"]
            table.add_row(f"{kind}, {name} reloads", str(row["n"]), f"{row['p50_ms']:.1f}",
                          f"{row['p99_ms']:.1f}")
    console.print(table)
    r = res["reloads"]
    console.print(f"requests {res['requests']}, failed {res['failed']}; reloads {r['ok']}/"
                  f"{r['n']} ok, median {r['median_s']}s, max {r['max_s']}s")
    for err in res["errors"]:
        console.print(f"  error: {err}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--reloads", type=int, default=10)
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between reloads")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before the first")
    parser.add_argument("--upstream-ms", type=float, default=50.0)
    parser.add_argument("--var-dir", type=Path, default=ROOT / "var",
                        help="the workspace whose trained encoder and judge are served")
    parser.add_argument("--rebuild", action="store_true",
                        help="let each reload rebuild the index instead of shipping it")
    add_out_argument(parser)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, \
            UpstreamThread(slow_upstream(args.upstream_ms / 1000)) as upstream:
        work = Path(tmp)
        port = free_port()
        env = {"GUIDE_ALIGN_VAR_DIR": str(args.var_dir),
               "GUIDE_ALIGN_LIBRARY_PATH": str(work / "library"),
               "GUIDE_ALIGN_INDEX_PATH": str(work / "index"),
               "GUIDE_ALIGN_MASTER_KEY": MASTER, "GUIDE_ALIGN_PORT": str(port),
               "GUIDE_ALIGN_UPSTREAM_BASE_URL": f"http://127.0.0.1:{upstream.port}/v1",
               "HF_HUB_OFFLINE": "1"}
        os.environ.update(env)
        from app.config import Settings

        for name, version in zip("ab", versions(), strict=True):
            console.print(f"building the index of version {name} ...")
            save_library(version, work / f"library-{name}")
            Settings(library_path=work / f"library-{name}",
                     index_path=work / f"index-{name}").prepare(train=False, log=console.print)
        put(work / "library-a", work / "index-a", work)
        proc = start([sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app",
                      "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                     env=env, log=Path(tmp) / "gateway.log")
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", proc, timeout=300)
            res = asyncio.run(drive(f"http://127.0.0.1:{port}", work, args))
        finally:
            stop(proc)
    report(res, args)
    path = save_results("reload", {"machine": machine(), "args": {
        k: str(v) for k, v in vars(args).items()}, **res}, args.out)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
