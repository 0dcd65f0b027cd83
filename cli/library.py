"""`guide-align library ...`: validate, stats, diff, merge, starter, build."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cli.common import console, fail
from cli.engine import BatchSizeOpt, EngineOpt, RayAddressOpt, WorkersOpt, check_engine, ray_config
from guideline_lib.augment import AugmentConfig
from guideline_lib.batch import RunStopped
from guideline_lib.build import BuildConfig, CallPlan, plan_calls
from guideline_lib.categorise import CategoriseConfig
from guideline_lib.dedup import DedupConfig, Embedder
from guideline_lib.inputs import InputError, ReadStats, read_inputs
from guideline_lib.io import LibraryError, default_library_path, load_library, save_library
from guideline_lib.llm import LLMConfig
from guideline_lib.pipeline import build_library, open_build_journal, work_dir_for
from guideline_lib.schema import Library
from guideline_lib.starter import SOURCES, STARTER_VERSION, assemble_starter
from guideline_lib.validate import diff_libraries, library_stats, merge_libraries, validate_library

app = typer.Typer(help="Guideline library tools.", no_args_is_help=True)
Opt = typer.Option

LibArg = Annotated[Path, typer.Argument(help="Library directory")]


def _load(path: Path) -> Library:
    try:
        return load_library(path)
    except LibraryError as exc:
        raise fail(str(exc)) from None


@app.command()
def validate(
    library: Annotated[Path, typer.Argument(help="Library directory")] = default_library_path(),
    threshold: Annotated[float, typer.Option(help="Near-duplicate similarity threshold")] = 0.85,
) -> None:
    """Report unknown categories, dangling ids, bad texts and near-duplicate guidelines."""
    report = validate_library(_load(library), dup_threshold=threshold)
    for f in report.findings:
        colour = "red" if f.level == "error" else "yellow"
        console.print(f"[{colour}]{f.level}[/{colour}] {f.code}: {f.message}")
    n_err, n_warn = len(report.errors), len(report.findings) - len(report.errors)
    console.print(f"{library}: {n_err} errors, {n_warn} warnings")
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def stats(
    library: Annotated[Path, typer.Argument(help="Library directory")] = default_library_path(),
) -> None:
    """Counts per category and kind, as a table."""
    lib = _load(library)
    rows = library_stats(lib)
    table = Table(title=f"{lib.manifest.name} {lib.manifest.version} "
                        f"({lib.manifest.content_hash[:12]})")
    for col in ("category", "kind", "guidelines", "examples_train", "examples_test"):
        table.add_column(col, justify="left" if col in ("category", "kind") else "right")
    for r in rows:
        table.add_row(*(str(r[c]) for c in ("category", "kind", "guidelines", "examples_train",
                                              "examples_test")))
    c = lib.counts()
    table.add_section()
    table.add_row("total", f"{c['safety']} safety / {c['quality']} quality", str(c["guidelines"]),
                  str(c["examples_train"]), str(c["examples_test"]))
    console.print(table)


@app.command()
def diff(old: LibArg, new: LibArg) -> None:
    """Guidelines added, removed and changed between two library versions."""
    d = diff_libraries(_load(old), _load(new))
    for g in d.added:
        console.print(f"[green]+ {g.id}[/green] [{g.category}] {g.text}")
    for g in d.removed:
        console.print(f"[red]- {g.id}[/red] [{g.category}] {g.text}")
    for a, b in d.changed:
        console.print(f"[yellow]~ {a.id}[/yellow] {a.category}->{b.category} {a.kind}->{b.kind}")
    console.print(f"{len(d.added)} added, {len(d.removed)} removed, {len(d.changed)} changed")


@app.command()
def merge(
    libraries: Annotated[list[Path], typer.Argument(help="Libraries; the first one wins ties")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output library directory")],
    name: Annotated[str | None, typer.Option(help="Name of the merged library")] = None,
) -> None:
    """Merge libraries (guidelines by id, examples de-duplicated) into a new one."""
    loaded = [_load(p) for p in libraries]
    merged = save_library(merge_libraries(loaded[0], *loaded[1:], name=name), output)
    console.print(f"wrote {output}: {merged.manifest.counts}")


@app.command()
def starter(
    sources: Annotated[Path, typer.Option(help="Per-category source files")] = SOURCES,
    output: Annotated[Path, typer.Option("-o", "--output")] = default_library_path(),
    version: Annotated[str, typer.Option(help="Library version")] = STARTER_VERSION,
) -> None:
    """Assemble the starter library from its hand-written sources."""
    lib = save_library(assemble_starter(sources, version=version), output)
    console.print(f"wrote {output}: {lib.manifest.counts}")


def merge_encoder(path: Path | None) -> Embedder | None:
    """The sentence encoder `build` merges near-duplicates with (default: MiniLM); None, with a
    warning, when it cannot be loaded: a missing model must not lose a finished build."""
    from guideline_lib.embedded import base_model_path
    from retriever.encoder import load_encoder

    try:
        return load_encoder(str(path or base_model_path()))
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


@app.command()
def build(
    inputs: Annotated[list[str], typer.Argument(help="JSONL / JSON / CSV / text files or "
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
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = 2,
    batch_size: BatchSizeOpt = 16,
) -> None:
    """Build (or extend) a guideline library from inputs with an LLM; resumable."""
    if categorise_mode not in ("detect", "llm"):
        raise fail("--categorise must be 'detect' or 'llm'")
    if check_engine(engine) == "ray":
        _build_on_ray(**locals())
        return
    try:
        items, read = read_inputs([Path(p) for p in inputs], text_field=text_field,
                                  max_chars=max_chars)
        base = load_library(extend) if extend else None
    except (InputError, LibraryError) as exc:
        raise fail(str(exc)) from None
    _print_read(read)
    if not items and not augment:
        raise fail("no usable inputs", 1)
    llm = LLMConfig(base_url=base_url, model=model, api_key=api_key, temperature=temperature,
                    max_tokens=max_tokens, timeout=timeout, max_retries=retries,
                    concurrency=concurrency)
    config = BuildConfig(
        augment=AugmentConfig(rounds=augment, per_round=augment_per_round),
        categorise=CategoriseConfig(mode=categorise_mode),  # type: ignore[arg-type]
        dedup=DedupConfig(), retry_failed=retry_failed)
    work = work_dir or work_dir_for(output)
    if dry_run:
        _print_plan(plan_calls(items, journal=open_build_journal(work), config=config, llm=llm))
        return
    try:
        result = build_library(
            items, output, llm=llm, config=config, base=base,
            encoder=merge_encoder(encoder) if embed else None, name=name, version=version,
            work_dir=work, cache=cache, read=read, inputs=[str(p) for p in inputs],
            text_field=text_field, show_progress=progress)
    except RunStopped as exc:
        raise fail(str(exc), exc.exit_code) from None
    st, run, calls = result.stats, result.run, result.calls
    for line in st.failures[:10]:
        console.print(f"  [yellow]failed[/yellow] {escape(line)}")
    console.print(
        f"inputs: {len(run.items)} ({run.augmented} from augmentation), {st.ok} ok, "
        f"{st.failed} failed; guidelines: {st.new_guidelines} new, {st.merged} merged into "
        f"existing; examples: {st.new_examples} new; LLM: {calls.requests} requests, "
        f"{calls.cache_hits} cache hits, {calls.retries} retries")
    console.print(escape(f"wrote {output}: {result.library.manifest.counts} "
                         f"(journal: {result.journal})"))
    if st.failed:
        console.print("rerun with --retry-failed to try the failed inputs again")


def _build_on_ray(**opts: Any) -> None:
    """`build --engine ray`: the same options, inputs read by Ray Data, records as shards."""
    from scale.build import build_library_ray
    from scale.ray_engine import RayRunError

    if opts["augment"] or opts["dry_run"]:
        raise fail("--augment and --dry-run run on the local engine only")
    try:
        base = load_library(opts["extend"]) if opts["extend"] else None
    except LibraryError as exc:
        raise fail(str(exc)) from None
    llm = LLMConfig(base_url=opts["base_url"], model=opts["model"], api_key=opts["api_key"],
                    temperature=opts["temperature"], max_tokens=opts["max_tokens"],
                    timeout=opts["timeout"], max_retries=opts["retries"],
                    concurrency=opts["concurrency"])
    config = BuildConfig(categorise=CategoriseConfig(mode=opts["categorise_mode"]),
                         dedup=DedupConfig(), retry_failed=opts["retry_failed"])
    rc = ray_config(address=opts["ray_address"], workers=opts["workers"],
                    batch_size=opts["batch_size"], progress=opts["progress"])
    try:
        result = build_library_ray(
            [str(p) for p in opts["inputs"]], opts["output"], llm=llm, config=config,
            ray_config=rc, text_field=opts["text_field"], max_chars=opts["max_chars"],
            base=base, encoder=merge_encoder(opts["encoder"]) if opts["embed"] else None,
            name=opts["name"], version=opts["version"], work_dir=opts["work_dir"])
    except RunStopped as exc:
        raise fail(str(exc), exc.exit_code) from None
    except (RayRunError, InputError) as exc:
        raise fail(str(exc)) from None
    st, calls = result.stats, result.calls
    console.print(
        f"inputs: {len(result.run.items)}, {st.ok} ok, {st.failed} failed; guidelines: "
        f"{st.new_guidelines} new, {st.merged} merged; LLM: {calls.requests} requests, "
        f"{calls.retries} retries")
    console.print(escape(f"wrote {opts['output']}: {result.library.manifest.counts} "
                         f"(shards: {result.journal})"))
