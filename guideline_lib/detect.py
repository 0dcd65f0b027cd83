"""Risk detection: the LLM judges whether an input is risky and which category it belongs to."""

from __future__ import annotations

import re
from dataclasses import dataclass

from guideline_lib.prompting import ChatClient, ask, load_prompt, render, taxonomy_block
from guideline_lib.taxonomy import TAXONOMY, normalise_category

_VERDICT = re.compile(
    r"(?:risky|risk|harmful|unsafe|verdict)\s*\**\s*[:=\-]\s*\**\s*"
    r"(yes|no|true|false|risky|safe|harmful|benign|unsafe)\b",
    re.IGNORECASE,
)
_CATEGORY = re.compile(r"categor(?:y|ies)\s*\**\s*[:=\-]\s*\**\s*([^\n,;]+)", re.IGNORECASE)
_WORD = re.compile(r"\b(yes|no|unsafe|safe|harmful|harmless|benign|risky)\b", re.IGNORECASE)
_LABEL = re.compile(r"\b(?:risky|risk|category|verdict)\s*\**\s*[:=]", re.IGNORECASE)
_TRUE = {"yes", "true", "risky", "harmful", "unsafe"}


@dataclass(frozen=True)
class DetectConfig:
    """Risk detection settings."""

    attempts: int = 3
    max_tokens: int = 48
    template: str | None = None


@dataclass(frozen=True)
class Detection:
    """The verdict on one input: risky or not, and a taxonomy id when one could be read."""

    risky: bool
    category: str | None
    raw: str = ""
    calls: int = 1


def _verdict(text: str) -> bool | None:
    match = _VERDICT.search(text)
    if match:
        return match.group(1).lower() in _TRUE
    word = _WORD.search(_LABEL.sub(" ", text[:200]))  # a bare "Yes." / "No, ..." / "Safe"
    if word:
        return word.group(1).lower() in _TRUE
    return None


def parse_detection(text: str) -> Detection | None:
    """Read 'Risky: yes/no' and 'Category: id' from messy model output; None if no verdict."""
    category = None
    match = _CATEGORY.search(text)
    if match:
        category = normalise_category(match.group(1))
    if category is None:
        category = normalise_category(text, strict=True)
    risky = _verdict(text)
    if risky is None:
        if category is None:
            return None
        risky = TAXONOMY[category] == "safety"  # a category alone still tells the kind
    if category is not None and (TAXONOMY[category] == "safety") != risky:
        category = None  # contradicts the verdict; let categorisation fall back
    return Detection(risky=risky, category=category, raw=text)


async def detect_risk(
    text: str, *, client: ChatClient, config: DetectConfig, salt: int = 0
) -> Detection:
    """Ask the LLM whether ``text`` is risky and in which category (few-shot prompt)."""
    template = config.template or load_prompt("detect")
    messages = render(template, taxonomy=taxonomy_block(), input=text)
    answer = await ask(client, messages, parse_detection, attempts=config.attempts,
                       max_tokens=config.max_tokens, salt=salt)
    d = answer.value
    return Detection(risky=d.risky, category=d.category, raw=answer.raw, calls=answer.calls)
