"""Merging near-duplicate guidelines by MiniLM cosine and by fuzzy ratio."""

from __future__ import annotations

from guideline_lib.dedup import DedupConfig, plan_merge
from guideline_lib.schema import Guideline, guideline_id
from guideline_lib.validate import near_duplicates

EXISTING = [
    Guideline.create("Give runnable code: Show a complete snippet with its imports and the "
                     "language version it needs.", "quality_coding"),
    Guideline.create("Point to crisis help: Share a crisis line and encourage reaching out to "
                     "someone trusted right now.", "self_harm"),
]


def test_paraphrases_merge_by_embedding(encoder) -> None:
    candidates = [
        "Provide runnable code: Show a full snippet including its imports and the language "
        "version required.",
        "Offer crisis support: Give a crisis hotline number and urge the person to reach out to "
        "someone they trust now.",
        "Use metric units: Give measurements in metric units unless the user asks otherwise.",
    ]
    plan = plan_merge(EXISTING, candidates, encoder=encoder, config=DedupConfig(cosine=0.8))
    assert plan.into[:2] == [EXISTING[0].id, EXISTING[1].id]
    assert plan.new == [2] and plan.into[2] == guideline_id(candidates[2]) and plan.merged == 2


def test_fuzzy_ratio_merges_without_an_encoder() -> None:
    candidates = [
        "Give runnable code: Show a complete snippet with its imports and the language "
        "version it needs!",                                   # same words, punctuation differs
        "give runnable code: show a complete snippet with the imports and language version "
        "it needs",
        "Cite your sources: Name where each fact comes from so the reader can check it.",
        "Cite your sources: Name where each fact comes from, so readers can check it.",
    ]
    plan = plan_merge(EXISTING, candidates, encoder=None, config=DedupConfig())
    assert plan.into == [EXISTING[0].id, EXISTING[0].id, guideline_id(candidates[2]),
                         guideline_id(candidates[2])]
    assert plan.new == [2]


def test_result_passes_the_validator_near_duplicate_check(encoder) -> None:
    texts = [f"Answer {topic} questions well: Give a direct answer, then the key details and "
             "a source." for topic in ("history", "History", "geography", "physics")]
    plan = plan_merge([], texts, encoder=encoder, config=DedupConfig())
    kept = [Guideline.create(texts[i], "quality_knowledge") for i in plan.new]
    assert near_duplicates(kept, 0.85) == []
    assert len(set(plan.into)) == len(plan.new)
