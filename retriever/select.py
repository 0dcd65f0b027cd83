"""Selection: minimum score, near-duplicate removal, top k (MMR optional)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rapidfuzz import fuzz

from retriever.types import Hit, SelectConfig


def _similar(a: str, b: str) -> float:
    return fuzz.ratio(a, b) / 100.0


def select_hits(
    hits: Sequence[Hit],
    config: SelectConfig,
    *,
    vectors: np.ndarray | None = None,
) -> list[Hit]:
    """Apply the selection rules to hits sorted by descending score.

    A hit is kept only if its text similarity to every kept hit is below the dedup threshold
    (the paper uses 0.5). With ``config.mmr`` and the hits' embedding ``vectors``, the order is
    maximal marginal relevance instead of plain score.
    """
    drop_safety = config.safety_margin is not None and not _safety_wins(
        hits, config.safety_margin)
    keep_idx = [i for i, h in enumerate(hits) if h.score >= config.min_score
                and not (drop_safety and h.kind == "safety")]
    pool = [hits[i] for i in keep_idx]
    if config.mmr and vectors is not None and len(pool) > 1:
        pool = _mmr_order(pool, vectors[keep_idx], config.mmr_lambda)
    kept: list[Hit] = []
    for hit in pool:
        if len(kept) >= config.k:
            break
        if all(_similar(hit.text, other.text) < config.dedup_threshold for other in kept):
            kept.append(hit)
    return kept


def _safety_wins(hits: Sequence[Hit], margin: float) -> bool:
    best_safety = max((h.score for h in hits if h.kind == "safety"), default=None)
    if best_safety is None:
        return False
    best_quality = max((h.score for h in hits if h.kind != "safety"), default=None)
    return best_quality is None or best_safety >= best_quality + margin


def _mmr_order(pool: list[Hit], vecs: np.ndarray, lam: float) -> list[Hit]:
    scores = np.array([h.score for h in pool], dtype=np.float32)
    sims = vecs @ vecs.T
    chosen: list[int] = []
    rest = list(range(len(pool)))
    while rest:
        if chosen:
            redundancy = sims[np.ix_(rest, chosen)].max(axis=1)
        else:
            redundancy = np.zeros(len(rest), dtype=np.float32)
        gain = lam * scores[rest] - (1 - lam) * redundancy
        best = rest[int(np.argmax(gain))]
        chosen.append(best)
        rest.remove(best)
    return [pool[i] for i in chosen]
