"""Named results and the pluggable retriever seam."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

# A query is plain text or an OpenAI-style message list.
Query = str | Sequence[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved guideline with its similarity score."""

    id: str
    text: str
    category: str
    kind: str
    score: float

    def as_dict(self) -> dict[str, Any]:
        """The JSON form used by the HTTP API."""
        return {
            "id": self.id,
            "text": self.text,
            "category": self.category,
            "kind": self.kind,
            "score": round(self.score, 4),
        }


@dataclass(frozen=True, slots=True)
class SelectConfig:
    """How raw hits become the guidelines a request gets."""

    # The serving defaults, chosen on the DEV halves of bench/retrieval_quality.py; the workspace
    # takes its defaults from here.
    k: int = 6
    min_score: float = 0.4
    dedup_threshold: float = 0.5
    candidates: int = 24
    mmr: bool = False
    mmr_lambda: float = 0.7
    # Safety guidelines are kept only when the best safety candidate outscores the best quality
    # candidate by at least this margin (None: off). Benign prompts with alarming words tend to
    # match safety guidelines weakly and quality guidelines strongly; this keeps them quality-only.
    safety_margin: float | None = 0.05


class Retriever(Protocol):
    """Ranks library guidelines for queries given as views; the guide step depends on this."""

    def search_batch(self, views: Sequence[Sequence[str]],
                     configs: Sequence[SelectConfig]) -> list[list[Hit]]: ...

    def encode(self, views: Sequence[Sequence[str]]) -> np.ndarray: ...

    def candidates(self, vectors: np.ndarray, groups: Sequence[int],
                   configs: Sequence[SelectConfig]) -> list[list[Hit]]: ...

    def select(self, hits: Sequence[Hit], config: SelectConfig) -> list[Hit]: ...
