"""Retrieval quality: BM25 vs zero-shot MiniLM vs the trained retriever, in one run.

Harmful sets: category hit@k (k = 1, 3, 6), a selected guideline having an expected taxonomy
category (bench/data/label_map.json). Benign sets: over-trigger rate, the share of prompts for
which any selected guideline is of kind safety. The minimum score of each system is tuned on a
dev half of every set and reported on the other (test) half. Skips cleanly without ../shared/data.

    .venv/bin/python bench/retrieval_quality.py [--data ../shared/data] [--alpaca-max 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import add_out_argument, machine, save_results
from evaluation.public import PUBLIC_SETS, raw_rows
from evaluation.public import half as _half
from guideline_lib.io import default_library_path, load_library
from guideline_lib.schema import Library
from retriever.select import select_hits
from retriever.types import Hit, SelectConfig

HERE = Path(__file__).resolve().parent
console = Console(width=140)
KS = (1, 3, 6)
MAX_BENIGN_RATE = 0.03


@dataclass
class EvalSet:
    """Prompts with, for harmful sets, the accepted categories of each prompt."""

    name: str
    harmful: bool
    prompts: list[str]
    expected: list[set[str]]


def load_sets(data: Path, *, alpaca_max: int) -> list[EvalSet]:
    """Read every evaluation set that is present under ``data`` (files named in
    evaluation/public.py), with the expected taxonomy categories of each harmful prompt."""
    labels = json.loads((HERE / "data" / "label_map.json").read_text())
    sets: list[EvalSet] = []
    for name in ("do_not_answer", "beavertails_eval", "moderation_flagged",
                 "moderation_unflagged", "alpaca_harmless_test", "alpaca_seed_tasks",
                 "mt_bench", "vicuna_bench"):
        rows = raw_rows(data, name)
        if rows is None:
            continue
        prompts = [str(text) for text, _ in rows]
        harmful = PUBLIC_SETS[name].label == "harmful"
        m = labels["openai_moderation" if name.startswith("moderation") else name] \
            if harmful else {}
        expected = [set().union(*(set(m[c]) for c in cats)) if harmful else set()
                    for _, cats in rows]
        if name == "alpaca_harmless_test" and alpaca_max and len(prompts) > alpaca_max:
            rng = np.random.default_rng(0)
            keep = sorted(rng.choice(len(prompts), alpaca_max, replace=False))
            prompts, expected = [prompts[i] for i in keep], [expected[i] for i in keep]
        sets.append(EvalSet(name, harmful, prompts, expected))
    own = HERE / "data" / "alarming_benign.jsonl"
    prompts = [json.loads(x)["prompt"] for x in own.open()]
    sets.append(EvalSet("own_alarming_benign", False, prompts, [set() for _ in prompts]))
    return sets


# --- systems: each maps prompts -> candidate hits (sorted by score), before selection ---------

Candidates = list[list[Hit]]


def dense_candidates(library: Library, encoder_path: Path, prompts: list[str],
                     n: int = 24) -> Candidates:
    """Exact inner-product search with a sentence-transformers encoder."""
    from retriever.encoder import load_encoder
    from retriever.index import IndexConfig, make_faiss_index

    enc = load_encoder(str(encoder_path))
    gvec = enc.encode([g.text for g in library.guidelines])
    index = make_faiss_index(gvec, IndexConfig(kind="flat"))
    qvec = enc.encode(prompts)
    scores, rows = index.search(qvec, n)
    return _to_hits(library, scores, rows)


def bm25_candidates(library: Library, prompts: list[str], n: int = 24) -> Candidates:
    """BM25 (bm25s) over the guideline texts; scores are raw BM25."""
    import bm25s

    corpus = [g.text for g in library.guidelines]
    model = bm25s.BM25()
    model.index(bm25s.tokenize(corpus, stopwords="en", show_progress=False),
                show_progress=False)
    rows, scores = model.retrieve(bm25s.tokenize(prompts, stopwords="en", show_progress=False),
                                  k=n, show_progress=False, n_threads=1)
    return _to_hits(library, scores, rows)


def _to_hits(library: Library, scores: np.ndarray, rows: np.ndarray) -> Candidates:
    gl = library.guidelines
    out = []
    for srow, irow in zip(scores, rows, strict=True):
        out.append([Hit(gl[i].id, gl[i].text, gl[i].category, gl[i].kind, float(s))
                    for s, i in zip(srow, irow, strict=True) if i >= 0])
    return out


# --- metrics -----------------------------------------------------------------------------------

def evaluate(cands: Candidates, es: EvalSet, idx: list[int], cfg: SelectConfig)\
        -> dict[str, float]:
    """hit@k for harmful sets, over-trigger rate for benign ones, on the rows ``idx``."""
    if not idx:
        return {}
    selected = [select_hits(cands[i], cfg) for i in idx]
    if es.harmful:
        return {f"hit@{k}": float(np.mean([any(h.category in es.expected[i] for h in sel[:k])
                                           for i, sel in zip(idx, selected, strict=True)]))
                for k in KS}
    return {"over_trigger": float(np.mean([any(h.kind == "safety" for h in sel)
                                           for sel in selected]))}


def tune(cands: dict[str, Candidates], sets: list[EvalSet],
         halves: dict[str, dict[str, list[int]]], base: SelectConfig, *, gate: bool)\
        -> SelectConfig:
    """Best mean dev hit@6 among settings whose pooled dev over-trigger (all benign prompts) <= 3 %.

    Without ``gate`` only the minimum score is tuned (the paper's rule); with it, the safety
    margin (safety kept only if the best safety candidate beats the best quality one by it)
    is tuned jointly. If no setting meets the 3 % bound, the lowest pooled rate wins.
    """
    top = [h.score for cs in cands.values() for c in cs for h in c[:6]]
    grid = np.unique(np.quantile(top, np.linspace(0.0, 0.98, 16 if gate else 40)))
    if gate:
        gaps = [_gap(c) for cs in cands.values() for c in cs]
        gaps = [g for g in gaps if g is not None]
        margins = [None, *np.unique(np.quantile(gaps, np.linspace(0.3, 0.95, 12)))]
    else:
        margins = [None]
    best, best_key = base, (-2.0, -1.0)
    for t in grid:
        for m in margins:
            cfg = replace(base, min_score=float(t),
                          safety_margin=None if m is None else float(m))
            hits, fired, n_benign = [], 0.0, 0
            for es in sets:
                dev = halves[es.name]["dev"]
                r = evaluate(cands[es.name], es, dev, cfg)
                if es.harmful:
                    hits.append(r.get("hit@6", 0.0))
                elif r:
                    fired += r["over_trigger"] * len(dev)
                    n_benign += len(dev)
            worst = fired / max(n_benign, 1)
            key = (1.0 if worst <= MAX_BENIGN_RATE else -worst,
                   float(np.mean(hits)) if hits else 0.0)
            if key > best_key:
                best, best_key = cfg, key
    return best


def _gap(c: list[Hit]) -> float | None:
    s = max((h.score for h in c if h.kind == "safety"), default=None)
    q = max((h.score for h in c if h.kind != "safety"), default=None)
    return None if s is None or q is None else s - q


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--library", type=Path, default=default_library_path())
    ap.add_argument("--trained", type=Path, default=Path("var/encoder"))
    ap.add_argument("--alpaca-max", type=int, default=2000,
                    help="sample of the alpaca test split (0 = all 6,266)")
    ap.add_argument("--name", default="retrieval_quality")
    ap.add_argument("--systems", default="bm25,minilm_zero_shot,trained",
                    help="comma-separated subset of bm25, minilm_zero_shot, trained")
    add_out_argument(ap)
    args = ap.parse_args()
    if not args.data.exists():
        console.print(f"{args.data} not found: nothing to measure (skipped)")
        return
    from guideline_lib.embedded import base_model_path

    library = load_library(args.library)
    sets = load_sets(args.data, alpaca_max=args.alpaca_max)
    prompts = [p for es in sets for p in es.prompts]
    halves = {es.name: {h: [i for i, p in enumerate(es.prompts) if _half(p) == h]
                        for h in ("dev", "test")} for es in sets}
    systems: dict[str, Callable[[list[str]], Candidates]] = {
        "bm25": lambda ps: bm25_candidates(library, ps),
        "minilm_zero_shot": lambda ps: dense_candidates(library, base_model_path(), ps),
    }
    wanted = set(args.systems.split(","))
    systems = {k: v for k, v in systems.items() if k in wanted}
    if "trained" in wanted and (args.trained / "modules.json").exists():
        systems["trained"] = lambda ps: dense_candidates(library, args.trained, ps)
    elif "trained" in wanted:
        console.print(f"[yellow]no trained encoder at {args.trained}; run "
                      "`guide-align retriever train` first[/yellow]")
    base = SelectConfig(k=6, min_score=0.0, dedup_threshold=0.5, candidates=24)
    results: dict[str, Any] = {}
    for name, run in systems.items():
        console.print(f"encoding {len(prompts)} prompts with {name} ...")
        flat = run(prompts)
        cands, pos = {}, 0
        for es in sets:
            cands[es.name] = flat[pos:pos + len(es.prompts)]
            pos += len(es.prompts)
        for gate in (False, True):
            cfg = tune(cands, sets, halves, base, gate=gate)
            label = f"{name}+gate" if gate else name
            results[label] = {
                "min_score": cfg.min_score, "safety_margin": cfg.safety_margin,
                "sets": {es.name: {"n_test": len(halves[es.name]["test"]),
                                   **evaluate(cands[es.name], es, halves[es.name]["test"], cfg)}
                         for es in sets}}
    show(results, sets)
    path = save_results(args.name, {"machine": machine(), "library": {
        "name": library.manifest.name, "version": library.manifest.version,
        "hash": library.content_hash()}, "split": "min_score tuned on dev half, reported on "
        "test half (sha1 of the prompt)", "results": results}, args.out)
    console.print(f"results written to {path}")


def show(results: dict[str, Any], sets: list[EvalSet]) -> None:
    names = list(results)
    table = Table(title="Retrieval quality on the TEST halves; min score (and, for +gate, the "
                  "safety margin) tuned on the DEV halves: " + ", ".join(
                      f"{n} {results[n]['min_score']:.3f}"
                      + (f"/{results[n]['safety_margin']:+.3f}"
                         if results[n]["safety_margin"] is not None else "") for n in names))
    table.add_column("set")
    table.add_column("n", justify="right")
    table.add_column("metric")
    for n in names:
        table.add_column(n, justify="right")
    for es in sets:
        if not es.harmful and es is next(e for e in sets if not e.harmful):
            table.add_section()
        metrics = [f"hit@{k}" for k in KS] if es.harmful else ["over_trigger"]
        for m in metrics:
            row = [es.name, str(results[names[0]]["sets"][es.name]["n_test"]), m]
            row += [f"{results[n]['sets'][es.name].get(m, float('nan')):.3f}" for n in names]
            table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
