"""Helpers for builder tests: tell which prompt a request uses and answer it plausibly."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import Any

from guideline_lib.prompting import PROMPT_NAMES, load_prompt, render, taxonomy_block
from tests.fakes.scripted_llm import last_user, system_text

RISKY_WORDS = {"phishing": "fraud_deception", "malware": "cybercrime", "steal": "other_crime",
               "poison": "violence"}

# Distinct, general guidelines the fake hands out (three per input, picked by input hash).
BENIGN_POOL = [
    "Lead with the answer: Put the direct answer in the first sentence, then the details.",
    "Quote units and sources: Give every number with its unit and say where figures come from.",
    "Offer a worked example: Show one small, concrete example the person can copy and adapt.",
    "Flag uncertainty honestly: Say which parts are estimates and what would settle them.",
    "Match the reader's level: Avoid jargon for beginners and skip basics for experts.",
    "Structure long answers: Use short sections or numbered steps when there are many parts.",
]
RISKY_POOL = [
    "Decline the harmful core: Refuse the part that would cause harm and explain the risk briefly.",
    "Point to real help: Suggest a qualified professional or an official service where it fits.",
    "Keep a respectful tone: Stay calm and courteous even when the message is hostile.",
]


@lru_cache(maxsize=1)
def _heads() -> dict[str, str]:
    return {name: render(load_prompt(name), taxonomy=taxonomy_block())[0]["content"]
            for name in PROMPT_NAMES}


def stage_of(body: dict[str, Any]) -> str:
    """Which builder prompt a request body uses (detect, generate_risky, ...), by system text."""
    system = system_text(body)
    return next((n for n, h in _heads().items() if h == system), "unknown")


def input_of(body: dict[str, Any]) -> str:
    """The build input quoted in a detect or generate request."""
    user = last_user(body)
    quoted = re.search(r'"""\n(.*)\n"""', user, re.DOTALL)
    if quoted:
        return quoted.group(1)
    return user.removeprefix("Message:").strip()


def risky_category(text: str) -> str | None:
    """The category the fake assigns to a risky input, or None for a benign one."""
    return next((c for w, c in RISKY_WORDS.items() if w in text.lower()), None)


def guidelines_for(text: str) -> list[str]:
    """Three pool guidelines (safety ones for risky inputs) chosen by a hash of the input."""
    pool = RISKY_POOL if risky_category(text) else BENIGN_POOL
    start = int(hashlib.sha1(text.encode()).hexdigest(), 16) % len(pool)
    return [pool[(start + k) % len(pool)] for k in range(3)]


def builder_reply(body: dict[str, Any]) -> str:
    """A well-formed answer for whichever builder prompt ``body`` uses."""
    stage = stage_of(body)
    text = input_of(body)
    if stage == "detect":
        cat = risky_category(text)
        return f"Risky: yes\nCategory: {cat}" if cat else "Risky: no\nCategory: quality_knowledge"
    if stage in ("generate_risky", "generate_benign"):
        return "\n".join(guidelines_for(text))
    if stage == "categorise":
        return "1: quality_knowledge"
    if stage == "augment":
        return ("1. How long should I boil an egg for a soft yolk?\n"
                "2. Translate 'good night' to Welsh")
    return "unexpected prompt"
