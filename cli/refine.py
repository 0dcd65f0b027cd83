"""`guide-align refine ...`: train the query refiner (sft, rl) and measure it (evaluate)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import console, settings
from cli.common import fail as _fail

app = typer.Typer(help="Query refiner: SFT, GRPO against the judge, evaluation.",
                  no_args_is_help=True)
Opt = typer.Option
RootOpt = Annotated[Path | None, Opt("--root", help="Refiner directory (default: "
                                     "<var_dir>/refiner)")]


def _root(root: Path | None) -> Path:
    return root if root is not None else settings().var_dir / "refiner"


def _base(base: Path | None) -> Any:
    from finetune.models import ModelError, load_model
    from guideline_lib.embedded import EmbeddedModelMissing, smollm2_path

    try:
        return load_model(base or smollm2_path())
    except (ModelError, EmbeddedModelMissing) as exc:
        raise _fail(str(exc)) from None


def _pairs(n: int, seed: int) -> tuple[list[Any], dict[str, int]]:
    from finetune.refine_data import build_pairs, usable

    kept, dropped = usable(build_pairs(n, seed=seed))
    console.print(f"{len(kept)} refiner pairs (seed {seed}); dropped by the serving filter: "
                  f"{dict(dropped) or 'none'}")
    return kept, dict(dropped)


def _serving(ws: Any) -> tuple[Any, Any]:
    """The workspace's retriever and response judge (made by `guide-align prepare`)."""
    from guideline_lib.io import LibraryError
    from judge.model import JudgeError, load_heads
    from retriever.encoder import EncoderError
    from retriever.index import IndexLoadError

    try:
        retriever = ws.open_retriever()
        judge = load_heads(ws.judge_path, encoder_hash=str(
            retriever.index.manifest.get("encoder_hash", "")))
    except (LibraryError, IndexLoadError, EncoderError, JudgeError, OSError) as exc:
        raise _fail(f"cannot open the retriever and judge: {exc}") from None
    return retriever, judge


def _local_llama(stack: ExitStack, model: Path, *, threads: int, log: Path) -> str:
    """A llama.cpp server on ``model`` for the duration of ``stack``; its /v1 URL."""
    from app.launcher import LaunchError, start_llama_server, stop_process, wait_until_ready

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = start_llama_server(model, port=port, n_ctx=2048, threads=threads, log_file=log,
                              extra_args=["--n_threads_batch", str(threads)])
    stack.callback(stop_process, proc)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_ready(f"{url}/models", timeout=300, proc=proc)
    except LaunchError as exc:
        raise _fail(f"the llama.cpp server on {model} did not start: {exc} (see {log})") \
            from None
    return url


@app.command()
def sft(
    root: RootOpt = None,
    base: Annotated[Path | None, Opt(help="Base model (default: the embedded SmolLM2)")] = None,
    pairs: Annotated[int, Opt(help="Pairs generated from the templates")] = 3000,
    seed: Annotated[int, Opt(help="Data seed")] = 17,
    validation: Annotated[float, Opt(help="Held-out share (its loss before and after)")] = 0.05,
    max_steps: Annotated[int | None, Opt(help="Optimiser steps (default 80)")] = None,
    lr: Annotated[float | None, Opt(help="Learning rate")] = None,
    batch_size: Annotated[int | None, Opt()] = None,
    lora_r: Annotated[int | None, Opt()] = None,
    threads: Annotated[int, Opt(help="torch threads (0: all cores)")] = 0,
    progress: Annotated[bool, Opt(help="Show a progress bar")] = True,
) -> None:
    """LoRA SFT of the refiner on the project's pairs; writes <root>/sft, points current.gguf."""
    import dataclasses

    from finetune.models import set_threads
    from finetune.refine_train import SFT_DEFAULTS, train_refiner_sft
    from finetune.serve import GGUFExportError
    from finetune.train import with_overrides

    set_threads(threads)
    config = with_overrides(dataclasses.replace(SFT_DEFAULTS, show_progress=progress,
                                                threads=threads),
                            max_steps=max_steps, learning_rate=lr, batch_size=batch_size,
                            lora_r=lora_r)
    kept, dropped = _pairs(pairs, seed)
    out = _root(root)
    try:
        result = train_refiner_sft(kept, out, base=_base(base), config=config, dropped=dropped,
                                   seed=seed, validation=validation)
    except (GGUFExportError, ValueError) as exc:
        raise _fail(str(exc)) from None
    m = result.manifest["metrics"]
    console.print(f"trained in {m['train_seconds']:.0f}s ({m['steps']} steps, train loss "
                  f"{m['train_loss']}, validation loss {m['eval_loss_before']} -> "
                  f"{m['eval_loss_after']}); wrote {result.output}")
    if (out / "current.gguf").exists():
        console.print(f"{out / 'current.gguf'} -> {(out / 'current.gguf').resolve()}")


@app.command()
def rl(
    root: RootOpt = None,
    base: Annotated[Path | None, Opt(help="Base model (default: the embedded SmolLM2)")] = None,
    adapter: Annotated[Path | None, Opt(help="Start adapter (default: <root>/sft/adapter)")]
    = None,
    target_url: Annotated[str | None, Opt(help="Target's OpenAI-compatible /v1 URL (default: "
                                         "a local llama.cpp server on SmolLM2)")] = None,
    target_model: Annotated[str, Opt(help="Model name sent to the target")]
    = "smollm2-135m-instruct",
    target_max_tokens: Annotated[int, Opt(help="Target answer length")] = 64,
    prompts: Annotated[int, Opt(help="Training prompts (fresh template draws)")] = 400,
    seed: Annotated[int, Opt(help="Data seed (differs from the SFT set's by default)")] = 29,
    max_steps: Annotated[int, Opt(help="GRPO steps")] = 100,
    prompts_per_step: Annotated[int, Opt(help="Prompts per step (one group of completions "
                                         "each)")] = 1,
    generations: Annotated[int, Opt(help="Completions per prompt")] = 4,
    max_completion: Annotated[int, Opt(help="Refined prompt length cap (tokens)")] = 64,
    lr: Annotated[float, Opt(help="Learning rate")] = 2e-5,
    w_useful: Annotated[float, Opt(help="Weight of P(useful) (+P(refusal) if risky)")] = 1.0,
    w_safe: Annotated[float, Opt(help="Weight of P(not unsafe)")] = 1.0,
    w_intent: Annotated[float, Opt(help="Weight of original-refined cosine")] = 0.5,
    w_constraints: Annotated[float, Opt(help="Penalty per share of dropped constraints")]
    = 0.5,
    w_length: Annotated[float, Opt(help="Length penalty weight")] = 0.2,
    threads: Annotated[int, Opt(help="torch and llama.cpp threads (0: all cores; they take "
                                      "turns, sampling then judging)")] = 0,
    progress: Annotated[bool, Opt(help="Show a progress bar")] = True,
) -> None:
    """GRPO from the SFT adapter; reward = the judge on the target's answer to the refined
    prompt, read against the original; writes <root>/rl, points current.gguf."""
    from finetune.models import set_threads
    from finetune.refine_reward import HTTPTarget, RefineReward, RewardWeights
    from finetune.refine_train import RLConfig, train_refiner_rl
    from finetune.serve import GGUFExportError
    from guideline_lib.embedded import smollm2_path

    threads = threads or len(os.sched_getaffinity(0))
    set_threads(threads)
    out = _root(root)
    start = adapter or out / "sft" / "adapter"
    if not (start / "adapter_config.json").is_file():
        raise _fail(f"no SFT adapter at {start}; run `guide-align refine sft` first")
    sft_manifest = json.loads((out / "sft" / "manifest.json").read_text("utf-8")) \
        if (out / "sft" / "manifest.json").is_file() else None
    ws = settings()
    retriever, judge = _serving(ws)
    kept, _ = _pairs(prompts, seed)
    weights = RewardWeights(useful=w_useful, safe=w_safe, intent=w_intent,
                            constraints=w_constraints, length=w_length)
    config = RLConfig(max_steps=max_steps, prompts_per_step=prompts_per_step,
                      num_generations=generations, max_completion_length=max_completion,
                      learning_rate=lr, show_progress=progress)
    with ExitStack() as stack:
        url = target_url or _local_llama(stack, smollm2_path(), threads=threads,
                                         log=out / "target-llama.log")
        target = HTTPTarget(url, model=target_model, max_tokens=target_max_tokens)
        stack.callback(target.close)
        reward = RefineReward(target, retriever, judge, weights=weights)
        try:
            result = train_refiner_rl(kept, out, base=_base(base), adapter=start,
                                      reward=reward, config=config,
                                      sft_manifest=sft_manifest)
        except (GGUFExportError, ValueError) as exc:
            raise _fail(str(exc)) from None
    m = result.manifest["metrics"]
    console.print(f"{m['steps']} GRPO steps in {m['train_seconds']:.0f}s "
                  f"({m['steps_per_minute']} steps/min); mean reward {m['reward_first_quarter']}"
                  f" (first quarter) -> {m['reward_last_quarter']} (last quarter); target "
                  f"calls {target.calls}, failed {target.failures}; wrote {result.output}")


@app.command()
def evaluate(
    root: RootOpt = None,
    data: Annotated[Path, Opt(help="Folder of the public sets (measuring only)")]
    = Path("../shared/data"),
    n: Annotated[int, Opt(help="Prompts per set")] = 40,
    variants: Annotated[str, Opt(help="Comma-separated: off, sft, rl")] = "off,sft,rl",
    target_max_tokens: Annotated[int, Opt(help="Target answer length")] = 64,
    threads: Annotated[int, Opt(help="llama.cpp threads per server")] = 1,
    output: Annotated[Path | None, Opt("--json", help="Write the figures as JSON")] = None,
) -> None:
    """Refinement off / SFT / RL on benign, harmful and jailbreak-wrapped test prompts: the
    judge's labels of the target's answers (against the original), retrieval, intent, latency."""
    from finetune.refine_eval import EvalConfig, eval_sets, evaluate_variants, table
    from finetune.refine_reward import HTTPTarget
    from guideline_lib.embedded import smollm2_path

    out = _root(root)
    wanted = [v.strip() for v in variants.split(",") if v.strip()]
    unknown = set(wanted) - {"off", "sft", "rl"}
    if unknown:
        raise _fail(f"unknown variants {sorted(unknown)} (choose from off, sft, rl)")
    for v in wanted:
        if v != "off" and not (out / v / "model.gguf").is_file():
            raise _fail(f"no {v} refiner at {out / v / 'model.gguf'}; train it first")
    try:
        sets = eval_sets(data, n=n)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    ws = settings()
    retriever, judge = _serving(ws)
    config = EvalConfig(target_max_tokens=target_max_tokens)
    with ExitStack() as stack:
        target = HTTPTarget(_local_llama(stack, smollm2_path(), threads=threads,
                                         log=out / "eval-target.log"),
                            max_tokens=target_max_tokens, concurrency=1)
        stack.callback(target.close)
        refiners = {v: partial(_refiner, out / v / "model.gguf", threads,
                               out / f"eval-{v}.log") for v in wanted if v != "off"}
        results = asyncio.run(evaluate_variants(
            sets, wanted, refiners, target=target, retriever=retriever, judge=judge,
            policy=ws.policy(judge), config=config))
    console.print(table(results))
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2) + "\n", "utf-8")
        console.print(f"wrote {output}")


@contextmanager
def _refiner(model: Path, threads: int, log: Path) -> Iterator[Any]:
    """A refine function (conversation -> Refinement, rewrite mode) over a local llama.cpp
    server on ``model``, for the duration of the block."""
    from app.refiner import Refiner, refine_request

    with ExitStack() as stack:
        url = _local_llama(stack, model, threads=threads, log=log)
        client = Refiner(url, model="smollm2-135m-instruct", timeout=60.0, max_tokens=96)

        async def refine(conversation: list[dict[str, Any]]) -> Any:
            return await refine_request(conversation, "rewrite", client)

        yield refine
