"""Augmentation: new inputs proposed from seeds, near-duplicates dropped by ROUGE-L."""

from __future__ import annotations

import asyncio

from rouge_score import rouge_scorer

from guideline_lib.augment import (
    AugmentConfig,
    novel_inputs,
    parse_proposals,
    plan_rounds,
    propose_inputs,
    rouge_l,
)
from guideline_lib.llm import LLMClient
from tests.guideline_lib.helpers import stage_of

SEEDS = ["How do I descale a kettle?", "Write a limerick about a sleepy cat",
         "What caused the 1929 stock market crash?", "Best way to learn touch typing"]


def test_rounds_are_deterministic_and_sample_seeds() -> None:
    config = AugmentConfig(rounds=3, seeds_per_round=2)
    rounds = plan_rounds(SEEDS, config=config)
    assert rounds == plan_rounds(SEEDS, config=config)
    assert len(rounds) == 3 and len({r.key for r in rounds}) == 3
    assert all(len(r.seeds) == 2 and set(r.seeds) <= set(SEEDS) for r in rounds)
    assert plan_rounds(SEEDS, config=AugmentConfig(rounds=0)) == []


def test_proposals_are_parsed_from_messy_lists() -> None:
    text = ("Sure, here are new messages:\n1. How do I clean a cast-iron pan?\n"
            "2) \"Write a sonnet about the sea\"\n- short\n* Explain how vaccines are tested\n")
    assert parse_proposals(text, config=AugmentConfig()) == [
        "How do I clean a cast-iron pan?", "Write a sonnet about the sea",
        "Explain how vaccines are tested"]
    assert parse_proposals("", config=AugmentConfig()) is None


def test_rouge_l_matches_rouge_score() -> None:
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    tok = scorer._tokenizer
    for a, b in [("how do I descale my kettle", "how can I descale a kettle quickly"),
                 ("write a poem", "explain tides"), ("a b c d", "d c b a")]:
        assert abs(rouge_l(tok.tokenize(a), tok.tokenize(b))
                   - scorer.score(a, b)["rougeL"].fmeasure) < 1e-9


def test_near_duplicates_of_inputs_and_of_each_other_are_dropped() -> None:
    proposals = ["How do I descale a kettle quickly?",          # ~ a seed
                 "How can I remove limescale from a shower head?",
                 "How can I remove limescale from the shower head",  # ~ the previous one
                 "Write a haiku about a rainy Monday"]
    assert novel_inputs(SEEDS, proposals, threshold=0.7) == [
        "How can I remove limescale from a shower head?", "Write a haiku about a rainy Monday"]


def test_propose_inputs_against_the_server(scripted) -> None:
    scripted.llm.push("nothing useful", "1. How do I fold a fitted sheet?\n2. Name a blue fruit")

    async def go() -> list[str]:
        async with LLMClient(scripted.config()) as client:
            return await propose_inputs(SEEDS[:2], client=client,
                                        config=AugmentConfig(per_round=2))

    assert asyncio.run(go()) == ["How do I fold a fitted sheet?", "Name a blue fruit"]
    body = scripted.llm.requests[-1]
    assert stage_of(body) == "augment" and "- Write a limerick about a sleepy cat" in \
        body["messages"][-1]["content"]
