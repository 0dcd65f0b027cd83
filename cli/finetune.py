"""`guide-align finetune ...`: generate, export, train, evaluate, gguf, serve."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.common import console, settings
from cli.common import fail as _fail
from cli.engine import BatchSizeOpt, EngineOpt, RayAddressOpt, WorkersOpt, check_engine, ray_config
from cli.retriever import parse_margin
from guideline_lib.io import default_library_path
from guideline_lib.llm import LLMConfig

app = typer.Typer(help="Labrador-style fine-tune stage.", no_args_is_help=True)
Opt = typer.Option


def _default_base() -> Path:
    from guideline_lib.embedded import EmbeddedModelMissing, smollm2_path

    try:
        return smollm2_path()
    except EmbeddedModelMissing as exc:
        raise _fail(str(exc)) from None


@app.command()
def generate(
    inputs: Annotated[list[str], typer.Argument(help="JSONL / JSON / CSV / text files or "
                                                "dataset directories")],
    run: Annotated[Path, Opt("-o", "--output", help="Run directory (journal, cache, run.json)")],
    text_field: Annotated[str, Opt(help="Field / column holding the input text")] = "text",
    max_chars: Annotated[int, Opt(help="Longer inputs are skipped")] = 8000,
    library: Annotated[Path | None, Opt(help="Guideline library (default: the workspace's)")]
    = None,
    index: Annotated[Path | None, Opt(help="Index directory (default: the workspace's; "
                                      "prepared when missing)")] = None,
    encoder: Annotated[Path | None, Opt(help="Encoder (default: the trained one)")] = None,
    base_url: Annotated[str, Opt(help="OpenAI-compatible endpoint")] = LLMConfig.base_url,
    model: Annotated[str, Opt(help="Model name sent to the endpoint")] = LLMConfig.model,
    api_key: Annotated[str | None, Opt(envvar="GUIDE_ALIGN_LLM_API_KEY",
                                       help="API key (or env GUIDE_ALIGN_LLM_API_KEY)")] = None,
    temperature: Annotated[float, Opt()] = LLMConfig.temperature,
    max_tokens: Annotated[int, Opt(help="Answer length cap (longer answers are dropped "
                                   "at export)")] = LLMConfig.max_tokens,
    timeout: Annotated[float, Opt(help="Seconds per LLM call")] = LLMConfig.timeout,
    concurrency: Annotated[int, Opt(help="LLM calls in flight")] = LLMConfig.concurrency,
    retries: Annotated[int, Opt(help="Retries on 429/5xx/timeouts")] = LLMConfig.max_retries,
    k: Annotated[int | None, Opt(help="Guidelines per input (default: the gateway's)")] = None,
    min_score: Annotated[float | None, Opt(help="Default: the gateway's")] = None,
    dedup_threshold: Annotated[float | None, Opt(help="Default: the gateway's")] = None,
    candidates: Annotated[int | None, Opt(help="Default: the gateway's")] = None,
    safety_margin: Annotated[str | None, Opt(help="Safety-vs-quality margin, or 'off' "
                                             "(default: the gateway's)")] = None,
    encoder_backend: Annotated[str | None, Opt(help="onnx-int8 (the gateway's default) | onnx "
                                               "| static | torch (reference)")] = None,
    window: Annotated[int | None, Opt(help="Earlier user turns in the retrieval query")] = None,
    system: Annotated[str | None, Opt(help="The client's system message for every input")] = None,
    cache: Annotated[bool, Opt(help="Cache LLM answers by request")] = True,
    retry_failed: Annotated[bool, Opt(help="Redo inputs that failed last time")] = False,
    progress: Annotated[bool, Opt(help="Show a progress bar")] = True,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = 2,
    batch_size: BatchSizeOpt = 16,
) -> None:
    """Guided answers for inputs through the gateway's own guide step; resumable."""
    from finetune.generate import GenerateConfig, generate_run
    from finetune.io import RunError
    from guideline_lib.batch import RunStopped
    from guideline_lib.inputs import InputError, read_inputs
    from guideline_lib.io import LibraryError
    from judge.model import JudgeError
    from retriever.encoder import EncoderError
    from retriever.index import IndexLoadError

    on_ray = check_engine(engine) == "ray"
    items: list[Any] = []
    if not on_ray:
        try:
            items, read = read_inputs([Path(p) for p in inputs], text_field=text_field,
                                      max_chars=max_chars)
        except InputError as exc:
            raise _fail(str(exc)) from None
        console.print(read.summary())
        for note in read.notes:
            console.print(f"  [yellow]{note}[/yellow]")
        if not items:
            raise _fail("no usable inputs", 1)
    explicit = {"safety_margin": parse_margin(safety_margin)} if safety_margin else {}
    ws = settings(library_path=library, index_path=index, encoder_path=encoder,
                  encoder_backend=encoder_backend, k=k, min_score=min_score,
                  dedup_threshold=dedup_threshold, candidates=candidates, window=window,
                  explicit=explicit)
    try:
        ws.prepare(train=False, log=console.print)
        retriever = ws.open_retriever()
        judge = ws.open_judge(retriever)  # the gateway's risk gate, when it is on
    except (LibraryError, IndexLoadError, EncoderError, JudgeError, OSError) as exc:
        raise _fail(f"cannot open the retriever: {exc}") from None
    enc_info = {"path": str(ws.retriever_paths().encoder), "backend": ws.encoder_backend,
                "hash": str(retriever.index.manifest.get("encoder_hash", ""))}
    llm = LLMConfig(base_url=base_url, model=model, api_key=api_key, temperature=temperature,
                    max_tokens=max_tokens, timeout=timeout, max_retries=retries,
                    concurrency=concurrency)
    config = GenerateConfig(policy=ws.policy(judge), system=system, retry_failed=retry_failed)
    try:
        if on_ray:
            from scale.generate import generate_run_ray

            rc = ray_config(address=ray_address, workers=workers, batch_size=batch_size,
                            progress=progress)
            result = generate_run_ray(inputs, run, workspace=ws, retriever=retriever,
                                      encoder_info=enc_info, llm=llm, config=config,
                                      ray_config=rc, judge=judge, text_field=text_field,
                                      max_chars=max_chars)
        else:
            result = generate_run(items, run, retriever=retriever, encoder_info=enc_info,
                                  llm=llm, config=config, inputs=[str(p) for p in inputs],
                                  read={"rows": read.read, "kept": read.kept,
                                        "skipped": read.skipped},
                                  cache=cache, judge=judge, show_progress=progress)
    except (RunError, InputError) as exc:
        raise _fail(str(exc)) from None
    except RunStopped as exc:
        raise _fail(str(exc), exc.exit_code) from None
    for note in result.notes:
        console.print(f"[yellow]{note}[/yellow]")
    s = result.run.stats
    calls = result.run.calls
    console.print(f"{s.total} inputs: {s.skipped_done} already done, {s.ok} answered, "
                  f"{s.failed} failed in {s.seconds:.0f}s; LLM: {calls.requests} requests, "
                  f"{calls.cache_hits} cache hits, {calls.retries} retries")
    console.print(f"run {run}: {result.counts}")
    if result.counts["failed"]:
        console.print("rerun with --retry-failed to try the failed inputs again")


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="Run directory from `finetune generate`")],
    output: Annotated[Path, Opt("-o", "--output", help="Output directory")],
    fmt: Annotated[str, Opt("--format", help="openai | sharegpt | alpaca | hf")] = "openai",
    dedup: Annotated[bool, Opt(help="Drop repeated (normalised) inputs and answers")] = False,
    min_answer_chars: Annotated[int, Opt(help="Shorter answers are dropped")] = 1,
    max_answer_chars: Annotated[int, Opt(help="Longer answers are dropped (0: no limit)")] = 0,
    max_input_chars: Annotated[int, Opt(help="Longer prompts are dropped (0: no limit)")] = 0,
    validation: Annotated[float, Opt(help="Validation fraction")] = 0.1,
    seed: Annotated[int, Opt(help="Split seed")] = 13,
    backtrack: Annotated[bool, Opt(help="Inject unsafe spans followed by the backtrack "
                                   "marker into a share of the answers (loss masked on the "
                                   "span; openai / hf formats)")] = False,
    backtrack_share: Annotated[float, Opt(help="Share of answers that get a span")] = 0.5,
    backtrack_marker: Annotated[str, Opt(help="Marker template, {n} = words to take "
                                         "back")] = "[[backtrack {n}]]",
) -> None:
    """SFT set from guided answers, guidelines stripped from the prompt, with a dataset card."""
    from finetune.export import FORMATS, ExportConfig, build_sft, export_manifest
    from finetune.io import (
        EXPORT_MANIFEST,
        OutputError,
        RunError,
        check_output_dir,
        read_run,
        write_export,
    )

    if fmt not in FORMATS:
        raise _fail(f"--format must be one of {', '.join(FORMATS)}")
    if not 0 <= validation < 1:
        raise _fail("--validation must be in [0, 1)")
    try:
        check_output_dir(output, marker=EXPORT_MANIFEST, inputs=(run,))
        run_info, records = read_run(run)
    except (RunError, OutputError) as exc:
        raise _fail(str(exc)) from None
    config = ExportConfig(format=fmt, dedup=dedup,  # type: ignore[arg-type]
                          min_answer_chars=min_answer_chars, max_answer_chars=max_answer_chars,
                          max_input_chars=max_input_chars, validation=validation, seed=seed)
    if backtrack and fmt not in ("openai", "hf"):
        raise _fail("--backtrack needs --format openai or hf (they carry the masked spans)")
    if not 0 <= backtrack_share <= 1:
        raise _fail("--backtrack-share must be in [0, 1]")
    sft = build_sft(records, config=config)
    injected = None
    if backtrack:
        import dataclasses

        from finetune.backtrack import BacktrackData, with_backtracking

        try:
            data = BacktrackData(share=backtrack_share, marker=backtrack_marker, seed=seed)
            train_set, n_train = with_backtracking(sft.train, data)
            val_set, n_val = with_backtracking(sft.validation, data)
        except ValueError as exc:
            raise _fail(str(exc)) from None
        sft = dataclasses.replace(sft, train=train_set, validation=val_set)
        injected = {"share": backtrack_share, "marker": backtrack_marker,
                    "injected": {"train": n_train, "validation": n_val}}
        console.print(f"backtracking: injected spans into {n_train} train and {n_val} "
                      "validation answers")
    st = sft.stats
    console.print(f"{st.records} records: dropped {st.failed} failed, {st.empty} empty, "
                  f"{st.truncated} truncated, {st.too_short} too short, {st.too_long} too long, "
                  f"{st.duplicate} duplicate; kept {st.kept} ({st.train} train, "
                  f"{st.validation} validation)")
    if not st.kept:
        raise _fail("nothing to export: every record was dropped; nothing written", 1)
    served = sorted({str(r["model"]) for r in records if r.get("model")})
    manifest = export_manifest(sft, config=config, run=run_info, served_models=served)
    if injected is not None:
        manifest["backtrack"] = injected
    write_export(sft, output, manifest=manifest)
    console.print(f"wrote {output} ({fmt}, data hash {manifest['data_hash'][:12]})")


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Export directory from `finetune export`")],
    output: Annotated[Path, Opt("-o", "--output", help="Tuned model directory")],
    base: Annotated[Path | None, Opt(help="Base model: .gguf file or transformers directory "
                                     "(default: the embedded SmolLM2-135M-Instruct)")] = None,
    epochs: Annotated[float | None, Opt()] = None,
    lr: Annotated[float | None, Opt(help="Learning rate")] = None,
    batch_size: Annotated[int | None, Opt()] = None,
    grad_accum: Annotated[int | None, Opt()] = None,
    max_length: Annotated[int | None, Opt(help="Tokens per example (longer are cut)")] = None,
    lora_r: Annotated[int | None, Opt()] = None,
    lora_alpha: Annotated[int | None, Opt()] = None,
    lora_layers: Annotated[int | None, Opt(help="LoRA on the last n layers only (0: all)")]
    = None,
    max_steps: Annotated[int | None, Opt(help="Stop after n optimiser steps")] = None,
    seed: Annotated[int | None, Opt()] = None,
    threads: Annotated[int | None, Opt(help="torch threads (0: all cores)")] = None,
    gguf: Annotated[bool, Opt(help="Also write model.gguf for llama.cpp")] = True,
    gguf_template: Annotated[Path | None, Opt(help="GGUF file whose tokenizer to use "
                                              "(default: the base, when it is a GGUF)")] = None,
    progress: Annotated[bool, Opt(help="Show a progress bar")] = True,
) -> None:
    """LoRA SFT (assistant tokens only) on CPU; saves adapter, merged model, GGUF and manifest."""
    from finetune.export import ExportError
    from finetune.io import OutputError, check_output_dir, read_export
    from finetune.models import MANIFEST, ModelError, load_model, set_threads
    from finetune.serve import GGUFExportError
    from finetune.train import TrainConfig, train_sft, with_overrides

    config = with_overrides(TrainConfig(gguf=gguf, show_progress=progress), epochs=epochs,
                            learning_rate=lr, batch_size=batch_size, grad_accum=grad_accum,
                            max_length=max_length, lora_r=lora_r, lora_alpha=lora_alpha,
                            lora_layers=lora_layers, max_steps=max_steps, seed=seed,
                            threads=threads)
    set_threads(config.threads)
    try:
        check_output_dir(output, marker=MANIFEST, inputs=(data,))
        manifest, splits = read_export(data)
        loaded = load_model(base or _default_base())
    except (ExportError, ModelError, OutputError) as exc:
        raise _fail(str(exc)) from None
    if not splits["train"]:
        raise _fail(f"{data} has no training examples", 1)
    console.print(f"training on {len(splits['train'])} examples ({len(splits['validation'])} "
                  f"validation) from {data}, base {loaded.source}")
    try:
        result = train_sft(splits, output, base=loaded, config=config, data=manifest,
                           gguf_template=gguf_template)
    except GGUFExportError as exc:
        raise _fail(str(exc)) from None
    except ValueError as exc:
        raise _fail(str(exc), 1) from None
    m = result.manifest["metrics"]
    console.print(f"trained in {m['train_seconds']:.0f}s ({m['steps']} steps, train loss "
                  f"{m['train_loss']}, validation loss {m['eval_loss_before']} -> "
                  f"{m['eval_loss_after']}); wrote {output}")
    arts = result.manifest["artifacts"]
    if arts["gguf"]:
        console.print(f"serve it: guide-align finetune serve {output} --port 8082")
    elif arts["gguf_note"]:
        console.print(f"[yellow]no GGUF written:[/yellow] {arts['gguf_note']}")


def _answerer(spec: str, name: str, model: str, *, max_new_tokens: int, batch_size: int,
              progress: bool) -> Any:
    from finetune.evaluate import EndpointAnswerer, LocalAnswerer
    from finetune.models import load_model

    if spec.startswith(("http://", "https://")):
        return EndpointAnswerer(name, LLMConfig(base_url=spec, model=model, temperature=0.0,
                                                max_tokens=max_new_tokens), progress=progress)
    return LocalAnswerer(name, load_model(spec), max_new_tokens=max_new_tokens,
                         batch_size=batch_size, progress=progress)


def _base_of(tuned: str) -> str:
    """The base model a tuned directory was trained from (its manifest), else the default."""
    from guideline_lib.io import MANIFEST

    manifest = Path(tuned) / MANIFEST
    if not tuned.startswith(("http://", "https://")) and manifest.is_file():
        try:
            source = json.loads(manifest.read_text("utf-8"))["base"]["path"]
        except (json.JSONDecodeError, KeyError, TypeError):
            source = None
        if source and Path(source).exists():
            return str(source)
    return str(_default_base())


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


@app.command()
def evaluate(
    tuned: Annotated[str, typer.Argument(help="Tuned model directory, or its endpoint URL")],
    base: Annotated[str | None, Opt(help="Base model (.gguf, directory or endpoint URL; "
                                    "default: the base named in the tuned model's manifest, "
                                    "else the embedded SmolLM2)")] = None,
    inputs: Annotated[Path | None, Opt(help="JSONL of {text, label: harmful|benign}")] = None,
    library: Annotated[Path, Opt(help="Else: this library's held-out split")]
    = default_library_path(),
    limit: Annotated[int, Opt(help="Held-out inputs (half harmful, half benign; 0: all)")] = 100,
    system: Annotated[str | None, Opt(help="Client system message for every input")] = None,
    max_new_tokens: Annotated[int, Opt()] = 128,
    batch_size: Annotated[int, Opt()] = 8,
    threads: Annotated[int, Opt(help="torch threads (0: all cores)")] = 0,
    model_name: Annotated[str, Opt(help="Model name sent to endpoint URLs")] = LLMConfig.model,
    judge_url: Annotated[str | None, Opt(help="OpenAI-compatible LLM judge endpoint")] = None,
    judge_model: Annotated[str, Opt()] = LLMConfig.model,
    judge_api_key: Annotated[str | None, Opt(envvar="GUIDE_ALIGN_JUDGE_API_KEY")] = None,
    json_out: Annotated[Path | None, Opt("--json", help="Write the report (with answers)")]
    = None,
    progress: Annotated[bool, Opt(help="Show a progress bar")] = True,
) -> None:
    """Base vs tuned: refusal rate on harmful and non-refusal rate on benign held-out inputs."""
    from dataclasses import asdict

    from finetune.evaluate import (
        LLMJudge,
        balanced,
        eval_items_from_rows,
        evaluate_models,
        library_eval_items,
    )
    from finetune.models import ModelError, set_threads
    from guideline_lib.io import LibraryError, load_library
    from guideline_lib.llm import LLMUnreachable

    set_threads(threads)
    if inputs is not None:
        try:
            lines = inputs.read_text("utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise _fail(f"cannot read {inputs}: {exc}") from None
        rows: list[Any] = []
        bad = 0
        for line in filter(str.strip, lines):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                bad += 1
        items, skipped = eval_items_from_rows(rows)
        items = balanced(items, limit)
        console.print(f"{len(items)} labelled inputs from {inputs} ({skipped + bad} skipped: "
                      f"{bad} not JSON, {skipped} without text or label harmful|benign)")
    else:
        try:
            items = library_eval_items(load_library(library), limit=limit)
        except LibraryError as exc:
            raise _fail(str(exc)) from None
        console.print(f"{len(items)} held-out inputs from {library}")
    if not items:
        raise _fail("no labelled inputs", 1)
    try:
        models = [_answerer(spec, name, model_name, max_new_tokens=max_new_tokens,
                            batch_size=batch_size, progress=progress)
                  for spec, name in ((base or _base_of(tuned), "base"), (tuned, "tuned"))]
    except ModelError as exc:
        raise _fail(str(exc)) from None
    judge = (LLMJudge(LLMConfig(base_url=judge_url, model=judge_model, api_key=judge_api_key,
                                temperature=0.0, max_tokens=8)) if judge_url else None)
    try:
        report = evaluate_models(items, models, system=system, judge=judge)
    except LLMUnreachable as exc:
        raise _fail(f"{exc}; nothing was scored") from None
    table = Table(title="held-out behaviour (heuristic judge: refusal phrases"
                        + (", and LLM judge)" if judge else ")"))
    cols = ["model", "harmful", "refusal (harmful) ↑", "benign", "non-refusal (benign) ↑",
            "mean chars", "failed calls"]
    cols += ["judge refusal ↑", "judge non-refusal ↑"] if judge else []
    for col in cols:
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in report.rows:
        cells = [r.name, str(r.harmful), _pct(r.refusal_rate_harmful), str(r.benign),
                 _pct(r.non_refusal_rate_benign), f"{r.mean_answer_chars:.0f}", str(r.failed)]
        if judge:
            cells += [_pct(r.judge_refusal_rate_harmful), _pct(r.judge_non_refusal_rate_benign)]
        table.add_row(*cells)
    console.print(table)
    if any(r.failed for r in report.rows):
        console.print("[yellow]failed calls got no answer and are left out of the rates[/yellow]")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({
            "rows": [asdict(r) for r in report.rows],
            "items": [asdict(i) | {n: a[k] for n, a in report.answers.items()}
                      for k, i in enumerate(report.items)],
        }, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


@app.command()
def gguf(
    model: Annotated[Path, typer.Argument(help="Merged llama model directory (or tuned dir)")],
    template: Annotated[Path, Opt(help="The base model's GGUF file (tokenizer, template)")],
    output: Annotated[Path, Opt("-o", "--output", help="GGUF file to write")],
    f16: Annotated[bool, Opt(help="F16 matrices (else F32)")] = True,
) -> None:
    """Write a merged llama-architecture model as a GGUF file for llama.cpp."""
    from finetune.models import ModelError, load_model
    from finetune.serve import GGUFExportError, export_gguf

    try:
        loaded = load_model(model)
        export_gguf(loaded.model, output, template=template, name=model.name, f16=f16)
    except (ModelError, GGUFExportError) as exc:
        raise _fail(str(exc)) from None
    console.print(f"wrote {output}")


@app.command()
def serve(
    tuned: Annotated[Path, typer.Argument(help="Tuned model directory (with model.gguf) or a "
                                          ".gguf file")],
    host: Annotated[str, Opt()] = "127.0.0.1",
    port: Annotated[int, Opt()] = 8082,
    alias: Annotated[str, Opt(help="Model name the server reports")] = "guide-align-tuned",
    n_ctx: Annotated[int, Opt()] = 2048,
    threads: Annotated[int, Opt(help="llama.cpp threads (0: its default)")] = 0,
) -> None:
    """Serve the tuned GGUF with the llama.cpp OpenAI-compatible server (foreground)."""
    from finetune.models import GGUF_FILE
    from finetune.serve import server_command

    gguf_file = tuned if tuned.suffix == ".gguf" else tuned / GGUF_FILE
    if not gguf_file.is_file():
        raise _fail(f"{gguf_file} not found; train with --gguf or run `finetune gguf`")
    cmd = server_command(gguf_file, host=host, port=port, alias=alias, n_ctx=n_ctx,
                         threads=threads)
    console.print(f"serving {gguf_file} on http://{host}:{port}/v1 as {alias!r}; point the "
                  f"gateway at it: GUIDE_ALIGN_UPSTREAM_BASE_URL=http://{host}:{port}/v1")
    raise typer.Exit(subprocess.call(cmd))

