"""`guide-align library build`: inputs -> guideline library with any OpenAI-compatible LLM."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.console import Console
from rich.markup import escape

from guideline_lib.assemble import AssembleStats, assemble_library
from guideline_lib.augment import AugmentConfig
from guideline_lib.batch import RunStopped, run_journaled
from guideline_lib.build import (
    BuildConfig,
    BuildRun,
    CallPlan,
    execute_build,
    input_records,
    plan_calls,
)
from guideline_lib.categorise import CategoriseConfig
from guideline_lib.dedup import DedupConfig, Embedder
from guideline_lib.inputs import InputError, ReadStats, read_inputs
from guideline_lib.io import LibraryError, load_library, save_library
from guideline_lib.journal import Journal
from guideline_lib.llm import ClientStats, LLMConfig, ResponseCache
from guideline_lib.prompting import prompt_version
from guideline_lib.schema import Library, Manifest, utc_now

console = Console(soft_wrap=True)
Opt = typer.Option


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


def _public_url(url: str) -> str:
    """The endpoint without credentials, for the manifest."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _next_version(version: str) -> str:
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", version)
    return f"{match[1]}.{match[2]}.{int(match[3]) + 1}" if match else f"{version}.1"


# How `library build` gets a sentence encoder for merging near-duplicates. guideline_lib sits
# below retriever (DESIGN: imports go one way), so the command line that assembles the packages
# (app.cli) installs the loader; without one, merging uses the fuzzy ratio only.
EncoderLoader = Callable[[Path | None], Embedder]
_encoder_loader: EncoderLoader | None = None


def set_encoder_loader(loader: EncoderLoader | None) -> None:
    """Install how to load the merge encoder (a path, or None for the default model)."""
    global _encoder_loader
    _encoder_loader = loader


def _load_encoder(path: Path | None) -> Embedder | None:
    # Loaded at the edge only: stages take any Embedder. A missing model must not lose a
    # finished build, so merging falls back to the fuzzy ratio.
    if _encoder_loader is None:
        console.print("[yellow]warning:[/yellow] no sentence encoder available; merging "
                      "near-duplicates by fuzzy ratio only")
        return None
    try:
        return _encoder_loader(path)
    except Exception as exc:
        console.print(f"[yellow]warning:[/yellow] no sentence encoder ({escape(str(exc))}); "
                      "merging near-duplicates by fuzzy ratio only")
        return None


def _print_read(stats: ReadStats) -> None:
    console.print(stats.summary())
    for note in stats.notes:
        console.print(f"  [yellow]{escape(note)}[/yellow]")
    if sum(stats.skipped.values()) > len(stats.notes):
        console.print(f"  ... {sum(stats.skipped.values()) - len(stats.notes)} more skipped")


def _print_plan(plan: CallPlan) -> None:
    stages = f"{plan.augment} augment + {plan.detect} detect + {plan.generate} generate" + (
        f" + {plan.categorise} categorise" if plan.calls_per_input > 2 else "")
    console.print(
        f"dry run: {plan.inputs} inputs, {plan.done} already in the journal, {plan.pending} to do; "
        f"would make {plan.calls} LLM calls ({stages})"
        + (f", up to {plan.max_calls} with augmented inputs" if plan.augment_max_new else "")
        + "; retries of unparseable answers not counted"
    )


def _producer(inputs: list[Path], text_field: str, llm: LLMConfig, base: Library | None,
              read: ReadStats, run: BuildRun, calls: ClientStats, st: AssembleStats
              ) -> dict[str, Any]:
    return {
        "tool": "guide-align library build",
        "inputs": [str(p) for p in inputs],
        "text_field": text_field,
        "model": llm.model,
        "endpoint": _public_url(llm.base_url),
        "temperature": llm.temperature,
        "prompt_version": prompt_version(),
        "extends": ({"name": base.manifest.name, "version": base.manifest.version,
                     "content_hash": base.manifest.content_hash} if base else None),
        "read": {"rows": read.read, "kept": read.kept, "skipped": read.skipped},
        "build": {"inputs": len(run.items), "augmented": run.augmented, "ok": st.ok,
                  "failed": st.failed, "candidates": st.candidates,
                  "new_guidelines": st.new_guidelines, "merged": st.merged,
                  "new_examples": st.new_examples, "llm_requests": calls.requests,
                  "cache_hits": calls.cache_hits},
        "finished": utc_now(),
    }


def build(
    inputs: Annotated[list[Path], typer.Argument(help="JSONL / JSON / CSV / text files or "
                                                 "dataset directories (datasets.save_to_disk)")],
    output: Annotated[Path, Opt("-o", "--output", help="Library directory to write")],
    text_field: Annotated[str, Opt(help="Field / column holding the input text")] = "text",
    extend: Annotated[Path | None, Opt(help="Existing library to extend")] = None,
    base_url: Annotated[str, Opt(help="OpenAI-compatible endpoint")] = LLMConfig.base_url,
    model: Annotated[str, Opt(help="Model name sent to the endpoint")] = LLMConfig.model,
    api_key: Annotated[str | None, Opt(envvar="GUIDE_ALIGN_LLM_API_KEY",
                                       help="API key (or env GUIDE_ALIGN_LLM_API_KEY)")] = None,
    temperature: Annotated[float, Opt()] = LLMConfig.temperature,
    max_tokens: Annotated[int, Opt(help="Default answer length cap")] = LLMConfig.max_tokens,
    timeout: Annotated[float, Opt(help="Seconds per LLM call")] = LLMConfig.timeout,
    concurrency: Annotated[int, Opt(help="LLM calls in flight")] = LLMConfig.concurrency,
    retries: Annotated[int, Opt(help="Retries on 429/5xx/timeouts")] = LLMConfig.max_retries,
    augment: Annotated[int, Opt(help="Augmentation rounds (0: off)")] = 0,
    augment_per_round: Annotated[int, Opt(help="New inputs asked per round")] = 5,
    categorise_mode: Annotated[str, Opt("--categorise", help="detect | llm")] = "detect",
    work_dir: Annotated[Path | None, Opt(help="Journal + cache (default OUTPUT.build)")] = None,
    cache: Annotated[bool, Opt(help="Cache LLM answers by prompt")] = True,
    retry_failed: Annotated[bool, Opt(help="Redo inputs that failed last time")] = False,
    dry_run: Annotated[bool, Opt(help="Only print how many LLM calls it would make")] = False,
    name: Annotated[str | None, Opt(help="Library name")] = None,
    version: Annotated[str | None, Opt(help="Library version")] = None,
    max_chars: Annotated[int, Opt(help="Longer inputs are skipped")] = 8000,
    embed: Annotated[bool, Opt(help="Merge near-duplicates by MiniLM cosine too")] = True,
    encoder: Annotated[Path | None, Opt(help="Sentence encoder for merging")] = None,
    progress: Annotated[bool, Opt(help="Show progress bars")] = True,
) -> None:
    """Build (or extend) a guideline library from inputs with an LLM; resumable."""
    if categorise_mode not in ("detect", "llm"):
        raise _fail("--categorise must be 'detect' or 'llm'")
    try:
        items, read = read_inputs(inputs, text_field=text_field, max_chars=max_chars)
        base = load_library(extend) if extend else None
    except (InputError, LibraryError) as exc:
        raise _fail(str(exc)) from None
    _print_read(read)
    if not items and not augment:
        raise _fail("no usable inputs", 1)
    llm = LLMConfig(base_url=base_url, model=model, api_key=api_key, temperature=temperature,
                    max_tokens=max_tokens, timeout=timeout, max_retries=retries,
                    concurrency=concurrency)
    config = BuildConfig(
        augment=AugmentConfig(rounds=augment, per_round=augment_per_round),
        categorise=CategoriseConfig(mode=categorise_mode),  # type: ignore[arg-type]
        dedup=DedupConfig(), retry_failed=retry_failed)
    work = work_dir or output.with_name(output.name + ".build")
    journal = Journal(work / "journal.jsonl")
    if dry_run:
        _print_plan(plan_calls(items, journal=journal, config=config, llm=llm))
        return
    response_cache = ResponseCache(work / "cache.sqlite") if cache else None
    try:
        run, calls = run_journaled(execute_build(items, llm=llm, config=config, journal=journal,
                                                 cache=response_cache, show_progress=progress),
                                   journal=journal, cache=response_cache)
    except RunStopped as exc:
        raise _fail(str(exc), exc.exit_code) from None
    records = input_records(run.items, journal, config=config, llm=llm)
    manifest = (base.manifest.model_copy(update={"created": utc_now()}) if base
                else Manifest(name=name or output.name))
    manifest.name = name or manifest.name
    manifest.version = version or (_next_version(base.manifest.version) if base else "0.1.0")
    library, st = assemble_library(
        run.items, records, base=base, encoder=_load_encoder(encoder) if embed else None,
        dedup=config.dedup, manifest=manifest, model=model, prompt_version=prompt_version(),
        test_percent=config.test_percent)
    library.manifest.producer = _producer(inputs, text_field, llm, base, read, run, calls, st)
    saved = save_library(library, output)
    for line in st.failures[:10]:
        console.print(f"  [yellow]failed[/yellow] {escape(line)}")
    console.print(
        f"inputs: {len(run.items)} ({run.augmented} from augmentation), {st.ok} ok, "
        f"{st.failed} failed; guidelines: {st.new_guidelines} new, {st.merged} merged into "
        f"existing; examples: {st.new_examples} new; LLM: {calls.requests} requests, "
        f"{calls.cache_hits} cache hits, {calls.retries} retries")
    console.print(escape(f"wrote {output}: {saved.manifest.counts} (journal: {journal.path})"))
    if st.failed:
        console.print("rerun with --retry-failed to try the failed inputs again")
