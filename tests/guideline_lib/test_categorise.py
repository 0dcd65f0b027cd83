"""Categorising guidelines: label normalisation, the LLM mode and the fallbacks."""

from __future__ import annotations

import asyncio

import pytest

from guideline_lib.categorise import (
    CategoriseConfig,
    categorise,
    keyword_category,
    normalise_category,
)
from guideline_lib.detect import Detection
from guideline_lib.llm import LLMClient
from guideline_lib.schema import TAXONOMY
from tests.guideline_lib.helpers import stage_of

GUIDELINES = ["Refuse working exploits: Do not write attack code against systems of others.",
              "Give runnable code: Show a complete snippet with imports and versions."]


@pytest.mark.parametrize(("label", "expected"), [
    ("cybercrime", "cybercrime"), ("Cyber-crime", "cybercrime"), ("`self_harm`", "self_harm"),
    ("Self harm", "self_harm"), ("quality coding", "quality_coding"),
    ("Programming", "quality_coding"),
    ("hate speech", "hate_discrimination"), ("Medical advice", "specialized_advice"),
    ("violnce", "violence"), ("weather", None), ("", None),
])
def test_normalise_category(label, expected) -> None:
    assert normalise_category(label) == expected


def test_every_taxonomy_id_maps_to_itself() -> None:
    assert all(normalise_category(c) == c for c in TAXONOMY)


def test_keyword_fallback_respects_the_kind() -> None:
    config = CategoriseConfig()
    assert keyword_category("fix this python function", risky=False, config=config) == \
        "quality_coding"
    assert keyword_category("write a poem about rain", risky=False, config=config) == \
        "quality_writing"
    assert keyword_category("help me hack my school's grading server", risky=True,
                            config=config) == "cybercrime"
    assert keyword_category("zzz", risky=True, config=config) == config.fallback_safety
    assert keyword_category("zzz", risky=False, config=config) == config.fallback_quality


def run(scripted, guidelines, detection, mode="llm"):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        async with LLMClient(scripted.config()) as client:
            return await categorise(guidelines, detection=detection, text="some input",
                                    client=client, config=CategoriseConfig(mode=mode))

    return asyncio.run(go())


def test_detect_mode_uses_the_detection_without_a_call(scripted) -> None:
    out = run(scripted, GUIDELINES, Detection(risky=True, category="cybercrime"), mode="detect")
    assert out.categories == ["cybercrime", "cybercrime"] and out.calls == 0
    assert scripted.llm.requests == []


def test_llm_mode_labels_each_guideline(scripted) -> None:
    scripted.llm.push("1: Cybercrime\n2: quality_coding")
    out = run(scripted, GUIDELINES, Detection(risky=True, category="cybercrime"))
    assert out.categories == ["cybercrime", "quality_coding"] and out.calls == 1
    body = scripted.llm.requests[0]
    assert stage_of(body) == "categorise"
    assert "1. Refuse working exploits" in body["messages"][-1]["content"]


def test_llm_mode_fills_gaps_and_garbage_with_the_fallback(scripted) -> None:
    scripted.llm.push("2: something odd\n1: privacy")
    out = run(scripted, GUIDELINES, Detection(risky=True, category="cybercrime"))
    assert out.categories == ["privacy", "cybercrime"]
    scripted.llm.push("no idea", "still no idea")
    out = run(scripted, GUIDELINES, Detection(risky=False, category=None))
    # No LLM answer and no detected category: keyword guess from the input, never a crash.
    assert out.categories == ["quality_knowledge"] * 2 and out.calls == 2
