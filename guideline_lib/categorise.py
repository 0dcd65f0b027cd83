"""Categorising guidelines: a taxonomy id each, from the LLM or the detection, with fallbacks."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from rapidfuzz import fuzz, process

from guideline_lib.prompting import (
    ChatClient,
    ParseFailure,
    ask,
    load_prompt,
    render,
    taxonomy_block,
)
from guideline_lib.schema import TAXONOMY

if TYPE_CHECKING:
    from guideline_lib.detect import Detection

Mode = Literal["detect", "llm"]

# Loose labels a model (or a data set) uses for a taxonomy id; checked as word prefixes.
ALIASES: dict[str, str] = {
    "violen": "violence", "terror": "violence", "murder": "violence", "assault": "violence",
    "weapon": "weapons", "firearm": "weapons", "explosive": "weapons", "bomb": "weapons",
    "hack": "cybercrime", "malware": "cybercrime", "cyber": "cybercrime", "ransom": "cybercrime",
    "scam": "fraud_deception", "phish": "fraud_deception", "fraud": "fraud_deception",
    "decept": "fraud_deception", "forg": "fraud_deception", "cheat": "fraud_deception",
    "drug": "illegal_goods_drugs", "traffick": "illegal_goods_drugs",
    "counterfeit": "illegal_goods_drugs", "theft": "other_crime", "steal": "other_crime",
    "crime": "other_crime", "illegal": "other_crime", "vandal": "other_crime",
    "sexual": "sexual_content", "porn": "sexual_content", "explicit": "sexual_content",
    "child": "child_safety", "minor": "child_safety", "suicid": "self_harm",
    "self harm": "self_harm", "self-harm": "self_harm", "mental health": "chatbot_interaction",
    "hate": "hate_discrimination", "discriminat": "hate_discrimination",
    "racis": "hate_discrimination", "bias": "hate_discrimination", "unfair": "hate_discrimination",
    "harass": "harassment_toxicity", "toxic": "harassment_toxicity",
    "insult": "harassment_toxicity", "bully": "harassment_toxicity", "privacy": "privacy",
    "personal data": "privacy",
    "dox": "privacy", "misinfo": "misinformation", "disinfo": "misinformation",
    "conspira": "misinformation", "copyright": "intellectual_property",
    "piracy": "intellectual_property", "intellectual": "intellectual_property",
    "medical": "specialized_advice", "legal advice": "specialized_advice",
    "financial": "specialized_advice", "speciali": "specialized_advice",
    "politic": "controversial_topics", "religio": "controversial_topics",
    "controvers": "controversial_topics", "sensitive": "controversial_topics",
    "unethical": "unethical_behavior", "ethic": "unethical_behavior", "moral": "unethical_behavior",
    "manipulat": "unethical_behavior", "chatbot": "chatbot_interaction",
    "jailbreak": "jailbreak_manipulation", "prompt injection": "jailbreak_manipulation",
    "prompt leak": "jailbreak_manipulation", "role play": "jailbreak_manipulation",
    "coding": "quality_coding", "code": "quality_coding", "program": "quality_coding",
    "software": "quality_coding", "math": "quality_math_reasoning",
    "reasoning": "quality_math_reasoning", "logic": "quality_math_reasoning",
    "writing": "quality_writing", "creative": "quality_writing", "translat": "quality_writing",
    "summar": "quality_writing", "knowledge": "quality_knowledge", "fact": "quality_knowledge",
    "science": "quality_knowledge", "history": "quality_knowledge", "advice": "quality_advice",
    "planning": "quality_advice", "how-to": "quality_advice", "convers": "quality_conversation",
    "chit": "quality_conversation", "small talk": "quality_conversation",
}

# Words in an input that hint at a quality category when nothing better is known.
QUALITY_HINTS: dict[str, tuple[str, ...]] = {
    "quality_coding": ("code", "python", "javascript", "function", "bug", "error", "sql",
                       "script", "compile", "api", "git", "linux", "process", "program"),
    "quality_math_reasoning": ("calculate", "solve", "equation", "probability", "math",
                               "how many", "percent", "proof", "integral", "riddle", "puzzle"),
    "quality_writing": ("write", "poem", "story", "essay", "rewrite", "edit", "translate",
                        "summar", "letter", "email", "proofread", "lyrics", "tweet"),
    "quality_advice": ("how do i", "how can i", "tips", "should i", "recommend", "plan",
                       "best way", "advice", "help me"),
    "quality_conversation": ("hello", "hi ", "how are you", "your favourite", "your favorite",
                             "do you like", "let's chat", "i feel", "bored"),
    "quality_knowledge": ("what is", "who ", "when ", "why ", "explain", "define", "history",
                          "difference between"),
}

_CLEAN = re.compile(r"[`*\"'\[\]()<>.]")
_ID_WORD = re.compile(r"\b(" + "|".join(sorted(TAXONOMY, key=len, reverse=True)) + r")\b")
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


def normalise_category(label: str, *, strict: bool = False) -> str | None:
    """Map a loose label ('Cyber-crime', '**self harm**') to a taxonomy id; None if unsure.

    ``strict`` only accepts taxonomy ids written out in the text (for scanning free prose).
    """
    low = label.strip().lower()
    ids = _ID_WORD.search(low.replace("-", "_"))
    if ids:
        return ids.group(1)
    if strict:
        return None
    low = _CLEAN.sub(" ", low).strip()
    if not low or len(low) > 60:
        return None
    key = re.sub(r"[\s\-]+", "_", low)
    if key in TAXONOMY:
        return key
    for alias, cid in ALIASES.items():
        if re.search(r"\b" + re.escape(alias), low):
            return cid
    best = process.extractOne(key, list(TAXONOMY), scorer=fuzz.ratio, score_cutoff=80)
    return best[0] if best else None


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
