"""Named results and the pluggable retriever seam."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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

    k: int = 6
    min_score: float = 0.35
    dedup_threshold: float = 0.5
    candidates: int = 24
    mmr: bool = False
    mmr_lambda: float = 0.7
    # Safety guidelines are kept only when the best safety candidate outscores the best quality
    # candidate by at least this margin (None: off). Benign prompts with alarming words tend to
    # match safety guidelines weakly and quality guidelines strongly; this keeps them quality-only.
    safety_margin: float | None = None


class Retriever(Protocol):
    """Ranks library guidelines for a query; the gateway and finetune depend only on this."""

    def search(self, query: Query, *, config: SelectConfig | None = None) -> list[Hit]: ...

    def search_batch(
        self, queries: Sequence[Query], *, config: SelectConfig | None = None
    ) -> list[list[Hit]]: ...

    def search_views(
        self,
        views: Sequence[Sequence[str]],
        *,
        config: SelectConfig | None = None,
        configs: Sequence[SelectConfig] | None = None,
    ) -> list[list[Hit]]: ...
