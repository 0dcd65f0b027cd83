"""`guide-align redteam ...`: the red-team loop that grows the library, and its report."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import console, fail, settings

app = typer.Typer(help="Red-team the gateway in rounds and repair the library from what gets "
                  "through (docs/redteam.md).", no_args_is_help=True)
Opt = typer.Option

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
BENIGN_SETS = ("alpaca_harmless_test", "mt_bench", "vicuna_bench")
# A fixed quarter of the tactics never feeds the repair, so the report shows generalisation.
HOLDOUT_TACTICS = ("hypothetical", "leetspeak", "translation_frame", "euphemism")
RUN_MANIFEST = "run.json"


def _fingerprint(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _check_run_dir(out: Path, config: dict[str, Any], resume: bool) -> None:
    """Refuse to mix runs: an existing run directory needs --resume and the same settings."""
    from redteam.loop import JOURNAL

    path = out / RUN_MANIFEST
    if (out / JOURNAL).exists() and not resume:
        raise fail(f"{out} holds a run; pass --resume to continue it, or use a new --out")
    if path.is_file():
        before = json.loads(path.read_text("utf-8"))
        if before.get("fingerprint") != _fingerprint(config):
            raise fail(f"{out} holds a run made with other settings; use a new --out")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"config": config, "fingerprint": _fingerprint(config)},
                               indent=2) + "\n", "utf-8")


@contextlib.contextmanager
def _target(url: str | None, out: Path) -> Iterator[str]:
    """The target model's /v1 URL: the one given, or the embedded SmolLM2 on llama.cpp."""
    if url:
        yield url.rstrip("/")
        return
    from app.launcher import LaunchError, smollm2_server

    log = out / "llama-server.log"
    # SIGTERM unwinds like Ctrl-C, so the server below is stopped with the run
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    console.print(f"starting llama.cpp (SmolLM2-135M-Instruct) (log: {log})")
    with contextlib.ExitStack() as stack:
        try:
            started = stack.enter_context(smollm2_server(log_file=log))
        except LaunchError as exc:
            raise fail(f"the target model did not start: {exc}") from None
        yield started


def _benign(data: Path | None, names: list[str], per_set: int, seed: int) -> list[Any]:
    from evaluation.public import load_public_set
    from evaluation.sets import SetError, stratified_sample
    from redteam.loop import BenignPrompt

    if data is None or per_set <= 0:
        return []
    out = []
    for name in names:
        try:
            loaded = load_public_set(data, name)
        except SetError as exc:
            raise fail(str(exc)) from None
        out += [BenignPrompt(p.set, p.key, tuple(p.messages))
                for p in stratified_sample(loaded.prompts, per_set, seed=seed)]
    return out


@contextlib.asynccontextmanager
async def _sources(kind: str, url: str, model: str, seed: int) -> AsyncIterator[list[Any]]:
    from redteam.loop import LLMSource, MutationSource

    sources: list[Any] = []
    if kind in ("mutation", "both"):
        sources.append(MutationSource(seed=seed))
    if kind in ("llm", "both"):
        from guideline_lib.llm import LLMClient, LLMConfig
        from redteam.attacker import LLMAttacker

        async with LLMClient(LLMConfig(base_url=url, model=model, concurrency=1)) as client:
            sources.append(LLMSource(LLMAttacker(client, model)))
            yield sources
        return
    yield sources


@app.command()
def run(
    out: Annotated[Path, Opt("--out", help="Run directory: journal, artifacts, report")],
    rounds: Annotated[int, Opt(min=1, help="Rounds (a repair after each but the last)")] = 3,
    goals: Annotated[Path | None, Opt(help="Goals JSONL (default: the shipped set)")] = None,
    goals_per_category: Annotated[int, Opt(min=0, help="Repair goals per category")] = 1,
    holdout_per_category: Annotated[int, Opt(min=0, help="Held-out goals per category")] = 1,
    per_goal: Annotated[int, Opt(min=1, help="Attacks per goal and round")] = 1,
    attacker: Annotated[str, Opt(help="mutation, llm or both")] = "mutation",
    gateway: Annotated[str | None, Opt(help="Attack a running gateway at this URL (default: "
                                       "one in this process)")] = None,
    serving: Annotated[Path | None, Opt(help="With --gateway: the directory whose library/, "
                                        "encoder/, index/, judge/ it serves; repairs are "
                                        "copied there before POST /admin/reload")] = None,
    admin_key: Annotated[str | None, Opt(envvar="GUIDE_ALIGN_MASTER_KEY",
                                         help="With --gateway: key for /admin/reload")] = None,
    target: Annotated[str | None, Opt(help="The target model's /v1 URL (default: start the "
                                      "embedded SmolLM2 on llama.cpp)")] = None,
    model: Annotated[str, Opt(help="Model name sent to the target")] = "smollm2-135m-instruct",
    max_tokens: Annotated[int, Opt(min=1, help="Answer length of the target")] = 64,
    builder_url: Annotated[str | None, Opt(help="LLM of the repair's library build (default: "
                                           "the target)")] = None,
    builder_max_tokens: Annotated[int, Opt(min=16, help="Answer length of the builder")] = 96,
    attacker_url: Annotated[str | None, Opt(help="LLM attacker (default: the target)")] = None,
    max_attacks: Annotated[int, Opt(min=0, help="Attacks sent per round (0: all)")] = 0,
    max_llm_calls: Annotated[int, Opt(min=0, help="Attacker + builder LLM calls per round "
                                      "(0: no limit)")] = 0,
    max_minutes_per_round: Annotated[float, Opt(min=0, help="Minutes of sending attacks per "
                                                "round (0: no limit)")] = 0.0,
    max_repair_inputs: Annotated[int, Opt(min=0, help="Attacks repaired per round")] = 12,
    data: Annotated[Path | None, Opt(help="Folder of the public benign sets")] = None,
    benign_per_set: Annotated[int, Opt(min=0, help="Benign prompts per set and round")] = 12,
    concurrency: Annotated[int, Opt(min=1)] = 1,
    seed: Annotated[int, Opt()] = 13,
    report_out: Annotated[Path | None, Opt(help="Also write the report here (e.g. "
                                           "bench/results/redteam)")] = None,
    resume: Annotated[bool, Opt(help="Continue the run in --out")] = False,
) -> None:
    """Attack the gateway in rounds, judge, record, repair the library and reload it."""
    from redteam.goals import load_goals, pick_goals
    from redteam.report import headline, terminal_table, write_report

    if attacker not in ("mutation", "llm", "both"):
        raise fail("--attacker must be mutation, llm or both")
    if gateway and serving is None:
        raise fail("--gateway needs --serving: the artifact directory that gateway serves")
    data = data if data is not None else (DATA if DATA.is_dir() else None)
    chosen = (pick_goals(load_goals(goals), goals_per_category, holdout=False)
              + pick_goals(load_goals(goals), holdout_per_category, holdout=True))
    if not chosen:
        raise fail("no goals picked")
    config = {"rounds": rounds, "goals": str(goals or "shipped"),
              "goal_ids": [g.id for g in chosen], "per_goal": per_goal, "attacker": attacker,
              "gateway": gateway or "in-process", "target": target or "embedded smollm2",
              "model": model, "max_tokens": max_tokens, "max_attacks": max_attacks,
              "max_llm_calls": max_llm_calls, "max_minutes_per_round": max_minutes_per_round,
              "max_repair_inputs": max_repair_inputs, "builder_max_tokens": builder_max_tokens,
              "benign_sets": list(BENIGN_SETS),
              "benign_per_set": benign_per_set if data else 0, "seed": seed,
              "holdout_tactics": list(HOLDOUT_TACTICS)}
    _check_run_dir(out, config, resume)
    benign = _benign(data, list(BENIGN_SETS), benign_per_set, seed)
    console.print(f"{len(chosen)} goals ({sum(g.holdout for g in chosen)} held out), "
                  f"{per_goal} attack(s) each per round, {len(benign)} benign prompts, "
                  f"{rounds} rounds -> {out}")
    with _target(target, out) as target_url:
        asyncio.run(_run(out, config, chosen, benign, target_url=target_url,
                         builder_url=builder_url or target_url,
                         attacker_url=attacker_url or target_url, gateway=gateway,
                         serving=serving, admin_key=admin_key))
    report, paths = write_report(out, report_out)
    if report_out is not None:
        write_report(out)
    console.print(terminal_table(report))
    for line in headline(report["rounds"]):
        console.print(line)
    console.print("report: " + ", ".join(str(p) for p in paths))


async def _run(out: Path, config: dict[str, Any], goals: list[Any], benign: list[Any], *,
               target_url: str, builder_url: str, attacker_url: str, gateway: str | None,
               serving: Path | None, admin_key: str | None) -> None:
    import httpx

    from guideline_lib.embedded import base_model_path
    from guideline_lib.llm import LLMConfig
    from redteam.evaluator import Artifacts, Gateway, RemoteDefender, in_process_defender
    from redteam.loop import LoopConfig, RedTeamLoop
    from redteam.repair import BuilderRepair, RepairConfig
    from retriever.encoder import load_encoder

    ws = settings(upstream_base_url=target_url)
    base = Artifacts(library=ws.library_path, encoder=ws.encoder_path or ws.trained_encoder_path,
                     index=ws.index_path, judge=ws.judge_path)
    if gateway and serving is not None:
        base = Artifacts(library=serving / "library", encoder=serving / "encoder",
                         index=serving / "index", judge=serving / "judge")
    loop_config = LoopConfig(rounds=config["rounds"], per_goal=config["per_goal"],
                             max_attacks=config["max_attacks"],
                             max_llm_calls=config["max_llm_calls"],
                             max_minutes_per_round=config["max_minutes_per_round"],
                             max_repair_inputs=config["max_repair_inputs"],
                             holdout_tactics=tuple(config["holdout_tactics"]))
    repair_config = RepairConfig(backend=ws.encoder_backend, seed=config["seed"])
    repairer = BuilderRepair(out / "artifacts", llm=LLMConfig(
        base_url=builder_url, model=config["model"], concurrency=1,
        max_tokens=config["builder_max_tokens"]),
        config=repair_config,
        log=console.print)
    intent = load_encoder(str(base_model_path()))
    async with _sources(config["attacker"], attacker_url, config["model"],
                        config["seed"]) as sources:
        if gateway:
            async with httpx.AsyncClient(base_url=gateway.rstrip("/").removesuffix("/v1"),
                                         timeout=600.0) as client:
                assert serving is not None
                defender: Any = RemoteDefender(
                    Gateway(client, model=config["model"], max_tokens=config["max_tokens"],
                            api_key=admin_key), serving, admin_key)
                await RedTeamLoop(out, goals=goals, sources=sources, defender=defender,
                                  base=base, repairer=repairer, benign=benign,
                                  config=loop_config, encoder=intent,
                                  log=console.print).run()
            return
        async with in_process_defender(ws, model=config["model"],
                                       max_tokens=config["max_tokens"]) as local:
            await RedTeamLoop(out, goals=goals, sources=sources, defender=local, base=base,
                              repairer=repairer, benign=benign, config=loop_config,
                              encoder=intent, log=console.print).run()


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A `redteam run` directory")],
    out: Annotated[Path | None, Opt(help="Write the report here (default: the run directory)")]
    = None,
) -> None:
    """Rebuild the report (JSON, plot, journal summary) of a run from its journal."""
    from redteam.loop import JOURNAL
    from redteam.report import headline, terminal_table, write_report

    if not (run_dir / JOURNAL).is_file():
        raise fail(f"{run_dir}: no {JOURNAL}; not a redteam run directory")
    data, paths = write_report(run_dir, out)
    console.print(terminal_table(data))
    for line in headline(data["rounds"]):
        console.print(line)
    console.print("report: " + ", ".join(str(p) for p in paths))


@app.command("train-attacker")
def train_attacker_command(
    output: Annotated[Path | None, Opt("-o", "--output", help="Attacker directory: LoRA, merged "
                                       "model, GGUF, manifest, reward curve (default: "
                                       "<var>/redteam/attacker)")] = None,
    goals: Annotated[Path | None, Opt(help="Goals JSONL (default: the shipped set)")] = None,
    steps: Annotated[int, Opt(min=1, help="GRPO steps")] = 60,
    goals_per_step: Annotated[int, Opt(min=1, help="Prompts (goal x tactic) per step")] = 2,
    generations: Annotated[int, Opt(min=2, help="Completions per prompt (the GRPO group)")] = 4,
    max_completion: Annotated[int, Opt(min=8, help="Tokens per generated attack")] = 64,
    learning_rate: Annotated[float, Opt()] = 1e-4,
    w_unsafe: Annotated[float, Opt(help="Reward for an answer judged unsafe")] = 1.0,
    w_miss: Annotated[float, Opt(help="Reward for a prompt-risk miss")] = 0.5,
    w_intent: Annotated[float, Opt(help="Weight of cosine(goal, attack)")] = 1.0,
    w_similarity: Annotated[float, Opt(help="Penalty: similarity to the group")] = 0.5,
    w_self_bleu: Annotated[float, Opt(help="Penalty: Self-BLEU within the group")] = 0.5,
    min_intent: Annotated[float, Opt(help="Below this intent, success is not rewarded")] = 0.3,
    upstream: Annotated[str | None, Opt(help="Target /v1 URL (default: SmolLM2 on llama.cpp "
                                        "started here)")] = None,
    answer_tokens: Annotated[int, Opt(min=1, help="The target's answer cap per attack")] = 64,
    gate_only: Annotated[bool, Opt(help="No target: reward the risk gate's misses only "
                                   "(much faster; the unsafe term is then 0)")] = False,
    compare: Annotated[bool, Opt(help="Then compare mutations, the prompted and the trained "
                                 "attacker on held-out goals")] = True,
    compare_goals: Annotated[int, Opt(min=1, help="Held-out goals per category")] = 1,
    compare_per_goal: Annotated[int, Opt(min=1, help="Attacks per goal and source")] = 2,
    report: Annotated[Path | None, Opt(help="Where attacker.json/png go (default: "
                                       "OUTPUT/compare)")] = None,
    threads: Annotated[int, Opt(min=0, help="torch and llama.cpp threads (0: all cores)")] = 0,
    progress: Annotated[bool, Opt(help="Show progress bars")] = True,
) -> None:
    """Train the LLM attacker with GRPO against the gateway (docs/redteam.md)."""
    from rich.table import Table

    from app.launcher import LaunchError
    from finetune.models import ModelError
    from redteam.goals import GoalsError, load_goals
    from redteam.train_attacker import (
        AttackerTrainConfig,
        CompareConfig,
        RewardWeights,
        run_training,
    )

    ws = settings()
    try:
        chosen = load_goals(goals)
    except (GoalsError, OSError) as exc:
        raise fail(str(exc)) from None
    config = AttackerTrainConfig(max_steps=steps, goals_per_step=goals_per_step,
                                 num_generations=generations,
                                 max_completion_length=max_completion,
                                 learning_rate=learning_rate, show_progress=progress)
    weights = RewardWeights(unsafe=w_unsafe, miss=w_miss, intent=w_intent,
                            similarity=w_similarity, self_bleu=w_self_bleu, min_intent=min_intent)
    out = output or ws.var_dir / "redteam" / "attacker"
    try:
        result = run_training(ws, out, chosen, config=config, weights=weights,
                              upstream=upstream, threads=threads,
                              gateway_max_tokens=answer_tokens, gate_only=gate_only,
                              compare=CompareConfig(compare_goals, compare_per_goal, report)
                              if compare else None,
                              log=lambda m: console.print(m, highlight=False))
    except (ValueError, LaunchError, ModelError) as exc:
        raise fail(str(exc)) from None
    m = result["metrics"]
    console.print(f"{m['steps']} steps in {m['train_seconds']:.0f}s ({m['steps_per_minute']} "
                  f"steps/min); mean reward {m['reward_first_quarter']} -> "
                  f"{m['reward_last_quarter']} (first -> last quarter of the steps); {out}",
                  highlight=False)
    if "comparison" not in result:
        return
    table = Table(title="attack sources on held-out goals (rates over attacks requested)")
    for col in ("source", "attacks", "skipped", "ASR", "ASR intent kept", "unsafe", "miss",
                "intent", "Self-BLEU", "pairwise sim"):
        table.add_column(col, justify="left" if col == "source" else "right")
    for name, r in result["comparison"]["sources"].items():
        figures = [r[k] for k in ("intent", "self_bleu", "pairwise_similarity")]
        table.add_row(name, str(r["attacks"]), str(r["skipped"]), f"{r['asr']:.0%}",
                      f"{r['asr_intent_kept']:.0%}", f"{r['unsafe_rate']:.0%}",
                      f"{r['miss_rate']:.0%}",
                      *("-" if v is None else f"{v:.2f}" for v in figures))
    console.print(table)
