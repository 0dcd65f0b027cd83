"""Batch-stage throughput: the local engine against Ray, with a fake upstream of fixed latency.

The stage is the library builder's LLM part (detect, then generate + split: two calls per
input), which both engines run with the same per-input functions. The fake upstream is a
separate process answering every call after a fixed delay (50 ms by default), so the figures
measure the engines, not a model. Local: one process, ``--concurrency`` calls in flight, every
record fsynced to the journal. Ray: a local cluster on this machine's cores, ``--workers``
actors sharing the same total of calls in flight, records written as shards. Both include
reading the JSONL input; the Ray figure includes its actor start-up but not the cluster start
(reported apart), and its steady rate (first shard to last) leaves the start-up out.
Projections for 1 M and 10 M inputs scale the steady rate per worker linearly to N workers,
assuming the upstream keeps up. The machine may be shared: the load average is recorded.

    .venv/bin/python bench/scale_batch.py --sizes 1000 10000 --out
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.common import (  # noqa: E402
    add_out_argument,
    free_port,
    machine,
    prompts,
    save_results,
    start,
    stop,
    wait_http,
)
from guideline_lib.build import BuildConfig, execute_build, stage_keys  # noqa: E402
from guideline_lib.inputs import read_inputs  # noqa: E402
from guideline_lib.journal import Journal  # noqa: E402
from guideline_lib.llm import LLMConfig  # noqa: E402

console = Console(width=120)
DETECT = "Risky: no\nCategory: quality_knowledge"
GUIDELINES = ("Lead with the answer: Put the direct answer first, then the details.\n"
              "Offer a worked example: Show one small example the person can adapt.\n"
              "Flag uncertainty: Say which parts are estimates and what would settle them.")
PROJECT_INPUTS = (1_000_000, 10_000_000)
PROJECT_WORKERS = (8, 32, 128)


def fake_app(delay: float) -> Any:
    """A raw ASGI OpenAI-compatible upstream: builder-shaped answers after ``delay`` seconds."""

    def completion(text: str) -> bytes:
        return json.dumps({
            "id": "fake", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        if scope["path"].endswith("/chat/completions"):
            await asyncio.sleep(delay)
            system = json.loads(body)["messages"][0]["content"]
            out = completion(DETECT if system.startswith("You screen messages") else GUIDELINES)
        else:
            out = b'{"object": "list", "data": []}'
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": out})

    return app


def serve_fake(port: int, delay: float) -> None:
    """Run the fake upstream (the child process of the benchmark)."""
    import uvicorn

    uvicorn.run(fake_app(delay), host="127.0.0.1", port=port, log_level="warning",
                backlog=4096, limit_concurrency=None)


def write_inputs(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in prompts(n)))
    return path


def run_local(src: Path, work: Path, llm: LLMConfig) -> float:
    """Seconds for the local engine over ``src`` (read + detect + generate, journaled)."""
    started = time.monotonic()
    items, _ = read_inputs([src])
    journal = Journal(work / "journal.jsonl")
    try:
        asyncio.run(execute_build(items, llm=llm, config=BuildConfig(), journal=journal,
                                  cache=None, show_progress=True))
    finally:
        journal.close()
    assert sum(r.get("status") == "ok" for r in journal.records()) == 2 * len(items)
    return time.monotonic() - started


def run_ray(src: Path, work: Path, llm: LLMConfig, workers: int,
            batch_size: int) -> tuple[float, float]:
    """Seconds for the Ray engine over ``src`` (read + detect + generate, as shards), and its
    steady rate in inputs/s: from the first shard written to the last (start-up excluded)."""
    from guideline_lib.shards import ShardStore
    from scale.build import BuildTask
    from scale.ray_engine import RayConfig, read_items, run_llm_pool

    started = time.monotonic()
    ds = read_items([str(src)]).map_batches(_no_prior, batch_format="pandas")
    config = BuildConfig()
    run_llm_pool(ds, BuildTask(config, stage_keys(config, llm)), llm=llm, out=work / "shards",
                 config=RayConfig(workers=workers, batch_size=batch_size, show_progress=True))
    seconds = time.monotonic() - started
    store = ShardStore(work / "shards")
    assert sum(r.get("status") == "ok" for r in store.records()) == 2 * len(prompts_in(src))
    shards = sorted(store.shards(), key=lambda p: p.stat().st_mtime)
    span = shards[-1].stat().st_mtime - shards[0].stat().st_mtime
    after_first = sum(1 for p in shards[1:] for _ in p.open()) / 2  # two records per input
    return seconds, (after_first / span if span > 0 else float("nan"))


def prompts_in(src: Path) -> list[str]:
    return src.read_text().splitlines()


def _no_prior(batch: Any) -> Any:
    batch["prior"] = ""
    return batch


def project(rate_per_worker: float) -> dict[str, dict[str, float]]:
    """Projected hours for 1 M / 10 M inputs at N workers, at ``rate_per_worker`` inputs/s."""
    return {str(n): {str(w): round(n / (rate_per_worker * w) / 3600, 2)
                     for w in PROJECT_WORKERS} for n in PROJECT_INPUTS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000])
    parser.add_argument("--latency", type=float, default=0.05, help="fake upstream seconds/call")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="calls in flight in total: local in one client, Ray split evenly "
                             "over its workers")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors in the LLM pool")
    parser.add_argument("--batch-size", type=int, default=64, help="Ray inputs per batch/shard")
    parser.add_argument("--serve-fake", type=int, help=argparse.SUPPRESS)
    add_out_argument(parser)
    args = parser.parse_args()
    if args.serve_fake:
        serve_fake(args.serve_fake, args.latency)
        return

    import ray

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    port = free_port()
    fake = start([sys.executable, __file__, "--serve-fake", str(port),
                  "--latency", str(args.latency)])
    rows: list[dict[str, Any]] = []
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", fake)
        base = f"http://127.0.0.1:{port}/v1"
        llm = LLMConfig(base_url=base, model="fake", concurrency=args.concurrency, timeout=60,
                        max_retries=2)
        t = time.monotonic()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        ray_start_s = time.monotonic() - t
        for n in args.sizes:
            with tempfile.TemporaryDirectory() as tmp:
                src = write_inputs(Path(tmp) / "inputs.jsonl", n)
                load = os.getloadavg()
                local_s = run_local(src, Path(tmp) / "local", llm)
                per_worker = replace(llm, concurrency=max(1, args.concurrency // args.workers))
                ray_s, steady = run_ray(src, Path(tmp) / "ray", per_worker, args.workers,
                                        args.batch_size)
                rows.append({"inputs": n, "llm_calls": 2 * n, "local_s": round(local_s, 2),
                             "local_inputs_per_s": round(n / local_s, 1),
                             "ray_s": round(ray_s, 2), "ray_inputs_per_s": round(n / ray_s, 1),
                             "ray_steady_inputs_per_s": round(steady, 1),
                             "load_avg_1_5_15": [round(x, 2) for x in load],
                             "load_avg_after": [round(x, 2) for x in os.getloadavg()]})
                console.print(rows[-1])
        ray.shutdown()
    finally:
        stop(fake)
    largest = rows[-1]
    per_worker = largest["ray_steady_inputs_per_s"] / args.workers
    results = {
        "machine": machine(), "load_avg_at_start_of_each_size": [r["load_avg_1_5_15"]
                                                                 for r in rows],
        "settings": {"latency_s": args.latency, "concurrency": args.concurrency,
                     "ray_workers": args.workers,
                    "ray_concurrency_per_worker": max(1, args.concurrency // args.workers),
                    "ray_batch_size": args.batch_size,
                     "ray_cluster_cpus": os.cpu_count(), "ray_start_s": round(ray_start_s, 1),
                     "calls_per_input": 2},
        "rows": rows,
        "projection": {
            "note": "hours at N Ray workers, scaling the per-worker steady rate (first to "
                    "last shard) of the largest size linearly; assumes the upstream keeps up "
                    "(here each worker's "
                    f"{max(1, args.concurrency // args.workers)} calls in flight at "
                    f"{args.latency * 1000:.0f} ms/call cap it at "
                    f"{max(1, args.concurrency // args.workers) / (2 * args.latency):.0f} "
                    "inputs/s)",
            "per_worker_inputs_per_s": round(per_worker, 1),
            "hours": project(per_worker),
        },
    }
    table = Table(title=f"local vs Ray, fake upstream {args.latency * 1000:.0f} ms/call, "
                        f"{os.cpu_count()} cores (load avg {rows[0]['load_avg_1_5_15'][0]})")
    ray_col = f"Ray inputs/s ({args.workers}x{max(1, args.concurrency // args.workers)})"
    for col in ("inputs", f"local inputs/s ({args.concurrency})", ray_col, "Ray/local",
                "Ray steady inputs/s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(f"{r['inputs']:,}", f"{r['local_inputs_per_s']}",
                      f"{r['ray_inputs_per_s']}",
                      f"{r['ray_inputs_per_s'] / r['local_inputs_per_s']:.2f}",
                      f"{r['ray_steady_inputs_per_s']}")
    console.print(table)
    proj = Table(title=f"projected wall time (hours) at {per_worker:.1f} inputs/s per worker")
    proj.add_column("inputs", justify="right")
    for w in PROJECT_WORKERS:
        proj.add_column(f"{w} workers", justify="right")
    for n, hours in results["projection"]["hours"].items():
        proj.add_row(f"{int(n):,}", *(f"{h}" for h in hours.values()))
    console.print(proj)
    console.print(f"wrote {save_results('scale_batch', results, args.out)}")


if __name__ == "__main__":
    main()
