"""Merging near-duplicate guidelines: embedding cosine (MiniLM) or fuzzy text ratio."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from rapidfuzz import fuzz, process

from guideline_lib.schema import Guideline, guideline_id


class Embedder(Protocol):
    """Texts -> L2-normalised vectors (a retriever Encoder satisfies this)."""

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class DedupConfig:
    """A candidate merges into a kept guideline at cosine >= ``cosine`` or ratio >= ``fuzz``.

    ``fuzz`` is rapidfuzz's token-sort ratio on lower-cased text (0-1), the measure
    ``library validate`` uses, so a built library passes validation at the same threshold.
    """

    cosine: float = 0.9
    fuzz: float = 0.85


@dataclass(frozen=True)
class MergePlan:
    """For each candidate, the id it ends up as; and which candidates become new guidelines."""

    into: list[str]
    new: list[int]

    @property
    def merged(self) -> int:
        """Candidates folded into an earlier guideline."""
        return len(self.into) - len(self.new)


def plan_merge(
    existing: Sequence[Guideline],
    candidates: Sequence[str],
    *,
    encoder: Embedder | None,
    config: DedupConfig,
) -> MergePlan:
    """Walk candidates in order; each is kept or merged into the closest earlier guideline."""
    kept_ids = [g.id for g in existing]
    kept_texts = [g.text.lower() for g in existing]
    index = {gid: n for n, gid in enumerate(kept_ids)}
    vectors: np.ndarray | None = None
    cand_vectors: np.ndarray | None = None
    n_kept = len(kept_ids)
    if encoder is not None and candidates:
        cand_vectors = np.asarray(encoder.encode(list(candidates)), dtype=np.float32)
        dim = cand_vectors.shape[1]
        vectors = np.zeros((len(existing) + len(candidates), dim), dtype=np.float32)
        if existing:
            vectors[: len(existing)] = encoder.encode([g.text for g in existing])
    into: list[str] = []
    new: list[int] = []
    for i, text in enumerate(candidates):
        gid = guideline_id(text)
        if gid in index:
            into.append(gid)
            continue
        target: str | None = None
        if vectors is not None and cand_vectors is not None and n_kept:
            sims = vectors[:n_kept] @ cand_vectors[i]
            best = int(np.argmax(sims))
            if float(sims[best]) >= config.cosine:
                target = kept_ids[best]
        if target is None and kept_texts:
            hit = process.extractOne(text.lower(), kept_texts, scorer=fuzz.token_sort_ratio,
                                     score_cutoff=config.fuzz * 100)
            if hit is not None:
                target = kept_ids[hit[2]]
        if target is not None:
            into.append(target)
            continue
        if vectors is not None and cand_vectors is not None:
            vectors[n_kept] = cand_vectors[i]
        index[gid] = n_kept
        kept_ids.append(gid)
        kept_texts.append(text.lower())
        n_kept += 1
        into.append(gid)
        new.append(i)
    return MergePlan(into=into, new=new)
