"""`guide-align eval`: a target's unsafe, refusal and useful rates, directly and through
gateway variants, as JSON, Markdown, HTML (with plots) and a terminal table."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import console, fail
from cli.engine import BatchSizeOpt, EngineOpt, RayAddressOpt, WorkersOpt, check_engine, ray_config

Opt = typer.Option
GATEWAY = "gateway"


def _split_pair(text: str, what: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise fail(f"{what} must look like NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def _options(specs: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for spec in specs:
        name, raw = _split_pair(spec, "--variant-options")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise fail(f"--variant-options {name}: not JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise fail(f"--variant-options {name}: must be a JSON object like '{{\"k\": 8}}'")
        out[name] = value
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _gateway_from_config(config: Path, target: str, log_dir: Path) -> Iterator[str]:
    """A gateway started from a TOML config in front of ``target``; yields its /v1 URL."""
    from app.launcher import LaunchError, stop_process, wait_until_ready

    if not config.is_file():
        raise fail(f"gateway config {config} does not exist")
    port = _free_port()
    env = {**os.environ, "GUIDE_ALIGN_CONFIG": str(config.resolve()),
           "GUIDE_ALIGN_UPSTREAM_BASE_URL": target, "GUIDE_ALIGN_HOST": "127.0.0.1",
           "GUIDE_ALIGN_PORT": str(port), "GUIDE_ALIGN_WORKERS": "1"}
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"gateway-{config.stem}.log"
    console.print(f"starting a gateway from {config} on port {port} (log: {log})")
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-c", "from cli.main import main; main()",
                                 "serve", "--no-train"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/healthz", timeout=300, proc=proc)
        yield f"http://127.0.0.1:{port}/v1"
    except LaunchError as exc:
        raise fail(f"the gateway from {config} did not start: {exc} (see {log})") from None
    finally:
        stop_process(proc)


def _variant_specs(through: str | None, config: Path | None, specs: list[str],
                   options: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(name, gateway URL or config path) of each gateway variant, checked."""
    from evaluation.harness import DIRECT

    pairs: list[tuple[str, str]] = [(GATEWAY, through)] if through else []
    if config is not None:
        pairs.append((GATEWAY, str(config)))
    pairs += [_split_pair(s, "--variant") for s in specs]
    names = [DIRECT, *(n for n, _ in pairs)]
    if len(set(names)) != len(names):
        raise fail(f"variant names must be unique (and not {DIRECT!r}): {', '.join(names)}")
    unknown = set(options) - set(names)
    if unknown:
        raise fail(f"--variant-options for unknown variant(s): {', '.join(sorted(unknown))}")
    for name, where in pairs:
        if not where.startswith(("http://", "https://")) and not Path(where).is_file():
            raise fail(f"variant {name}: {where} is neither an http(s) URL nor a config file")
    return pairs


def _variants(target: str, api_key: str | None, pairs: list[tuple[str, str]],
              options: dict[str, dict[str, Any]], run_dir: Path,
              stack: contextlib.ExitStack) -> list[Any]:
    """The direct variant, then each gateway variant (started from its config if needed)."""
    from evaluation.harness import DIRECT, Variant

    out = [Variant(DIRECT, target, options.get(DIRECT, {}), api_key=api_key)]
    for name, where in pairs:
        config, config_hash = "", ""
        if not where.startswith(("http://", "https://")):
            config = where
            config_hash = hashlib.sha256(Path(where).read_bytes()).hexdigest()[:16]
            where = stack.enter_context(_gateway_from_config(Path(where), target,
                                                             run_dir / "logs"))
        out.append(Variant(name, where, options.get(name, {}), config=config,
                           config_hash=config_hash, api_key=api_key))
    return out


def _prompts(specs: list[str], data: Path | None, per_set: int, seed: int,
             fields: dict[str, Any]) -> list[Any]:
    """Prompts of every set named (a file, or a public set name under ``data``), sampled."""
    from evaluation.public import PUBLIC_SETS, load_public_set
    from evaluation.sets import load_file_set, stratified_sample

    if not specs:
        raise fail("name at least one set: a .jsonl / .json / .csv file, a saved dataset "
                   f"directory, or with --data one of: {', '.join(PUBLIC_SETS)}")
    prompts = []
    for spec in specs:
        if spec in PUBLIC_SETS and not Path(spec).exists():
            if data is None:
                raise fail(f"set {spec!r} is a public set: pass --data DIR (e.g. ../shared/data)")
            loaded = load_public_set(data, spec)
        else:
            loaded = load_file_set(Path(spec), **fields)
        if loaded.skipped:
            console.print(f"{loaded.name}: skipped {loaded.skipped} unusable or duplicate rows")
        prompts += stratified_sample(loaded.prompts, per_set, seed=seed)
    return prompts


def _graders(grader: str, judge_url: str | None, judge_model: str | None,
             judge_key: str | None, run_dir: Path, concurrency: int) -> list[Any]:
    from evaluation.grading import JudgeGrader, LLMGrader
    from guideline_lib.llm import LLMConfig

    out: list[Any] = []
    if grader in ("judge", "both"):
        from cli.judge import _open_judge, _ready

        ws, _ = _ready()
        retriever = ws.open_retriever()
        out.append(JudgeGrader(retriever, _open_judge(ws, retriever)))
    if grader in ("llm", "both"):
        assert judge_url and judge_model
        out.append(LLMGrader(LLMConfig(base_url=judge_url, model=judge_model, api_key=judge_key,
                                       temperature=0.0, max_tokens=64,
                                       concurrency=concurrency), run_dir))
    return out


def eval_command(
    sets: Annotated[list[str] | None, typer.Argument(
        help="Sets: .jsonl / .json / .csv files or saved datasets (a text or `messages` "
             "column, optional label and category), or public set names with --data")] = None,
    target: Annotated[str | None, Opt(help="The target's OpenAI-compatible base URL (…/v1)")]
    = None,
    model: Annotated[str | None, Opt(help="Model name sent to the target")] = None,
    out: Annotated[Path, Opt("-o", "--out", help="Run directory: answers (the cache), grades, "
                             "reports")] = Path("var/eval/run"),
    through_gateway: Annotated[str | None, Opt(help="A running gateway in front of the "
                                               "target (variant 'gateway')")] = None,
    gateway_config: Annotated[Path | None, Opt(help="Start a gateway from this TOML config in "
                                               "front of the target (variant 'gateway')")]
    = None,
    variant: Annotated[list[str] | None, Opt(help="More variants: NAME=GATEWAY_URL or "
                                             "NAME=CONFIG.toml (repeat)")] = None,
    variant_options: Annotated[list[str] | None, Opt(help="NAME='{\"k\": 8}': guide_align "
                                                     "options a variant sends (repeat)")] = None,
    data: Annotated[Path | None, Opt(help="Folder of the public sets (e.g. ../shared/data)")]
    = None,
    per_set: Annotated[int, Opt(min=0, help="Prompts per set, stratified by label and "
                                "category (0: all)")] = 0,
    seed: Annotated[int, Opt(help="Seed of the stratified sample")] = 13,
    label: Annotated[str | None, Opt(help="harmful or benign, for file rows without a label")]
    = None,
    text_field: Annotated[str | None, Opt(help="Text column of the files (default: found)")]
    = None,
    label_field: Annotated[str | None, Opt(help="Label column of the files")] = None,
    category_field: Annotated[str | None, Opt(help="Category column of the files")] = None,
    max_tokens: Annotated[int, Opt(min=1)] = 256,
    temperature: Annotated[float, Opt(min=0.0)] = 0.0,
    concurrency: Annotated[int, Opt(min=1, help="Calls in flight per variant")] = 2,
    retries: Annotated[int, Opt(min=0, help="Retries of a call on 429 / 5xx / timeouts")] = 3,
    timeout: Annotated[float, Opt(min=1.0, help="Seconds per call")] = 120.0,
    retry_failed: Annotated[bool, Opt(help="Ask again the prompts whose call failed")] = False,
    regrade: Annotated[bool, Opt(help="Grade the run directory's answers again; ask nothing")]
    = False,
    grader: Annotated[str, Opt(help="judge (the response judge), llm or both")] = "judge",
    judge_url: Annotated[str | None, Opt(help="LLM judge's OpenAI-compatible base URL")] = None,
    judge_model: Annotated[str | None, Opt(help="LLM judge's model name")] = None,
    report: Annotated[Path | None, Opt(help="Report path without extension (default: "
                                       "OUT/report); .json .md .html .png are written")] = None,
    title: Annotated[str | None, Opt(help="Title of the report")] = None,
    plots: Annotated[bool, Opt(help="Draw the plots (needs matplotlib)")] = True,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = 2,
    batch_size: BatchSizeOpt = 16,
) -> None:
    """Ask a target directly and through gateway variants, grade the answers, report."""
    from evaluation.harness import CallPolicy, RunMismatch, Sampling, read_prompts
    from evaluation.report import terminal_table, write_reports
    from evaluation.run import evaluate, grade_and_measure
    from evaluation.sets import SetError, parse_label
    from guideline_lib.llm import LLMUnreachable

    api_key = os.environ.get("GUIDE_ALIGN_EVAL_API_KEY")
    judge_key = os.environ.get("GUIDE_ALIGN_EVAL_JUDGE_API_KEY")
    if label is not None and parse_label(label) is None:
        raise fail("--label must be harmful or benign")
    if grader not in ("judge", "llm", "both"):
        raise fail("--grader must be judge, llm or both")
    if grader != "judge" and not (judge_url and judge_model):
        raise fail(f"--grader {grader} needs --judge-url and --judge-model")
    rc = ray_config(address=ray_address, workers=workers, batch_size=batch_size,
                    progress=True) if check_engine(engine) == "ray" else None
    try:
        if regrade:
            read_prompts(out)  # an eval run directory, before the graders load
            results = grade_and_measure(out, _graders(grader, judge_url, judge_model,
                                                      judge_key, out, concurrency))
        else:
            fields = {"text_field": text_field, "label_field": label_field,
                      "category_field": category_field, "label": parse_label(label)}
            prompts = _prompts(list(sets or []), data, per_set, seed, fields)
            if not (target and model):
                raise fail("--target and --model are required (or --regrade an earlier run)")
            options = _options(list(variant_options or []))
            pairs = _variant_specs(through_gateway, gateway_config, list(variant or []), options)
            graders = _graders(grader, judge_url, judge_model, judge_key, out, concurrency)
            policy = CallPolicy(concurrency=concurrency, max_retries=retries, timeout=timeout,
                                retry_failed=retry_failed)
            with contextlib.ExitStack() as stack:
                variants = _variants(target, api_key, pairs, options, out, stack)
                console.print(f"{len(prompts)} prompts x {len(variants)} variants -> {out}")
                sampling = Sampling(model, temperature, max_tokens)
                if rc is not None:
                    from scale.evaluate import collect_answers_ray

                    collected = collect_answers_ray(prompts, variants, out, sampling=sampling,
                                                    policy=policy, ray_config=rc)
                    results = grade_and_measure(out, graders, collected=collected)
                else:
                    results = evaluate(prompts, variants, out, graders, policy=policy,
                                       sampling=sampling)
    except (SetError, RunMismatch) as exc:
        raise fail(str(exc)) from None
    except LLMUnreachable as exc:
        raise fail(f"the LLM judge cannot be reached: {exc}") from None
    except KeyboardInterrupt:
        raise fail("interrupted; rerun the same command to resume", 130) from None
    command = ("guide-align " + shlex.join(sys.argv[1:])
               if Path(sys.argv[0]).name == "guide-align" else None)
    paths = write_reports(results.data, report or out / "report", title=title, plots=plots,
                          command=command)
    for note in results.data["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")
    console.print(terminal_table(results.data))
    console.print("wrote " + ", ".join(str(p) for p in paths))
    for name, reason in results.data["stopped"].items():
        console.print(f"[yellow]variant {name} stopped early:[/yellow] {reason}\n"
                      "Nothing is lost: rerun the same command to resume.")
    if results.data["stopped"]:
        raise typer.Exit(3)
