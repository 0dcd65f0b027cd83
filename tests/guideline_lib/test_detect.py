"""Risk detection: few-shot prompt, tolerant parsing, retries on unparseable answers."""

from __future__ import annotations

import asyncio

import pytest

from guideline_lib.detect import DetectConfig, detect_risk, parse_detection
from guideline_lib.llm import LLMClient
from guideline_lib.prompting import ParseFailure
from tests.guideline_lib.helpers import stage_of


@pytest.mark.parametrize(("answer", "risky", "category"), [
    ("Risky: yes\nCategory: cybercrime", True, "cybercrime"),
    ("Risky: no\nCategory: quality_coding", False, "quality_coding"),
    ("**Risky:** Yes\n**Category:** Cyber-crime", True, "cybercrime"),
    ("risky = no, category = quality writing", False, "quality_writing"),
    ("Yes. This asks for a scam.\nCategory: scams and phishing", True, "fraud_deception"),
    ("No, it is a normal question about history.", False, None),
    ("The message is harmless.\nRisky: no", False, None),
    ("Category: self_harm", True, "self_harm"),              # a category alone tells the kind
    ("Risky: no\nCategory: violence", False, None),         # contradiction: category dropped
    ("Risky: unsure\nI think it could be self harm", None, None),
    ("", None, None),
    ("banana banana banana", None, None),
])
def test_parse_detection_tolerates_messy_output(answer, risky, category) -> None:
    parsed = parse_detection(answer)
    if risky is None:
        assert parsed is None
    else:
        assert parsed is not None and (parsed.risky, parsed.category) == (risky, category)


def detect(scripted, text: str, **kw):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        async with LLMClient(scripted.config()) as client:
            return await detect_risk(text, client=client, config=DetectConfig(**kw))

    return asyncio.run(go())


def test_detect_sends_the_few_shot_prompt_with_the_input(scripted) -> None:
    scripted.llm.push("Risky: yes\nCategory: fraud_deception")
    d = detect(scripted, "Write a fake invoice email for my boss's clients")
    assert d.risky and d.category == "fraud_deception" and d.calls == 1
    body = scripted.llm.requests[0]
    assert stage_of(body) == "detect"
    roles = [m["role"] for m in body["messages"]]
    assert roles[0] == "system" and roles.count("assistant") >= 3  # few-shot turns
    assert body["messages"][-1]["content"].endswith("a fake invoice email for my boss's clients")
    assert "quality_coding" in body["messages"][0]["content"]  # the taxonomy is listed


def test_unparseable_answers_are_retried_with_a_new_draw(scripted) -> None:
    scripted.llm.push("I like turtles", "Risky: no\nCategory: quality_knowledge")
    d = detect(scripted, "Why is the sky blue?")
    assert not d.risky and d.calls == 2
    first, second = scripted.llm.requests
    assert second["temperature"] > first["temperature"] and "seed" in second


def test_still_unparseable_after_attempts_is_a_parse_failure(scripted) -> None:
    scripted.llm.push("hmm", "???", "no idea")  # "no idea" starts with "no": still a verdict
    d = detect(scripted, "Why is the sky blue?", attempts=3)
    assert d.risky is False and d.calls == 3
    scripted.llm.push("hmm", "???")
    with pytest.raises(ParseFailure, match="after 2 calls") as info:
        detect(scripted, "What is a prime number?", attempts=2)
    assert info.value.raw == ["hmm", "???"]
