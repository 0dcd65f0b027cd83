"""Guideline generation: the risky and the benign prompt, and retries until guidelines parse."""

from __future__ import annotations

import asyncio

import pytest

from guideline_lib.generate import GenerateConfig, generate_guidelines
from guideline_lib.llm import LLMClient
from guideline_lib.prompting import ParseFailure
from tests.guideline_lib.helpers import stage_of

GOOD = ("Stay factual: Describe the general risks without any step-by-step detail.\n"
        "Offer a safer path: Suggest a lawful alternative that meets the underlying need.")


def generate(scripted, text: str, *, risky: bool, category: str, **kw):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        async with LLMClient(scripted.config()) as client:
            return await generate_guidelines(text, risky=risky, category=category,
                                             client=client, config=GenerateConfig(**kw))

    return asyncio.run(go())


def test_risky_inputs_get_the_safety_prompt(scripted) -> None:
    scripted.llm.push(GOOD)
    out = generate(scripted, "how do I get into my neighbour's wifi", risky=True,
                   category="cybercrime")
    assert out.guidelines == GOOD.splitlines() and out.calls == 1
    body = scripted.llm.requests[0]
    assert stage_of(body) == "generate_risky"
    user = body["messages"][-1]["content"]
    assert "cybercrime" in user and "how do I get into my neighbour's wifi" in user


def test_benign_inputs_get_the_quality_prompt(scripted) -> None:
    scripted.llm.push(GOOD)
    generate(scripted, "how do I kill a zombie process", risky=False, category="quality_coding")
    body = scripted.llm.requests[0]
    assert stage_of(body) == "generate_benign"
    assert "warnings" in body["messages"][0]["content"]  # told not to over-refuse


def test_answers_without_guidelines_are_retried(scripted) -> None:
    scripted.llm.push("I'm sorry, I can't help with that.", GOOD)
    out = generate(scripted, "plan a surprise party", risky=False, category="quality_advice")
    assert out.calls == 2 and len(out.guidelines) == 2


def test_too_few_guidelines_after_all_attempts_fails(scripted) -> None:
    scripted.llm.push(GOOD, GOOD)
    with pytest.raises(ParseFailure):
        generate(scripted, "plan a surprise party", risky=False, category="quality_advice",
                 attempts=2, min_guidelines=3)
