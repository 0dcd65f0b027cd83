"""`guide-align judge ...`: train, evaluate, export, classify, upstream-spans."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.common import console, fail, settings

app = typer.Typer(help="The judge: prompt risk and the response judge.", no_args_is_help=True)
Opt = typer.Option


def _ready(output: Path | None = None) -> Any:
    """The workspace with its retriever prepared (the judge reads the serving encoder)."""
    from guideline_lib.io import LibraryError
    from retriever.encoder import EncoderError

    ws = settings(judge_path=output)
    try:
        from retriever.prepare import prepare_retriever

        done = prepare_retriever(ws.retriever_paths(), backend=ws.encoder_backend, train=False,
                                 log=console.print)
    except (LibraryError, EncoderError) as exc:
        raise fail(str(exc)) from None
    return ws, done.backend_encoder


def _metrics_table(metrics: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    table.add_column("head")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for head, values in metrics.items():
        for key, value in values.items():
            table.add_row(head, key, f"{value:.3f}" if isinstance(value, float) else str(value))
    return table


@app.command()
def train(
    output: Annotated[Path | None, Opt("-o", "--output", help="Judge directory (default: the "
                                       "workspace's, var/judge)")] = None,
    target_fpr: Annotated[float, Opt(help="Dev false-positive rate the threshold allows")] = 0.15,
    seed: Annotated[int, Opt()] = 13,
) -> None:
    """Train the prompt-risk and response heads on judge/data and the library's examples (fixed
    seed); prints test metrics."""
    from guideline_lib.io import load_library
    from judge.prepare import train_judge
    from judge.train import JudgeTrainConfig

    ws, enc_dir = _ready(output)
    metrics = train_judge(ws.judge_path, enc_dir, ws.encoder_backend,
                          config=JudgeTrainConfig(target_fpr=target_fpr, seed=seed),
                          library=load_library(ws.library_path), log=console.print)
    console.print(_metrics_table(metrics, "test split (prompts of unseen families; "
                                          "memory_test: the library's test examples)"))
    console.print(f"saved {ws.judge_path}")


@app.command("upstream-spans")
def upstream_spans(
    base_url: Annotated[str | None, Opt(help="An OpenAI-compatible /v1 URL to ask (your own "
                                        "upstream); default: the embedded SmolLM2, started "
                                        "for the run")] = None,
    model: Annotated[str, Opt(help="Model name sent with --base-url")] = "smollm2",
    max_tokens: Annotated[int, Opt()] = 120,
    prompts: Annotated[Path | None, Opt(help="JSON list of harmless questions (default: "
                                        "judge/data/upstream_prompts.json)")] = None,
    out: Annotated[Path | None, Opt("-o", "--out", help="Critic data file (default: "
                                    "judge/data/critic_upstream.json)")] = None,
) -> None:
    """Write the upstream's answers to harmless questions as benign stream-critic data, so the
    critic learns what the model it watches writes (resumable); then run `guide-align
    prepare` to retrain the critic."""
    from app.launcher import smollm2_server
    from judge.upstream_spans import OUT, PROMPTS, collect

    questions = json.loads((prompts or PROMPTS).read_text("utf-8"))
    with smollm2_server(base_url, timeout=180) as url:
        data = collect(questions, out or OUT, base_url=url, model=model, max_tokens=max_tokens)
    console.print(f"wrote {len(data['families'])} families to {out or OUT}")


@app.command()
def evaluate() -> None:
    """Test-split metrics of the saved judge on the current data."""
    from judge.data import answer_rows, load_families, prompt_rows
    from judge.train import embed_answers, embed_prompts, evaluate_heads

    ws, _ = _ready()
    retriever = ws.open_retriever()
    heads = _open_judge(ws, retriever)
    families = load_families()
    prompts, answers = prompt_rows(families), answer_rows(families)
    pv, groups = embed_prompts(retriever.encoder, prompts, window=ws.window)
    metrics = evaluate_heads(heads, prompts, answers, pv, groups,
                             embed_answers(retriever.encoder, answers))
    console.print(_metrics_table(metrics, f"judge {ws.judge_path} on the test split"))


@app.command()
def export(
    output: Annotated[Path, Opt("-o", "--output", help="Directory for the expanded data set")],
) -> None:
    """Write the expanded data set (prompts.jsonl, answers.jsonl) and its table of counts."""
    from judge.data import answer_rows, counts_table, load_families, prompt_rows, write_jsonl

    families = load_families()
    prompts, answers = prompt_rows(families), answer_rows(families)
    write_jsonl(prompts, output / "prompts.jsonl")
    write_jsonl(answers, output / "answers.jsonl")
    (output / "COUNTS.md").write_text(counts_table(prompts, answers), "utf-8")
    console.print(f"wrote {len(prompts)} prompts and {len(answers)} answers to {output}")


def _open_judge(ws: Any, retriever: Any) -> Any:
    from judge.model import JudgeError, load_heads

    try:
        return load_heads(ws.judge_path,
                          encoder_hash=str(retriever.index.manifest.get("encoder_hash", "")))
    except JudgeError as exc:
        raise fail(str(exc)) from None


@app.command()
def classify(
    text: Annotated[str, typer.Argument(help="A user prompt")],
    answer: Annotated[str | None, Opt(help="An assistant answer to judge instead")] = None,
) -> None:
    """Prompt risk and categories of a text, or the response judge's verdict on an answer."""
    from guide.judging import assess_batch, judge_batch

    ws, _ = _ready()
    retriever = ws.open_retriever()
    heads = _open_judge(ws, retriever)
    conversation = [{"role": "user", "content": text}]
    if answer is None:
        risk = assess_batch([conversation], retriever, heads, window=ws.window)[0]
        out: dict[str, Any] = {"risk": round(risk.score, 4),
                               "flagged": risk.score >= heads.threshold,
                               "categories": {c: round(s, 4) for c, s in risk.top(5)}}
    else:
        v = judge_batch([conversation], [answer], retriever, heads)[0]
        out = {"label": v.label, "scores": {k: round(s, 4) for k, s in v.scores.items()}}
    console.print_json(json.dumps(out))
