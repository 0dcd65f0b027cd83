"""Held-out retrieval metrics (recall@1/6/20, MRR@10, nDCG@10) on a library's test split."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from guideline_lib.schema import Library

KEYS = ("recall@1", "recall@6", "recall@20", "mrr@10", "ndcg@10")


def ir_evaluator(library: Library, *, split: str = "test", name: str = "heldout")\
        -> Callable[[Any], dict[str, float]] | None:
    """A callable model -> metrics over the examples of ``split``; None if the split is empty."""
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

    queries: dict[str, str] = {}
    relevant: dict[str, set[str]] = {}
    for n, ex in enumerate(library.examples):
        if ex.split != split or not ex.guideline_ids:
            continue
        qid = f"q{n}"
        queries[qid] = ex.input
        relevant[qid] = set(ex.guideline_ids)
    if not queries:
        return None
    corpus = {g.id: g.text for g in library.guidelines}
    evaluator = InformationRetrievalEvaluator(
        queries=queries, corpus=corpus, relevant_docs=relevant, name=name,
        accuracy_at_k=[1, 6, 20], precision_recall_at_k=[1, 6, 20], mrr_at_k=[10],
        ndcg_at_k=[10], map_at_k=[10], show_progress_bar=False, batch_size=64,
    )

    def run(model: Any) -> dict[str, float]:
        raw = evaluator(model)
        out = {}
        for key in KEYS:
            metric, k = key.split("@")
            full = f"{name}_cosine_{metric}@{k}"
            if full in raw:
                out[key] = round(float(raw[full]), 4)
        return out

    return run
