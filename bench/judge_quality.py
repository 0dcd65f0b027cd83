"""Prompt risk and the risk gate, every system side by side, on prompts nobody here wrote.

    .venv/bin/python bench/judge_quality.py [--data ../shared/data] [--alpaca-max 2000]

1. Prompt risk on the TEST halves of ../shared/data (harmful: do_not_answer, beavertails_eval,
   flagged openai_moderation; benign: alpaca test, seed tasks, mt_bench, vicuna_bench, unflagged
   openai_moderation, the project's own alarming-benign set) and on the judge's own family-split
   test set: AUROC, AUPRC, recall at 1 % / 3 % FPR, and recall / false positives at a threshold
   tuned on the DEV halves (the highest recall with pooled benign false positives <= 3 %).
   Systems: the shipped gate (example-kNN over the library's linked examples on the serving
   embedding, calibrated); the linear head trained on judge/data alone; today's retrieval-score
   rule (best safety minus best quality similarity); BM25; zero-shot MiniLM similarity to the
   category descriptions; a keyword list; TF-IDF + logistic regression trained on the same judge
   data (a shortcut check).
2. End to end through the guide step at the deployment defaults: today's safety-margin rule vs
   the risk gate at its default threshold, and vs the gate at the threshold whose pooled
   over-triggering on the DEV halves equals the margin rule's (the same over-triggering):
   harmful -> any safety guideline injected and category hit@6; benign -> over-triggering;
   on the test halves and on the judge's own family-split test set.
3. Latency of the guide step with and without the judge (p50 / p99 per single prompt).
Writes var/bench/judge_quality.json, or with ``--out`` bench/results/judge_quality.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.config import Settings
from bench.common import add_out_argument, machine, save_results
from bench.retrieval_quality import EvalSet, _half, load_sets
from guide.step import as_conversation, guide_batch
from guideline_lib.taxonomy import ALIASES, CATEGORY_HINTS, TAXONOMY
from judge.data import PromptRow, load_families, prompt_rows
from judge.train import binary_metrics

console = Console(width=160)
MAX_FPR = 0.03
Scorer = Callable[[list[str]], np.ndarray]


def tuned_threshold(scores: np.ndarray, y: np.ndarray, max_fpr: float = MAX_FPR) -> float:
    """The lowest threshold whose false-positive rate on ``y == 0`` is at most ``max_fpr``."""
    neg = scores[y == 0]
    for t in np.unique(scores):
        if float((neg >= t).mean()) <= max_fpr:
            return float(t)
    return float(scores.max()) + 1e-6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared"
                    / "data")
    ap.add_argument("--alpaca-max", type=int, default=2000)
    ap.add_argument("--latency-prompts", type=int, default=200)
    add_out_argument(ap)
    args = ap.parse_args()
    if not args.data.is_dir():
        console.print(f"no evaluation data at {args.data}; nothing to measure")
        return
    ws = Settings(risk_gate=True)  # the gate is off by default; this measures it
    ws.prepare(train=False, log=console.print)
    retriever = ws.open_retriever()
    heads = ws.open_judge(retriever)
    assert heads is not None
    sets = load_sets(args.data, alpaca_max=args.alpaca_max)
    families = load_families()
    own = prompt_rows(families)
    own_train = [r for r in own if r.split == "train"]
    own_test = [r for r in own if r.split == "test"]
    systems = build_systems(retriever, heads, ws, own_train)

    # 1. prompt risk, every system
    results: dict[str, Any] = {"prompt_risk": {}, "threshold_rule": f"pooled dev benign FPR "
                               f"<= {MAX_FPR:.0%}; reported on the test halves"}
    table = Table(title="Prompt risk on the TEST halves (threshold tuned on the DEV halves at "
                  f"<= {MAX_FPR:.0%} pooled benign false positives)")
    cols = ["system", "AUROC", "AUPRC", "recall@1%FPR", "recall@3%FPR", "harmful recall",
            "benign FP", "own test AUROC", "own recall@3%FPR"]
    for col in cols:
        table.add_column(col, justify="left" if col == "system" else "right")
    per_set: dict[str, dict[str, float]] = {}
    for name, score in systems.items():
        console.print(f"scoring with {name} ...")
        scored = {es.name: score(es.prompts) for es in sets}
        y_dev, s_dev, y_test, s_test = [], [], [], []
        for es in sets:
            for i, p in enumerate(es.prompts):
                (y_dev if _half(p) == "dev" else y_test).append(int(es.harmful))
                (s_dev if _half(p) == "dev" else s_test).append(scored[es.name][i])
        thr = tuned_threshold(np.array(s_dev), np.array(y_dev))
        m = binary_metrics(np.array(y_test), np.array(s_test), thr)
        own_scores = score([r.text for r in own_test])
        own_m = binary_metrics(np.array([r.risky for r in own_test], dtype=int), own_scores, thr)
        per_set[name] = {es.name: float(np.mean([scored[es.name][i] >= thr
                                                 for i, p in enumerate(es.prompts)
                                                 if _half(p) == "test"]))
                         for es in sets}
        results["prompt_risk"][name] = {"threshold": thr, "test": m, "own_test": own_m,
                                        "per_set_flag_rate": per_set[name]}
        table.add_row(name, *(f"{m.get(k, float('nan')):.3f}" for k in (
            "auroc", "auprc", "recall_at_1pct_fpr", "recall_at_3pct_fpr", "recall_at_threshold",
            "fpr_at_threshold")), f"{own_m.get('auroc', float('nan')):.3f}",
            f"{own_m.get('recall_at_3pct_fpr', float('nan')):.3f}")
    console.print(table)
    flag = Table(title="Share of TEST-half prompts flagged at each system's threshold")
    flag.add_column("set")
    for name in systems:
        flag.add_column(name, justify="right")
    for es in sets:
        flag.add_row(f"{es.name} ({'harmful' if es.harmful else 'benign'})",
                     *(f"{per_set[n][es.name]:.3f}" for n in systems))
    console.print(flag)

    # 2. end to end through the guide step
    results["guide_step"] = end_to_end(sets, own_test, retriever, heads, ws)
    # 3. latency
    results["latency"] = latency(retriever, heads, ws, [p for es in sets for p in es.prompts]
                                 [: args.latency_prompts])
    path = save_results("judge_quality", {"machine": machine(), "judge": {
        k: heads.manifest.get(k) for k in ("encoder_hash", "data_hash", "threshold", "counts",
                                           "metrics")}, **results}, args.out)
    console.print(f"saved {path}")


def build_systems(retriever: Any, heads: Any, ws: Settings, own_train: list[PromptRow]
                  ) -> dict[str, Scorer]:
    """Every risk scorer, each mapping prompts to a score (higher = riskier)."""
    from guide.judging import assess_batch

    def batched(fn: Callable[[list[str]], Any], prompts: list[str]) -> np.ndarray:
        return np.concatenate([np.asarray(fn(prompts[i:i + 256]), dtype=float)
                               for i in range(0, len(prompts), 256)]) if prompts else np.zeros(0)

    # the shipped gate: kNN over the library's examples (c) (+ the head's share), calibrated
    def shipped(prompts: list[str]) -> np.ndarray:
        return batched(lambda ps: [r.score for r in assess_batch(
            [as_conversation(p) for p in ps], retriever, heads, window=ws.window)], prompts)

    # (a) the linear risk head alone, trained on judge/data (its raw logit)
    def linear_head(prompts: list[str]) -> np.ndarray:
        return batched(lambda ps: heads.head_logits(retriever.encoder.encode(ps)), prompts)

    # today's rule: best safety candidate minus best quality candidate (the margin's gap)
    def retrieval_rule(prompts: list[str]) -> np.ndarray:
        policy = ws.policy()
        out = []
        for i in range(0, len(prompts), 256):
            chunk = [as_conversation(p) for p in prompts[i:i + 256]]
            views = [tuple(q for q in (m[0]["content"].strip(),) if q) for m in chunk]
            cands = retriever.candidates(retriever.encode(views), [len(v) for v in views],
                                         [policy.select] * len(views))
            for c in cands:
                s = max((h.score for h in c if h.kind == "safety"), default=-1.0)
                q = max((h.score for h in c if h.kind != "safety"), default=-1.0)
                out.append(s - q)
        return np.array(out)

    import bm25s

    risky_docs = [r.text for r in own_train if r.risky]
    benign_docs = [r.text for r in own_train if not r.risky]

    def bm25_index(docs: list[str]) -> Any:
        index = bm25s.BM25()
        index.index(bm25s.tokenize(docs, show_progress=False), show_progress=False)
        return index

    bm_r, bm_b = bm25_index(risky_docs), bm25_index(benign_docs)

    def bm25(prompts: list[str]) -> np.ndarray:
        toks = bm25s.tokenize(prompts, show_progress=False)
        _, sr = bm_r.retrieve(toks, k=1, show_progress=False, n_threads=1)
        _, sb = bm_b.retrieve(toks, k=1, show_progress=False, n_threads=1)
        return sr[:, 0] - sb[:, 0]

    from guideline_lib.embedded import base_model_path
    from retriever.encoder import load_encoder

    base = load_encoder(str(base_model_path()))
    safety = base.encode([CATEGORY_HINTS[c] for c in TAXONOMY if TAXONOMY[c] == "safety"])
    quality = base.encode([CATEGORY_HINTS[c] for c in TAXONOMY if TAXONOMY[c] == "quality"])

    def zero_shot(prompts: list[str]) -> np.ndarray:
        v = np.vstack([base.encode(prompts[i:i + 256]) for i in range(0, len(prompts), 256)])
        return (v @ safety.T).max(axis=1) - (v @ quality.T).max(axis=1)

    words = sorted({a for a, c in ALIASES.items() if TAXONOMY[c] == "safety"})
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + ")", re.IGNORECASE)

    def keywords(prompts: list[str]) -> np.ndarray:
        return np.array([len(pattern.findall(p)) for p in prompts], dtype=float)

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x = tfidf.fit_transform([r.text for r in own_train])
    lr = LogisticRegression(C=4.0, max_iter=2000, class_weight="balanced")
    lr.fit(x, [r.risky for r in own_train])

    def tfidf_lr(prompts: list[str]) -> np.ndarray:
        return np.asarray(lr.predict_proba(tfidf.transform(prompts))[:, 1])

    return {"risk gate (shipped: kNN (c))": shipped, "linear head (a)": linear_head,
            "retrieval rule (today)": retrieval_rule, "BM25": bm25,
            "zero-shot MiniLM": zero_shot, "keywords": keywords, "TF-IDF + LR": tfidf_lr}


Case = tuple[str, bool, list[list[dict[str, Any]]], list[set[str]]]


def _injected(convs: list[list[dict[str, Any]]], retriever: Any, policy: Any,
              judge: Any) -> list[list[Any]]:
    hits: list[list[Any]] = []
    for i in range(0, len(convs), 128):
        chunk = convs[i:i + 128]
        hits += [g.hits for g in guide_batch(chunk, retriever, [policy] * len(chunk),
                                             judge=judge)]
    return hits


def matched_threshold(sets: list[EvalSet], retriever: Any, heads: Any, ws: Settings) -> float:
    """The gate threshold whose pooled over-triggering on the DEV halves' benign prompts equals
    the margin rule's there."""
    benign = [as_conversation(p) for es in sets if not es.harmful for p in es.prompts
              if _half(p) == "dev"]
    rule = np.mean([any(h.kind == "safety" for h in hs)
                    for hs in _injected(benign, retriever, ws.policy(), None)])
    from guide.judging import assess_batch

    risk = np.array([r.score for i in range(0, len(benign), 256)
                     for r in assess_batch(benign[i:i + 256], retriever, heads,
                                           window=ws.window)])
    return float(np.quantile(risk, 1.0 - rule)) if rule > 0 else 1.0


def end_to_end(sets: list[EvalSet], own_test: list[PromptRow], retriever: Any, heads: Any,
               ws: Settings) -> dict[str, Any]:
    """Safety guidelines injected (harmful) and over-triggering (benign), before and after."""
    before = ws.policy()  # today's rule: min score + safety margin, no gate
    after = ws.policy(heads)
    matched = dataclasses.replace(after, risk_threshold=matched_threshold(sets, retriever,
                                                                          heads, ws))
    columns = (("margin rule (before)", before, None),
               (f"gate @ default {after.risk_threshold:.2f}", after, heads),
               (f"gate @ rule's over-trigger {matched.risk_threshold:.2f}", matched, heads))
    table = Table(title="End to end through the guide step: TEST halves and own family-split "
                  "test set (deployment defaults)")
    for col in ("set", "metric", *(c[0] for c in columns)):
        table.add_column(col, justify="left" if col in ("set", "metric") else "right")
    cases: list[Case] = [
        (es.name, es.harmful, [as_conversation(es.prompts[i]) for i in idx],
         [es.expected[i] for i in idx])
        for es in sets
        for idx in [[i for i, p in enumerate(es.prompts) if _half(p) == "test"]]]
    for risky, name in ((True, "own_test_harmful"), (False, "own_test_benign")):
        rows = [r for r in own_test if r.risky == risky]
        cases.append((name, risky, [list(r.messages) for r in rows],
                      [set(r.categories) for r in rows]))
    out: dict[str, Any] = {"before": dataclasses.asdict(before.select),
                           "default_threshold": after.risk_threshold,
                           "matched_threshold": matched.risk_threshold, "sets": {}}
    for name, harmful, convs, expected in cases:
        row: dict[str, dict[str, float]] = {}
        for label, policy, judge in columns:
            hits = _injected(convs, retriever, policy, judge)
            safety = [any(h.kind == "safety" for h in hs) for hs in hits]
            if harmful:
                cat = [any(h.category in exp for h in hs)
                       for exp, hs in zip(expected, hits, strict=True)]
                row[label] = {"safety_injected": float(np.mean(safety)),
                              "category_hit@6": float(np.mean(cat))}
            else:
                row[label] = {"over_trigger": float(np.mean(safety))}
        out["sets"][name] = row
        for metric in row[columns[0][0]]:
            table.add_row(name, metric, *(f"{row[c[0]][metric]:.3f}" for c in columns))
    console.print(table)
    return out


def latency(retriever: Any, heads: Any, ws: Settings, prompts: list[str]) -> dict[str, Any]:
    """Per single prompt: the guide step with and without the judge (interleaved)."""
    before, after = ws.policy(), ws.policy(heads)
    t_before, t_after = [], []
    for p in prompts:
        conv = [as_conversation(p)]
        for policy, judge, bucket in ((before, None, t_before), (after, heads, t_after)):
            t0 = time.perf_counter()
            guide_batch(conv, retriever, [policy], judge=judge)
            bucket.append((time.perf_counter() - t0) * 1000)
    out = {name: {"p50_ms": float(np.percentile(v, 50)), "p99_ms": float(np.percentile(v, 99))}
           for name, v in (("without_judge", t_before), ("with_judge", t_after))}
    out["added_p50_ms"] = out["with_judge"]["p50_ms"] - out["without_judge"]["p50_ms"]
    table = Table(title=f"Guide step latency per single prompt ({len(prompts)} prompts, "
                  f"{ws.encoder_backend})")
    for col in ("", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right")
    for name in ("without_judge", "with_judge"):
        table.add_row(name, f"{out[name]['p50_ms']:.2f}", f"{out[name]['p99_ms']:.2f}")
    table.add_row("added p50", f"{out['added_p50_ms']:+.2f}", "")
    console.print(table)
    return out


if __name__ == "__main__":
    main()
