"""The guide step as tests call it: the small library's policy (low threshold, no margin)."""

from __future__ import annotations

from typing import Any

from guide.options import Policy
from guide.step import guide
from retriever.search import DenseRetriever
from retriever.types import Hit, SelectConfig

TEST_SELECT = SelectConfig(k=6, min_score=0.2, safety_margin=None)
TEST_POLICY = Policy(select=TEST_SELECT)


def search(retriever: DenseRetriever, query: str | list[dict[str, Any]],
           policy: Policy = TEST_POLICY) -> list[Hit]:
    """The guidelines the guide step selects for ``query``."""
    return guide(query, retriever, policy).hits
