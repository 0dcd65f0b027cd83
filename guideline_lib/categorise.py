"""Categorising guidelines: a taxonomy id each, from the LLM or the detection, with fallbacks."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from guideline_lib.detect import Detection
from guideline_lib.prompting import (
    ChatClient,
    ParseFailure,
    ask,
    load_prompt,
    render,
    taxonomy_block,
)
from guideline_lib.taxonomy import ALIASES, QUALITY_HINTS, TAXONOMY, normalise_category

Mode = Literal["detect", "llm"]

_NUMBERED = re.compile(r"^\s*(\d+)\s*[:.)\-]\s*(.+?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class CategoriseConfig:
    """How guidelines get their category: 'detect' reuses the detection, 'llm' asks again."""

    mode: Mode = "detect"
    attempts: int = 2
    max_tokens: int = 96
    fallback_safety: str = "unethical_behavior"
    fallback_quality: str = "quality_knowledge"
    template: str | None = None


@dataclass(frozen=True)
class Categorised:
    """A category per guideline, and how many LLM calls that took."""

    categories: list[str]
    calls: int


def keyword_category(text: str, *, risky: bool, config: CategoriseConfig) -> str:
    """A best-effort category from words in ``text``, restricted to the right kind."""
    low = f" {text.lower()} "
    if risky:
        for alias, cid in ALIASES.items():
            if TAXONOMY[cid] == "safety" and re.search(r"\b" + re.escape(alias), low):
                return cid
        return config.fallback_safety
    scores = {c: sum(w in low for w in words) for c, words in QUALITY_HINTS.items()}
    best = max(scores, key=lambda c: scores[c])
    return best if scores[best] else config.fallback_quality


def base_category(detection: Detection, text: str, *, config: CategoriseConfig) -> str:
    """The detection's category, else a keyword guess, else the configured fallback."""
    if detection.category in TAXONOMY:
        return detection.category
    return keyword_category(text, risky=detection.risky, config=config)


def parse_numbered(text: str, n: int) -> dict[int, str] | None:
    """'1: cybercrime' lines -> {0: 'cybercrime'}; None when no line names a category."""
    found: dict[int, str] = {}
    for num, label in _NUMBERED.findall(text):
        idx = int(num) - 1
        cid = normalise_category(label)
        if 0 <= idx < n and cid is not None and idx not in found:
            found[idx] = cid
    return found or None


async def categorise(
    guidelines: Sequence[str],
    *,
    detection: Detection,
    text: str,
    client: ChatClient | None,
    config: CategoriseConfig,
    salt: int = 0,
) -> Categorised:
    """One taxonomy id per guideline; never fails (falls back to the detection or keywords)."""
    base = base_category(detection, text, config=config)
    if config.mode != "llm" or client is None or not guidelines:
        return Categorised(categories=[base] * len(guidelines), calls=0)
    listing = "\n".join(f"{n}. {g}" for n, g in enumerate(guidelines, 1))
    messages = render(config.template or load_prompt("categorise"), taxonomy=taxonomy_block(),
                      guidelines=listing)
    try:
        answer = await ask(client, messages, lambda t: parse_numbered(t, len(guidelines)),
                           attempts=config.attempts, max_tokens=config.max_tokens, salt=salt)
    except ParseFailure as exc:
        return Categorised(categories=[base] * len(guidelines), calls=len(exc.raw))
    return Categorised(categories=[answer.value.get(i, base) for i in range(len(guidelines))],
                       calls=answer.calls)
