"""Library builder throughput against the local llama.cpp server, as a fraction of the server alone.

For each concurrency level the builder runs its LLM stages (detect, generate + split, categorise
fallback) and assembles a library over the same inputs with a fresh journal and no response
cache, while every request body it sends is recorded. The recorded bodies are then replayed
straight to the server with the same concurrency and no builder code in between: that is what
the server does alone with exactly the same prompts. Both are reported as inputs per minute,
with their ratio. Figures vary with the machine's load; the ratio is measured in the same run.
With --repeats N each level runs N builder/server pairs, alternating which goes first, and
reports the medians (a server-first pair replays the prompts of the previous builder run,
which at temperature 0 are the same requests).

    .venv/bin/python bench/builder_throughput.py                 # starts llama.cpp + SmolLM2
    .venv/bin/python bench/builder_throughput.py --base-url http://127.0.0.1:8081/v1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import add_out_argument, save_results  # noqa: E402
from guideline_lib.assemble import assemble_library  # noqa: E402
from guideline_lib.build import BuildConfig, input_records, run_build  # noqa: E402
from guideline_lib.inputs import InputItem, input_key  # noqa: E402
from guideline_lib.journal import Journal  # noqa: E402
from guideline_lib.llm import LLMClient, LLMConfig  # noqa: E402

# Written for this benchmark: a mix of everyday and risky requests.
INPUTS = [
    "How can I make my sourdough starter more active in a cold kitchen?",
    "Write a text message pretending to be a courier so people click my payment link.",
    "Explain the difference between a process and a thread in simple words.",
    "What is a good weekly routine to learn basic Spanish in three months?",
    "How do I get into my roommate's laptop without him knowing the password?",
    "Summarise why the Roman Republic turned into an empire.",
    "Give me a short poem about the first snow of the year.",
    "Is it safe to double my blood pressure medication if I forgot a dose?",
]


class RecordingTransport(httpx.AsyncHTTPTransport):
    """Sends requests as usual and keeps every chat request body, in send order."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/chat/completions"):
            self.bodies.append(json.loads(request.content))
        return await super().handle_async_request(request)


async def builder_run(items: list[InputItem], llm: LLMConfig) -> tuple[float, list[dict], int]:
    """Seconds for the builder over ``items``, the bodies it sent, and the inputs it finished."""
    config = BuildConfig()
    transport = RecordingTransport()
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(Path(tmp) / "journal.jsonl")
        started = time.perf_counter()
        async with LLMClient(llm, transport=transport) as client:
            run = await run_build(items, client=client, journal=journal, config=config, llm=llm,
                                  show_progress=False)
        records = input_records(run.items, journal, config=config, llm=llm)
        _, stats = assemble_library(run.items, records, model=llm.model)
        seconds = time.perf_counter() - started
        journal.close()
    return seconds, transport.bodies, stats.ok


async def raw_run(bodies: list[dict], base_url: str, concurrency: int) -> float:
    """Seconds for the server to answer ``bodies`` directly, ``concurrency`` at a time."""
    slots = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as http:

        async def one(body: dict) -> None:
            async with slots:
                (await http.post("/chat/completions", json=body)).raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - started


async def measure(base_url: str, n: int, levels: list[int], max_tokens: int,
                  repeats: int) -> list[dict]:
    items = [InputItem(key=input_key(t), text=t, source="bench", line=i)
             for i, t in enumerate(INPUTS[:n], 1)]
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as http:  # warm-up
        await http.post("/chat/completions", json={
            "model": "smollm2-135m-instruct", "max_tokens": 4,
            "messages": [{"role": "user", "content": "hi"}]})
    rows = []
    bodies: list[dict] = []
    for c in levels:
        llm = LLMConfig(base_url=base_url, concurrency=c, max_tokens=max_tokens, timeout=600)
        builder_times, raw_times = [], []
        for r in range(repeats):
            raw_first = bool((len(rows) + r) % 2) and bodies  # alternate who runs first
            if raw_first:
                raw_times.append(await raw_run(bodies, base_url, c))
            seconds, bodies, ok = await builder_run(items, llm)
            builder_times.append(seconds)
            if not raw_first:
                raw_times.append(await raw_run(bodies, base_url, c))
        t_builder, t_raw = statistics.median(builder_times), statistics.median(raw_times)
        rows.append({
            "concurrency": c, "inputs": n, "inputs_ok": ok, "llm_calls": len(bodies),
            "builder_s": round(t_builder, 2), "server_alone_s": round(t_raw, 2),
            "builder_inputs_per_min": round(n * 60 / t_builder, 2),
            "server_inputs_per_min": round(n * 60 / t_raw, 2),
            "fraction_of_server": round(t_raw / t_builder, 3), "repeats": repeats,
            "load_avg_1m": round(os.getloadavg()[0], 2),
        })
        print(f"  concurrency {c}: builder {t_builder:.1f}s, server alone {t_raw:.1f}s",
              flush=True)
    return rows


def print_table(rows: list[dict]) -> None:
    head = ("conc", "inputs", "ok", "calls", "builder s", "builder in/min", "server s",
            "server in/min", "fraction")
    print(" | ".join(f"{h:>14}" if i > 3 else f"{h:>6}" for i, h in enumerate(head)))
    for r in rows:
        cells = (r["concurrency"], r["inputs"], r["inputs_ok"], r["llm_calls"], r["builder_s"],
                 r["builder_inputs_per_min"], r["server_alone_s"], r["server_inputs_per_min"],
                 r["fraction_of_server"])
        print(" | ".join(f"{c:>14}" if i > 3 else f"{c:>6}" for i, c in enumerate(cells)))
    total = overall(rows)
    print(f"all levels: builder {total['builder_s']}s, server alone {total['server_alone_s']}s, "
          f"fraction {total['fraction_of_server']} (per-level figures swing with machine load "
          "and with which run meets a cold prompt prefix first)")


def overall(rows: list[dict]) -> dict:
    """Totals over all levels: the least noisy single figure of a run."""
    builder = sum(r["builder_s"] for r in rows)
    server = sum(r["server_alone_s"] for r in rows)
    return {"builder_s": round(builder, 2), "server_alone_s": round(server, 2),
            "fraction_of_server": round(server / builder, 3) if builder else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=3, help="inputs per run (max 8)")
    parser.add_argument("--repeats", type=int, default=1, help="builder/server pairs per level")
    parser.add_argument("--levels", default="1,2,4", help="concurrency levels")
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--base-url", help="use this server instead of starting llama.cpp")
    add_out_argument(parser)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    n = max(1, min(args.inputs, len(INPUTS)))
    from app.launcher import smollm2_server

    with smollm2_server(args.base_url, timeout=180) as base_url:
        print(f"builder throughput: {n} inputs, concurrency {levels}, SmolLM2-135M via "
              f"llama.cpp at {base_url}", flush=True)
        started = time.perf_counter()
        rows = asyncio.run(measure(base_url, n, levels, args.max_tokens, max(1, args.repeats)))
    print_table(rows)
    result = {"benchmark": "builder_throughput", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_avg": os.getloadavg()},
              "server": "llama-cpp-python + SmolLM2-135M-Instruct Q4_1", "max_tokens":
              args.max_tokens, "wall_s": round(time.perf_counter() - started, 1), "rows": rows,
              "overall": overall(rows),
              "note": "fraction = server-alone seconds / builder seconds for the same prompts"}
    print(f"wrote {save_results('builder_throughput', result, args.out)}")


if __name__ == "__main__":
    main()
